package gateway

import "time"

// IssueTokenForTest mints an access token for account as if a client
// assertion verified by the certificate der had been accepted, bypassing
// the token endpoint: it stands in for a token issued by a request that
// read the catalog just before a removal committed.
func (s *Server) IssueTokenForTest(account string, der []byte, exp time.Time) (string, error) {
	return s.tokens.issue(account, der, exp)
}

// HoldUploadForTest takes upload id's lock, as a request writing its bytes
// or reading its offset holds it, until release is called.
func (s *Server) HoldUploadForTest(id string) (release func(), ok bool) {
	if !s.lockUpload(id) {
		return nil, false
	}
	return func() { s.unlockUpload(id) }, true
}

// BusyUploadsForTest is how many times a sweep found a stale upload busy.
func (s *Server) BusyUploadsForTest() int64 { return s.uploadsBusy.Load() }
