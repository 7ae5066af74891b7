package envelope

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEnvelopedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
	oidAES256CBC         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES256GCM         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
	oidRSAESOAEP         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidRSAEncryption     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidMGF1              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecified        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
	oidSHA1              = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
)

var oidNames = map[string]string{
	oidData.String():              "data",
	oidEnvelopedData.String():     "envelopedData",
	oidAuthEnvelopedData.String(): "authEnvelopedData",
	oidAES256CBC.String():         "aes256-CBC",
	oidAES256GCM.String():         "aes256-GCM",
	oidRSAESOAEP.String():         "rsaesOAEP",
	oidRSAEncryption.String():     "rsaEncryption",
	oidMGF1.String():              "mgf1",
	oidSHA1.String():              "sha1",
	oidSHA256.String():            "sha256",
}

func oidName(o asn1.ObjectIdentifier) string {
	if n, ok := oidNames[o.String()]; ok {
		return n
	}
	return o.String()
}

const (
	cekSize     = 32
	cbcIVSize   = 16
	chunkSize   = 64 << 10 // plaintext bytes per encrypted OCTET STRING chunk
	maxRecipSet = 1 << 20  // bytes of the RecipientInfos SET we read
	maxAlgID    = 1 << 10
)

var (
	tagCtx0Cons = cbasn1.Tag(0).ContextSpecific().Constructed()
	tagCtx1Cons = cbasn1.Tag(1).ContextSpecific().Constructed()
	tagCtx0Prim = cbasn1.Tag(0).ContextSpecific()
)

// recipient is one KeyTransRecipientInfo.
type recipient struct {
	Version   int64
	Issuer    []byte // raw DER Name, when identified by issuer and serial
	Serial    *big.Int
	SKI       []byte // when identified by subject key identifier
	KeyAlg    asn1.ObjectIdentifier
	OAEPHash  asn1.ObjectIdentifier
	MGFHash   asn1.ObjectIdentifier
	LabelOK   bool // pSourceAlgorithm absent or the empty label
	Encrypted []byte
}

// oaepSHA256 reports whether r uses the only key transport Open accepts.
func (r *recipient) oaepSHA256() bool {
	return r.KeyAlg.Equal(oidRSAESOAEP) && r.OAEPHash.Equal(oidSHA256) && r.MGFHash.Equal(oidSHA256) && r.LabelOK
}

func (r *recipient) matches(c *x509.Certificate) bool {
	if r.SKI != nil {
		return len(c.SubjectKeyId) > 0 && bytes.Equal(r.SKI, c.SubjectKeyId)
	}
	return bytes.Equal(r.Issuer, c.RawIssuer) && r.Serial != nil && r.Serial.Cmp(c.SerialNumber) == 0
}

// addSHA256AlgID writes AlgorithmIdentifier{sha256} with absent parameters (RFC 4055 / OpenSSL).
func addSHA256AlgID(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidSHA256) })
}

// buildRecipient encrypts cek to cert with RSAES-OAEP SHA-256/MGF1-SHA-256.
func buildRecipient(b *cryptobyte.Builder, cert *x509.Certificate, cek []byte, rnd io.Reader) error {
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fail(ReasonUsage, "recipient %q: only RSA certificates can receive envelopes", cert.Subject.CommonName)
	}
	ek, err := rsa.EncryptOAEP(sha256.New(), rnd, pub, cek, nil)
	if err != nil {
		return fail(ReasonUsage, "recipient %q: %v", cert.Subject.CommonName, err)
	}
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // IssuerAndSerialNumber
			b.AddBytes(cert.RawIssuer)
			b.AddASN1BigInt(cert.SerialNumber)
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // keyEncryptionAlgorithm
			b.AddASN1ObjectIdentifier(oidRSAESOAEP)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // RSAES-OAEP-params
				b.AddASN1(tagCtx0Cons, addSHA256AlgID)
				b.AddASN1(tagCtx1Cons, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidMGF1)
						addSHA256AlgID(b)
					})
				})
			})
		})
		b.AddASN1OctetString(ek)
	})
	return nil
}

