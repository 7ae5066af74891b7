package envelope

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestContainerPreScanBoundsMemory is the audit's probe scaled down:
// central-directory records with names, extra fields and comments of
// 60,000 bytes each. archive/zip would hold all of them in memory before
// any of our checks ran; the pre-scan must refuse them first, allocating
// far less than the container's size.
func TestContainerPreScanBoundsMemory(t *testing.T) {
	const big = 60000
	extra := make([]byte, big)
	binary.LittleEndian.PutUint16(extra, 0xcafe)
	binary.LittleEndian.PutUint16(extra[2:], big-4)
	long := func(i int, withExtra bool) zipEnt {
		e := zipEnt{fh: zip.FileHeader{Name: fmt.Sprintf("%05d", i) + strings.Repeat("n", big-5), Method: zip.Store}}
		if withExtra {
			e.fh.Extra, e.fh.Comment = extra, strings.Repeat("c", big)
		}
		return e
	}
	var probe, padded []zipEnt
	for i := range 100 {
		probe = append(probe, long(i, true))
	}
	// many small records make the directory's size plausible for its
	// count, so that the record walk, not the size bound, has to refuse
	for i := range 9900 {
		padded = append(padded, ent(fmt.Sprintf("f%05d", i), ""))
	}
	for i := range 80 {
		padded = append(padded, long(i, false))
	}
	for _, tc := range []struct {
		name string
		ents []zipEnt
	}{{"names, extras and comments", probe}, {"long names among many small records", padded}} {
		t.Run(tc.name, func(t *testing.T) {
			c := writeZip(t, tc.ents...)
			r := bytes.NewReader(c)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := readContainer(r, int64(len(c)), Limits{}.withDefaults())
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("probe accepted")
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("container %d bytes, allocated %d bytes, refused: %v", len(c), alloc, err)
			if alloc > uint64(len(c))/4 {
				t.Fatalf("allocated %d bytes opening a %d-byte container before refusing it", alloc, len(c))
			}
		})
	}
}

// TestContainerPreScanRules checks each rule of scanZip on containers that
// archive/zip writes consistently (so that only the pre-scan can refuse).
func TestContainerPreScanRules(t *testing.T) {
	le := binary.LittleEndian
	withExtra := func(name string, n int) zipEnt {
		e := make([]byte, n)
		le.PutUint16(e, 0xcafe)
		le.PutUint16(e[2:], uint16(n-4))
		return zipEnt{fh: zip.FileHeader{Name: name, Method: zip.Store, Extra: e}, data: []byte("x")}
	}
	ok := basicEnts()
	eocd := func(c []byte) int { return len(c) - eocdLen }
	for _, tc := range []struct {
		name string
		c    []byte
		l    Limits
		want Reason // "" = accepted
	}{
		{"baseline", writeZip(t, ok...), Limits{}, ""},
		{"extra field at the cap", writeZip(t, withExtra("a.txt", maxZipExtra), ok[1], ok[2]), Limits{}, ""},
		{"extra field above the cap", writeZip(t, withExtra("a.txt", maxZipExtra+1), ok[1], ok[2]), Limits{}, ReasonFormat},
		{"entry comment", writeZip(t, zipEnt{fh: zip.FileHeader{Name: "a.txt", Comment: "k"}}, ok[1], ok[2]), Limits{}, ReasonFormat},
		{"name at MaxNameLen", writeZip(t, ent(strings.Repeat("n", 20), "x"), ok[1], ok[2]), Limits{MaxNameLen: 22}, ""},
		{"directory name at MaxNameLen plus slash", writeZip(t, append([]zipEnt{ent(strings.Repeat("d", 22)+"/", "")}, ok...)...), Limits{MaxNameLen: 22}, ""},
		{"name longer than MaxNameLen", writeZip(t, ent(strings.Repeat("n", 23), "x"), ok[1], ok[2]), Limits{MaxNameLen: 22}, ReasonNames},
		{"more entries than MaxFiles allows", writeZip(t, ent("b", "x"), ok[0], ok[1], ok[2]), Limits{MaxFiles: 1}, ReasonLimits},
		{"zip64 locator without zip64 end record", func() []byte {
			sig := ok[2]
			sig.fh.Extra = append([]byte("PK\x06\x07"), make([]byte, 16)...)
			return writeZip(t, ok[0], ok[1], sig)
		}(), Limits{}, ReasonFormat},
		{"partial zip64 end record", func() []byte {
			c := writeZip(t, ok...)
			put16(c, eocd(c)+8, 0xffff)
			put16(c, eocd(c)+10, 0xffff)
			return c
		}(), Limits{}, ReasonFormat},
		{"central directory size too large", func() []byte {
			c := writeZip(t, ok...)
			put32(c, eocd(c)+12, le.Uint32(c[eocd(c)+12:])+1)
			put32(c, eocd(c)+16, le.Uint32(c[eocd(c)+16:])-1)
			return c
		}(), Limits{}, ReasonFormat},
		{"fewer records than the directory holds", func() []byte {
			c := writeZip(t, ok...)
			put16(c, eocd(c)+8, 3)
			put16(c, eocd(c)+10, 3)
			return c
		}(), Limits{}, ReasonFormat},
		{"trailing byte", append(writeZip(t, ok...), 0), Limits{}, ReasonFormat},
		{"multi-disk", func() []byte {
			c := writeZip(t, ok...)
			put16(c, eocd(c)+4, 1)
			return c
		}(), Limits{}, ReasonFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readContainerBytes(tc.c, tc.l)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantReason(t, err, tc.want)
			// the pre-scan itself refuses, before archive/zip runs
			_, err = scanZip(bytes.NewReader(tc.c), int64(len(tc.c)), tc.l.withDefaults())
			wantReason(t, err, tc.want)
		})
	}
}

// TestContainerPreScanZip64 keeps zip64 working: archive/zip (and so Seal,
// with MaxFiles raised) writes zip64 end records for 65535 entries or more.
func TestContainerPreScanZip64(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container of 65537 entries")
	}
	ents := make([]zipEnt, 0, 0x10000+2)
	for i := range 0x10000 - 1 {
		ents = append(ents, ent(fmt.Sprintf("d/%05d", i), ""))
	}
	ents = append(ents, ent(ManifestName, "{}"), ent(SignatureName, "s"))
	c := writeZip(t, ents...)
	le := binary.LittleEndian
	e := len(c) - eocdLen
	if le.Uint16(c[e+10:]) != 0xffff {
		t.Fatal("archive/zip wrote no zip64 end record")
	}
	l := Limits{MaxFiles: 0x10000}
	got, err := readContainerBytes(c, l)
	if err != nil {
		t.Fatalf("zip64 container refused: %v", err)
	}
	if len(got.order) != 0x10000-1 {
		t.Fatalf("%d payload files", len(got.order))
	}
	loc := e - zip64LocLen
	rec := loc - zip64EOCDLen
	for _, tc := range []struct {
		name string
		edit func(c []byte)
	}{
		{"locator offset", func(c []byte) { c[loc+8]++ }},
		{"zip64 record signature", func(c []byte) { c[rec]++ }},
		{"zip64 record count", func(c []byte) { c[rec+32]-- }},
		{"zip64 directory size", func(c []byte) { c[rec+40]++ }},
		{"too many entries for MaxFiles", func(c []byte) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := append([]byte(nil), c...)
			tc.edit(bad)
			l := l
			if tc.name == "too many entries for MaxFiles" {
				l.MaxFiles = 0x10000 - 2
			}
			if _, err := scanZip(bytes.NewReader(bad), int64(len(bad)), l.withDefaults()); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
