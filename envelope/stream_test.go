package envelope

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// prngReader yields n pseudo-random bytes.
type prngReader struct {
	r *rand.ChaCha8
	n int64
}

func (p *prngReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	p.r.Read(b)
	p.n -= int64(len(b))
	return len(b), nil
}

func (p *prngReader) Close() error { return nil }

// TestStreamingBoundedMemory seals a payload straight into Open through a
// pipe and samples the live heap meanwhile: it must stay far below the
// payload size, in both profiles.
func TestStreamingBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 2x64 MiB; skipped with -short")
	}
	const size = 64 << 20
	const maxHeap = 24 << 20
	f := newFixture(t)
	for _, profile := range []Profile{ProfileGCM, ProfileFiks} {
		t.Run(string(profile), func(t *testing.T) {
			file := File{Name: "stor.bin", Size: size, Open: func() (io.ReadCloser, error) {
				return &prngReader{r: rand.NewChaCha8([32]byte{1}), n: size}, nil
			}}
			want := sha256.New()
			io.Copy(want, &prngReader{r: rand.NewChaCha8([32]byte{1}), n: size})

			runtime.GC()
			sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			metrics.Read(sample)
			base := sample[0].Value.Uint64()
			var peak uint64
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				tick := time.NewTicker(2 * time.Millisecond)
				defer tick.Stop()
				for {
					metrics.Read(sample)
					if v := sample[0].Value.Uint64(); v > peak {
						peak = v
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()

			pr, pw := io.Pipe()
			go func() {
				pw.CloseWithError(Seal(t.Context(), pw, testManifest(), []File{file}, f.sealOpts(profile)))
			}()
			out := filepath.Join(t.TempDir(), "out")
			res, err := Open(t.Context(), pr, out, f.openOpts())
			close(stop)
			<-done
			if err != nil {
				t.Fatal(err)
			}
			if res.Files[0].SHA256 != hex.EncodeToString(want.Sum(nil)) {
				t.Fatal("digest differs")
			}
			st, err := os.Stat(filepath.Join(out, "stor.bin"))
			if err != nil || st.Size() != size {
				t.Fatalf("output: %v", err)
			}
			if grow := int64(peak) - int64(base); grow > maxHeap {
				t.Fatalf("live heap grew by %d MiB while streaming %d MiB", grow>>20, size>>20)
			} else {
				t.Logf("live heap grew by at most %.1f MiB for %d MiB", float64(grow)/(1<<20), size>>20)
			}
		})
	}
}
