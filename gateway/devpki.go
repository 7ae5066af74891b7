package gateway

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/kurer/kurer/internal/pki"
)

// checkDevPKI refuses development material (certs-dev/, `kurer dev-certs`)
// as the gateway's own TLS certificate and notice signing key unless
// cfg.Dev: a TLS chain that is or was issued by the dev CA or certifies a
// committed dev key, and a signing key that is a committed dev key (anyone
// could forge notices with it) or comes with a dev certificate. The trust
// roots are checked by pki.TrustPool.
func checkDevPKI(cfg Config, cert tls.Certificate, signingKey crypto.Signer) error {
	if cfg.Dev {
		return nil
	}
	chain := make([]*x509.Certificate, 0, len(cert.Certificate))
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("tls_cert: %w", err)
		}
		chain = append(chain, c)
	}
	if err := pki.CheckDevChain(chain, false); err != nil {
		return fmt.Errorf("tls_cert: %w", err)
	}
	if err := pki.CheckDevSigningKey(signingKey, cfg.SigningKey, false); err != nil {
		return fmt.Errorf("signing_key: %w", err)
	}
	return nil
}
