package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
)

// Streaming AES-GCM.
//
// crypto/cipher's AEAD cannot stream, and a pure-Go GHASH is far too slow for
// gigabyte payloads. So the keystream comes from cipher.NewCTR (AES-NI) with the
// GCM counter inc32(J0), and GHASH is computed chunk by chunk with the
// standard library's accelerated GCM: sealing an empty plaintext with the chunk
// as additional data yields GHASH_H(chunk || lenblock) XOR E_K(J0). We remove
// the mask with our own E_K(J0), remove the length block, and fold the chunks
// together with Horner's rule in GF(2^128) (a couple of pure-Go
// multiplications per chunk). gcm_test.go checks the result against the
// standard library on random sizes.

// gf is an element of GF(2^128) in GCM's bit order: hi holds bytes 0..7.
type gf struct{ hi, lo uint64 }

func gfLoad(b []byte) gf {
	return gf{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:16])}
}

func (x gf) store(b []byte) {
	binary.BigEndian.PutUint64(b[:8], x.hi)
	binary.BigEndian.PutUint64(b[8:16], x.lo)
}

func (x gf) xor(y gf) gf { return gf{x.hi ^ y.hi, x.lo ^ y.lo} }

// gfMul multiplies in GF(2^128) as in NIST SP 800-38D, algorithm 1.
func gfMul(x, y gf) gf {
	var z gf
	v := y
	for i := 0; i < 128; i++ {
		var bit uint64
		if i < 64 {
			bit = (x.hi >> (63 - i)) & 1
		} else {
			bit = (x.lo >> (127 - i)) & 1
		}
		mask := -bit
		z.hi ^= v.hi & mask
		z.lo ^= v.lo & mask
		carry := v.lo & 1
		v.lo = v.lo>>1 | v.hi<<63
		v.hi >>= 1
		v.hi ^= 0xe1 << 56 & -carry
	}
	return z
}

// gfPow returns h^n.
func gfPow(h gf, n uint64) gf {
	r := gf{hi: 1 << 63} // the multiplicative identity in GCM bit order
	for n > 0 {
		if n&1 == 1 {
			r = gfMul(r, h)
		}
		h = gfMul(h, h)
		n >>= 1
	}
	return r
}

// lenBlock is the GHASH length block for aadLen and ctLen bytes.
func lenBlock(aadLen, ctLen uint64) gf { return gf{aadLen * 8, ctLen * 8} }

const (
	gcmNonceSize = 12
	gcmTagSize   = 16
)

// gcmStream encrypts or decrypts one GCM message (no AAD) in chunks. Every
// chunk but the last must be a multiple of 16 bytes.
type gcmStream struct {
	ctr   cipher.Stream
	aead  cipher.AEAD
	nonce []byte
	ekj0  gf
	h     gf
	z     gf // Y*H, Y the GHASH state over the ciphertext so far
	total uint64
	ended bool // a partial chunk was seen: no more chunks allowed
	// cache of H^n and L(len)*H for the common chunk length
	cacheLen int
	cacheHn  gf
	cacheLH  gf
	tagBuf   []byte
}

func newGCMStream(key, nonce []byte) (*gcmStream, error) {
	if len(nonce) != gcmNonceSize {
		return nil, errors.New("gcm nonce must be 12 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	var zero, hb, j0, ek [16]byte
	block.Encrypt(hb[:], zero[:])
	copy(j0[:], nonce)
	j0[15] = 1
	block.Encrypt(ek[:], j0[:])
	ctr0 := j0
	ctr0[15] = 2 // inc32(J0); payloads stay far below 2^32 blocks (MaxEnvelope)
	return &gcmStream{
		ctr:    cipher.NewCTR(block, ctr0[:]),
		aead:   aead,
		nonce:  append([]byte(nil), nonce...),
		ekj0:   gfLoad(ek[:]),
		h:      gfLoad(hb[:]),
		tagBuf: make([]byte, 0, 16),
	}, nil
}

// ghash folds ciphertext chunk c into the running GHASH.
func (g *gcmStream) ghash(c []byte) {
	if len(c) == 0 {
		return
	}
	if g.ended {
		panic("envelope: gcm chunk after a partial chunk")
	}
	if len(c)%16 != 0 {
		g.ended = true
	}
	t := g.aead.Seal(g.tagBuf[:0], g.nonce, nil, c)
	s := gfLoad(t).xor(g.ekj0) // GHASH_H(c || L) = (X_c xor L) * H
	var hn, lh gf
	if len(c) == g.cacheLen {
		hn, lh = g.cacheHn, g.cacheLH
	} else {
		hn = gfPow(g.h, uint64(len(c)+15)/16)
		lh = gfMul(lenBlock(uint64(len(c)), 0), g.h)
		if g.cacheLen == 0 {
			g.cacheLen, g.cacheHn, g.cacheLH = len(c), hn, lh
		}
	}
	// s xor lh = X_c * H; Z_new = Z * H^n xor X_c * H.
	g.z = gfMul(g.z, hn).xor(s).xor(lh)
	g.total += uint64(len(c))
}

// encrypt encrypts p in place and hashes the ciphertext.
func (g *gcmStream) encrypt(p []byte) {
	g.ctr.XORKeyStream(p, p)
	g.ghash(p)
}

// decrypt hashes the ciphertext p and decrypts it in place.
func (g *gcmStream) decrypt(p []byte) {
	g.ghash(p)
	g.ctr.XORKeyStream(p, p)
}

// tag returns the authentication tag over everything processed.
func (g *gcmStream) tag() []byte {
	t := g.z.xor(gfMul(lenBlock(0, g.total), g.h)).xor(g.ekj0)
	out := make([]byte, 16)
	t.store(out)
	return out
}
