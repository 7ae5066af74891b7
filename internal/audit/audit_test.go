package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixedClock returns a clock that advances one millisecond per call.
func fixedClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 23, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

func openLog(tb testing.TB, path string, o Options) *Log {
	tb.Helper()
	if o.Now == nil {
		o.Now = fixedClock()
	}
	l, err := Open(path, o)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// writeLog creates a log of n records at path and closes it.
func writeLog(tb testing.TB, path string, n int, o Options) []Record {
	tb.Helper()
	l := openLog(tb, path, o)
	var recs []Record
	for i := range n {
		r, err := l.Append(context.Background(), "gateway", "message.accepted",
			fmt.Sprintf("msg-%d", i), map[string]string{"sender": "acc-1", "size": fmt.Sprint(i * 100)})
		if err != nil {
			tb.Fatalf("Append: %v", err)
		}
		recs = append(recs, r)
	}
	if err := l.Close(); err != nil {
		tb.Fatalf("Close: %v", err)
	}
	return recs
}

func lines(tb testing.TB, path string) [][]byte {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return bytes.SplitAfter(data, []byte("\n"))
}

func TestAppendVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	recs := writeLog(t, path, 10, Options{})
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		if r.Time.Location() != time.UTC {
			t.Fatalf("record time not in UTC: %v", r.Time)
		}
		if i == 0 && r.Prev != Genesis {
			t.Fatalf("first prev = %q", r.Prev)
		}
		if i > 0 && r.Prev != recs[i-1].Hash {
			t.Fatalf("record %d prev does not chain", i+1)
		}
		if r.Hash != r.ComputeHash() {
			t.Fatalf("record %d hash wrong", i+1)
		}
	}
	rep, err := Verify(path)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Records != 10 || rep.LastHash != recs[9].Hash || rep.FirstBad != 0 || rep.Problem != "" {
		t.Fatalf("report = %+v", rep)
	}
	h, ok, err := readHead(path)
	if err != nil || !ok || h.Seq != 10 || h.Hash != recs[9].Hash {
		t.Fatalf("head = %+v ok=%v err=%v", h, ok, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("log mode %v, want 0600", info.Mode().Perm())
	}
}

