package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// batchOf returns n entries whose subjects are prefix-0, prefix-1, ...
func batchOf(prefix string, n int) []Entry {
	es := make([]Entry, n)
	for i := range es {
		es[i] = Entry{Actor: "gateway", Action: "message.leased", Subject: fmt.Sprintf("%s-%d", prefix, i),
			Attrs: map[string]string{"attempt": fmt.Sprint(i)}}
	}
	return es
}

// checkBatch checks that recs are es, in order, with consecutive seqs from
// first, chained, written by one commit.
func checkBatch(tb testing.TB, es []Entry, recs []Record, first uint64) {
	tb.Helper()
	if len(recs) != len(es) {
		tb.Fatalf("%d records for %d entries", len(recs), len(es))
	}
	for i, r := range recs {
		if r.Seq != first+uint64(i) {
			tb.Fatalf("record %d has seq %d, want %d", i, r.Seq, first+uint64(i))
		}
		if r.Actor != es[i].Actor || r.Action != es[i].Action || r.Subject != es[i].Subject || r.Attrs["attempt"] != es[i].Attrs["attempt"] {
			tb.Fatalf("record %d = %+v, entry %+v", i, r, es[i])
		}
		if r.Hash != r.ComputeHash() {
			tb.Fatalf("record %d hash wrong", i)
		}
		if i > 0 && (r.Prev != recs[i-1].Hash || !r.Time.Equal(recs[0].Time)) {
			tb.Fatalf("record %d does not follow record %d in the same write", i, i-1)
		}
	}
}

func TestAppendBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	r0, err := l.Append(t.Context(), "gateway", "message.accepted", "m-0", nil)
	if err != nil {
		t.Fatal(err)
	}
	es := batchOf("m", 8)
	recs, err := l.AppendBatch(t.Context(), es)
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, es, recs, 2)
	if recs[0].Prev != r0.Hash {
		t.Fatal("batch does not chain to the record before it")
	}
	if seq, hash := l.Last(); seq != 9 || hash != recs[7].Hash {
		t.Fatalf("Last = %d %s", seq, hash)
	}
	if recs, err := l.AppendBatch(t.Context(), nil); recs != nil || err != nil {
		t.Fatalf("empty batch = %v, %v", recs, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ls := lines(t, path)
	for i, r := range recs {
		want, err := r.marshalLine()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ls[i+1], want) {
			t.Fatalf("line %d = %s, want %s", i+2, ls[i+1], want)
		}
	}
	rep, err := Verify(path)
	if err != nil || rep.Records != 9 || rep.LastHash != recs[7].Hash {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// TestAppendBatchConcurrent runs batches and single Appends at once: each
// batch's records are consecutive and in order, and the log verifies.
func TestAppendBatchConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{Now: time.Now, NoSync: true})
	const batchers, singles, rounds = 4, 4, 30
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total uint64
		seen  = map[uint64]string{}
	)
	note := func(recs ...Record) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			if _, dup := seen[r.Seq]; dup {
				t.Errorf("seq %d handed out twice", r.Seq)
			}
			seen[r.Seq] = r.Hash
		}
		total += uint64(len(recs))
	}
	for w := range batchers {
		wg.Go(func() {
			for i := range rounds {
				es := batchOf(fmt.Sprintf("b%d-%d", w, i), 1+(w*rounds+i)%13)
				recs, err := l.AppendBatch(t.Context(), es)
				if err != nil {
					t.Errorf("AppendBatch: %v", err)
					return
				}
				checkBatch(t, es, recs, recs[0].Seq)
				note(recs...)
			}
		})
	}
	for w := range singles {
		wg.Go(func() {
			for i := range rounds * 3 {
				r, err := l.Append(t.Context(), "agent", "message.sent", fmt.Sprintf("s%d-%d", w, i), nil)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				note(r)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(path)
	if err != nil || rep.Records != total || rep.LastHash != seen[total] {
		t.Fatalf("Verify = %+v, %v (want %d records)", rep, err, total)
	}
}

func TestAppendBatchDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	es := batchOf("m", 5)
	recs, err := l.AppendBatch(t.Context(), es)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, path, Options{})
	if seq, hash := l.Last(); seq != 5 || hash != recs[4].Hash {
		t.Fatalf("Last after reopen = %d %s", seq, hash)
	}
	more, err := l.AppendBatch(t.Context(), es)
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, es, more, 6)
	if more[0].Prev != recs[4].Hash {
		t.Fatal("batch after reopen does not chain")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(path)
	if err != nil || rep.Records != 10 || rep.LastHash != more[4].Hash {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	if h, ok, err := readHead(path); err != nil || !ok || h.Seq != 10 {
		t.Fatalf("head = %+v %v %v", h, ok, err)
	}
}

// TestAppendBatchInvalid: one bad entry anywhere refuses the whole batch,
// names the entry, and uses no seq.
func TestAppendBatchInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	tests := []struct {
		name string
		bad  Entry
		at   int
		want error // nil: any error
	}{
		{"no actor", Entry{Action: "x.y"}, 0, nil},
		{"no action", Entry{Actor: "a"}, 3, nil},
		{"invalid utf-8 subject", Entry{Actor: "a", Action: "x.y", Subject: "\xff"}, 7, nil},
		{"empty attr key", Entry{Actor: "a", Action: "x.y", Attrs: map[string]string{"": "v"}}, 2, nil},
		{"too large first", Entry{Actor: "a", Action: "x.y", Attrs: map[string]string{"k": strings.Repeat("x", MaxRecordSize)}}, 0, ErrTooLarge},
		{"too large in the middle", Entry{Actor: "a", Action: "x.y", Attrs: map[string]string{"k": strings.Repeat("x", MaxRecordSize)}}, 4, ErrTooLarge},
		{"too large last", Entry{Actor: "a", Action: "x.y", Attrs: map[string]string{"k": strings.Repeat("x", MaxRecordSize)}}, 7, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := batchOf("m", 8)
			es[tt.at] = tt.bad
			recs, err := l.AppendBatch(t.Context(), es)
			if err == nil || recs != nil {
				t.Fatalf("AppendBatch = %v, %v", recs, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("entry %d", tt.at)) {
				t.Fatalf("error %q does not name entry %d", err, tt.at)
			}
			if seq, _ := l.Last(); seq != 0 {
				t.Fatalf("Last = %d after a refused batch", seq)
			}
		})
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.AppendBatch(ctx, batchOf("m", 2)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled AppendBatch = %v", err)
	}
	recs, err := l.AppendBatch(t.Context(), batchOf("m", 2))
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, batchOf("m", 2), recs, 1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(path); err != nil || rep.Records != 2 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// TestCommitFailsRequestWhole commits three requests in one write, the
// middle one with a record too large: it fails whole and the others are
// written, chained across the gap.
func TestCommitFailsRequestWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	newReq := func(es []Entry) *request {
		req := &request{entries: es, recs: make([]Record, len(es)), bad: -1, done: make(chan struct{})}
		for i, e := range es {
			req.recs[i].Attrs = cloneAttrs(e.Attrs)
		}
		return req
	}
	bad := batchOf("bad", 3)
	bad[1].Attrs = map[string]string{"k": strings.Repeat("x", MaxRecordSize)}
	reqs := []*request{newReq(batchOf("a", 1)), newReq(bad), newReq(batchOf("c", 2))}
	// The writer is idle (no request sent), so the test may act as it.
	l.commit(reqs, nil, &sealer{})
	for _, req := range reqs {
		<-req.done
	}
	if !errors.Is(reqs[1].err, ErrTooLarge) || reqs[1].bad != 1 {
		t.Fatalf("bad request: err %v, entry %d", reqs[1].err, reqs[1].bad)
	}
	if reqs[0].err != nil || reqs[2].err != nil {
		t.Fatalf("good requests failed: %v, %v", reqs[0].err, reqs[2].err)
	}
	checkBatch(t, reqs[0].entries, reqs[0].recs, 1)
	checkBatch(t, reqs[2].entries, reqs[2].recs, 2)
	if reqs[2].recs[0].Prev != reqs[0].recs[0].Hash {
		t.Fatal("records around the failed request do not chain")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(path); err != nil || rep.Records != 3 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestAppendBatchClosedAndBroken(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		l := openLog(t, filepath.Join(t.TempDir(), "audit.log"), Options{})
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := l.AppendBatch(t.Context(), batchOf("m", 2)); !errors.Is(err, ErrClosed) {
			t.Fatalf("AppendBatch after Close = %v", err)
		}
	})
	t.Run("broken", func(t *testing.T) {
		l := openLog(t, filepath.Join(t.TempDir(), "audit.log"), Options{})
		if _, err := l.AppendBatch(t.Context(), batchOf("m", 2)); err != nil {
			t.Fatal(err)
		}
		l.f.Close() // simulate a dead disk
		if _, err := l.AppendBatch(t.Context(), batchOf("m", 2)); err == nil {
			t.Fatal("AppendBatch on a failed file succeeded")
		}
		if _, err := l.AppendBatch(t.Context(), batchOf("m", 2)); err == nil || !strings.Contains(err.Error(), "reopen") {
			t.Fatalf("second AppendBatch = %v, want sticky failure", err)
		}
		if _, err := l.Append(t.Context(), "a", "x.y", "", nil); err == nil || !strings.Contains(err.Error(), "reopen") {
			t.Fatalf("Append after failed batch = %v, want sticky failure", err)
		}
		if seq, _ := l.Last(); seq != 2 {
			t.Fatalf("Last = %d after failed writes", seq)
		}
	})
}

// TestAppendBatchLarge writes 1000 entries, more than maxBatch, in one
// request: one write, so one time for all.
func TestAppendBatchLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	if _, err := l.Append(t.Context(), "gateway", "message.accepted", "m-x", nil); err != nil {
		t.Fatal(err)
	}
	es := batchOf("m", 1000)
	recs, err := l.AppendBatch(t.Context(), es)
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, es, recs, 2)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(path)
	if err != nil || rep.Records != 1001 || rep.LastHash != recs[999].Hash {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestAppendBatchAttrsCopied(t *testing.T) {
	l := openLog(t, filepath.Join(t.TempDir(), "audit.log"), Options{})
	es := batchOf("m", 2)
	recs, err := l.AppendBatch(t.Context(), es)
	if err != nil {
		t.Fatal(err)
	}
	es[0].Attrs["attempt"] = "changed"
	if recs[0].Attrs["attempt"] != "0" || recs[0].Hash != recs[0].ComputeHash() {
		t.Fatal("record shares the caller's map")
	}
}

var benchAttrs = map[string]string{"sender": "6f1c2a8e-2b0c-4d8e-9a55-0c1f3c1f9a11", "type": "no.kurer.melding.v1", "size": "10240"}

// BenchmarkAppendBatch appends 8 records per call, as the gateway does for
// a poll that leases 8 messages: "batch" with one AppendBatch, "goroutines"
// with one Append per record on its own goroutine (the gateway until
// AppendBatch). ns/record is per record.
func BenchmarkAppendBatch(b *testing.B) {
	const per = 8
	es := make([]Entry, per)
	for i := range es {
		es[i] = Entry{Actor: "gateway", Action: "message.leased", Subject: "0b6c4f5e-8d7a-4c39-8e38-1c1f4a8f2b77", Attrs: benchAttrs}
	}
	for _, bc := range []struct {
		name       string
		goroutines bool
		noSync     bool
	}{
		{"batch-fsync", false, false},
		{"goroutines-fsync", true, false},
		{"batch-nosync", false, true},
		{"goroutines-nosync", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := openLog(b, filepath.Join(b.TempDir(), "audit.log"), Options{Now: time.Now, NoSync: bc.noSync})
			ctx := context.Background()
			for b.Loop() {
				if !bc.goroutines {
					if _, err := l.AppendBatch(ctx, es); err != nil {
						b.Fatal(err)
					}
					continue
				}
				var wg sync.WaitGroup
				for _, e := range es {
					wg.Go(func() {
						if _, err := l.Append(ctx, e.Actor, e.Action, e.Subject, e.Attrs); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/record")
		})
	}
}
