package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	mrand "math/rand/v2"
	"testing"
)

func TestGCMStreamMatchesStdlib(t *testing.T) {
	key := make([]byte, 32)
	nonce := make([]byte, 12)
	sizes := []int{0, 1, 15, 16, 17, 4096, 65535, 65536, 65537, 200000}
	r := mrand.New(mrand.NewPCG(1, 2))
	for range 20 {
		sizes = append(sizes, r.IntN(300000))
	}
	for _, n := range sizes {
		rand.Read(key)
		rand.Read(nonce)
		pt := make([]byte, n)
		rand.Read(pt)
		block, _ := aes.NewCipher(key)
		aead, _ := cipher.NewGCM(block)
		want := aead.Seal(nil, nonce, pt, nil)

		for _, chunk := range []int{16, 4096, 65536} {
			g, err := newGCMStream(key, nonce)
			if err != nil {
				t.Fatal(err)
			}
			ct := append([]byte(nil), pt...)
			for off := 0; off < len(ct); off += chunk {
				g.encrypt(ct[off:min(off+chunk, len(ct))])
			}
			got := append(ct, g.tag()...)
			if !bytes.Equal(got, want) {
				t.Fatalf("size %d chunk %d: stream GCM differs from stdlib", n, chunk)
			}
			d, _ := newGCMStream(key, nonce)
			back := append([]byte(nil), ct[:n]...)
			for off := 0; off < len(back); off += chunk {
				d.decrypt(back[off:min(off+chunk, len(back))])
			}
			if !bytes.Equal(back, pt) || !bytes.Equal(d.tag(), want[n:]) {
				t.Fatalf("size %d chunk %d: stream decrypt differs", n, chunk)
			}
		}
	}
}
