package gateway

import "time"

// IssueTokenForTest mints an access token for account as if a client
// assertion verified by the certificate der had been accepted, bypassing
// the token endpoint: it stands in for a token issued by a request that
// read the catalog just before a removal committed.
func (s *Server) IssueTokenForTest(account string, der []byte, exp time.Time) (string, error) {
	return s.tokens.issue(account, der, exp)
}
