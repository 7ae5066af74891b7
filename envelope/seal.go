package envelope

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
)

// Seal writes an envelope to dst: the files and the manifest m in a signed
// ASiC-E container, encrypted to o.Recipients. It fills m.Files, and m.ID and
// m.Created when empty. Seal streams: memory stays bounded whatever the sizes.
func Seal(ctx context.Context, dst io.Writer, m *Manifest, files []File, o SealOptions) error {
	if err := seal(ctx, dst, m, files, o); err != nil {
		return fmt.Errorf("seal envelope: %w", err)
	}
	return nil
}

func seal(ctx context.Context, dst io.Writer, m *Manifest, files []File, o SealOptions) error {
	l := o.Limits.withDefaults()
	rnd := o.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	profile := o.Profile
	if profile == "" {
		profile = ProfileGCM
	}
	switch {
	case profile != ProfileGCM && profile != ProfileFiks:
		return fail(ReasonUsage, "unknown profile %q (want gcm or fiks)", profile)
	case m == nil:
		return fail(ReasonUsage, "no manifest")
	case o.Signer == nil || o.SignerCert == nil:
		return fail(ReasonUsage, "no signing key and certificate")
	case len(o.Recipients) == 0:
		return fail(ReasonUsage, "no recipient certificate")
	case len(o.Recipients) > l.MaxRecipients:
		return fail(ReasonLimits, "more than %d recipients", l.MaxRecipients)
	case m.Type == "" || m.From == "" || m.To == "":
		return fail(ReasonUsage, "manifest needs type, from and to")
	case len(files) == 0:
		return fail(ReasonUsage, "no files to seal")
	case len(files) > l.MaxFiles:
		return fail(ReasonLimits, "%d files exceed the limit of %d", len(files), l.MaxFiles)
	}
	if m.ID == "" {
		id, err := uuid.NewRandomFromReader(rnd)
		if err != nil {
			return fail(ReasonIO, "message id: %v", err)
		}
		m.ID = id.String()
	}
	if m.Created.IsZero() {
		m.Created = now(o.Now).UTC().Truncate(time.Second)
	}
	names := newNameSet()
	clean := make([]string, len(files))
	var total int64
	for i, f := range files {
		n, err := CleanName(f.Name, l.MaxNameLen)
		if err != nil {
			return err
		}
		if reservedName(n) {
			return fail(ReasonNames, "file name %q is reserved for the container", n)
		}
		if err := names.add(n); err != nil {
			return err
		}
		if f.Open == nil || f.Size < 0 {
			return fail(ReasonUsage, "file %q has no content", n)
		}
		total += f.Size
		clean[i] = n
	}
	if total > l.MaxTotal {
		return fail(ReasonLimits, "payload of %d bytes exceeds %d", total, l.MaxTotal)
	}

	cw, err := newCMSWriter(dst, profile, o.Recipients, rnd)
	if err != nil {
		return err
	}
	defer cw.abort()
	zw := zip.NewWriter(cw)
	// mimetype: first, stored, no extra field, no data descriptor. The DOS
	// time is set directly (Modified would add an extended-timestamp extra).
	dosDate, dosTime := dosDateTime(m.Created)
	mw, err := zw.CreateRaw(&zip.FileHeader{
		Name:               mimetypeName,
		Method:             zip.Store,
		ModifiedDate:       dosDate,
		ModifiedTime:       dosTime,
		CRC32:              crc32.ChecksumIEEE([]byte(MimeType)),
		CompressedSize64:   uint64(len(MimeType)),
		UncompressedSize64: uint64(len(MimeType)),
	})
	if err != nil {
		return &Error{Reason: ReasonIO, Err: err}
	}
	if _, err := io.WriteString(mw, MimeType); err != nil {
		return wrapErr(ReasonIO, err)
	}
	entries := make([]FileEntry, len(files))
	buf := make([]byte, 256<<10)
	h := sha256.New()
	for i, f := range files {
		if err := ctx.Err(); err != nil {
			return &Error{Reason: ReasonIO, Err: err}
		}
		method := zip.Store
		if shouldDeflate(f) {
			method = zip.Deflate
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: clean[i], Method: method, Modified: m.Created})
		if err != nil {
			return &Error{Reason: ReasonIO, Err: err}
		}
		n, err := copyFile(ctx, w, f, h, buf)
		if err != nil {
			return err
		}
		if n != f.Size {
			return fail(ReasonIO, "file %q: read %d bytes, expected %d (changed while sealing?)", clean[i], n, f.Size)
		}
		entries[i] = FileEntry{Name: clean[i], Size: n, SHA256: hex.EncodeToString(h.Sum(nil)), MediaType: f.MediaType}
	}
	m.Files = entries
	mb, err := marshalManifest(m)
	if err != nil {
		return err
	}
	if len(mb) > l.MaxManifest {
		return fail(ReasonLimits, "manifest of %d bytes exceeds %d", len(mb), l.MaxManifest)
	}
	p7s, err := signManifest(mb, o.Signer, o.SignerCert, o.SignerChain)
	if err != nil {
		return err
	}
	if len(p7s) > l.MaxSignature {
		return fail(ReasonLimits, "signature of %d bytes exceeds %d", len(p7s), l.MaxSignature)
	}
	for _, e := range []struct {
		name string
		data []byte
	}{{ManifestName, mb}, {SignatureName, p7s}} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Store, Modified: m.Created})
		if err != nil {
			return &Error{Reason: ReasonIO, Err: err}
		}
		if _, err := w.Write(e.data); err != nil {
			return wrapErr(ReasonIO, err)
		}
	}
	if err := zw.Close(); err != nil {
		return wrapErr(ReasonIO, err)
	}
	return cw.Close()
}

