package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sort"
	"strconv"
	"testing"
	"time"
)

// goldenRecords are fixed records with the line and hash the encoder and
// hash of before 2026-12 (json.Marshal and a hash.Hash fed field by field)
// produced for them. Neither may ever change: existing logs must verify.
var goldenRecords = []struct {
	rec  Record
	line string
	hash string
}{
	{
		rec: Record{
			Seq:     12345,
			Time:    time.Date(2026, 11, 23, 11, 0, 0, 123456789, time.UTC),
			Actor:   "6f1c2a8e-2b0c-4d8e-9a55-0c1f3c1f9a11",
			Action:  "message.accepted",
			Subject: "0b6c4f5e-8d7a-4c39-8e38-1c1f4a8f2b77",
			Attrs: map[string]string{
				"sender": "acc-1", "code": "<ok&>", "note": "tab\there \"q\" \\ /\u2028\u2029 æøå\x01\x7f\n\r\b\f",
				"a": "", "Z": "upper", "ключ": "значение", "emoji": "😀",
			},
			Prev: "b18fa857b88fa37855132afd6775cf98ec8436ab9f496464d144b1b7b9107e5a",
		},
		line: "{\"seq\":12345,\"time\":\"2026-11-23T11:00:00.123456789Z\",\"actor\":\"6f1c2a8e-2b0c-4d8e-9a55-0c1f3c1f9a11\",\"action\":\"message.accepted\",\"subject\":\"0b6c4f5e-8d7a-4c39-8e38-1c1f4a8f2b77\",\"attrs\":{\"Z\":\"upper\",\"a\":\"\",\"code\":\"\\u003cok\\u0026\\u003e\",\"emoji\":\"😀\",\"note\":\"tab\\there \\\"q\\\" \\\\ /\\u2028\\u2029 æøå\\u0001\x7f\\n\\r\\b\\f\",\"sender\":\"acc-1\",\"ключ\":\"значение\"},\"prev\":\"b18fa857b88fa37855132afd6775cf98ec8436ab9f496464d144b1b7b9107e5a\",\"hash\":\"ea3764a01b6288c20bdb5b286ddb6242a3f6ce0e224cdd513649aff01918b769\"}\n",
		hash: "ea3764a01b6288c20bdb5b286ddb6242a3f6ce0e224cdd513649aff01918b769",
	},
	{
		rec: Record{
			Seq:    1,
			Time:   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
			Actor:  "gateway",
			Action: "audit.repaired",
			Prev:   Genesis,
		},
		line: "{\"seq\":1,\"time\":\"2026-01-02T03:04:05Z\",\"actor\":\"gateway\",\"action\":\"audit.repaired\",\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"hash\":\"79cc28485b4d6358cc536cb127189f7b2d2c38d1e248848ae566d4d70ec4d35f\"}\n",
		hash: "79cc28485b4d6358cc536cb127189f7b2d2c38d1e248848ae566d4d70ec4d35f",
	},
	{
		// Not in UTC (only a hand-made line can be): the line keeps the
		// offset, the hash input uses UTC. Empty attrs are left out.
		rec: Record{
			Seq:    18446744073709551615,
			Time:   time.Date(2026, 6, 30, 23, 59, 59, 500000000, time.FixedZone("CET", 3600)),
			Actor:  "operator:kari",
			Action: "account.added",
			Attrs:  map[string]string{},
			Prev:   "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		},
		line: "{\"seq\":18446744073709551615,\"time\":\"2026-06-30T23:59:59.5+01:00\",\"actor\":\"operator:kari\",\"action\":\"account.added\",\"prev\":\"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\",\"hash\":\"316432782f6bc9b317a180d84c0091f181bd2c56faa1e875c491ccd212021581\"}\n",
		hash: "316432782f6bc9b317a180d84c0091f181bd2c56faa1e875c491ccd212021581",
	},
}

// TestRecordGolden checks every way a record's hash and line are made
// against bytes recorded before the encoder was rewritten.
func TestRecordGolden(t *testing.T) {
	for i, g := range goldenRecords {
		r := g.rec
		if got := r.ComputeHash(); got != g.hash {
			t.Fatalf("record %d: ComputeHash = %s, want %s", i, got, g.hash)
		}
		r.Hash = g.hash
		line, err := lineOf(r)
		if err != nil || string(line) != g.line {
			t.Fatalf("record %d: appendLine =\n%q, %v\nwant\n%q", i, line, err, g.line)
		}
		if line, err := r.marshalLine(); err != nil || string(line) != g.line {
			t.Fatalf("record %d: marshalLine =\n%q, %v", i, line, err)
		}
		parsed, err := parseLine([]byte(g.line[:len(g.line)-1]))
		if err != nil || parsed.Hash != g.hash {
			t.Fatalf("record %d: parseLine = %+v, %v", i, parsed, err)
		}
		if r.Time.Location() != time.UTC {
			continue
		}
		// The writer's path.
		r.Hash = ""
		var s sealer
		ts, err := appendTime(nil, r.Time)
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("previous line\n")
		out, err := s.seal(bytes.Clone(prefix), &r, ts)
		if err != nil || r.Hash != g.hash || string(out) != string(prefix)+g.line {
			t.Fatalf("record %d: seal = %q (hash %s), %v", i, out, r.Hash, err)
		}
	}
}

// oldComputeHash is ComputeHash as first written, the reference for the
// hash definition.
func oldComputeHash(r Record) string {
	h := sha256.New()
	var lenbuf [binary.MaxVarintLen64]byte
	put := func(s string) {
		n := binary.PutUvarint(lenbuf[:], uint64(len(s)))
		h.Write(lenbuf[:n])
		h.Write([]byte(s))
	}
	h.Write([]byte(hashDomain))
	put(strconv.FormatUint(r.Seq, 10))
	put(r.Time.UTC().Format(time.RFC3339Nano))
	put(r.Actor)
	put(r.Action)
	put(r.Subject)
	keys := make([]string, 0, len(r.Attrs))
	for k := range r.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	put(strconv.Itoa(len(keys)))
	for _, k := range keys {
		put(k)
		put(r.Attrs[k])
	}
	put(r.Prev)
	return hex.EncodeToString(h.Sum(nil))
}

// FuzzRecordEncoding checks encode against json.Marshal and ComputeHash
// against the original hash code, for any strings (invalid UTF-8
// included), times and zones.
func FuzzRecordEncoding(f *testing.F) {
	for _, g := range goldenRecords {
		r := g.rec
		f.Add(r.Seq, r.Time.Unix(), int64(r.Time.Nanosecond()), 0, r.Actor, r.Subject, "note", r.Attrs["note"])
	}
	f.Add(uint64(0), int64(-62135596800), int64(0), -3600, "", "\xff\xfe", "\x00", "\u2028<\xc3")
	f.Add(uint64(7), int64(253402300799), int64(999999999), 86399, "a\"b", "\\", "ø", "\x7f\x1f")
	f.Add(uint64(7), int64(253402300800), int64(0), 0, "year 10000", "", "", "")
	f.Fuzz(func(t *testing.T, seq uint64, sec, nsec int64, offset int, actor, subject, k, v string) {
		r := Record{
			Seq:     seq,
			Time:    time.Unix(sec, nsec).In(time.FixedZone("z", offset)),
			Actor:   actor,
			Action:  "fuzz.encoded",
			Subject: subject,
			Attrs:   map[string]string{k: v, k + "2": actor},
			Prev:    Genesis,
		}
		if offset == 0 {
			r.Time = r.Time.UTC()
		}
		r.Hash = oldComputeHash(r)
		if got := r.ComputeHash(); got != r.Hash {
			t.Fatalf("ComputeHash = %s, original code %s", got, r.Hash)
		}
		got, gotErr := lineOf(r)
		want, wantErr := r.marshalLine()
		if (gotErr == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("appendLine =\n%q, %v\njson.Marshal:\n%q, %v", got, gotErr, want, wantErr)
		}
		if wantErr != nil || r.Time.Location() != time.UTC {
			return
		}
		var s sealer
		ts, err := appendTime(nil, r.Time)
		if err != nil {
			t.Fatal(err)
		}
		r.Hash = ""
		if out, err := s.seal(nil, &r, ts); err != nil || !bytes.Equal(out, want) {
			t.Fatalf("seal =\n%q, %v\nwant\n%q", out, err, want)
		}
	})
}

// BenchmarkSeal is the CPU cost of one record's hash and line: "writer"
// as the writer makes them, "json" the way it was done before 2026-12 (ComputeHash's original code
// and json.Marshal).
func BenchmarkSeal(b *testing.B) {
	r := Record{Seq: 123456, Time: time.Now().UTC(), Actor: "gateway", Action: "message.accepted",
		Subject: "0b6c4f5e-8d7a-4c39-8e38-1c1f4a8f2b77", Attrs: benchAttrs, Prev: Genesis}
	b.Run("writer", func(b *testing.B) {
		var (
			s   sealer
			buf []byte
		)
		ts, err := appendTime(nil, r.Time)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if buf, err = s.seal(buf[:0], &r, ts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			r.Hash = oldComputeHash(r)
			if _, err := r.marshalLine(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// lineOf is the writer's line encoding of r (appendTime, appendLine) for
// any time zone, with marshalLine's size limit, to compare against
// marshalLine.
func lineOf(r Record) ([]byte, error) {
	ts, err := appendTime(nil, r.Time)
	if err != nil {
		return nil, err
	}
	b := r.appendLine(nil, sortedAttrs(r.Attrs, nil), ts)
	if len(b) > MaxRecordSize {
		return nil, ErrTooLarge
	}
	return b, nil
}
