package gateway

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/schemas"
)

// ValidOrgNumber reports whether s is a Norwegian organisation number: nine
// digits whose last is the modulus-11 check digit of the first eight
// (weights 3 2 7 6 5 4 3 2).
func ValidOrgNumber(s string) bool {
	if len(s) != 9 {
		return false
	}
	weights := []int{3, 2, 7, 6, 5, 4, 3, 2}
	sum := 0
	for i := 0; i < 9; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		if i < 8 {
			sum += int(s[i]-'0') * weights[i]
		}
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	return check != 10 && check == int(s[8]-'0')
}

var (
	reMunicipality = regexp.MustCompile(`^[0-9]{4}$`)
	reType         = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,199}$`)
)

const maxCertsPerAccount = 10

// isUUID reports whether s is a canonical lower-case UUID.
func isUUID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}

// toAPI converts a stored account; current limits the certificates to those
// valid now (the agents' lookup).
func (s *Server) toAPI(a store.Account, current bool) api.Account {
	out := api.Account{ID: a.ID, Name: a.Name, OrgNumber: a.OrgNumber, Municipality: a.Municipality,
		Service: a.Service, Types: a.Types, Certificates: []api.Certificate{}}
	if out.Types == nil {
		out.Types = []string{}
	}
	now := s.now()
	for _, der := range a.Certificates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			continue
		}
		if current && (now.Before(c.NotBefore) || now.After(c.NotAfter)) {
			continue
		}
		out.Certificates = append(out.Certificates, api.Certificate{
			PEM: string(pki.EncodeCertPEM(c)), Fingerprint: pki.Fingerprint(c),
			NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
		})
	}
	return out
}

// parseAccountCert checks one PEM certificate for the catalog: it must
// parse, be valid now and chain to the trust roots now.
func (s *Server) parseAccountCert(p string) (*x509.Certificate, error) {
	cs, err := pki.ParseCertsPEM([]byte(p))
	if err != nil || len(cs) != 1 {
		return nil, errs.Newf(errs.BadRequest, "each certificate must be exactly one PEM CERTIFICATE")
	}
	if err := pki.VerifyAt(cs[0], s.trust, nil, s.now()); err != nil {
		return nil, &errs.Error{Code: errs.BadRequest, Detail: "certificate does not chain to the trust roots now", Cause: err}
	}
	if _, err := SigningAlgorithm(cs[0].PublicKey); err != nil {
		return nil, &errs.Error{Code: errs.BadRequest, Detail: "certificate key must be RSA (>= 2048 bits) or ECDSA P-256", Cause: err}
	}
	return cs[0], nil
}

func validateAccountFields(req api.AccountRequest) error {
	switch {
	case strings.TrimSpace(req.Name) == "" || len(req.Name) > 200:
		return errs.Newf(errs.BadRequest, "name is required (at most 200 characters)")
	case !ValidOrgNumber(req.OrgNumber):
		return errs.Newf(errs.BadRequest, "org_number must be 9 digits with a valid mod-11 check digit")
	case req.Municipality != "" && !reMunicipality.MatchString(req.Municipality):
		return errs.Newf(errs.BadRequest, "municipality must be 4 digits")
	case len(req.Service) > 100:
		return errs.Newf(errs.BadRequest, "service is at most 100 characters")
	case len(req.Types) > 100:
		return errs.Newf(errs.BadRequest, "at most 100 message types")
	}
	for _, t := range req.Types {
		if !reType.MatchString(t) {
			return errs.Newf(errs.BadRequest, "invalid message type %q", t)
		}
		if _, known := schemas.Default().Lookup(t); !known {
			return errs.Newf(errs.UnknownType, "%s", t)
		}
	}
	return nil
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errs.New(errs.TooLarge, err)
		}
		return errs.New(errs.MalformedJSON, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errs.New(errs.MalformedJSON, errors.New("trailing data"))
	}
	return nil
}

func dedupe(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}

// receiverConflict refuses with catalog_conflict an account a that would
// share a message type with another account of the same municipality
// number or the same org number: agents address a receiver by
// municipality:NNNN or org:NNNNNNNNN with a type, and such a pair must
// name exactly one account (the client refuses an ambiguous answer, but a
// catalog that makes one is the operator's mistake to see at once). One
// organisation may still run several services, e.g. barneverntjenesten
// and a national service, each an account taking its own types; and an
// account without a municipality number is only addressed by org number
// or id. Receipt types are left out: receipts always go to an account id.
// The caller holds catalogMu.
func (s *Server) receiverConflict(ctx context.Context, a store.Account) error {
	all, err := s.st.Accounts(ctx)
	if err != nil {
		return errs.New(errs.Internal, err)
	}
	return conflictIn(all, a)
}

// conflictIn is receiverConflict against the accounts all.
func conflictIn(all []store.Account, a store.Account) error {
	for _, b := range all {
		if b.ID == a.ID {
			continue
		}
		sameMuni := a.Municipality != "" && a.Municipality == b.Municipality
		if !sameMuni && a.OrgNumber != b.OrgNumber {
			continue
		}
		for _, t := range a.Types {
			if info, _ := schemas.Default().Lookup(t); info.Receipt || !slices.Contains(b.Types, t) {
				continue
			}
			if sameMuni {
				return errs.Newf(errs.CatalogConflict, "account %s already receives %s for municipality %s; "+
					"leave this account's municipality empty (it is then addressed by org number or id) or take other types",
					b.ID, t, a.Municipality)
			}
			return errs.Newf(errs.CatalogConflict, "account %s already receives %s for org number %s; "+
				"services of one organisation must take different types", b.ID, t, a.OrgNumber)
		}
	}
	return nil
}

// warnAmbiguousCatalog logs, at start, each account that shares a
// (municipality or org number, type) pair with another: a catalog written
// before the admin API refused that, or edited outside it. Agents refuse
// to send to such a pair by number (ambiguous_receiver) until an operator
// resolves it, so the operator is told at once, not by a failed send.
func (s *Server) warnAmbiguousCatalog(ctx context.Context) {
	all, err := s.st.Accounts(ctx)
	if err != nil {
		s.log.Error("read catalog", "err", err)
		return
	}
	for _, a := range all { // one read of the catalog, not one per account
		if err := conflictIn(all, a); err != nil {
			s.log.Warn("catalog: ambiguous receiver; senders must address it by account id until resolved",
				"account", a.ID, "problem", err.Error())
		}
	}
}

// handleAccountCreate is POST /v1/admin/accounts.
func (s *Server) handleAccountCreate(w http.ResponseWriter, r *http.Request) {
	var req api.AccountRequest
	if err := decodeJSON(w, r, &req, 1<<20); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.ID == "" {
		req.ID = uuid.NewString()
	}
	if !isUUID(req.ID) {
		s.fail(w, r, errs.Newf(errs.BadRequest, "id must be a lower-case UUID"))
		return
	}
	if err := validateAccountFields(req); err != nil {
		s.fail(w, r, err)
		return
	}
	if len(req.Certificates) == 0 || len(req.Certificates) > maxCertsPerAccount {
		s.fail(w, r, errs.Newf(errs.BadRequest, "between 1 and %d certificates are required", maxCertsPerAccount))
		return
	}
	a := store.Account{ID: req.ID, Name: req.Name, OrgNumber: req.OrgNumber, Municipality: req.Municipality,
		Service: req.Service, Types: dedupe(req.Types), Created: s.now().UTC(), Updated: s.now().UTC()}
	for _, p := range req.Certificates {
		c, err := s.parseAccountCert(p)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !slices.ContainsFunc(a.Certificates, func(d []byte) bool { return string(d) == string(c.Raw) }) {
			a.Certificates = append(a.Certificates, c.Raw)
		}
	}
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	if _, err := s.st.Account(r.Context(), a.ID); err == nil {
		s.fail(w, r, errs.Newf(errs.Conflict, "an account with this id exists"))
		return
	}
	if err := s.receiverConflict(r.Context(), a); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.st.PutAccount(r.Context(), a); err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	writeJSON(w, http.StatusCreated, s.toAPI(a, false))
}

// handleAccountList is GET /v1/admin/accounts.
func (s *Server) handleAccountList(w http.ResponseWriter, r *http.Request) {
	all, err := s.st.Accounts(r.Context())
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	out := make([]api.Account, 0, len(all))
	for _, a := range all {
		out = append(out, s.toAPI(a, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) loadAccount(w http.ResponseWriter, r *http.Request) (store.Account, bool) {
	a, err := s.st.Account(r.Context(), r.PathValue("account"))
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, errs.New(errs.NotFound, err))
		return a, false
	}
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return a, false
	}
	return a, true
}

// handleAccountShow is GET /v1/admin/accounts/{account}.
func (s *Server) handleAccountShow(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.loadAccount(w, r); ok {
		writeJSON(w, http.StatusOK, s.toAPI(a, false))
	}
}

// handleAccountUpdate is PUT /v1/admin/accounts/{account}: replaces name,
// org number, municipality, service and types; certificates are managed
// with the certs endpoints (a non-empty certificates list is refused).
// Like a create, it is refused with catalog_conflict if it would give a
// (municipality, type) or (org number, type) pair a second account.
func (s *Server) handleAccountUpdate(w http.ResponseWriter, r *http.Request) {
	var req api.AccountRequest
	if err := decodeJSON(w, r, &req, 1<<20); err != nil {
		s.fail(w, r, err)
		return
	}
	// Read, check and write under the catalog lock, so that a certificate
	// or account removed meanwhile is not written back.
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	a, ok := s.loadAccount(w, r)
	if !ok {
		return
	}
	if (req.ID != "" && req.ID != a.ID) || len(req.Certificates) > 0 {
		s.fail(w, r, errs.Newf(errs.BadRequest, "id cannot change; use the certs endpoints for certificates"))
		return
	}
	if err := validateAccountFields(req); err != nil {
		s.fail(w, r, err)
		return
	}
	a.Name, a.OrgNumber, a.Municipality, a.Service, a.Types = req.Name, req.OrgNumber, req.Municipality, req.Service, dedupe(req.Types)
	a.Updated = s.now().UTC()
	if err := s.receiverConflict(r.Context(), a); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.st.PutAccount(r.Context(), a); err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	writeJSON(w, http.StatusOK, s.toAPI(a, false))
}

// handleAccountDelete is DELETE /v1/admin/accounts/{account}.
func (s *Server) handleAccountDelete(w http.ResponseWriter, r *http.Request) {
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	id := r.PathValue("account")
	if err := s.st.DeleteAccount(r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			s.fail(w, r, errs.New(errs.NotFound, err))
		} else {
			s.fail(w, r, errs.New(errs.Internal, err))
		}
		return
	}
	if n := s.tokens.revokeAccount(id); n > 0 {
		s.log.Info("access tokens revoked", "account", id, "reason", "account removed", "tokens", n)
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleCertAdd is POST /v1/admin/accounts/{account}/certs.
func (s *Server) handleCertAdd(w http.ResponseWriter, r *http.Request) {
	var req api.CertificateRequest
	if err := decodeJSON(w, r, &req, 64<<10); err != nil {
		s.fail(w, r, err)
		return
	}
	// The body is read before the lock: a slow client holds up no one.
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	a, ok := s.loadAccount(w, r)
	if !ok {
		return
	}
	c, err := s.parseAccountCert(req.PEM)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !slices.ContainsFunc(a.Certificates, func(d []byte) bool { return string(d) == string(c.Raw) }) {
		if len(a.Certificates) >= maxCertsPerAccount {
			s.fail(w, r, errs.Newf(errs.BadRequest, "at most %d certificates per account", maxCertsPerAccount))
			return
		}
		a.Certificates = append(a.Certificates, c.Raw)
		a.Updated = s.now().UTC()
		if err := s.st.PutAccount(r.Context(), a); err != nil {
			s.fail(w, r, errs.New(errs.Internal, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, s.toAPI(a, false))
}

// handleCertRemove is DELETE /v1/admin/accounts/{account}/certs/{fingerprint}.
// The last certificate cannot be removed.
func (s *Server) handleCertRemove(w http.ResponseWriter, r *http.Request) {
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	a, ok := s.loadAccount(w, r)
	if !ok {
		return
	}
	fp := strings.ToLower(r.PathValue("fingerprint"))
	idx := slices.IndexFunc(a.Certificates, func(d []byte) bool {
		c, err := x509.ParseCertificate(d)
		return err == nil && pki.Fingerprint(c) == fp
	})
	if idx < 0 {
		s.fail(w, r, errs.New(errs.NotFound, fmt.Errorf("no certificate %s", fp)))
		return
	}
	if len(a.Certificates) == 1 {
		s.fail(w, r, errs.Newf(errs.BadRequest, "an account keeps at least one certificate; add the new one first"))
		return
	}
	removed := a.Certificates[idx]
	a.Certificates = slices.Delete(a.Certificates, idx, idx+1)
	a.Updated = s.now().UTC()
	if err := s.st.PutAccount(r.Context(), a); err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	if n := s.tokens.revokeCert(a.ID, removed); n > 0 {
		s.log.Info("access tokens revoked", "account", a.ID, "reason", "certificate removed", "fingerprint", fp, "tokens", n)
	}
	writeJSON(w, http.StatusOK, s.toAPI(a, false))
}

// handleLookup is GET /v1/accounts?municipality=|org=[&type=]: for agents.
// It answers every match, ordered by id, and never picks one: with a type,
// more than one entry means the receiver is ambiguous (a catalog written
// before receiverConflict existed, or edited outside the admin API), and
// the client refuses it (client.Find, ambiguous_receiver) rather than send
// a case file to whichever account sorts first.
func (s *Server) handleLookup(w http.ResponseWriter, r *http.Request, _ string) {
	q := r.URL.Query()
	muni, org, typ := q.Get("municipality"), q.Get("org"), q.Get("type")
	if (muni == "") == (org == "") {
		s.fail(w, r, errs.Newf(errs.BadRequest, "give exactly one of municipality and org"))
		return
	}
	all, err := s.st.Accounts(r.Context())
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	out := []api.Account{}
	for _, a := range all {
		if (muni != "" && a.Municipality != muni) || (org != "" && a.OrgNumber != org) {
			continue
		}
		if typ != "" && !slices.Contains(a.Types, typ) {
			continue
		}
		out = append(out, s.toAPI(a, true))
	}
	writeJSON(w, http.StatusOK, out)
}

// handleAccountGet is GET /v1/accounts/{account}: for agents.
func (s *Server) handleAccountGet(w http.ResponseWriter, r *http.Request, _ string) {
	if a, ok := s.loadAccount(w, r); ok {
		writeJSON(w, http.StatusOK, s.toAPI(a, true))
	}
}