// parseHashAlgID reads AlgorithmIdentifier{hash OID, NULL or absent}.
func parseHashAlgID(s *cryptobyte.String) (asn1.ObjectIdentifier, bool) {
	var seq cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1ObjectIdentifier(&oid) {
		return nil, false
	}
	if !seq.Empty() && !seq.SkipASN1(cbasn1.NULL) {
		return nil, false
	}
	return oid, seq.Empty()
}

func parseRecipients(set []byte, maxRecipients int) ([]recipient, int, error) {
	s := cryptobyte.String(set)
	var out []recipient
	other := 0
	for !s.Empty() {
		if len(out)+other >= maxRecipients {
			return nil, 0, fail(ReasonLimits, "cms: more than %d recipients", maxRecipients)
		}
		var el cryptobyte.String
		var tag cbasn1.Tag
		if !s.ReadAnyASN1(&el, &tag) {
			return nil, 0, fail(ReasonFormat, "cms: malformed recipient info")
		}
		if tag != cbasn1.SEQUENCE { // kari, kekri, pwri, ori: not for us
			other++
			continue
		}
		var r recipient
		var rid cryptobyte.String
		var ridTag cbasn1.Tag
		if !el.ReadASN1Int64WithTag(&r.Version, cbasn1.INTEGER) || !el.ReadAnyASN1(&rid, &ridTag) {
			return nil, 0, fail(ReasonFormat, "cms: malformed key transport recipient")
		}
		switch ridTag {
		case cbasn1.SEQUENCE:
			if r.Version != 0 {
				return nil, 0, fail(ReasonFormat, "cms: key transport recipient version must be 0")
			}
			var issuer cryptobyte.String
			r.Serial = new(big.Int)
			if !rid.ReadASN1Element(&issuer, cbasn1.SEQUENCE) || !rid.ReadASN1Integer(r.Serial) || !rid.Empty() {
				return nil, 0, fail(ReasonFormat, "cms: malformed issuer and serial number")
			}
			r.Issuer = append([]byte(nil), issuer...)
		case tagCtx0Prim:
			if r.Version != 2 {
				return nil, 0, fail(ReasonFormat, "cms: key transport recipient version must be 2")
			}
			r.SKI = append([]byte(nil), rid...)
		default:
			return nil, 0, fail(ReasonFormat, "cms: unknown recipient identifier")
		}
		var alg cryptobyte.String
		if !el.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&r.KeyAlg) {
			return nil, 0, fail(ReasonFormat, "cms: malformed key encryption algorithm")
		}
		if r.KeyAlg.Equal(oidRSAESOAEP) {
			r.OAEPHash, r.MGFHash, r.LabelOK = oidSHA1, oidSHA1, true
			var params cryptobyte.String
			if !alg.Empty() {
				if !alg.ReadASN1(&params, cbasn1.SEQUENCE) {
					return nil, 0, fail(ReasonFormat, "cms: malformed OAEP parameters")
				}
				var h cryptobyte.String
				var ok bool
				if params.PeekASN1Tag(tagCtx0Cons) {
					if !params.ReadASN1(&h, tagCtx0Cons) {
						return nil, 0, fail(ReasonFormat, "cms: malformed OAEP hash")
					}
					if r.OAEPHash, ok = parseHashAlgID(&h); !ok || !h.Empty() {
						return nil, 0, fail(ReasonFormat, "cms: malformed OAEP hash")
					}
				}
				if params.PeekASN1Tag(tagCtx1Cons) {
					var m, mseq cryptobyte.String
					var moid asn1.ObjectIdentifier
					if !params.ReadASN1(&m, tagCtx1Cons) || !m.ReadASN1(&mseq, cbasn1.SEQUENCE) || !mseq.ReadASN1ObjectIdentifier(&moid) || !moid.Equal(oidMGF1) {
						return nil, 0, fail(ReasonFormat, "cms: malformed OAEP mask generation")
					}
					if r.MGFHash, ok = parseHashAlgID(&mseq); !ok {
						return nil, 0, fail(ReasonFormat, "cms: malformed MGF1 hash")
					}
				}
				if params.PeekASN1Tag(cbasn1.Tag(2).ContextSpecific().Constructed()) {
					var p, pseq, label cryptobyte.String
					var poid asn1.ObjectIdentifier
					if !params.ReadASN1(&p, cbasn1.Tag(2).ContextSpecific().Constructed()) || !p.ReadASN1(&pseq, cbasn1.SEQUENCE) || !pseq.ReadASN1ObjectIdentifier(&poid) {
						return nil, 0, fail(ReasonFormat, "cms: malformed OAEP label")
					}
					r.LabelOK = poid.Equal(oidPSpecified) && (pseq.Empty() || (pseq.ReadASN1(&label, cbasn1.OCTET_STRING) && len(label) == 0))
				}
				if !params.Empty() {
					return nil, 0, fail(ReasonFormat, "cms: trailing OAEP parameters")
				}
			}
		}
		var ek cryptobyte.String
		if !el.ReadASN1(&ek, cbasn1.OCTET_STRING) || !el.Empty() {
			return nil, 0, fail(ReasonFormat, "cms: malformed encrypted key")
		}
		r.Encrypted = append([]byte(nil), ek...)
		out = append(out, r)
	}
	return out, other, nil
}

