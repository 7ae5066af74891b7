package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
)

// The committed records in testdata guard the stored formats: a v1 record
// and a JSON record as written before the binary codec must stay readable.
// Regenerate (with the fuzz seeds) with:
// go test ./gateway/store/bolt -run TestCommittedRecords -update
var update = flag.Bool("update", false, "rewrite gateway/store/bolt/testdata (committed records, fuzz seeds)")

var (
	ct0  = time.Date(2026, 3, 14, 9, 26, 53, 589793238, time.UTC)
	oslo = time.FixedZone("CET", 3600)
)

// sampleMessage is a delivered message with a full history.
func sampleMessage() *record {
	return &record{
		Item: store.Item{
			Kind: api.KindMessage,
			Routing: api.Routing{
				ID: "6f1c2b9e-3d4a-4b5c-8d7e-9f0a1b2c3d4e", From: "0301-barnevern", To: "4601-barnevern",
				Type: "no.bufdir.flytting.v1", Expires: ct0.Add(30 * 24 * time.Hour), Size: 48213,
				Digest:       "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
				Conversation: "sak-2026/117", InReplyTo: "",
			},
			Owner:      "4601-barnevern",
			State:      api.StateDelivered,
			Attempts:   2,
			LeaseUntil: time.Time{},
			History: []api.StateChange{
				{State: api.StateAccepted, At: ct0},
				{State: api.StateLeased, At: ct0.Add(time.Second)},
				{State: api.StateAccepted, At: ct0.Add(61 * time.Second), Reason: "lease_timeout"},
				{State: api.StateLeased, At: ct0.Add(62 * time.Second)},
				{State: api.StateDelivered, At: ct0.Add(63*time.Second + 7)},
			},
			Receipt:    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImdhdGV3YXkifQ." + strings.Repeat("eyJpZCI6IjZmMWMyYjllIn0", 20) + ".c2lnbmF0dXJl",
			AcceptedAt: ct0,
			TerminalAt: ct0.Add(63*time.Second + 7),
		},
		Seq:    4711,
		Inline: true,
	}
}

// sampleNotice is a notice about sampleMessage, leased once.
func sampleNotice() *record {
	m := sampleMessage()
	it := store.NoticeItem(m.Item, store.Notice{ID: "n-1", JWS: "eyJ.notice.sig"}, ct0.Add(time.Minute))
	it.State = api.StateLeased
	it.Attempts = 1
	it.LeaseUntil = ct0.Add(2 * time.Minute)
	return &record{Item: it, Seq: 4712}
}

// normalize returns r as a decode is expected to yield it: times in UTC
// without monotonic reading (zero stays time.Time{}), empty history nil.
func normalize(r *record) *record {
	c := *r
	ut := func(t time.Time) time.Time {
		if t.IsZero() {
			return time.Time{}
		}
		return t.UTC().Round(0)
	}
	c.Routing.Expires = ut(c.Routing.Expires)
	c.LeaseUntil, c.AcceptedAt, c.TerminalAt = ut(c.LeaseUntil), ut(c.AcceptedAt), ut(c.TerminalAt)
	c.History = nil
	for _, h := range r.History {
		h.At = ut(h.At)
		c.History = append(c.History, h)
	}
	return &c
}

