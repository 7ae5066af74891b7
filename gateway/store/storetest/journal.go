package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/store"
)

// recordingJournal names one entry per change: Action is the op, Subject
// the message or account id, and Attrs what the test checks.
func recordingJournal(c store.Change) []store.AuditEntry {
	e := store.AuditEntry{Actor: "test", Action: string(c.Op), Attrs: map[string]string{}}
	switch {
	case c.After != nil:
		e.Subject = c.After.ID
		if c.Before != nil {
			e.Attrs["before"] = c.Before.Name
		}
	case c.Before != nil:
		e.Subject = c.Before.ID
	case c.Op == store.ChangePurged:
		e.Attrs["count"] = fmt.Sprint(c.Count)
	default:
		e.Subject = c.Item.Routing.ID
		e.Attrs["state"] = c.Item.State
		e.Attrs["attempts"] = fmt.Sprint(c.Item.Attempts)
	}
	if c.Notice != nil {
		e.Attrs["notice"] = c.Notice.ID
	}
	if c.Reason != "" {
		e.Attrs["reason"] = c.Reason
	}
	return []store.AuditEntry{e}
}

// openJournaled opens a backend with recordingJournal on a fresh directory.
func openJournaled(t *testing.T, open Opener) Backend {
	t.Helper()
	b := open(t, t.TempDir(), recordingJournal)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func journal(t *testing.T, b Backend) []store.JournalEntry {
	t.Helper()
	ents, err := b.Journal(t.Context(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(ents); i++ {
		if ents[i].Seq <= ents[i-1].Seq {
			t.Fatalf("journal positions not increasing: %d after %d", ents[i].Seq, ents[i-1].Seq)
		}
	}
	return ents
}

// brief renders entries as "op subject" lines, attrs sorted.
func brief(ents []store.JournalEntry) []string {
	out := make([]string, len(ents))
	for i, e := range ents {
		s := e.Action + " " + e.Subject
		keys := make([]string, 0, len(e.Attrs))
		for k := range e.Attrs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			s += " " + k + "=" + e.Attrs[k]
		}
		out[i] = s
	}
	return out
}

// testJournal: every change reports itself once, in commit order, with the
// message after the change, its notice and the reject reason.
func testJournal(t *testing.T, open Opener) {
	b := openJournaled(t, open)
	ctx := t.Context()

	acct := store.Account{ID: "a1", Name: "Oslo", OrgNumber: "974760673", Types: []string{"t"}, Certificates: [][]byte{{1}}, Created: t0, Updated: t0}
	if err := b.PutAccount(ctx, acct); err != nil {
		t.Fatal(err)
	}
	acct.Name = "Oslo kommune"
	if err := b.PutAccount(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteAccount(ctx, "a1"); err != nil {
		t.Fatal(err)
	}

	m1 := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	m2 := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0.Add(1)))
	m3 := mustAccept(t, b, Message("s", "r", t0.Add(time.Minute), t0.Add(2)))
	until := t0.Add(time.Second)
	if got, err := b.Lease(ctx, "r", 2, t0, until); err != nil || len(got) != 2 {
		t.Fatalf("lease: %d, %v", len(got), err)
	}
	n1, n2, n3 := notice(), notice(), notice()
	if _, err := b.Ack(ctx, "r", m1.Routing.ID, t0, n1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reject(ctx, "r", m2.Routing.ID, t0, "bad_envelope", "the detail", n2); err != nil {
		t.Fatal(err)
	}
	// m3: leased, its lease ends, back in the mailbox, then expires.
	if got, err := b.Lease(ctx, "r", 1, t0, until); err != nil || len(got) != 1 {
		t.Fatalf("lease m3: %d, %v", len(got), err)
	}
	if err := b.Release(ctx, m3.Routing.ID, until, until); err != nil {
		t.Fatal(err)
	}
	if err := b.Expire(ctx, m3.Routing.ID, t0.Add(time.Minute), n3); err != nil {
		t.Fatal(err)
	}
	// m4 is dead-lettered after its lease.
	m4 := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0.Add(3)))
	if got, err := b.Lease(ctx, "r", 1, t0, until); err != nil || len(got) != 1 {
		t.Fatalf("lease m4: %d, %v", len(got), err)
	}
	n4 := notice()
	if err := b.DeadLetter(ctx, m4.Routing.ID, until, until, n4); err != nil {
		t.Fatal(err)
	}
	// Acking the notices in the sender's mailbox is no change of a message.
	notices, err := b.Lease(ctx, "s", 10, t0, until)
	if err != nil || len(notices) != 4 {
		t.Fatalf("sender's notices: %d, %v", len(notices), err)
	}
	for _, n := range notices {
		if _, err := b.Ack(ctx, "s", n.Routing.ID, t0, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := b.Purge(ctx, t0.Add(time.Hour), 10); err != nil || n != 4 {
		t.Fatalf("purge = %d, %v", n, err)
	}

	id := func(it store.Item) string { return it.Routing.ID }
	want := []string{
		"account_put a1",
		"account_put a1 before=Oslo",
		"account_gone a1",
		"accepted " + id(m1) + " attempts=0 state=accepted",
		"accepted " + id(m2) + " attempts=0 state=accepted",
		"accepted " + id(m3) + " attempts=0 state=accepted",
		"leased " + id(m1) + " attempts=1 state=leased",
		"leased " + id(m2) + " attempts=1 state=leased",
		"delivered " + id(m1) + " attempts=1 notice=" + n1.ID + " state=delivered",
		"rejected " + id(m2) + " attempts=1 notice=" + n2.ID + " reason=bad_envelope state=rejected",
		"leased " + id(m3) + " attempts=1 state=leased",
		"released " + id(m3) + " attempts=1 state=accepted",
		"expired " + id(m3) + " attempts=1 notice=" + n3.ID + " state=expired",
		"accepted " + id(m4) + " attempts=0 state=accepted",
		"leased " + id(m4) + " attempts=1 state=leased",
		"dead_lettered " + id(m4) + " attempts=1 notice=" + n4.ID + " state=dead_lettered",
		"purged  count=4",
	}
	if got := brief(journal(t, b)); !slices.Equal(got, want) {
		t.Fatalf("journal:\n%s\nwant:\n%s", lines(got), lines(want))
	}
}

func lines(ss []string) string {
	out := ""
	for _, s := range ss {
		out += "  " + s + "\n"
	}
	return out
}

// testJournalOnlyCommitted: calls that change nothing (refused, repeated
// or stale) report nothing.
func testJournalOnlyCommitted(t *testing.T, open Opener) {
	b := openJournaled(t, open)
	ctx := t.Context()
	m := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	until := t0.Add(time.Second)
	if got, err := b.Lease(ctx, "r", 1, t0, until); err != nil || len(got) != 1 {
		t.Fatalf("lease: %d, %v", len(got), err)
	}
	if _, err := b.Ack(ctx, "r", m.Routing.ID, t0, notice()); err != nil {
		t.Fatal(err)
	}
	before := len(journal(t, b))
	// A resubmit, a second ack, a stale sweep, an ack by someone else, a
	// lease of an empty mailbox: none changes anything.
	if _, err := b.Accept(ctx, m, store.Payload{Inline: []byte("hello")}, nil); !errors.Is(err, store.ErrExists) {
		t.Fatalf("resubmit: %v", err)
	}
	if _, err := b.Ack(ctx, "r", m.Routing.ID, t0, nil); err != nil {
		t.Fatalf("second ack: %v", err)
	}
	if err := b.Release(ctx, m.Routing.ID, until, until); !errors.Is(err, store.ErrStale) {
		t.Fatalf("stale release: %v", err)
	}
	if err := b.Expire(ctx, m.Routing.ID, until, notice()); !errors.Is(err, store.ErrStale) {
		t.Fatalf("expire of a delivered message: %v", err)
	}
	if _, err := b.Ack(ctx, "other", m.Routing.ID, t0, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ack by another account: %v", err)
	}
	if got, err := b.Lease(ctx, "r", 1, t0, until); err != nil || len(got) != 0 {
		t.Fatalf("lease of an empty mailbox: %d, %v", len(got), err)
	}
	if err := b.DeleteAccount(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete of an unknown account: %v", err)
	}
	if n, err := b.Purge(ctx, t0, 10); err != nil || n != 0 {
		t.Fatalf("purge of nothing: %d, %v", n, err)
	}
	if after := journal(t, b); len(after) != before {
		t.Fatalf("changes that changed nothing were journaled: %v", brief(after[before:]))
	}
}

// testJournalDrop: DropJournal removes shipped entries, the rest survive a
// reopen, and positions never repeat, also past a drop beyond the end.
func testJournalDrop(t *testing.T, open Opener) {
	dir := t.TempDir()
	ctx := t.Context()
	b := open(t, dir, recordingJournal)
	for i := range 3 {
		mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0.Add(time.Duration(i))))
	}
	ents := journal(t, b)
	if len(ents) != 3 {
		t.Fatalf("journal has %d entries, want 3", len(ents))
	}
	if err := b.DropJournal(ctx, ents[1].Seq); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = open(t, dir, recordingJournal)
	defer b.Close()
	left := journal(t, b)
	if len(left) != 1 || left[0].Seq != ents[2].Seq || left[0].Subject != ents[2].Subject {
		t.Fatalf("after drop through %d and reopen: %v, want only %d", ents[1].Seq, brief(left), ents[2].Seq)
	}
	// The audit log may hold positions this journal never gave out (a
	// store recreated under an old log): dropping through one of them
	// moves later positions above it.
	far := ents[2].Seq + 1000
	if err := b.DropJournal(ctx, far); err != nil {
		t.Fatal(err)
	}
	if got := journal(t, b); len(got) != 0 {
		t.Fatalf("journal after dropping everything: %v", brief(got))
	}
	mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	got := journal(t, b)
	if len(got) != 1 || got[0].Seq <= far {
		t.Fatalf("entry after a drop through %d has position %v, want above it", far, got)
	}
}