// contentAlg is the parsed content-encryption AlgorithmIdentifier.
type contentAlg struct {
	OID    asn1.ObjectIdentifier
	IV     []byte // GCM nonce or CBC IV
	ICVLen int    // GCM tag length
}

func parseContentAlg(der []byte) (contentAlg, error) {
	s := cryptobyte.String(der)
	var a contentAlg
	if !s.ReadASN1ObjectIdentifier(&a.OID) {
		return a, fail(ReasonFormat, "cms: malformed content encryption algorithm")
	}
	switch {
	case a.OID.Equal(oidAES256GCM):
		var p, nonce cryptobyte.String
		icv := int64(12)
		if !s.ReadASN1(&p, cbasn1.SEQUENCE) || !p.ReadASN1(&nonce, cbasn1.OCTET_STRING) {
			return a, fail(ReasonFormat, "cms: malformed GCM parameters")
		}
		if !p.Empty() && !p.ReadASN1Int64WithTag(&icv, cbasn1.INTEGER) {
			return a, fail(ReasonFormat, "cms: malformed GCM parameters")
		}
		a.IV, a.ICVLen = append([]byte(nil), nonce...), int(icv)
		if !p.Empty() {
			return a, fail(ReasonFormat, "cms: trailing GCM parameters")
		}
	case a.OID.Equal(oidAES256CBC):
		var iv cryptobyte.String
		if !s.ReadASN1(&iv, cbasn1.OCTET_STRING) {
			return a, fail(ReasonFormat, "cms: malformed CBC parameters")
		}
		a.IV = append([]byte(nil), iv...)
	default:
		return a, fail(ReasonFormat, "cms: unsupported content encryption %s", oidName(a.OID))
	}
	if !s.Empty() {
		return a, fail(ReasonFormat, "cms: trailing algorithm parameters")
	}
	return a, nil
}

// cmsHead is everything before the encrypted content.
type cmsHead struct {
	ContentType asn1.ObjectIdentifier
	Version     int64
	Recipients  []recipient
	Other       int // recipient infos of other kinds (ignored)
	InnerType   asn1.ObjectIdentifier
	Alg         contentAlg
}

func (h *cmsHead) auth() bool { return h.ContentType.Equal(oidAuthEnvelopedData) }

// cmsReader parses an envelope from a stream.
type cmsReader struct {
	b      berReader
	frames []frame // ContentInfo, [0], (Auth)EnvelopedData, EncryptedContentInfo
	head   cmsHead
	// content state
	cframe  frame
	cprim   bool  // encryptedContent is primitive
	remain  int64 // bytes left in the current chunk
	cdone   bool
	ctTotal int64
	limits  Limits
}

func newCMSReader(r io.Reader, l Limits) *cmsReader {
	return &cmsReader{b: berReader{r: bufio.NewReaderSize(r, 256<<10), max: l.MaxEnvelope}, limits: l}
}