// dosDateTime encodes t (UTC) as MS-DOS date and time fields.
func dosDateTime(t time.Time) (date, tm uint16) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	date = uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	tm = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	return date, tm
}

func copyFile(ctx context.Context, w io.Writer, f File, h hash.Hash, buf []byte) (int64, error) {
	rc, err := f.Open()
	if err != nil {
		return 0, fail(ReasonIO, "open %q: %v", f.Name, err)
	}
	defer rc.Close()
	h.Reset()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, &Error{Reason: ReasonIO, Err: err}
		}
		k, rerr := rc.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, err := w.Write(buf[:k]); err != nil {
				return n, wrapErr(ReasonIO, err)
			}
			n += int64(k)
			if n > f.Size {
				return n, fail(ReasonIO, "file %q grew while sealing", f.Name)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fail(ReasonIO, "read %q: %v", f.Name, rerr)
		}
	}
}

// marshalManifest encodes m as compact JSON without HTML escaping.
func marshalManifest(m *Manifest) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fail(ReasonFormat, "manifest: %v", err)
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// ParseManifest decodes and validates manifest bytes: strict JSON (no
// duplicate or unknown keys, no trailing data), required fields present,
// file names safe and NFC, no duplicates, SHA-256 values well formed.
func ParseManifest(data []byte, l Limits) (*Manifest, error) {
	l = l.withDefaults()
	if len(data) > l.MaxManifest {
		return nil, fail(ReasonLimits, "manifest of %d bytes exceeds %d", len(data), l.MaxManifest)
	}
	if err := checkJSONKeys(data, l.MaxASN1Depth); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fail(ReasonFormat, "manifest: %v", err)
	}
	if dec.More() {
		return nil, fail(ReasonFormat, "manifest: trailing data")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fail(ReasonFormat, "manifest: trailing data")
	}
	if m.ID == "" || m.Type == "" || m.From == "" || m.To == "" || m.Created.IsZero() {
		return nil, fail(ReasonFormat, "manifest: id, type, from, to and created are required")
	}
	if len(m.Files) == 0 {
		return nil, fail(ReasonFormat, "manifest: no files")
	}
	if len(m.Files) > l.MaxFiles {
		return nil, fail(ReasonLimits, "manifest: %d files exceed the limit of %d", len(m.Files), l.MaxFiles)
	}
	names := newNameSet()
	var total int64
	for _, f := range m.Files {
		n, err := CleanName(f.Name, l.MaxNameLen)
		if err != nil {
			return nil, err
		}
		if n != f.Name {
			return nil, fail(ReasonNames, "manifest: file name %q is not NFC", f.Name)
		}
		if reservedName(n) {
			return nil, fail(ReasonNames, "manifest: file name %q is reserved", n)
		}
		if err := names.add(n); err != nil {
			return nil, err
		}
		if f.Size < 0 || f.Size > l.MaxTotal-total {
			return nil, fail(ReasonLimits, "manifest: payload exceeds %d bytes", l.MaxTotal)
		}
		total += f.Size
		if len(f.SHA256) != 64 || strings.ToLower(f.SHA256) != f.SHA256 {
			return nil, fail(ReasonFormat, "manifest: bad sha256 for %q", n)
		}
		if _, err := hex.DecodeString(f.SHA256); err != nil {
			return nil, fail(ReasonFormat, "manifest: bad sha256 for %q", n)
		}
	}
	return &m, nil
}

// foldKey maps s to one representative of its case-folding class: each
// rune becomes the smallest rune of its unicode.SimpleFold orbit, so
// foldKey(x) == foldKey(y) exactly when strings.EqualFold(x, y) (which
// also folds the Kelvin sign to k and the long s to s).
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// checkJSONKeys walks the JSON tokens and refuses duplicate object keys (two
// parsers must never read different values from the same signed bytes) and
// nesting deeper than maxDepth. Keys are compared under Unicode case
// folding, as encoding/json matches them to struct fields: with "id" and
// "ID" in one object, Go would read the last one and a case-sensitive
// parser (a case system reading the same manifest) the first.
func checkJSONKeys(data []byte, maxDepth int) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type level struct {
		obj    bool
		keys   map[string]bool
		expect bool // next token in an object is a key
	}
	var stack []*level
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fail(ReasonFormat, "manifest: %v", err)
		}
		var top *level
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if top != nil && top.obj {
					top.expect = true
				}
				if len(stack) >= maxDepth {
					return fail(ReasonLimits, "manifest: nesting deeper than %d", maxDepth)
				}
				stack = append(stack, &level{obj: d == '{', keys: map[string]bool{}, expect: true})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if top != nil && top.obj {
			if top.expect {
				k, _ := tok.(string)
				fk := foldKey(k)
				if top.keys[fk] {
					return fail(ReasonFormat, "manifest: duplicate key %q (keys are compared ignoring case)", k)
				}
				top.keys[fk] = true
				top.expect = false
			} else {
				top.expect = true
			}
		}
	}
}