func TestEmptyLogVerifies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	if seq, hash := l.Last(); seq != 0 || hash != Genesis {
		t.Fatalf("Last = %d %s", seq, hash)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(path)
	if err != nil || rep.Records != 0 || rep.LastHash != Genesis {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestReopenContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	first := writeLog(t, path, 3, Options{})
	l := openLog(t, path, Options{})
	if seq, hash := l.Last(); seq != 3 || hash != first[2].Hash {
		t.Fatalf("Last after reopen = %d %s", seq, hash)
	}
	r, err := l.Append(t.Context(), "operator:kari", "account.added", "acc-9", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 4 || r.Prev != first[2].Hash {
		t.Fatalf("record after reopen: seq %d prev %s", r.Seq, r.Prev)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(path)
	if err != nil || rep.Records != 4 || rep.LastHash != r.Hash {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// TestTamper changes a closed six-record log and checks what Verify says.
func TestTamper(t *testing.T) {
	tests := []struct {
		name       string
		noHead     bool // a log kept without head file (Options.NoHead, VerifyOptions.NoHead)
		deleteHead bool // remove the head file of a log that keeps one
		mutate     func(ls [][]byte) [][]byte
		want       error // nil: verifies
		firstBad   uint64
		records    uint64
	}{
		{
			name: "edit a byte in a middle record",
			mutate: func(ls [][]byte) [][]byte {
				ls[2] = bytes.Replace(ls[2], []byte("msg-2"), []byte("msg-7"), 1)
				return ls
			},
			want: ErrTampered, firstBad: 3, records: 2,
		},
		{
			name: "edit without changing the meaning (whitespace)",
			mutate: func(ls [][]byte) [][]byte {
				ls[3] = bytes.Replace(ls[3], []byte(`"actor":`), []byte(`"actor": `), 1)
				return ls
			},
			want: ErrTampered, firstBad: 4, records: 3,
		},
		{
			name: "edit the time zone notation of the same instant",
			mutate: func(ls [][]byte) [][]byte {
				ls[1] = bytes.Replace(ls[1], []byte(`Z"`), []byte(`+00:00"`), 1)
				return ls
			},
			want: ErrTampered, firstBad: 2, records: 1,
		},
		{
			name: "edit a record and recompute its own hash",
			mutate: func(ls [][]byte) [][]byte {
				ls[2] = rehash(t, ls[2], func(r *Record) { r.Attrs["sender"] = "acc-evil" })
				return ls
			},
			want: ErrTampered, firstBad: 4, records: 3,
		},
		{
			name: "remove a middle record",
			mutate: func(ls [][]byte) [][]byte {
				return append(ls[:2:2], ls[3:]...)
			},
			want: ErrTampered, firstBad: 3, records: 2,
		},
		{
			name: "swap two records",
			mutate: func(ls [][]byte) [][]byte {
				ls[2], ls[3] = ls[3], ls[2]
				return ls
			},
			want: ErrTampered, firstBad: 3, records: 2,
		},
		{
			name: "insert a copy of a record",
			mutate: func(ls [][]byte) [][]byte {
				out := append([][]byte{}, ls[:3]...)
				out = append(out, ls[2])
				return append(out, ls[3:]...)
			},
			want: ErrTampered, firstBad: 4, records: 3,
		},
		{
			name: "remove the first record",
			mutate: func(ls [][]byte) [][]byte {
				return ls[1:]
			},
			want: ErrTampered, firstBad: 1, records: 0,
		},
		{
			name: "unknown field added",
			mutate: func(ls [][]byte) [][]byte {
				ls[4] = bytes.Replace(ls[4], []byte(`{`), []byte(`{"x":1,`), 1)
				return ls
			},
			want: ErrTampered, firstBad: 5, records: 4,
		},
		{
			name: "truncate mid-record (head file shows it was acknowledged)",
			mutate: func(ls [][]byte) [][]byte {
				ls[5] = ls[5][:len(ls[5])/2]
				return ls
			},
			want: ErrTampered, firstBad: 6, records: 5,
		},
		{
			name:   "truncate mid-record without head file: torn tail",
			noHead: true,
			mutate: func(ls [][]byte) [][]byte {
				ls[5] = ls[5][:len(ls[5])/2]
				return ls
			},
			want: ErrTornTail, firstBad: 6, records: 5,
		},
		{
			name: "remove the last record (head file catches it)",
			mutate: func(ls [][]byte) [][]byte {
				return ls[:5]
			},
			want: ErrTampered, firstBad: 6, records: 5,
		},
		{
			name: "remove the last three records (head file catches it)",
			mutate: func(ls [][]byte) [][]byte {
				return ls[:3]
			},
			want: ErrTampered, firstBad: 4, records: 3,
		},
		{
			name:   "remove the last record of a log kept without head file: undetectable (documented limit)",
			noHead: true,
			mutate: func(ls [][]byte) [][]byte {
				return ls[:5]
			},
			want: nil, records: 5,
		},
		{
			name:       "remove the last two records and the head file",
			deleteHead: true,
			mutate: func(ls [][]byte) [][]byte {
				return ls[:4]
			},
			want: ErrTampered, firstBad: 5, records: 4,
		},
		{
			name:       "delete the head file only",
			deleteHead: true,
			mutate:     func(ls [][]byte) [][]byte { return ls },
			want:       ErrTampered, firstBad: 7, records: 6,
		},
		{
			name:       "truncate mid-record and delete the head file",
			deleteHead: true,
			mutate: func(ls [][]byte) [][]byte {
				ls[5] = ls[5][:len(ls[5])/2]
				return ls
			},
			want: ErrTampered, firstBad: 6, records: 5,
		},
		{
			name:   "untouched",
			mutate: func(ls [][]byte) [][]byte { return ls },
			want:   nil, records: 6,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			writeLog(t, path, 6, Options{NoHead: tt.noHead})
			ls := lines(t, path)
			if len(ls[len(ls)-1]) == 0 {
				ls = ls[:len(ls)-1]
			}
			if len(ls) != 6 {
				t.Fatalf("log has %d lines", len(ls))
			}
			if err := os.WriteFile(path, bytes.Join(tt.mutate(ls), nil), 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.deleteHead {
				if err := os.Remove(path + HeadSuffix); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := VerifyWith(path, VerifyOptions{NoHead: tt.noHead})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
			} else {
				if !errors.Is(err, tt.want) {
					t.Fatalf("Verify error = %v, want %v", err, tt.want)
				}
				if tt.want == ErrTampered && errors.Is(err, ErrTornTail) || tt.want == ErrTornTail && errors.Is(err, ErrTampered) {
					t.Fatalf("error %v matches both sentinels", err)
				}
				if rep.Problem == "" {
					t.Fatal("no problem described")
				}
			}
			if rep.FirstBad != tt.firstBad || rep.Records != tt.records {
				t.Fatalf("report = %+v, want FirstBad %d Records %d", rep, tt.firstBad, tt.records)
			}
		})
	}
}

// rehash parses a line, changes the record and recomputes its hash, as a
// forger who knows the format would.
func rehash(tb testing.TB, line []byte, change func(*Record)) []byte {
	tb.Helper()
	r, err := parseLine(bytes.TrimSuffix(line, []byte("\n")))
	if err != nil {
		tb.Fatal(err)
	}
	change(&r)
	r.Hash = r.ComputeHash()
	out, err := r.marshalLine()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestOpenRefusesBrokenTail(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(ls [][]byte) [][]byte
	}{
		{"last record edited", func(ls [][]byte) [][]byte {
			ls[3] = bytes.Replace(ls[3], []byte("msg-3"), []byte("msg-9"), 1)
			return ls
		}},
		{"last record removed (head file)", func(ls [][]byte) [][]byte { return ls[:3] }},
		{"last record cut mid-line (head file)", func(ls [][]byte) [][]byte {
			ls[3] = ls[3][:20]
			return ls
		}},
		{"last record replaced by a rehashed one", func(ls [][]byte) [][]byte {
			ls[3] = rehash(t, ls[3], func(r *Record) { r.Actor = "someone" })
			return ls
		}},
		{"garbage line at the end", func(ls [][]byte) [][]byte {
			return append(ls, []byte("not json\n"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			writeLog(t, path, 4, Options{})
			ls := lines(t, path)[:4]
			if err := os.WriteFile(path, bytes.Join(tt.mutate(ls), nil), 0o600); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			l, err := Open(path, Options{})
			if err == nil {
				l.Close()
				t.Fatal("Open accepted a broken tail")
			}
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("Open error = %v, want ErrTampered", err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Fatal("Open changed a tampered file")
			}
		})
	}
}

func TestOpenRepairsTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	// A crash during the write of record 4: the head file still says 3.
	recs := writeLog(t, path, 3, Options{})
	torn := []byte(`{"seq":4,"time":"2026-11-23T11:00:00Z","actor":"gatew`)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(torn); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Verify(path); !errors.Is(err, ErrTornTail) {
		t.Fatalf("Verify before repair = %v, want ErrTornTail", err)
	}

	l := openLog(t, path, Options{})
	seq, hash := l.Last()
	if seq != 4 {
		t.Fatalf("Last after repair = %d, want 4 (the repair record)", seq)
	}
	r, err := l.Append(t.Context(), "gateway", "message.accepted", "msg-x", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 5 || r.Prev != hash {
		t.Fatalf("record after repair: %+v", r)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(path)
	if err != nil || rep.Records != 5 {
		t.Fatalf("Verify after repair = %+v, %v", rep, err)
	}
	ls := lines(t, path)
	rep4, err := parseLine(bytes.TrimSuffix(ls[3], []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	if rep4.Action != "audit.repaired" || rep4.Actor != "audit" || rep4.Attrs["torn_bytes"] != fmt.Sprint(len(torn)) || rep4.Prev != recs[2].Hash {
		t.Fatalf("repair record = %+v", rep4)
	}
}

func TestOpenRepairsTornOnlyLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(`{"seq":1,"ti`), 0o600); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, path, Options{})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(path)
	if err != nil || rep.Records != 1 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{Now: time.Now})
	const workers, each = 8, 40
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[uint64]string{}
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r, err := l.Append(t.Context(), fmt.Sprintf("agent-%d", w), "message.sent", fmt.Sprintf("m-%d-%d", w, i), nil)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				if _, dup := seen[r.Seq]; dup {
					t.Errorf("seq %d handed out twice", r.Seq)
				}
				seen[r.Seq] = r.Hash
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(path)
	if err != nil || rep.Records != workers*each {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	if rep.LastHash != seen[workers*each] {
		t.Fatal("last hash differs from the last acknowledged record")
	}
	for i := uint64(1); i <= workers*each; i++ {
		if _, ok := seen[i]; !ok {
			t.Fatalf("seq %d missing", i)
		}
	}
}

func TestAppendErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	bad := []struct {
		name                   string
		actor, action, subject string
		attrs                  map[string]string
		want                   error
	}{
		{"no actor", "", "x.y", "", nil, nil},
		{"no action", "a", "", "", nil, nil},
		{"invalid utf-8 subject", "a", "x.y", "\xff", nil, nil},
		{"invalid utf-8 attr", "a", "x.y", "", map[string]string{"k": "\xc3"}, nil},
		{"empty attr key", "a", "x.y", "", map[string]string{"": "v"}, nil},
		{"too large", "a", "x.y", "", map[string]string{"k": strings.Repeat("x", MaxRecordSize)}, ErrTooLarge},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Append(t.Context(), tt.actor, tt.action, tt.subject, tt.attrs)
			if err == nil {
				t.Fatal("Append accepted it")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.Append(ctx, "a", "x.y", "", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Append = %v", err)
	}
	// None of the refused records used a seq.
	r, err := l.Append(t.Context(), "a", "x.y", "", nil)
	if err != nil || r.Seq != 1 {
		t.Fatalf("Append after refusals = %+v, %v", r, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Append(t.Context(), "a", "x.y", "", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v", err)
	}
	if rep, err := Verify(path); err != nil || rep.Records != 1 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestAttrsCopied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	attrs := map[string]string{"k": "v"}
	r, err := l.Append(t.Context(), "a", "x.y", "", attrs)
	if err != nil {
		t.Fatal(err)
	}
	attrs["k"] = "changed"
	if r.Attrs["k"] != "v" || r.Hash != r.ComputeHash() {
		t.Fatal("record shares the caller's map")
	}
}

func TestSecondOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	if _, err := Open(path, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := openLog(t, path, Options{})
	l2.Close()
}

// TestWriteFailureIsSticky makes the file unwritable under the Log: the
// failed Append and every later one must fail, and nothing is acknowledged.
func TestWriteFailureIsSticky(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	if _, err := l.Append(t.Context(), "a", "x.y", "", nil); err != nil {
		t.Fatal(err)
	}
	l.f.Close() // simulate a dead disk
	if _, err := l.Append(t.Context(), "a", "x.y", "", nil); err == nil {
		t.Fatal("Append on a failed file succeeded")
	}
	if _, err := l.Append(t.Context(), "a", "x.y", "", nil); err == nil || !strings.Contains(err.Error(), "reopen") {
		t.Fatalf("second Append = %v, want sticky failure", err)
	}
	if seq, _ := l.Last(); seq != 1 {
		t.Fatalf("Last = %d after failed writes", seq)
	}
}

// TestFormatStable verifies a log written by an earlier build, so that a
// change to the encoding or the hash that breaks existing logs fails here.
func TestFormatStable(t *testing.T) {
	if *update {
		generateGolden(t)
	}
	// The golden log is kept without head file.
	rep, err := VerifyWith("testdata/valid.log", VerifyOptions{NoHead: true})
	if err != nil {
		t.Fatalf("Verify(testdata/valid.log): %v", err)
	}
	if rep.Records != 5 {
		t.Fatalf("records = %d", rep.Records)
	}
	if rep.LastHash != goldenLastHash {
		t.Fatalf("last hash = %s, want %s", rep.LastHash, goldenLastHash)
	}
}

// goldenLastHash is the last hash of testdata/valid.log.
const goldenLastHash = "b18fa857b88fa37855132afd6775cf98ec8436ab9f496464d144b1b7b9107e5a"

func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name     string
		parallel bool
		noSync   bool
	}{
		{"serial-fsync", false, false},
		{"parallel-fsync", true, false},
		{"parallel-nosync", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := openLog(b, filepath.Join(b.TempDir(), "audit.log"), Options{Now: time.Now, NoSync: bc.noSync})
			attrs := map[string]string{"sender": "6f1c2a8e-2b0c-4d8e-9a55-0c1f3c1f9a11", "type": "no.kurer.melding.v1", "size": "10240"}
			ctx := context.Background()
			if !bc.parallel {
				for b.Loop() {
					if _, err := l.Append(ctx, "gateway", "message.accepted", "0b6c4f5e-8d7a-4c39-8e38-1c1f4a8f2b77", attrs); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := l.Append(ctx, "gateway", "message.accepted", "0b6c4f5e-8d7a-4c39-8e38-1c1f4a8f2b77", attrs); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestHeadIntervalBoundsWritesAndCloseFlushes: with a long HeadInterval the
// head file is written for the first batch, then not again while the log
// is open; Close cuts the wait short and writes the last head.
func TestHeadIntervalBoundsWritesAndCloseFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{HeadInterval: time.Hour})
	ctx := context.Background()
	if _, err := l.Append(ctx, "gateway", "message.accepted", "m-0", nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, ok, err := readHead(path)
		if err != nil {
			t.Fatal(err)
		}
		if ok && h.Seq == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first head was not written")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range 50 {
		if _, err := l.Append(ctx, "gateway", "message.accepted", fmt.Sprint("m-", i+1), nil); err != nil {
			t.Fatal(err)
		}
	}
	if h, _, _ := readHead(path); h.Seq != 1 {
		t.Fatalf("head rewritten within HeadInterval: seq %d", h.Seq)
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Close waited %v for the head interval", el)
	}
	h, ok, err := readHead(path)
	if err != nil || !ok || h.Seq != 51 {
		t.Fatalf("head after Close = %+v, %v, %v; want seq 51", h, ok, err)
	}
}