func (c *cmsReader) readOID(what string) (asn1.ObjectIdentifier, error) {
	h, err := c.b.expect(0x06, what)
	if err != nil {
		return nil, err
	}
	der, err := c.b.content(h, 64, what)
	if err != nil {
		return nil, err
	}
	s := cryptobyte.String(append(append([]byte{0x06}, appendLength(nil, len(der))...), der...))
	var oid asn1.ObjectIdentifier
	if !s.ReadASN1ObjectIdentifier(&oid) {
		return nil, fail(ReasonFormat, "cms: %s: malformed object identifier", what)
	}
	return oid, nil
}

// readHead parses up to the start of the encrypted content.
func (c *cmsReader) readHead() (*cmsHead, error) {
	h, err := c.b.expect(0x30, "ContentInfo")
	if err != nil {
		return nil, err
	}
	c.frames = append(c.frames, c.b.enter(h))
	if c.head.ContentType, err = c.readOID("content type"); err != nil {
		return nil, err
	}
	if !c.head.ContentType.Equal(oidAuthEnvelopedData) && !c.head.ContentType.Equal(oidEnvelopedData) {
		return nil, fail(ReasonFormat, "cms: content type %s is not an enveloped message", oidName(c.head.ContentType))
	}
	if h, err = c.b.expect(0xa0, "content"); err != nil {
		return nil, err
	}
	c.frames = append(c.frames, c.b.enter(h))
	if h, err = c.b.expect(0x30, "enveloped data"); err != nil {
		return nil, err
	}
	c.frames = append(c.frames, c.b.enter(h))
	if h, err = c.b.expect(0x02, "version"); err != nil {
		return nil, err
	}
	v, err := c.b.content(h, 1, "version")
	if err != nil || len(v) != 1 {
		return nil, wrapErr(ReasonFormat, errors.New("cms: bad version"))
	}
	c.head.Version = int64(v[0])
	if h, err = c.b.header(); err != nil {
		return nil, err
	}
	if h.tag == 0xa0 {
		return nil, fail(ReasonFormat, "cms: originatorInfo is not supported")
	}
	if h.tag != 0x31 {
		return nil, fail(ReasonFormat, "cms: recipient infos: unexpected tag 0x%02x", h.tag)
	}
	set, err := c.b.content(h, maxRecipSet, "recipient infos")
	if err != nil {
		return nil, err
	}
	if err := berDepth(set, c.limits.MaxASN1Depth); err != nil {
		return nil, err
	}
	if c.head.Recipients, c.head.Other, err = parseRecipients(set, c.limits.MaxRecipients); err != nil {
		return nil, err
	}
	if len(c.head.Recipients) == 0 {
		return nil, fail(ReasonDecrypt, "cms: no key transport recipient")
	}
	// RFC 5083: AuthEnvelopedData is version 0. RFC 5652 6.1: EnvelopedData
	// is 0 when every recipient is a version-0 key transport recipient, else 2.
	wantVersion := int64(0)
	if !c.head.auth() {
		for _, r := range c.head.Recipients {
			if r.Version != 0 {
				wantVersion = 2
			}
		}
		if c.head.Other > 0 {
			wantVersion = 2
		}
	}
	if c.head.Version != wantVersion {
		return nil, fail(ReasonFormat, "cms: version %d, want %d", c.head.Version, wantVersion)
	}
	if h, err = c.b.expect(0x30, "encrypted content info"); err != nil {
		return nil, err
	}
	c.frames = append(c.frames, c.b.enter(h))
	if c.head.InnerType, err = c.readOID("inner content type"); err != nil {
		return nil, err
	}
	if !c.head.InnerType.Equal(oidData) {
		return nil, fail(ReasonFormat, "cms: inner content type %s, want data", oidName(c.head.InnerType))
	}
	if h, err = c.b.expect(0x30, "content encryption algorithm"); err != nil {
		return nil, err
	}
	alg, err := c.b.content(h, maxAlgID, "content encryption algorithm")
	if err != nil {
		return nil, err
	}
	if err := berDepth(alg, c.limits.MaxASN1Depth); err != nil {
		return nil, err
	}
	if c.head.Alg, err = parseContentAlg(alg); err != nil {
		return nil, err
	}
	if c.head.auth() != c.head.Alg.OID.Equal(oidAES256GCM) {
		return nil, fail(ReasonFormat, "cms: %s with %s is not a supported profile", oidName(c.head.ContentType), oidName(c.head.Alg.OID))
	}
	if h, err = c.b.header(); err != nil {
		return nil, err
	}
	switch h.tag {
	case 0x80: // [0] IMPLICIT OCTET STRING, primitive, definite
		c.cprim = true
		c.remain = h.length
	case 0xa0:
		c.cframe = c.b.enter(h)
	default:
		return nil, fail(ReasonFormat, "cms: encrypted content missing")
	}
	return &c.head, nil
}

