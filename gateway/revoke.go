package gateway

import (
	"bytes"
	"context"
	"errors"

	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/errs"
)

// An access token stands for an account as authenticated by one of its
// certificates. It must not outlive either in the catalog: removing an
// account, or a (compromised) certificate, cuts off the tokens bought with
// it at once, not after token_lifetime.
//
// Two mechanisms make that hold. The admin handlers forget the tokens a
// removal covers (revokeAccount, revokeCert), which frees them early. And
// authAccount checks on every request that the token's account still
// exists and still holds the token's certificate (checkTokenHolder), which
// also covers a token issued while a removal was in flight (its assertion
// verified against the catalog just before the change) and a change made
// by another path. The check reads the store's account cache: one map
// lookup and a comparison of at most a few certificates, whatever the size
// of the catalog.

// checkTokenHolder refuses the token ti when its account is gone from the
// catalog or no longer holds the certificate that bought it. The refusal is
// unauthenticated, as for an unknown token: the agent then asks for a new
// token, and its assertion fails cleanly if its certificate is gone.
func (s *Server) checkTokenHolder(ctx context.Context, ti tokenInfo) error {
	a, err := s.st.Account(ctx, ti.account)
	if errors.Is(err, store.ErrNotFound) {
		return errs.New(errs.Unauthenticated, errors.New("access token of a removed account"))
	}
	if err != nil {
		return errs.New(errs.Internal, err)
	}
	for _, der := range a.Certificates {
		if bytes.Equal(der, ti.cert) {
			return nil
		}
	}
	return errs.New(errs.Unauthenticated, errors.New("access token bought with a certificate no longer in the catalog"))
}

// revokeAccount forgets every access token of account; it returns how many.
func (c *tokenCache) revokeAccount(account string) int {
	return c.revoke(func(ti tokenInfo) bool { return ti.account == account })
}

// revokeCert forgets every access token that account bought with the
// certificate der; it returns how many.
func (c *tokenCache) revokeCert(account string, der []byte) int {
	return c.revoke(func(ti tokenInfo) bool { return ti.account == account && bytes.Equal(ti.cert, der) })
}

func (c *tokenCache) revoke(match func(tokenInfo) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, ti := range c.m {
		if match(ti) {
			delete(c.m, k)
			n++
		}
	}
	return n
}
