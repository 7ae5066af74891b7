package envelope

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sealedContainer seals files with Seal and decrypts the envelope again,
// returning the plain ZIP exactly as Seal wrote it.
func sealedContainer(tb testing.TB, f *fixture, files []File) []byte {
	tb.Helper()
	env, _ := sealT(tb, f, ProfileGCM, files)
	cr := newCMSReader(bytes.NewReader(env), Limits{}.withDefaults())
	head, err := cr.readHead()
	if err != nil {
		tb.Fatal(err)
	}
	cek, err := unwrapCEK(head, f.openOpts().Keys, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	cc, _, err := newDecrypter(head, cek)
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if err := decryptContent(context.Background(), cr, cc, &buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// zipRec locates one entry of a (non-zip64) container.
type zipRec struct {
	name  string
	cd    int // central-directory record
	local int // local header
	data  int // entry data
	csize int
	flags uint16
}

// zipRecords walks the central directory of c by hand.
func zipRecords(tb testing.TB, c []byte) (recs []zipRec, cdOff int) {
	tb.Helper()
	le := binary.LittleEndian
	e := c[len(c)-eocdLen:]
	if le.Uint32(e) != 0x06054b50 {
		tb.Fatal("no end record at the end")
	}
	count, cdOff := int(le.Uint16(e[10:])), int(le.Uint32(e[16:]))
	p := cdOff
	for range count {
		h := c[p:]
		nl, el, cl := int(le.Uint16(h[28:])), int(le.Uint16(h[30:])), int(le.Uint16(h[32:]))
		local := int(le.Uint32(h[42:]))
		lh := c[local:]
		recs = append(recs, zipRec{
			name:  string(h[46 : 46+nl]),
			cd:    p,
			local: local,
			data:  local + localHdrLen + int(le.Uint16(lh[26:])) + int(le.Uint16(lh[28:])),
			csize: int(le.Uint32(h[20:])),
			flags: le.Uint16(h[8:]),
		})
		p += cdHdrLen + nl + el + cl
	}
	return recs, cdOff
}

func findRec(tb testing.TB, recs []zipRec, name string) zipRec {
	tb.Helper()
	for _, r := range recs {
		if r.name == name {
			return r
		}
	}
	tb.Fatalf("no entry %q", name)
	return zipRec{}
}

func put16(b []byte, off int, v uint16) { binary.LittleEndian.PutUint16(b[off:], v) }
func put32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }

// zipEnt is one entry for writeZip: a header as archive/zip takes it
// (Name, Method, Extra, Comment, ...) and its content.
type zipEnt struct {
	fh   zip.FileHeader
	data []byte
}

// writeZip writes mimetype (as Seal does) followed by ents with
// archive/zip, which keeps local headers and central records consistent.
func writeZip(tb testing.TB, ents ...zipEnt) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: mimetypeName, Method: zip.Store, CRC32: crc32.ChecksumIEEE([]byte(MimeType)),
		CompressedSize64: uint64(len(MimeType)), UncompressedSize64: uint64(len(MimeType))})
	if err != nil {
		tb.Fatal(err)
	}
	w.Write([]byte(MimeType))
	for _, e := range ents {
		fh := e.fh
		w, err := zw.CreateHeader(&fh)
		if err != nil {
			tb.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func ent(name string, data string) zipEnt {
	return zipEnt{fh: zip.FileHeader{Name: name, Method: zip.Store}, data: []byte(data)}
}

// basicEnts are a payload file, a manifest and a signature; readContainer
// does not parse the last two, so any bytes do.
func basicEnts() []zipEnt {
	return []zipEnt{ent("a.txt", "innhold"), ent(ManifestName, "{}"), ent(SignatureName, "sig")}
}

func readContainerBytes(c []byte, l Limits) (*container, error) {
	return readContainer(bytes.NewReader(c), int64(len(c)), l.withDefaults())
}

func wantReason(tb testing.TB, err error, want Reason) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("accepted, want a %q failure", want)
	}
	if got := ReasonOf(err); got != want {
		tb.Fatalf("reason %q (%v), want %q", got, err, want)
	}
}