// Read returns encrypted content bytes, io.EOF after the last one.
func (c *cmsReader) Read(p []byte) (int, error) {
	for c.remain == 0 {
		if c.cdone || c.cprim {
			c.cdone = true
			return 0, io.EOF
		}
		more, err := c.b.more(c.cframe)
		if err != nil {
			return 0, err
		}
		if !more {
			c.cdone = true
			return 0, io.EOF
		}
		h, err := c.b.header()
		if err != nil {
			return 0, err
		}
		if h.tag != 0x04 {
			return 0, fail(ReasonFormat, "cms: encrypted content chunk: unexpected tag 0x%02x", h.tag)
		}
		c.remain = h.length
	}
	if int64(len(p)) > c.remain {
		p = p[:c.remain]
	}
	n, err := c.b.r.Read(p)
	c.b.pos += int64(n)
	c.remain -= int64(n)
	c.ctTotal += int64(n)
	if err == io.EOF {
		if c.remain > 0 {
			return n, fail(ReasonFormat, "cms: %v", errTrunc)
		}
		err = nil
	} else if err != nil {
		err = &Error{Reason: ReasonIO, Err: err}
	}
	return n, err
}

// readTail parses what follows the content: the mac for AuthEnvelopedData,
// the closing of every open element, and checks nothing follows.
func (c *cmsReader) readTail() (mac []byte, err error) {
	if !c.cdone {
		if _, err := io.Copy(io.Discard, c); err != nil {
			return nil, err
		}
	}
	eci := c.frames[3]
	if err := c.b.leave(eci, "encrypted content info"); err != nil {
		return nil, err
	}
	env := c.frames[2]
	if c.head.auth() {
		h, err := c.b.header()
		if err != nil {
			return nil, err
		}
		if h.tag == 0xa1 {
			return nil, fail(ReasonFormat, "cms: authenticated attributes are not supported")
		}
		if h.tag != 0x04 {
			return nil, fail(ReasonFormat, "cms: mac: unexpected tag 0x%02x", h.tag)
		}
		if mac, err = c.b.content(h, 64, "mac"); err != nil {
			return nil, err
		}
	}
	if err := c.b.leave(env, "enveloped data"); err != nil {
		return nil, err
	}
	if err := c.b.leave(c.frames[1], "content"); err != nil {
		return nil, err
	}
	if err := c.b.leave(c.frames[0], "content info"); err != nil {
		return nil, err
	}
	return mac, c.b.atEOF()
}

// unwrapCEK finds the content-encryption key with any of keys. If a
// recipient matches a key but unwrapping fails, a random key is returned in
// its place (implicit rejection, RFC 3218): the failure then surfaces as a
// tag, padding or format failure, indistinguishable from a tampered content.
func unwrapCEK(head *cmsHead, keys []Key, rnd io.Reader) ([]byte, error) {
	matched := false
	for i := range head.Recipients {
		r := &head.Recipients[i]
		for _, k := range keys {
			if k.Cert == nil || k.Decrypter == nil || !r.matches(k.Cert) {
				continue
			}
			matched = true
			if !r.oaepSHA256() {
				continue
			}
			cek, err := k.Decrypter.Decrypt(rnd, r.Encrypted, &rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA256})
			if err == nil && len(cek) == cekSize {
				return cek, nil
			}
		}
	}
	if !matched {
		return nil, fail(ReasonDecrypt, "no configured key matches a recipient of the envelope")
	}
	cek := make([]byte, cekSize)
	if _, err := io.ReadFull(rnd, cek); err != nil {
		return nil, &Error{Reason: ReasonIO, Err: err}
	}
	return cek, nil
}

