package envelope

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"syscall"
	"testing"
)

// faultyReaderAt fails every read that touches the 512 bytes at bad with
// EIO, as a bad sector under the spool file would.
type faultyReaderAt struct {
	r   io.ReaderAt
	bad int64
}

func (f faultyReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < f.bad+512 && off+int64(len(p)) > f.bad {
		return 0, &pathErr{err: syscall.EIO}
	}
	return f.r.ReadAt(p, off)
}

// pathErr stands in for *fs.PathError without a path (a spool name says
// nothing, but the test should not depend on it).
type pathErr struct{ err error }

func (e *pathErr) Error() string { return "read spool: " + e.err.Error() }
func (e *pathErr) Unwrap() error { return e.err }

// TestSpoolReadFaultIsIO: when this host fails to read the decrypted spool
// back (EIO) anywhere in it (the central directory, the manifest, a
// payload file), Open reports an I/O failure with the system's error, not
// a format, digest or (CBC) decrypt verdict on a good envelope, which the
// agent would answer with a signed rejection. The same envelope opens
// once the disk reads again.
func TestSpoolReadFaultIsIO(t *testing.T) {
	f := newFixture(t)
	files := []File{memFile("rapport.xml", []byte(hex.EncodeToString(randBytes(60_000)))), memFile("vedlegg.bin", randBytes(300_000))}
	for _, profile := range []Profile{ProfileGCM, ProfileFiks} {
		env, _ := sealT(t, f, profile, files)
		size := int64(len(sealedContainer(t, f, files))) // about the spool's size
		for _, at := range []struct {
			name string
			off  int64
		}{
			{"mimetype", 0},
			{"first payload", 2000},
			{"second payload", size / 2},
			{"central directory", size - 300},
			{"end record", size - 30},
		} {
			t.Run(string(profile)+"/"+at.name, func(t *testing.T) {
				o := f.openOpts()
				o.spoolHook = func(r io.ReaderAt) io.ReaderAt { return faultyReaderAt{r: r, bad: at.off} }
				out := filepath.Join(t.TempDir(), "out")
				_, err := Open(t.Context(), bytes.NewReader(env), out, o)
				if ReasonOf(err) != ReasonIO || !errors.Is(err, syscall.EIO) {
					t.Fatalf("open with the spool failing at %d: %v (reason %q), want reason io with EIO", at.off, err, ReasonOf(err))
				}
				assertEmpty(t, out)
				if _, err := Open(t.Context(), bytes.NewReader(env), out, f.openOpts()); err != nil {
					t.Fatalf("the same envelope, read back: %v", err)
				}
			})
		}
	}
}
