package pki

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
)

// ErrDevKey is returned when a key of the committed development PKI
// (certs-dev/, whose private keys are public in the repository) is
// configured and the process was not started with the explicit dev flag.
var ErrDevKey = errors.New("a key of the development PKI (certs-dev/, public in the repository) is refused outside dev mode (start with --dev to allow it)")

// devKeys are the hex SHA-256 of the DER SubjectPublicKeyInfo of every key
// ever committed in certs-dev/. Keep old entries when certs-dev/ is
// regenerated: those keys stay public in the history.
// TestCommittedDevKeysListed fails until a new key is listed here.
var devKeys = [...]string{
	"e661f803a80682118e93e3b4455b683745854528e2cfc978d7321190fbbe188b", // ca
	"d91d7e97458dc1606a67a5e79702cb0060e84d9196dc205f2a0c2463b9f83570", // gateway (TLS)
	"2442fc2e6aa524046e4eb7cbc9f3876b212b9dac265aa09d0bc23c2644fb9277", // gateway-signing
	"728805a0619ccd438edae30d41e0f7ed3ee253ab9188f03b1e50b093edb27bd3", // bergen
	"a4096236da0e1243ecce148fbf75a146ebbad63e733ffc27e6639e27fb44a332", // oslo
	"a10f84cb3132a4b8b4e4883664c08a266583e2e99fc53f0011fe8b7a72725bcd", // trondheim
	"532c91eff7f09b4459c3ac6dda21c7dc153459fb0379bec49771df3048ff1ccb", // portal
	"896a615bb299b6e57bef5b7f5dc602d188158a9534ea2310c3b32911dd76ac07", // register
}

// PublicKeyFingerprint is the hex SHA-256 of pub's DER SubjectPublicKeyInfo
// ("" if pub cannot be encoded).
func PublicKeyFingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// IsDevKey reports whether pub is the public half of a key committed in
// certs-dev/ (whose private half anyone can read).
func IsDevKey(pub crypto.PublicKey) bool {
	fp := PublicKeyFingerprint(pub)
	for _, k := range devKeys {
		if fp == k {
			return true
		}
	}
	return false
}

// CheckDevChain refuses development material in a configured certificate
// chain unless dev is true: ErrDevCA if a certificate is (or was issued by)
// the dev CA, ErrDevKey if one certifies a committed certs-dev/ key.
func CheckDevChain(chain []*x509.Certificate, dev bool) error {
	if dev {
		return nil
	}
	for _, c := range chain {
		if IsDev(c) {
			return ErrDevCA
		}
		if IsDevKey(c.PublicKey) {
			return ErrDevKey
		}
	}
	return nil
}

// CheckDevSigningKey refuses a development signing key unless dev is true:
// ErrDevKey if key is a committed certs-dev/ key, ErrDevCA if the
// certificate `kurer dev-certs` writes next to it (NAME.pem for NAME.key)
// is a dev certificate of that key.
func CheckDevSigningKey(key crypto.Signer, path string, dev bool) error {
	if dev {
		return nil
	}
	if IsDevKey(key.Public()) {
		return ErrDevKey
	}
	if base, ok := strings.CutSuffix(path, ".key"); ok {
		// No certificate there (the usual case in production) is fine.
		if c, err := LoadCert(base + ".pem"); err == nil && IsDev(c) && KeyMatches(key, c) {
			return ErrDevCA
		}
	}
	return nil
}