// errDecrypt is the one error for every content decryption failure.
var errDecrypt = errors.New("the content could not be decrypted")

// contentCipher processes chunks: every chunk but the last is a multiple of
// 16 bytes. final returns the trailing output (CBC padding handling).
type contentCipher interface {
	process(p []byte) []byte
	final(p []byte) ([]byte, error)
}

type gcmEnc struct{ g *gcmStream }

func (e gcmEnc) process(p []byte) []byte { e.g.encrypt(p); return p }
func (e gcmEnc) final(p []byte) ([]byte, error) {
	e.g.encrypt(p)
	return p, nil
}

type gcmDec struct{ g *gcmStream }

func (d gcmDec) process(p []byte) []byte { d.g.decrypt(p); return p }
func (d gcmDec) final(p []byte) ([]byte, error) {
	d.g.decrypt(p)
	return p, nil
}

type cbcEnc struct{ m cipher.BlockMode }

func (e cbcEnc) process(p []byte) []byte { e.m.CryptBlocks(p, p); return p }

// final pads (PKCS#7) and encrypts; p must have 16 bytes of spare capacity.
func (e cbcEnc) final(p []byte) ([]byte, error) {
	pad := 16 - len(p)%16
	for range pad {
		p = append(p, byte(pad))
	}
	e.m.CryptBlocks(p, p)
	return p, nil
}

// cbcDec holds the last plaintext block back until the end, where the
// padding is checked in constant time. It never panics on crafted input:
// lengths are checked before CryptBlocks.
type cbcDec struct {
	m       cipher.BlockMode
	pending [16]byte
	has     bool
	out     []byte
}

func (d *cbcDec) process(p []byte) []byte {
	// p is a multiple of 16 (callers guarantee it, final checks it)
	if len(p) == 0 {
		return nil
	}
	d.m.CryptBlocks(p, p)
	d.out = d.out[:0]
	if d.has {
		d.out = append(d.out, d.pending[:]...)
	}
	d.out = append(d.out, p[:len(p)-16]...)
	copy(d.pending[:], p[len(p)-16:])
	d.has = true
	return d.out
}

func (d *cbcDec) final(p []byte) ([]byte, error) {
	if len(p)%16 != 0 {
		return nil, fail(ReasonDecrypt, "%v", errDecrypt)
	}
	out := d.process(p)
	if !d.has {
		return nil, fail(ReasonDecrypt, "%v", errDecrypt)
	}
	pad := int(d.pending[15])
	good := subtle.ConstantTimeLessOrEq(1, pad) & subtle.ConstantTimeLessOrEq(pad, 16)
	for i := 0; i < 16; i++ {
		// bytes at index >= 16-pad must equal pad
		in := subtle.ConstantTimeLessOrEq(16-pad, i)
		eq := subtle.ConstantTimeByteEq(d.pending[i], byte(pad))
		good &= eq | (1 ^ in)
	}
	if good != 1 {
		return nil, fail(ReasonDecrypt, "%v", errDecrypt)
	}
	return append(out, d.pending[:16-pad]...), nil
}

// newDecrypter returns the content cipher for head with cek, and for GCM the
// stream whose tag must be checked at the end.
func newDecrypter(head *cmsHead, cek []byte) (contentCipher, *gcmStream, error) {
	if head.auth() {
		if len(head.Alg.IV) != gcmNonceSize || head.Alg.ICVLen != gcmTagSize {
			return nil, nil, fail(ReasonFormat, "cms: GCM nonce must be 12 bytes and the tag 16 bytes")
		}
		g, err := newGCMStream(cek, head.Alg.IV)
		if err != nil {
			return nil, nil, fail(ReasonDecrypt, "%v", errDecrypt)
		}
		return gcmDec{g}, g, nil
	}
	if len(head.Alg.IV) != cbcIVSize {
		return nil, nil, fail(ReasonFormat, "cms: CBC IV must be 16 bytes")
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, nil, fail(ReasonDecrypt, "%v", errDecrypt)
	}
	return &cbcDec{m: cipher.NewCBCDecrypter(block, head.Alg.IV), out: make([]byte, 0, chunkSize+16)}, nil, nil
}

