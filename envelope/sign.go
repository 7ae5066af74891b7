package envelope

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/digitorus/pkcs7"
)

// maxSignatureDefault bounds VerifySignature when called without Limits.
const maxSignatureDefault = 256 << 10

// signManifest returns a detached CMS SignedData over manifest (SHA-256,
// signer certificate and chain included).
func signManifest(manifest []byte, signer crypto.Signer, cert *x509.Certificate, chain []*x509.Certificate) (p7s []byte, err error) {
	switch pub := signer.Public().(type) {
	case *rsa.PublicKey:
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, fail(ReasonUsage, "sign: ECDSA keys must use P-256")
		}
	default:
		return nil, fail(ReasonUsage, "sign: unsupported key type %T", pub)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pk, ok := signer.Public().(equaler); !ok || !pk.Equal(cert.PublicKey) {
		return nil, fail(ReasonUsage, "sign: the signing key does not match the signer certificate")
	}
	defer func() {
		if r := recover(); r != nil {
			p7s, err = nil, fail(ReasonSignature, "sign: %v", r)
		}
	}()
	sd, err := pkcs7.NewSignedData(manifest)
	if err != nil {
		return nil, fail(ReasonSignature, "sign: %v", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(cert, signer, chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fail(ReasonSignature, "sign: %v", err)
	}
	sd.Detach()
	out, err := sd.Finish()
	if err != nil {
		return nil, fail(ReasonSignature, "sign: %v", err)
	}
	return out, nil
}

// VerifySignature checks that p7s is a valid detached CMS signature over
// manifestBytes by exactly one signer whose certificate chains to roots at
// time at (the time of checking, never the signer's claimed signing time),
// and returns the signer's certificate. Receipts use it to re-verify a stored
// signature later. Size and ASN.1 nesting depth are checked before the
// third-party parser sees the bytes, and a panic in it becomes an error.
func VerifySignature(manifestBytes, p7s []byte, roots *x509.CertPool, at time.Time) (*x509.Certificate, error) {
	l := DefaultLimits()
	return verifySignature(manifestBytes, p7s, roots, at, l)
}

func verifySignature(manifestBytes, p7s []byte, roots *x509.CertPool, at time.Time, l Limits) (cert *x509.Certificate, err error) {
	if roots == nil {
		return nil, fail(ReasonUsage, "verify: no trust roots configured")
	}
	if len(p7s) == 0 {
		return nil, fail(ReasonSignature, "verify: empty signature")
	}
	if len(p7s) > l.MaxSignature {
		return nil, fail(ReasonLimits, "verify: signature of %d bytes exceeds %d", len(p7s), l.MaxSignature)
	}
	if err := berDepth(p7s, l.MaxASN1Depth); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			cert, err = nil, fail(ReasonSignature, "verify: malformed signature (%v)", r)
		}
	}()
	p7, err := pkcs7.Parse(p7s)
	if err != nil {
		return nil, fail(ReasonSignature, "verify: %v", err)
	}
	if len(p7.Content) != 0 {
		return nil, fail(ReasonSignature, "verify: signature is not detached")
	}
	if len(p7.Signers) != 1 {
		return nil, fail(ReasonSignature, "verify: want exactly one signer, have %d", len(p7.Signers))
	}
	if !p7.Signers[0].DigestAlgorithm.Algorithm.Equal(pkcs7.OIDDigestAlgorithmSHA256) {
		return nil, fail(ReasonSignature, "verify: digest algorithm must be SHA-256")
	}
	signer := p7.GetOnlySigner()
	if signer == nil {
		return nil, fail(ReasonSignature, "verify: signer certificate not included")
	}
	p7.Content = manifestBytes
	// The signature itself first (no roots), then the chain at the time of
	// checking, so that a bad signature and an untrusted signer are told apart.
	if err := p7.VerifyWithChainAtTime(nil, at); err != nil {
		return nil, fail(ReasonSignature, "verify: %v", err)
	}
	var inter []*x509.Certificate
	for _, c := range p7.Certificates {
		if c != signer {
			inter = append(inter, c)
		}
	}
	if err := verifyChain(signer, roots, inter, at); err != nil {
		return nil, err
	}
	if err := p7.VerifyWithChainAtTime(roots, at); err != nil {
		return nil, fail(ReasonChain, "verify: %v", err)
	}
	return signer, nil
}

func verifyChain(cert *x509.Certificate, roots *x509.CertPool, inter []*x509.Certificate, at time.Time) error {
	pool := x509.NewCertPool()
	for _, c := range inter {
		pool.AddCert(c)
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: pool,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var ie x509.CertificateInvalidError
		if errors.As(err, &ie) && ie.Reason == x509.Expired {
			return fail(ReasonChain, "signer certificate not valid at %s", at.UTC().Format(time.RFC3339))
		}
		return &Error{Reason: ReasonChain, Err: fmt.Errorf("signer does not chain to a trust root: %w", err)}
	}
	return nil
}