// TestLayoutChecksRefuse covers checks of checkLayout and readContainer one
// by one: each case edits a container Seal wrote so that only that check
// can notice.
func TestLayoutChecksRefuse(t *testing.T) {
	f := newFixture(t)
	base := sealedContainer(t, f, []File{memFile("a.txt", []byte("innhold i klartekst")), memFile("b.xml", bytes.Repeat([]byte("<x>data</x>"), 300))})
	if _, err := readContainerBytes(base, Limits{}); err != nil {
		t.Fatalf("sealed container refused: %v", err)
	}
	recs, cdOff := zipRecords(t, base)
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		edit func(c []byte) []byte
		want Reason
	}{
		{"data descriptor size differs", func(c []byte) []byte {
			r := findRec(t, recs, ManifestName)
			if r.flags&0x8 == 0 {
				t.Fatal("sealer wrote no data descriptor")
			}
			dd := r.data + r.csize
			if le.Uint32(c[dd:]) != 0x08074b50 {
				t.Fatal("no data descriptor after the manifest")
			}
			put32(c, dd+12, le.Uint32(c[dd+12:])+1) // uncompressed size
			return c
		}, ReasonFormat},
		{"data descriptor without signature", func(c []byte) []byte {
			r := findRec(t, recs, "a.txt")
			put32(c, r.data+r.csize, 0x08074b51)
			return c
		}, ReasonFormat},
		{"gap before the central directory", func(c []byte) []byte {
			out := append(append(append([]byte(nil), c[:cdOff]...), 0, 0, 0, 0), c[cdOff:]...)
			e := len(out) - eocdLen
			put32(out, e+16, le.Uint32(out[e+16:])+4) // central directory offset
			return out
		}, ReasonFormat},
		{"end record comment", func(c []byte) []byte {
			put16(c, len(c)-2, 1)
			return append(c, 'x')
		}, ReasonFormat},
		{"local header name differs", func(c []byte) []byte {
			r := findRec(t, recs, "a.txt")
			c[r.local+localHdrLen] = 'A'
			return c
		}, ReasonFormat},
		{"local header method differs", func(c []byte) []byte {
			r := findRec(t, recs, "a.txt")
			put16(c, r.local+8, zip.Deflate)
			return c
		}, ReasonFormat},
		{"encrypted entry", func(c []byte) []byte {
			r := findRec(t, recs, "a.txt")
			put16(c, r.cd+8, le.Uint16(c[r.cd+8:])|1)
			put16(c, r.local+6, le.Uint16(c[r.local+6:])|1)
			return c
		}, ReasonFormat},
		{"compression method bzip2", func(c []byte) []byte {
			r := findRec(t, recs, "a.txt")
			put16(c, r.cd+10, 12)
			put16(c, r.local+8, 12)
			return c
		}, ReasonFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.edit(append([]byte(nil), base...))
			_, err := readContainerBytes(c, Limits{})
			wantReason(t, err, tc.want)
		})
	}
}

func TestContainerCapsRefuse(t *testing.T) {
	f := newFixture(t)
	base := sealedContainer(t, f, []File{memFile("a.txt", []byte("innhold"))})
	for _, tc := range []struct {
		name string
		c    []byte
		l    Limits
		want Reason
	}{
		{"manifest above MaxManifest", base, Limits{MaxManifest: 64}, ReasonLimits},
		{"signature above MaxSignature", base, Limits{MaxSignature: 64}, ReasonLimits},
		{"duplicate manifest", writeZip(t, ent("a.txt", "x"), ent(ManifestName, "{}"), ent(ManifestName, "{}"), ent(SignatureName, "s")), Limits{}, ReasonNames},
		{"duplicate signature", writeZip(t, ent("a.txt", "x"), ent(ManifestName, "{}"), ent(SignatureName, "s"), ent(SignatureName, "s")), Limits{}, ReasonNames},
		// no manifest, so the entry count (5) stays within MaxFiles+3 and
		// only the payload count can refuse before "manifest missing"
		{"more payload files than MaxFiles", writeZip(t, ent("a", "1"), ent("b", "2"), ent("c", "3"), ent(SignatureName, "s")), Limits{MaxFiles: 2}, ReasonLimits},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readContainerBytes(tc.c, tc.l)
			wantReason(t, err, tc.want)
		})
	}
	t.Run("sealed container within the caps", func(t *testing.T) {
		if _, err := readContainerBytes(base, Limits{MaxManifest: 4096, MaxSignature: 8192, MaxFiles: 1}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestManifestCapsRefuse(t *testing.T) {
	m := testManifest()
	m.ID, m.Created = "5d0f1f4e-8a53-4d8e-b1a5-0c2d3e4f5a6b", time.Now().UTC().Truncate(time.Second)
	sum := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name  string
		files []string
		l     Limits
		want  Reason
	}{
		{"duplicate name", []string{"a.txt", "b.txt", "a.txt"}, Limits{}, ReasonNames},
		{"duplicate name differing in case", []string{"a.txt", "A.TXT"}, Limits{}, ReasonNames},
		{"more files than MaxFiles", []string{"a", "b", "c"}, Limits{MaxFiles: 2}, ReasonLimits},
		{"above MaxManifest", []string{"a"}, Limits{MaxManifest: 100}, ReasonLimits},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.Files = nil
			for _, n := range tc.files {
				m.Files = append(m.Files, FileEntry{Name: n, Size: 1, SHA256: sum})
			}
			mb, err := marshalManifest(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseManifest(mb, Limits{}); tc.want != ReasonNames && err != nil {
				t.Fatalf("manifest refused without the limit: %v", err)
			}
			_, err = ParseManifest(mb, tc.l)
			wantReason(t, err, tc.want)
		})
	}
}

// endlessOpener yields up to n zero bytes and counts what was read.
type endlessOpener struct{ n, read int64 }

func (o *endlessOpener) Open() (io.ReadCloser, error) {
	return io.NopCloser(&countingReader{r: io.LimitReader(zeroReader{}, o.n), n: &o.read}), nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n *int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	*c.n += int64(k)
	return k, err
}

// TestExtractStopsAtManifestSize: an entry longer than the manifest says is
// refused as soon as it passes that size, not after writing it all out.
func TestExtractStopsAtManifestSize(t *testing.T) {
	zf := &endlessOpener{n: 64 << 20}
	buf := make([]byte, 4096)
	dst := filepath.Join(t.TempDir(), "x")
	fe := FileEntry{Name: "x", Size: 10, SHA256: strings.Repeat("00", 32)}
	err := extract(t.Context(), zf, fe, dst, buf, false)
	wantReason(t, err, ReasonDigest)
	if zf.read > fe.Size+int64(len(buf)) {
		t.Fatalf("read %d bytes of an entry of declared size %d", zf.read, fe.Size)
	}
	if st, err := os.Stat(dst); err == nil && st.Size() > fe.Size {
		t.Fatalf("wrote %d bytes of an entry of declared size %d", st.Size(), fe.Size)
	}
}