// decryptContent streams the encrypted content of c through cc into w.
func decryptContent(ctx context.Context, c *cmsReader, cc contentCipher, w io.Writer) error {
	buf := make([]byte, chunkSize, chunkSize+16)
	for {
		if err := ctx.Err(); err != nil {
			return &Error{Reason: ReasonIO, Err: err}
		}
		n, err := io.ReadFull(c, buf)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			out, ferr := cc.final(buf[:n])
			if ferr != nil {
				return ferr
			}
			if _, err := w.Write(out); err != nil {
				return &Error{Reason: ReasonIO, Err: err}
			}
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(cc.process(buf[:n])); err != nil {
			return &Error{Reason: ReasonIO, Err: err}
		}
	}
}

// cmsWriter encrypts what is written to it into a streamed CMS envelope.
// Write only copies into a batch buffer; a second goroutine encrypts full
// batches and writes them out, so hashing and ZIP work on the caller's side
// overlap with encryption and the write system calls.
type cmsWriter struct {
	w    *bufio.Writer
	cc   contentCipher
	g    *gcmStream
	buf  []byte
	hdr  []byte
	done bool
	// pipeline
	work chan []byte
	free chan []byte
	wg   sync.WaitGroup
	mu   sync.Mutex
	werr error
}

const (
	batchSize  = 4 * chunkSize // bytes handed to the encrypting goroutine at once
	batchCount = 4             // batches in flight: memory is batchCount*batchSize
)

// newCMSWriter writes the envelope header to dst and returns the writer for
// the plaintext (the container).
func newCMSWriter(dst io.Writer, profile Profile, recipients []*x509.Certificate, rnd io.Reader) (*cmsWriter, error) {
	cek := make([]byte, cekSize)
	if _, err := io.ReadFull(rnd, cek); err != nil {
		return nil, fail(ReasonIO, "random: %v", err)
	}
	var iv []byte
	if profile == ProfileGCM {
		iv = make([]byte, gcmNonceSize)
	} else {
		iv = make([]byte, cbcIVSize)
	}
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return nil, fail(ReasonIO, "random: %v", err)
	}
	var rb cryptobyte.Builder
	var rerr error
	for _, r := range recipients {
		if err := buildRecipient(&rb, r, cek, rnd); err != nil {
			rerr = err
			break
		}
	}
	if rerr != nil {
		return nil, rerr
	}
	ris, err := rb.Bytes()
	if err != nil {
		return nil, fail(ReasonFormat, "encode recipients: %v", err)
	}
	var alg cryptobyte.Builder
	alg.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if profile == ProfileGCM {
			b.AddASN1ObjectIdentifier(oidAES256GCM)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(iv)
				b.AddASN1Int64(gcmTagSize)
			})
		} else {
			b.AddASN1ObjectIdentifier(oidAES256CBC)
			b.AddASN1OctetString(iv)
		}
	})
	algDER, err := alg.Bytes()
	if err != nil {
		return nil, fail(ReasonFormat, "encode algorithm: %v", err)
	}
	ct := oidAuthEnvelopedData
	if profile == ProfileFiks {
		ct = oidEnvelopedData
	}
	var hb cryptobyte.Builder
	hb.AddASN1ObjectIdentifier(ct)
	ctDER, _ := hb.Bytes()
	var ib cryptobyte.Builder
	ib.AddASN1ObjectIdentifier(oidData)
	dataDER, _ := ib.Bytes()

	h := []byte{0x30, 0x80}
	h = append(h, ctDER...)
	h = append(h, 0xa0, 0x80, 0x30, 0x80)
	h = append(h, 0x02, 0x01, 0x00) // version 0 (issuerAndSerialNumber recipients)
	h = append(h, 0x31)
	h = appendLength(h, len(ris))
	h = append(h, ris...)
	h = append(h, 0x30, 0x80)
	h = append(h, dataDER...)
	h = append(h, algDER...)
	h = append(h, 0xa0, 0x80)

	cw := &cmsWriter{w: bufio.NewWriterSize(dst, 256<<10), hdr: make([]byte, 0, 8),
		work: make(chan []byte, batchCount), free: make(chan []byte, batchCount)}
	for range batchCount - 1 {
		cw.free <- make([]byte, 0, batchSize+16)
	}
	cw.buf = make([]byte, 0, batchSize+16)
	if profile == ProfileGCM {
		g, err := newGCMStream(cek, iv)
		if err != nil {
			return nil, fail(ReasonFormat, "gcm: %v", err)
		}
		cw.cc, cw.g = gcmEnc{g}, g
	} else {
		block, err := aes.NewCipher(cek)
		if err != nil {
			return nil, fail(ReasonFormat, "aes: %v", err)
		}
		cw.cc = cbcEnc{cipher.NewCBCEncrypter(block, iv)}
	}
	if _, err := cw.w.Write(h); err != nil {
		return nil, &Error{Reason: ReasonIO, Err: err}
	}
	cw.wg.Add(1)
	go cw.run()
	return cw, nil
}