func checkUTC(tb testing.TB, r *record) {
	tb.Helper()
	ts := []time.Time{r.Routing.Expires, r.LeaseUntil, r.AcceptedAt, r.TerminalAt}
	for _, h := range r.History {
		ts = append(ts, h.At)
	}
	for i, t := range ts {
		if t.Location() != time.UTC {
			tb.Errorf("time %d (%v) not in UTC", i, t)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	unicode := sampleMessage()
	unicode.Routing.From, unicode.Routing.Conversation = "Bærum kommune", "sak 🧒 #1"
	unicode.History[2].Reason = "avvist: ugyldig vedlegg – æøå\x00\xff"
	local := sampleMessage()
	local.Routing.Expires = ct0.In(oslo)
	local.AcceptedAt = time.Now() // monotonic reading, Local zone
	local.History[0].At = ct0.In(oslo)
	extremes := sampleMessage()
	extremes.Routing.Size, extremes.Attempts, extremes.Seq = math.MaxInt64, math.MinInt32, math.MaxUint64
	extremes.Routing.Expires = time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC) // just after zero
	extremes.LeaseUntil = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	extremes.TerminalAt = time.Unix(-1, 5)
	extremes.Spool = true
	emptyHistory := sampleNotice()
	emptyHistory.History = []api.StateChange{}
	zeroTimes := sampleMessage()
	zeroTimes.History = []api.StateChange{{}}
	zeroTimes.AcceptedAt, zeroTimes.TerminalAt, zeroTimes.Routing.Expires = time.Time{}, time.Time{}, time.Time{}.In(oslo)

	for _, tc := range []struct {
		name string
		r    *record
	}{
		{"message with history", sampleMessage()},
		{"notice", sampleNotice()},
		{"zero record", &record{}},
		{"zero times", zeroTimes},
		{"empty history", emptyHistory},
		{"unicode and invalid utf-8", unicode},
		{"other zones", local},
		{"extremes", extremes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := encodeRecord(tc.r)
			if len(v) != recordSize(tc.r) || cap(v) != len(v) {
				t.Errorf("len %d cap %d, recordSize %d", len(v), cap(v), recordSize(tc.r))
			}
			got, err := decodeRecord(v)
			if err != nil {
				t.Fatal(err)
			}
			if want := normalize(tc.r); !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
			checkUTC(t, got)
			for _, ts := range [][2]time.Time{{got.AcceptedAt, tc.r.AcceptedAt}, {got.Routing.Expires, tc.r.Routing.Expires}} {
				if !ts[0].Equal(ts[1]) || ts[0].IsZero() != ts[1].IsZero() {
					t.Errorf("time %v, want %v", ts[0], ts[1])
				}
			}
			if again := encodeRecord(got); !bytes.Equal(again, v) {
				t.Errorf("re-encoding differs")
			}
			// v2: the fixed part, then the state.
			fixed, state := encodeFixed(tc.r), encodeState(tc.r)
			if len(fixed) != fixedSize(tc.r) || cap(fixed) != len(fixed) || len(state) != stateSize(tc.r) || cap(state) != len(state) {
				t.Errorf("v2 lengths %d/%d, caps %d/%d, sizes %d/%d", len(fixed), len(state), cap(fixed), cap(state), fixedSize(tc.r), stateSize(tc.r))
			}
			got, err = decodeRecord(fixed)
			if tc.r.Seq == 0 {
				if err == nil {
					t.Fatal("v2 record without a sequence number decoded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.split || got.State != "" || got.History != nil || !got.TerminalAt.IsZero() {
				t.Fatalf("v2 fixed part: %+v", got)
			}
			if err := decodeState(state, got); err != nil {
				t.Fatal(err)
			}
			want := normalize(tc.r)
			want.split = true
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("v2 round trip:\n got %+v\nwant %+v", got, want)
			}
			checkUTC(t, got)
		})
	}
}

// legacyJSON is a record as putRec wrote it before the binary codec.
const legacyJSON = `{"Kind":"message","Routing":{"id":"m-1","from":"s","to":"r","type":"t","expires":"2026-04-13T09:26:53.589793238Z","size":12,"digest":"sha-256=:AA==:","conversation":"c","in_reply_to":"x"},"Owner":"r","State":"leased","Attempts":1,"LeaseUntil":"2026-03-14T10:26:53.589793238+01:00","History":[{"state":"accepted","at":"2026-03-14T09:26:53.589793238Z"},{"state":"leased","at":"2026-03-14T09:27:53Z","reason":"r"}],"Receipt":"jws","AcceptedAt":"2026-03-14T09:26:53.589793238Z","TerminalAt":"0001-01-01T00:00:00Z","seq":7,"spool":true}`

func TestDecodeLegacyJSON(t *testing.T) {
	r, err := decodeRecord([]byte(legacyJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := &record{Item: store.Item{Kind: api.KindMessage,
		Routing: api.Routing{ID: "m-1", From: "s", To: "r", Type: "t", Expires: ct0.Add(30 * 24 * time.Hour), Size: 12,
			Digest: "sha-256=:AA==:", Conversation: "c", InReplyTo: "x"},
		Owner: "r", State: api.StateLeased, Attempts: 1, LeaseUntil: ct0, // +01:00 in the JSON
		History: []api.StateChange{{State: api.StateAccepted, At: ct0}, {State: api.StateLeased, At: ct0.Add(time.Minute).Truncate(time.Second), Reason: "r"}},
		Receipt: "jws", AcceptedAt: ct0}, Seq: 7, Spool: true}
	if !reflect.DeepEqual(normalize(r), want) {
		t.Fatalf("legacy:\n got %+v\nwant %+v", r, want)
	}
	// The binary form of a legacy record reads back the same.
	again, err := decodeRecord(encodeRecord(r))
	if err != nil || !reflect.DeepEqual(again, want) {
		t.Fatalf("re-encoded legacy: %+v, %v", again, err)
	}
	// What json.Marshal writes today is still the legacy format.
	v, err := json.Marshal(sampleMessage())
	if err != nil {
		t.Fatal(err)
	}
	if r, err := decodeRecord(v); err != nil || !reflect.DeepEqual(normalize(r), normalize(sampleMessage())) {
		t.Fatalf("json record: %+v, %v", r, err)
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	valid := encodeRecord(sampleMessage())
	// Bad inputs are easiest to build from the zero record: version, flags,
	// then one byte per field (offsets in the layout comment in codec.go:
	// Kind at 2, Routing.Expires at 7, History count at 16, TerminalAt at
	// 19, Seq at 20).
	minimal := encodeRecord(&record{})
	if len(minimal) != 21 {
		t.Fatalf("minimal record is %d bytes, want 21", len(minimal))
	}
	with := func(b []byte, at int, v ...byte) []byte {
		out := append([]byte(nil), b[:at]...)
		out = append(out, v...)
		return append(out, b[at+1:]...)
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{0x03}, valid[1:]...)},
		{"v2 without a sequence number", encodeFixed(&record{})},
		{"v2 with state fields", append([]byte{recordV2}, valid[1:]...)},
		{"version zero", append([]byte{0x00}, valid[1:]...)},
		{"version only", []byte{recordV1}},
		{"unknown flags", with(minimal, 1, 0x04)},
		{"trailing byte", append(append([]byte(nil), valid...), 0)},
		{"string longer than input", with(minimal, 2, 0x7f)},
		{"string length overflows", with(minimal, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"bad uvarint", with(minimal, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"history too long", with(minimal, 16, binary.AppendUvarint(nil, maxHistory+1)...)},
		{"history longer than input", with(minimal, 16, 2)},
		{"nanoseconds out of range", with(minimal, 7, append(binary.AppendUvarint(nil, 1e9+1), 0)...)},
		{"time without seconds", with(minimal[:20], 19, 1)},
		{"broken json", []byte(`{"Kind":`)},
		{"json with wrong types", []byte(`{"Seq":"x"}`)},
		{"text", []byte("hello")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeRecord(tc.in)
			if err == nil {
				t.Fatalf("decoded %+v", r)
			}
			if !strings.HasPrefix(err.Error(), "decode item: ") {
				t.Errorf("error %q lacks the prefix", err)
			}
		})
	}
	fixed := encodeFixed(sampleMessage())
	for _, v := range [][]byte{valid, fixed} {
		for n := range len(v) {
			if _, err := decodeRecord(v[:n]); err == nil {
				t.Errorf("truncated to %d of %d bytes (0x%02x): no error", n, len(v), v[0])
			}
		}
	}
	for _, v := range [][]byte{valid, fixed} {
		for i := 1; i < len(v); i++ { // corruption: error or a clean decode, never a panic
			c := append([]byte(nil), v...)
			c[i] ^= 0xa5
			_, _ = decodeRecord(c)
		}
	}
}

func TestDecodeStateErrors(t *testing.T) {
	valid := encodeState(sampleMessage())
	// The zero state: version, State, Attempts, LeaseUntil, History
	// count, TerminalAt.
	minimal := encodeState(&record{})
	if len(minimal) != 6 {
		t.Fatalf("minimal state is %d bytes, want 6", len(minimal))
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{0x02}, valid[1:]...)},
		{"a whole v1 record", encodeRecord(sampleMessage())[1:]},
		{"trailing byte", append(append([]byte(nil), valid...), 0)},
		{"history too long", append(append([]byte(nil), minimal[:4]...), append(binary.AppendUvarint(nil, maxHistory+1), 0)...)},
		{"history longer than input", append(append([]byte(nil), minimal[:4]...), 2, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r record
			err := decodeState(tc.in, &r)
			if err == nil {
				t.Fatalf("decoded %+v", r)
			}
			if !strings.HasPrefix(err.Error(), "decode state: ") {
				t.Errorf("error %q lacks the prefix", err)
			}
		})
	}
	for n := range len(valid) {
		var r record
		if err := decodeState(valid[:n], &r); err == nil {
			t.Errorf("truncated to %d of %d bytes: no error", n, len(valid))
		}
	}
}

// TestCommittedRecords reads the committed records and checks that today's
// encoders still write the committed v1 and v2 bytes. With -update it
// rewrites them and the fuzz seeds first.
func TestCommittedRecords(t *testing.T) {
	v1, legacy := encodeRecord(sampleMessage()), []byte(legacyJSON)
	v2, state := encodeFixed(sampleMessage()), encodeState(sampleMessage())
	if *update {
		writeTestdata(t, "record-v1.bin", v1)
		writeTestdata(t, "record-legacy.json", legacy)
		writeTestdata(t, "record-v2.bin", v2)
		writeTestdata(t, "state-v1.bin", state)
		for name, data := range map[string][]byte{
			"v1-message": v1, "v1-notice": encodeRecord(sampleNotice()),
			"v1-zero": encodeRecord(&record{}), "legacy-json": legacy,
			"v2-message": v2, "v2-notice": encodeFixed(sampleNotice()),
		} {
			corpusFile(t, "FuzzDecodeRecord", name, data)
		}
		for name, data := range map[string][]byte{
			"message": state, "notice": encodeState(sampleNotice()), "zero": encodeState(&record{}),
		} {
			corpusFile(t, "FuzzDecodeState", name, data)
		}
	}
	for _, f := range []struct {
		name string
		want []byte
	}{{"record-v2.bin", v2}, {"state-v1.bin", state}} {
		got, err := os.ReadFile(filepath.Join("testdata", f.name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.want) {
			t.Errorf("%s: encoding changed; a new layout needs a new version tag", f.name)
		}
	}
	r, err := decodeRecord(v2)
	if err == nil {
		err = decodeState(state, r)
	}
	if want := normalize(sampleMessage()); err != nil || !reflect.DeepEqual(r, &record{Item: want.Item, Seq: want.Seq, Inline: want.Inline, Spool: want.Spool, split: true}) {
		t.Errorf("committed v2 record: %+v, %v", r, err)
	}
	got, err := os.ReadFile(filepath.Join("testdata", "record-v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, v1) {
		t.Errorf("v1 encoding changed; a new layout needs a new version tag")
	}
	if r, err := decodeRecord(got); err != nil || !reflect.DeepEqual(r, normalize(sampleMessage())) {
		t.Errorf("committed v1 record: %+v, %v", r, err)
	}
	got, err = os.ReadFile(filepath.Join("testdata", "record-legacy.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeRecord(got); err != nil {
		t.Errorf("committed legacy record: %v", err)
	}
}

func writeTestdata(tb testing.TB, name string, data []byte) {
	tb.Helper()
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", name), data, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// corpusFile writes one seed in the native fuzzing corpus format.
func corpusFile(tb testing.TB, target, name string, data []byte) {
	tb.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	content := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// FuzzDecodeRecord feeds stored-record bytes (seeds in
// testdata/fuzz/FuzzDecodeRecord) to decodeRecord: it must never panic, and
// a decoded record must survive encode and decode unchanged.
func FuzzDecodeRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		if err != nil {
			if r != nil {
				t.Fatal("record with error")
			}
			return
		}
		if r.split {
			// A v2 fixed part: it re-encodes to the same record.
			v := encodeFixed(r)
			if len(v) != fixedSize(r) {
				t.Fatalf("encoded %d bytes, fixedSize %d", len(v), fixedSize(r))
			}
			again, err := decodeRecord(v)
			if err != nil || !reflect.DeepEqual(again, r) {
				t.Fatalf("v2 round trip: %+v, %v\nwant %+v", again, err, r)
			}
			r.split = false // and as v1, below
		}
		v := encodeRecord(r)
		if len(v) != recordSize(r) {
			t.Fatalf("encoded %d bytes, recordSize %d", len(v), recordSize(r))
		}
		r2, err := decodeRecord(v)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if data[0] == recordV1 && !reflect.DeepEqual(r, r2) {
			t.Fatalf("v1 round trip:\n got %+v\nwant %+v", r2, r)
		}
		if !reflect.DeepEqual(r2, normalize(r)) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", r2, normalize(r))
		}
		r3, err := decodeRecord(encodeRecord(r2))
		if err != nil || !reflect.DeepEqual(r3, r2) {
			t.Fatalf("second round trip: %+v, %v", r3, err)
		}
	})
}

// FuzzDecodeState feeds states values (seeds in testdata/fuzz/
// FuzzDecodeState) to decodeState: it must never panic, and what it reads
// must survive encode and decode unchanged.
func FuzzDecodeState(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r := sampleNotice() // the fixed fields stay as they are
		fixed := encodeFixed(r)
		if err := decodeState(data, r); err != nil {
			if !bytes.Equal(encodeFixed(r), fixed) {
				t.Fatal("a failed decode changed the record")
			}
			return
		}
		if !bytes.Equal(encodeFixed(r), fixed) {
			t.Fatal("decodeState changed the fixed fields")
		}
		v := encodeState(r)
		if len(v) != stateSize(r) {
			t.Fatalf("encoded %d bytes, stateSize %d", len(v), stateSize(r))
		}
		r2 := sampleNotice()
		if err := decodeState(v, r2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(r2, normalize(r)) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", r2, normalize(r))
		}
	})
}

