package audit

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestTail: the last n records, oldest first, however long the log and
// however large its records; fewer when the log has fewer.
func TestTail(t *testing.T) {
	l := openLog(t, filepath.Join(t.TempDir(), "audit.log"), Options{})
	ctx := t.Context()
	if recs, err := l.Tail(3); err != nil || len(recs) != 0 {
		t.Fatalf("Tail of an empty log = %v, %v", recs, err)
	}
	big := strings.Repeat("x", MaxRecordSize/2) // windows begin inside lines
	for i := range 40 {
		attrs := map[string]string{"i": strconv.Itoa(i)}
		if i%3 == 0 {
			attrs["pad"] = big
		}
		if _, err := l.Append(ctx, "gateway", "test.event", "", attrs); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int{1, 2, 5, 40, 100} {
		recs, err := l.Tail(n)
		if err != nil {
			t.Fatalf("Tail(%d): %v", n, err)
		}
		want := min(n, 40)
		if len(recs) != want {
			t.Fatalf("Tail(%d) = %d records, want %d", n, len(recs), want)
		}
		for j, r := range recs {
			if i := 40 - want + j; r.Attrs["i"] != strconv.Itoa(i) || r.Seq != uint64(i+1) {
				t.Fatalf("Tail(%d)[%d] = seq %d i=%s, want seq %d i=%d", n, j, r.Seq, r.Attrs["i"], i+1, i)
			}
		}
	}
}

// TestAppendBatchEntryError: an entry the log cannot take is named by
// index in an *EntryError, and nothing of its batch is written.
func TestAppendBatchEntryError(t *testing.T) {
	l := openLog(t, filepath.Join(t.TempDir(), "audit.log"), Options{})
	batch := []Entry{
		{Actor: "gateway", Action: "ok.one"},
		{Actor: "gateway", Action: "too.large", Attrs: map[string]string{"pad": strings.Repeat("x", MaxRecordSize)}},
	}
	_, err := l.AppendBatch(t.Context(), batch)
	var ee *EntryError
	if !errors.As(err, &ee) || ee.Index != 1 || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("AppendBatch with a too large entry = %v, want *EntryError at 1 wrapping ErrTooLarge", err)
	}
	batch[1] = Entry{Actor: "", Action: "no.actor"}
	if _, err := l.AppendBatch(t.Context(), batch); !errors.As(err, &ee) || ee.Index != 1 {
		t.Fatalf("AppendBatch with an invalid entry = %v, want *EntryError at 1", err)
	}
	if seq, _ := l.Last(); seq != 0 {
		t.Fatalf("%d records written by refused batches", seq)
	}
}
