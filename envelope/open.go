package envelope

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Open decrypts, verifies and extracts the envelope read from src into
// outDir, which must be absent or empty. The checks run in this order and
// all must pass before any payload file appears in outDir: decrypt (with any
// of o.Keys) to a spool file, GCM tag, signature chain to o.Roots at o.Now(),
// signer among o.SenderCerts (when given), every file's size and SHA-256, and
// the manifest's binding to o.Expect. Files are written to a temporary
// directory beside outDir and renamed into place at the end; on failure
// nothing is left in outDir. Every failure is an *Error.
func Open(ctx context.Context, src io.Reader, outDir string, o OpenOptions) (*Opened, error) {
	res, err := openEnvelope(ctx, src, outDir, o)
	if err != nil {
		return nil, fmt.Errorf("open envelope: %w", err)
	}
	return res, nil
}

func openEnvelope(ctx context.Context, src io.Reader, outDir string, o OpenOptions) (*Opened, error) {
	l := o.Limits.withDefaults()
	if len(o.Keys) == 0 {
		return nil, fail(ReasonUsage, "no decryption key configured")
	}
	if o.Roots == nil {
		return nil, fail(ReasonUsage, "no trust roots configured")
	}
	if outDir == "" {
		return nil, fail(ReasonUsage, "no output directory")
	}
	outDir, err := filepath.Abs(outDir)
	if err != nil {
		return nil, fail(ReasonUsage, "output directory: %v", err)
	}
	existed, err := checkOutDir(outDir)
	if err != nil {
		return nil, err
	}
	parent := filepath.Dir(outDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fail(ReasonIO, "output directory: %v", err)
	}
	spoolDir := o.TempDir
	if spoolDir == "" {
		spoolDir = parent
	}

	// 1. decrypt to a spool file
	spool, err := os.CreateTemp(spoolDir, ".kurer-spool-*")
	if err != nil {
		return nil, fail(ReasonIO, "spool: %v", err)
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()
	cr := newCMSReader(src, l)
	head, err := cr.readHead()
	if err != nil {
		return nil, err
	}
	cek, err := unwrapCEK(head, o.Keys, rand.Reader)
	if err != nil {
		return nil, err
	}
	cc, g, err := newDecrypter(head, cek)
	if err != nil {
		return nil, err
	}
	sw := &countWriter{w: spool}
	bw := bufio.NewWriterSize(sw, 256<<10)
	if err := decryptContent(ctx, cr, cc, bw); err != nil {
		return nil, err
	}
	mac, err := cr.readTail()
	if err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, fail(ReasonIO, "spool: %v", err)
	}
	// 2. tag
	if g != nil {
		if subtle.ConstantTimeCompare(mac, g.tag()) != 1 {
			return nil, fail(ReasonTag, "authentication tag mismatch")
		}
	}
	sr := &spoolReader{r: spool}
	if o.spoolHook != nil {
		sr.r = o.spoolHook(spool)
	}
	c, err := readContainer(sr, sw.n, l)
	if err != nil {
		if ferr := sr.failed(); ferr != nil {
			return nil, ferr
		}
		if g == nil && (ReasonOf(err) == ReasonFormat) {
			// CBC has no tag: a corrupted container reads as a decrypt failure.
			return nil, fail(ReasonDecrypt, "%v", errDecrypt)
		}
		return nil, err
	}
	// 3. signature and chain at the time of checking
	at := now(o.Now)
	signer, err := verifySignature(c.manifest, c.signature, o.Roots, at, l)
	if err != nil {
		return nil, err
	}
	// 4. signer is the sender
	if len(o.SenderCerts) > 0 {
		ok := false
		for _, sc := range o.SenderCerts {
			if sc != nil && sc.Equal(signer) {
				ok = true
				break
			}
		}
		if !ok {
			return nil, fail(ReasonSigner, "signer %q is not a registered certificate of the sender", signer.Subject.CommonName)
		}
	}
	m, err := ParseManifest(c.manifest, l)
	if err != nil {
		return nil, err
	}
	// 5. every file's size and digest
	if len(m.Files) != len(c.payload) {
		return nil, fail(ReasonDigest, "container holds %d files, manifest lists %d", len(c.payload), len(m.Files))
	}
	tmp, err := os.MkdirTemp(parent, ".kurer-open-*")
	if err != nil {
		return nil, fail(ReasonIO, "output: %v", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	buf := make([]byte, 256<<10)
	for _, fe := range m.Files {
		zf, ok := c.payload[fe.Name]
		if !ok {
			return nil, fail(ReasonDigest, "file %q listed in the manifest is missing", fe.Name)
		}
		if zf.UncompressedSize64 != uint64(fe.Size) {
			return nil, fail(ReasonDigest, "file %q: size differs from the manifest", fe.Name)
		}
		if err := extract(ctx, zf, fe, filepath.Join(tmp, filepath.FromSlash(fe.Name)), buf, o.Sync); err != nil {
			if ferr := sr.failed(); ferr != nil {
				return nil, ferr
			}
			return nil, err
		}
	}
	// 6. binding to the routing header
	if err := checkBinding(m, o.Expect); err != nil {
		return nil, err
	}
	if o.Sync {
		if err := syncTree(tmp); err != nil {
			return nil, err
		}
	}
	if existed {
		if err := os.Remove(outDir); err != nil {
			return nil, fail(ReasonIO, "output directory: %v", err)
		}
	}
	if err := os.Rename(tmp, outDir); err != nil {
		return nil, fail(ReasonIO, "output directory: %v", err)
	}
	done = true
	if o.Sync {
		if err := syncDir(parent); err != nil {
			return nil, err
		}
	}
	return &Opened{
		Manifest:      m,
		ManifestBytes: c.manifest,
		Signature:     c.signature,
		SignerCert:    signer,
		Dir:           outDir,
		Files:         m.Files,
	}, nil
}

// spoolReader reads the decrypted spool for the container checks and
// archive/zip, and keeps the first read error other than io.EOF. Those
// checks turn a short or failed read into a verdict on the envelope
// (format, digest; archive/zip formats some causes into text, dropping
// them from the chain). A spool that this host's disk fails to read back
// is no fault of the envelope: failed says so (ReasonIO with the
// system's error), and Open reports it in place of the verdict, so the
// receiving agent retries instead of refusing a good envelope. One
// goroutine reads it.
type spoolReader struct {
	r   io.ReaderAt
	err error
}

func (s *spoolReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.r.ReadAt(p, off)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// failed is the spool's first read failure as an *Error (ReasonIO), or nil.
func (s *spoolReader) failed() error {
	if s.err == nil {
		return nil
	}
	return &Error{Reason: ReasonIO, Err: fmt.Errorf("read spool: %w", s.err)}
}

// checkOutDir accepts an absent or empty directory.
func checkOutDir(dir string) (existed bool, err error) {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fail(ReasonUsage, "output directory: %v", err)
	}
	if !st.IsDir() {
		return false, fail(ReasonUsage, "output %s is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fail(ReasonUsage, "output directory: %v", err)
	}
	if len(ents) > 0 {
		return false, fail(ReasonUsage, "output directory %s is not empty", dir)
	}
	return true, nil
}

func extract(ctx context.Context, zf interface {
	Open() (io.ReadCloser, error)
}, fe FileEntry, dst string, buf []byte, sync bool) error {
	rc, err := zf.Open()
	if err != nil {
		return fail(ReasonDigest, "file %q: %v", fe.Name, err)
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fail(ReasonIO, "output: %v", err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(ReasonIO, "output: %v", err)
	}
	defer out.Close()
	h := sha256.New()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return &Error{Reason: ReasonIO, Err: err}
		}
		k, rerr := rc.Read(buf)
		if k > 0 {
			n += int64(k)
			if n > fe.Size {
				return fail(ReasonDigest, "file %q: larger than the manifest says", fe.Name)
			}
			h.Write(buf[:k])
			if _, err := out.Write(buf[:k]); err != nil {
				return fail(ReasonIO, "output: %v", err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fail(ReasonDigest, "file %q: %v", fe.Name, rerr)
		}
	}
	if n != fe.Size {
		return fail(ReasonDigest, "file %q: size differs from the manifest", fe.Name)
	}
	if hex.EncodeToString(h.Sum(nil)) != fe.SHA256 {
		return fail(ReasonDigest, "file %q: SHA-256 differs from the manifest", fe.Name)
	}
	if sync {
		if err := out.Sync(); err != nil {
			return fail(ReasonIO, "output: %v", err)
		}
	}
	if err := out.Close(); err != nil {
		return fail(ReasonIO, "output: %v", err)
	}
	return nil
}

func checkBinding(m *Manifest, b Binding) error {
	for _, c := range []struct{ what, want, got string }{
		{"id", b.ID, m.ID}, {"type", b.Type, m.Type}, {"from", b.From, m.From}, {"to", b.To, m.To},
	} {
		if c.want != "" && c.want != c.got {
			return fail(ReasonBinding, "manifest %s does not match the routing header", c.what)
		}
	}
	return nil
}

func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fail(ReasonIO, "sync: %v", err)
		}
		if d.IsDir() {
			return syncDir(p)
		}
		return nil
	})
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fail(ReasonIO, "sync: %v", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fail(ReasonIO, "sync: %v", err)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