// BenchmarkRecordCodec compares one encode and one decode of a delivered
// message record: JSON (the former format) against the v1 codec.
func BenchmarkRecordCodec(b *testing.B) {
	r := sampleMessage()
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v, err := json.Marshal(r)
			if err != nil {
				b.Fatal(err)
			}
			var out record
			if err := json.Unmarshal(v, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeRecord(encodeRecord(r)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestLegacyRecordInDatabase opens a database holding a whole record, as
// older gateways left them (JSON before 2026-12-01, v1 until 2026-12-02):
// it reads, and its next transition rewrites it as v2, a fixed part and a
// state.
func TestLegacyRecordInDatabase(t *testing.T) {
	for _, format := range []string{"json", "v1"} {
		t.Run(format, func(t *testing.T) { testLegacyRecord(t, format) })
	}
}

// legacyValue is r as an older gateway stored it.
func legacyValue(t *testing.T, r *record, format string) []byte {
	t.Helper()
	if format == "v1" {
		return encodeRecord(r)
	}
	v, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func testLegacyRecord(t *testing.T, format string) {
	b := openT(t)
	ctx := t.Context()
	r := sampleMessage()
	r.State, r.Attempts, r.TerminalAt, r.Inline, r.Spool = api.StateAccepted, 0, time.Time{}, true, false
	r.History = r.History[:1]
	payload := []byte("ciphertext under the message id")
	// A notice about an earlier message of the same sender, as older
	// gateways kept them: whole, among the messages.
	n := sampleNotice()
	n.Routing.ID, n.Owner, n.State, n.Attempts, n.LeaseUntil, n.Seq = "n-legacy", "s", api.StateAccepted, 0, time.Time{}, 9
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bItems).Put([]byte(r.Routing.ID), legacyValue(t, r, format)); err != nil {
			return err
		}
		if err := tx.Bucket(bItems).Put([]byte(n.Routing.ID), legacyValue(t, n, format)); err != nil {
			return err
		}
		if err := tx.Bucket(bReady).Put(readyKey(n.Owner, n.Seq), []byte(n.Routing.ID)); err != nil {
			return err
		}
		// Older gateways kept inline payloads under the message id.
		if err := tx.Bucket(bPayloads).Put([]byte(r.Routing.ID), payload); err != nil {
			return err
		}
		if err := tx.Bucket(bReady).Put(readyKey(r.Owner, r.Seq), []byte(r.Routing.ID)); err != nil {
			return err
		}
		return tx.Bucket(bExpiry).Put(timeKey(r.Routing.Expires, r.Routing.ID), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	it, err := b.Item(ctx, r.Routing.ID)
	if err != nil || !reflect.DeepEqual(it, normalize(r).Item) {
		t.Fatalf("legacy item: %+v, %v", it, err)
	}
	if list, err := b.Messages(ctx, store.MessageFilter{}); err != nil || len(list) != 1 {
		t.Fatalf("messages: %+v, %v", list, err)
	}
	leased, err := b.Lease(ctx, r.Owner, 10, ct0.Add(time.Hour), ct0.Add(2*time.Hour))
	if err != nil || len(leased) != 1 || leased[0].Attempts != 1 || len(leased[0].History) != 2 {
		t.Fatalf("lease: %+v, %v", leased, err)
	}
	leasedN, err := b.Lease(ctx, n.Owner, 10, ct0.Add(time.Hour), ct0.Add(2*time.Hour))
	if err != nil || len(leasedN) != 1 || leasedN[0].Routing.ID != n.Routing.ID || leasedN[0].Receipt != n.Receipt {
		t.Fatalf("lease notice: %+v, %v", leasedN, err)
	}
	_ = b.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bItems).Get([]byte(r.Routing.ID)); len(v) == 0 || v[0] != recordV2 {
			t.Errorf("record not rewritten as v2: %q", v)
		}
		if v := tx.Bucket(bStates).Get(u64(r.Seq)); len(v) == 0 || v[0] != stateV1 {
			t.Errorf("no state under the record's seq: %q", v)
		}
		if v := tx.Bucket(bItems).Get([]byte(n.Routing.ID)); v != nil {
			t.Errorf("legacy notice left among the messages: %q", v)
		}
		if v := tx.Bucket(bNotices).Get([]byte(n.Routing.ID)); len(v) == 0 || v[0] != recordV2 {
			t.Errorf("notice not rewritten as v2: %q", v)
		}
		return nil
	})
	if it, err := b.Item(ctx, r.Routing.ID); err != nil || it.State != api.StateLeased || it.Receipt != r.Receipt || it.Routing != normalize(r).Routing {
		t.Fatalf("rewritten item: %+v, %v", it, err)
	}
	p, err := b.Payload(ctx, r.Routing.ID)
	if err != nil {
		t.Fatalf("legacy payload: %v", err)
	}
	got, _ := io.ReadAll(p)
	p.Close()
	if !bytes.Equal(got, payload) {
		t.Fatalf("legacy payload = %q", got)
	}
	if _, err := b.Ack(ctx, r.Owner, r.Routing.ID, ct0.Add(time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Ack(ctx, n.Owner, n.Routing.ID, ct0.Add(time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	_ = b.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bPayloads).Get([]byte(r.Routing.ID)) != nil {
			t.Error("legacy payload kept after delivery")
		}
		if k := tx.Bucket(bNotices).Stats().KeyN; k != 0 {
			t.Errorf("%d notices left after the ack", k)
		}
		if tx.Bucket(bStates).Get(u64(n.Seq)) != nil {
			t.Error("acked notice's state left")
		}
		return nil
	})
	if _, err := b.Payload(ctx, r.Routing.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("payload after delivery: %v", err)
	}
}

// TestRecordWithoutSeqStaysWhole: a legacy record without a sequence
// number is rewritten as v1, never as a state under 0 that another such
// record would share.
func TestRecordWithoutSeqStaysWhole(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	r := sampleMessage()
	r.State, r.Attempts, r.TerminalAt, r.Inline, r.Seq = api.StateAccepted, 0, time.Time{}, false, 0
	r.History = r.History[:1]
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bItems).Put([]byte(r.Routing.ID), legacyValue(t, r, "json"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Expire(ctx, r.Routing.ID, ct0.Add(time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	_ = b.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bItems).Get([]byte(r.Routing.ID)); len(v) == 0 || v[0] != recordV1 {
			t.Errorf("record without seq written as %q", v)
		}
		if k := tx.Bucket(bStates).Stats().KeyN; k != 0 {
			t.Errorf("%d states written", k)
		}
		return nil
	})
	if it, err := b.Item(ctx, r.Routing.ID); err != nil || it.State != api.StateExpired {
		t.Fatalf("item: %+v, %v", it, err)
	}
}

// TestInlinePayloadBySeq: a new inline payload sits under its sequence
// number, is read by id and is gone once the message is delivered.
func TestInlinePayloadBySeq(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	it := store.Item{Routing: api.Routing{ID: "m-seq", From: "s", To: "r", Type: "t", Expires: ct0.Add(time.Hour), Size: 3, Digest: "d"}, AcceptedAt: ct0}
	stored, err := b.Accept(ctx, it, store.Payload{Inline: []byte("abc")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.db.View(func(tx *bbolt.Tx) error {
		r, err := getRec(tx, "m-seq")
		if err != nil || r.Seq == 0 || tx.Bucket(bInline).Bucket(u64(r.Seq)) == nil || string(getInline(tx, r)) != "abc" {
			t.Errorf("payload not under seq: rec %+v, %v", r, err)
		}
		if tx.Bucket(bPayloads).Get([]byte("m-seq")) != nil {
			t.Error("payload under the id")
		}
		return nil
	})
	readThenDeliver(t, b, stored.Routing.ID, "abc")
}

// readThenDeliver reads message id's payload (want), leases and acks it
// as owner "r", and checks no inline payload is left.
func readThenDeliver(t *testing.T, b *Backend, id, want string) {
	t.Helper()
	ctx := t.Context()
	p, err := b.Payload(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(p)
	p.Close()
	if string(got) != want {
		t.Fatalf("payload = %q, want %q", got, want)
	}
	if _, err := b.Lease(ctx, "r", 1, ct0, ct0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Ack(ctx, "r", id, ct0, nil); err != nil {
		t.Fatal(err)
	}
	_ = b.db.View(func(tx *bbolt.Tx) error {
		if n := tx.Bucket(bInline).Stats().KeyN; n != 0 {
			t.Errorf("%d inline payloads left after delivery", n)
		}
		return nil
	})
}

// TestInlinePayloadFlatUnderSeq opens a database that holds an inline
// payload as a plain value under its sequence number, as gateways of
// 2026-12-01 and 2026-12-02 left it: it reads, and goes on delivery.
func TestInlinePayloadFlatUnderSeq(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	acceptR(t, b, "m-flat")
	// Rewrite it as the older layout: a plain value under the seq.
	err := b.db.Update(ctx, func(tx *bbolt.Tx) error {
		r, err := getRec(tx, "m-flat")
		if err != nil {
			return err
		}
		if err := tx.Bucket(bInline).DeleteBucket(u64(r.Seq)); err != nil {
			return err
		}
		return tx.Bucket(bInline).Put(u64(r.Seq), []byte("old"))
	})
	if err != nil {
		t.Fatal(err)
	}
	readThenDeliver(t, b, "m-flat", "old")
}

// TestInlinePayloadOwnPages: a commit that accepts one more payload
// writes that payload's own pages, not its neighbours' again (bbolt leaves
// of big values hold up to four of them).
func TestInlinePayloadOwnPages(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	page := uint64(b.db.Bolt().Info().PageSize)
	accept := func(i int, size int) uint64 {
		before := b.WriterStats().Bytes
		it := store.Item{Routing: api.Routing{ID: fmt.Sprintf("m-%03d", i), From: "s", To: "r", Type: "t", Expires: ct0.Add(time.Hour), Size: int64(size), Digest: "d"}, AcceptedAt: ct0}
		if _, err := b.Accept(ctx, it, store.Payload{Inline: make([]byte, size)}, nil); err != nil {
			t.Fatal(err)
		}
		return (b.WriterStats().Bytes - before) / page
	}
	for i := range 4 {
		accept(i, 10<<10)
	}
	small := accept(4, 16)
	big := accept(5, 10<<10)
	t.Logf("pages: accept with 16 B %d, with 10 KiB %d", small, big)
	// Old layout: 14 and 10 (the neighbours' payloads written again).
	if small > 4 {
		t.Errorf("a 16-byte accept after four of 10 KiB wrote %d pages, want at most 4", small)
	}
	if big > small+3 {
		t.Errorf("a 10 KiB accept wrote %d pages, one of 16 bytes %d: want at most 3 more (its own)", big, small)
	}
}

// TestStateUpdatesSharePages: a lease of 16 messages among hundreds
// rewrites their small state values, side by side, not their 1 KiB fixed
// parts each on a leaf of its own.
func TestStateUpdatesSharePages(t *testing.T) {
	b := openT(t)
	ctx := t.Context()
	page := uint64(b.db.Bolt().Info().PageSize)
	receipt := strings.Repeat("r", 900) // about a real accepted receipt
	for i := range 256 {
		it := store.Item{Routing: api.Routing{ID: fmt.Sprintf("0190a1b2-0000-7000-8000-%012d", i), From: "s", To: "r",
			Type: "no.bufdir.flytting.v1", Expires: ct0.Add(time.Hour), Size: 10 << 10, Digest: strings.Repeat("d", 64)},
			Receipt: receipt, AcceptedAt: ct0}
		if _, err := b.Accept(ctx, it, store.Payload{Inline: []byte("x")}, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := b.WriterStats().Bytes
	leased, err := b.Lease(ctx, "r", 16, ct0, ct0.Add(time.Minute))
	if err != nil || len(leased) != 16 {
		t.Fatalf("lease: %d, %v", len(leased), err)
	}
	pages := (b.WriterStats().Bytes - before) / page
	t.Logf("lease of 16: %d pages", pages)
	if pages > 8 {
		t.Errorf("a lease of 16 wrote %d pages, want at most 8", pages)
	}
}