func (cw *cmsWriter) chunk(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	cw.hdr = appendLength(append(cw.hdr[:0], 0x04), len(p))
	if _, err := cw.w.Write(cw.hdr); err != nil {
		return err
	}
	_, err := cw.w.Write(p)
	return err
}

func (cw *cmsWriter) err() error {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	return cw.werr
}

// run encrypts and writes batches until work is closed. After an error it
// keeps draining so that Write never blocks.
func (cw *cmsWriter) run() {
	defer cw.wg.Done()
	for b := range cw.work {
		if cw.err() == nil {
			for off := 0; off < len(b); off += chunkSize {
				if err := cw.chunk(cw.cc.process(b[off : off+chunkSize])); err != nil {
					cw.mu.Lock()
					cw.werr = &Error{Reason: ReasonIO, Err: err}
					cw.mu.Unlock()
					break
				}
			}
		}
		cw.free <- b[:0]
	}
}

func (cw *cmsWriter) Write(p []byte) (int, error) {
	if err := cw.err(); err != nil {
		return 0, err
	}
	if cw.done {
		return 0, errors.New("cms writer closed")
	}
	n := 0
	for len(p) > 0 {
		k := copy(cw.buf[len(cw.buf):batchSize], p)
		cw.buf = cw.buf[:len(cw.buf)+k]
		p = p[k:]
		n += k
		if len(cw.buf) == batchSize {
			cw.work <- cw.buf
			cw.buf = <-cw.free
			if err := cw.err(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// abort stops the encrypting goroutine without finishing the envelope.
func (cw *cmsWriter) abort() {
	if !cw.done {
		cw.done = true
		close(cw.work)
		cw.wg.Wait()
	}
}

// Close writes the last chunk, the mac and the end of every element.
func (cw *cmsWriter) Close() error {
	if cw.done {
		return cw.err()
	}
	cw.done = true
	close(cw.work)
	cw.wg.Wait()
	if err := cw.err(); err != nil {
		return err
	}
	// the tail: full chunks, then the final (partial or padded) one
	b := cw.buf
	for len(b) > chunkSize {
		if err := cw.chunk(cw.cc.process(b[:chunkSize])); err != nil {
			return &Error{Reason: ReasonIO, Err: err}
		}
		b = b[chunkSize:]
	}
	if len(b) == chunkSize {
		if err := cw.chunk(cw.cc.process(b)); err != nil {
			return &Error{Reason: ReasonIO, Err: err}
		}
		b = b[chunkSize:]
	}
	out, err := cw.cc.final(b)
	if err != nil {
		return err
	}
	if err := cw.chunk(out); err != nil {
		return &Error{Reason: ReasonIO, Err: err}
	}
	tail := []byte{0, 0, 0, 0} // end of [0] content, end of EncryptedContentInfo
	if cw.g != nil {
		tail = append(tail, 0x04, gcmTagSize)
		tail = append(tail, cw.g.tag()...)
	}
	tail = append(tail, 0, 0, 0, 0, 0, 0)
	if _, err := cw.w.Write(tail); err != nil {
		return &Error{Reason: ReasonIO, Err: err}
	}
	if err := cw.w.Flush(); err != nil {
		return &Error{Reason: ReasonIO, Err: fmt.Errorf("write envelope: %w", err)}
	}
	return nil
}
