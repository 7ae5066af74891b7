package agent

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
)

// catalog caches gateway catalog lookups for ttl and applies certificate
// pinning and the trust roots.
type catalog struct {
	gw    Gateway
	ttl   time.Duration
	pins  map[string]map[string]bool
	roots *x509.CertPool
	now   func() time.Time

	mu      sync.Mutex
	byID    map[string]cached
	byQuery map[string]cached // query + "|" + type -> account
}

type cached struct {
	acct api.Account
	at   time.Time
}

func newCatalog(gw Gateway, ttl time.Duration, pins map[string][]string, roots *x509.CertPool, now func() time.Time) *catalog {
	c := &catalog{gw: gw, ttl: ttl, roots: roots, now: now, byID: map[string]cached{}, byQuery: map[string]cached{}, pins: map[string]map[string]bool{}}
	for acct, fps := range pins {
		c.pins[acct] = map[string]bool{}
		for _, fp := range fps {
			c.pins[acct][strings.ToLower(fp)] = true
		}
	}
	return c
}

// account returns the catalog entry of id, cached. fresh skips the cache.
func (c *catalog) account(ctx context.Context, id string, fresh bool) (api.Account, bool, error) {
	c.mu.Lock()
	e, ok := c.byID[id]
	c.mu.Unlock()
	if ok && !fresh && c.now().Sub(e.at) < c.ttl {
		return e.acct, true, nil
	}
	acct, err := c.gw.Lookup(ctx, id)
	if err != nil {
		return api.Account{}, false, err
	}
	if acct.ID != id {
		return api.Account{}, false, fmt.Errorf("catalog answered account %s for %s", acct.ID, id)
	}
	c.mu.Lock()
	c.byID[id] = cached{acct: acct, at: c.now()}
	c.mu.Unlock()
	return acct, false, nil
}

// resolve turns a send's "to" (account id, municipality:NNNN, org:NNNNNNNNN)
// into the receiving account.
func (c *catalog) resolve(ctx context.Context, to, msgType string) (api.Account, error) {
	if uuidRE.MatchString(to) {
		a, _, err := c.account(ctx, to, false)
		return a, err
	}
	kind, val, ok := strings.Cut(to, ":")
	switch {
	case ok && kind == "municipality" && len(val) == 4 && digitsOnly(val):
	case ok && kind == "org" && len(val) == 9 && digitsOnly(val):
	default:
		return api.Account{}, errs.Newf(errs.BadRequest, "to: want an account id, municipality:NNNN or org:NNNNNNNNN")
	}
	key := to + "|" + msgType
	c.mu.Lock()
	e, hit := c.byQuery[key]
	c.mu.Unlock()
	if hit && c.now().Sub(e.at) < c.ttl {
		return e.acct, nil
	}
	acct, err := c.gw.Find(ctx, to, msgType)
	if err != nil {
		return api.Account{}, err
	}
	c.mu.Lock()
	c.byQuery[key] = cached{acct: acct, at: c.now()}
	c.byID[acct.ID] = cached{acct: acct, at: c.now()}
	c.mu.Unlock()
	return acct, nil
}

func digitsOnly(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// certs parses an account's certificates, keeping the pinned ones (when the
// account is pinned).
func (c *catalog) certs(acct api.Account) []*x509.Certificate {
	pins := c.pins[acct.ID]
	var out []*x509.Certificate
	for _, ac := range acct.Certificates {
		certs, err := pki.ParseCertsPEM([]byte(ac.PEM))
		if err != nil || len(certs) == 0 {
			continue
		}
		cert := certs[0]
		if pins != nil && !pins[pki.Fingerprint(cert)] {
			continue
		}
		out = append(out, cert)
	}
	return out
}

// sealCerts are the receiver certificates to encrypt to: pinned (if
// pinned), currently valid, RSA, and chaining to the trust roots now.
func (c *catalog) sealCerts(acct api.Account) []*x509.Certificate {
	now := c.now()
	var out []*x509.Certificate
	for _, cert := range c.certs(acct) {
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			continue
		}
		if _, ok := cert.PublicKey.(*rsa.PublicKey); !ok {
			continue
		}
		if err := pki.VerifyAt(cert, c.roots, nil, now); err != nil {
			continue
		}
		out = append(out, cert)
	}
	return out
}
