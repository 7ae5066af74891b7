// Package storetest is the conformance suite every gateway storage backend
// runs: the bbolt default today, a PostgreSQL store and a RabbitMQ queue
// later. A backend's test calls Run with a function that opens the backend on
// a directory; opening the same directory again must find the same data.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
)

// Backend is a Store and a Queue over the same data.
type Backend interface {
	store.Store
	store.Queue
}

// Opener opens a backend on dir with journal as its JournalFunc (nil: no
// journal). Opening dir again after Close must see everything committed
// before.
type Opener func(tb testing.TB, dir string, journal store.JournalFunc) Backend

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"Accounts", testAccounts},
		{"JTIReplay", testJTI},
		{"AcceptIdempotent", testAccept},
		{"AcceptedNoticeToSender", testAcceptedNotice},
		{"LeaseSkipsExpired", testLeaseSkipsExpired},
		{"SpoolPayload", testSpool},
		{"LeaseAckNotice", testLeaseAck},
		{"Reject", testReject},
		{"ReleaseAndDeadLetter", testRelease},
		{"ExpiryBehindOthers", testExpiry},
		{"WaitWakesUp", testWait},
		{"ReopenKeepsInFlight", testReopen},
		{"CountsAndPurge", testCounts},
		{"Uploads", testUploads},
		{"JournalRecordsChanges", testJournal},
		{"JournalOnlyCommitted", testJournalOnlyCommitted},
		{"JournalDropAndReopen", testJournalDrop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func openT(t *testing.T, open Opener) (Backend, string) {
	t.Helper()
	dir := t.TempDir()
	b := open(t, dir, nil)
	t.Cleanup(func() { _ = b.Close() })
	return b, dir
}

// Message builds an accepted message item from -> to.
func Message(from, to string, expires time.Time, at time.Time) store.Item {
	id := uuid.NewString()
	return store.Item{
		Routing: api.Routing{
			ID: id, From: from, To: to, Type: "no.kurer.test.v1", Expires: expires,
			Size: 5, Digest: "sha-256=:x:",
		},
		Receipt:    "receipt-" + id,
		AcceptedAt: at,
	}
}

func notice() *store.Notice {
	id := uuid.NewString()
	return &store.Notice{ID: id, JWS: "jws-" + id}
}

func mustAccept(t *testing.T, b Backend, it store.Item) store.Item {
	t.Helper()
	got, err := b.Accept(t.Context(), it, store.Payload{Inline: []byte("hello")}, nil)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	if got.State != api.StateAccepted || got.Routing.ID != it.Routing.ID || got.Owner != it.Routing.To {
		t.Fatalf("accepted item = %+v", got)
	}
	return got
}

func ids(items []store.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.Routing.ID
	}
	return out
}

func testAccounts(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	a := store.Account{ID: "a1", Name: "Oslo", OrgNumber: "974760673", Municipality: "0301",
		Types: []string{"t1"}, Certificates: [][]byte{{1, 2, 3}}, Created: t0, Updated: t0}
	if err := b.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, err := b.Account(ctx, "a1")
	if err != nil || got.Name != "Oslo" || !bytes.Equal(got.Certificates[0], []byte{1, 2, 3}) || !got.Created.Equal(t0) {
		t.Fatalf("account = %+v, %v", got, err)
	}
	a.Name = "Oslo kommune"
	if err := b.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := b.PutAccount(ctx, store.Account{ID: "a0", Name: "Bergen"}); err != nil {
		t.Fatal(err)
	}
	all, err := b.Accounts(ctx)
	if err != nil || len(all) != 2 || all[0].ID != "a0" || all[1].Name != "Oslo kommune" {
		t.Fatalf("accounts = %+v, %v", all, err)
	}
	if err := b.DeleteAccount(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Account(ctx, "a1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted account: %v", err)
	}
	if err := b.DeleteAccount(ctx, "a1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func testJTI(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	if err := b.UseJTI(ctx, "a:j1", t0.Add(time.Minute), t0); err != nil {
		t.Fatal(err)
	}
	if err := b.UseJTI(ctx, "a:j1", t0.Add(time.Minute), t0.Add(time.Second)); !errors.Is(err, store.ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}
	if err := b.UseJTI(ctx, "a:j2", t0.Add(time.Minute), t0); err != nil {
		t.Fatal(err)
	}
	// After its expiry an id may be purged; the assertion itself is
	// expired by then, so this is no replay risk.
	if err := b.UseJTI(ctx, "a:j3", t0.Add(3*time.Minute), t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
}

func testAccept(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	it := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	again := it
	again.Receipt = "other"
	got, err := b.Accept(ctx, again, store.Payload{Inline: []byte("other")}, nil)
	if !errors.Is(err, store.ErrExists) || got.Receipt != it.Receipt {
		t.Fatalf("second accept = %+v, %v", got, err)
	}
	p, err := b.Payload(ctx, it.Routing.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	data, _ := io.ReadAll(p)
	if string(data) != "hello" || p.Size() != 5 {
		t.Fatalf("payload = %q", data)
	}
	if _, err := b.Item(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown item: %v", err)
	}
}

// testAcceptedNotice: Accept puts the accepted notice into the sender's
// mailbox in its transaction; a repeat of the id adds none.
func testAcceptedNotice(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	m := Message("s", "r", t0.Add(time.Hour), t0)
	n := notice()
	m.Receipt = n.JWS
	if _, err := b.Accept(ctx, m, store.Payload{Inline: []byte("hello")}, n); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Accept(ctx, m, store.Payload{Inline: []byte("hello")}, notice()); !errors.Is(err, store.ErrExists) {
		t.Fatalf("repeat: %v", err)
	}
	got, err := b.Lease(ctx, "s", 10, t0, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Kind != api.KindNotice || got[0].Routing.ID != n.ID || got[0].Routing.InReplyTo != m.Routing.ID ||
		got[0].Receipt != n.JWS || got[0].Owner != "s" {
		t.Fatalf("sender's mailbox = %+v, want the one accepted notice", got)
	}
	// The message itself is in the receiver's mailbox, untouched.
	msgs, err := b.Lease(ctx, "r", 10, t0, t0.Add(time.Minute))
	if err != nil || len(msgs) != 1 || msgs[0].Routing.ID != m.Routing.ID {
		t.Fatalf("receiver's mailbox = %+v, %v", msgs, err)
	}
	if _, err := b.Ack(ctx, "s", n.ID, t0, nil); err != nil {
		t.Fatalf("ack of the notice: %v", err)
	}
	if _, err := b.Item(ctx, n.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("acked notice still stored: %v", err)
	}
}

// testLeaseSkipsExpired: a message past its expiry is never leased, even
// before the sweeper expired it, and does not hold up the ones behind it;
// notices about it (whose routing carries its expiry) are still handed out.
func testLeaseSkipsExpired(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	old := Message("s", "r", t0.Add(time.Minute), t0)
	n := notice()
	if _, err := b.Accept(ctx, old, store.Payload{Inline: []byte("hello")}, n); err != nil {
		t.Fatal(err)
	}
	live := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	now := t0.Add(2 * time.Minute)
	got, err := b.Lease(ctx, "r", 10, now, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), []string{live.Routing.ID}) {
		t.Fatalf("leased %v, want only the live message %s", ids(got), live.Routing.ID)
	}
	notices, err := b.Lease(ctx, "s", 10, now, now.Add(time.Minute))
	if err != nil || !slices.Equal(ids(notices), []string{n.ID}) {
		t.Fatalf("sender's notices = %v, %v; want the accepted notice", ids(notices), err)
	}
	// The sweeper's view: still due for expiry, and it expires.
	due, err := b.DueExpiry(ctx, now, 10)
	if err != nil || !slices.Contains(ids(due), old.Routing.ID) {
		t.Fatalf("due expiry = %v, %v", ids(due), err)
	}
	if err := b.Expire(ctx, old.Routing.ID, now, notice()); err != nil {
		t.Fatal(err)
	}
	if it, err := b.Item(ctx, old.Routing.ID); err != nil || it.State != api.StateExpired || it.Attempts != 0 {
		t.Fatalf("expired message = %+v, %v; want expired, never leased", it, err)
	}
}

func testSpool(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	it := Message("s", "r", t0.Add(time.Hour), t0)
	part, err := b.StartUpload(ctx, it.Routing, t0)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789"), 10000)
	if err := os.WriteFile(part, big, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Accept(ctx, it, store.Payload{SpoolFile: part}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Upload(ctx, it.Routing.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("upload after accept: %v", err)
	}
	p, err := b.Payload(ctx, it.Routing.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Seek(99990, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	tail, _ := io.ReadAll(p)
	_ = p.Close()
	if string(tail) != "0123456789" || p.Size() != int64(len(big)) {
		t.Fatalf("tail = %q size %d", tail, p.Size())
	}
	if _, err := b.Lease(ctx, "r", 1, t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Ack(ctx, "r", it.Routing.ID, t0, notice()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Payload(ctx, it.Routing.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("payload after ack: %v", err)
	}
}

func testLeaseAck(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	var want []string
	for i := 0; i < 3; i++ {
		want = append(want, mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0.Add(time.Duration(i)))).Routing.ID)
	}
	if got, _ := b.Lease(ctx, "other", 10, t0, t0.Add(time.Minute)); len(got) != 0 {
		t.Fatalf("other mailbox leased %v", ids(got))
	}
	got, err := b.Lease(ctx, "r", 2, t0, t0.Add(time.Minute))
	if err != nil || len(got) != 2 || got[0].Routing.ID != want[0] || got[1].Routing.ID != want[1] {
		t.Fatalf("lease = %v, %v", ids(got), err)
	}
	if got[0].State != api.StateLeased || got[0].Attempts != 1 || !got[0].LeaseUntil.Equal(t0.Add(time.Minute)) {
		t.Fatalf("leased item = %+v", got[0])
	}
	rest, _ := b.Lease(ctx, "r", 10, t0, t0.Add(time.Minute))
	if len(rest) != 1 || rest[0].Routing.ID != want[2] {
		t.Fatalf("second lease = %v", ids(rest))
	}
	if _, err := b.Ack(ctx, "s", want[0], t0, notice()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ack by non-owner: %v", err)
	}
	n := notice()
	acked, err := b.Ack(ctx, "r", want[0], t0.Add(time.Second), n)
	if err != nil || acked.State != api.StateDelivered {
		t.Fatalf("ack = %+v, %v", acked, err)
	}
	// Idempotent ack.
	if again, err := b.Ack(ctx, "r", want[0], t0.Add(2*time.Second), notice()); err != nil || again.State != api.StateDelivered {
		t.Fatalf("second ack = %+v, %v", again, err)
	}
	// Exactly one notice in the sender's mailbox.
	ns, err := b.Lease(ctx, "s", 10, t0, t0.Add(time.Minute))
	if err != nil || len(ns) != 1 {
		t.Fatalf("sender mailbox = %v, %v", ids(ns), err)
	}
	if ns[0].Kind != api.KindNotice || ns[0].Routing.ID != n.ID || ns[0].Receipt != n.JWS || ns[0].Routing.InReplyTo != want[0] {
		t.Fatalf("notice item = %+v", ns[0])
	}
	if _, err := b.Ack(ctx, "s", n.ID, t0, nil); err != nil {
		t.Fatalf("ack notice: %v", err)
	}
	if _, err := b.Item(ctx, n.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("acked notice still there: %v", err)
	}
	m, _ := b.Item(ctx, want[0])
	if len(m.History) != 3 || m.History[2].State != api.StateDelivered {
		t.Fatalf("history = %+v", m.History)
	}
}

func testReject(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	it := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	if _, err := b.Lease(ctx, "r", 1, t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err := b.Reject(ctx, "r", it.Routing.ID, t0, "invalid_envelope", "bad signature", notice())
	if err != nil || got.State != api.StateRejected {
		t.Fatalf("reject = %+v, %v", got, err)
	}
	if _, err := b.Ack(ctx, "r", it.Routing.ID, t0, notice()); !errors.Is(err, store.ErrState) {
		t.Fatalf("ack after reject: %v", err)
	}
	ns, _ := b.Lease(ctx, "s", 10, t0, t0.Add(time.Minute))
	if len(ns) != 1 || ns[0].Kind != api.KindNotice {
		t.Fatalf("sender mailbox = %+v", ns)
	}
}

func testRelease(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	first := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	second := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0.Add(1)))
	until := t0.Add(time.Minute)
	if got, _ := b.Lease(ctx, "r", 1, t0, until); len(got) != 1 {
		t.Fatal("lease")
	}
	if due, _ := b.DueLeases(ctx, t0.Add(30*time.Second), 10); len(due) != 0 {
		t.Fatalf("due before lease end: %v", ids(due))
	}
	due, err := b.DueLeases(ctx, until, 10)
	if err != nil || len(due) != 1 || due[0].Routing.ID != first.Routing.ID {
		t.Fatalf("due = %v, %v", ids(due), err)
	}
	if err := b.Release(ctx, first.Routing.ID, until.Add(time.Second), until); !errors.Is(err, store.ErrStale) {
		t.Fatalf("release with other lease: %v", err)
	}
	if err := b.Release(ctx, first.Routing.ID, until, until); err != nil {
		t.Fatal(err)
	}
	// Back at its place: before the second message.
	got, _ := b.Lease(ctx, "r", 10, until, until.Add(time.Minute))
	if len(got) != 2 || got[0].Routing.ID != first.Routing.ID || got[0].Attempts != 2 || got[1].Routing.ID != second.Routing.ID {
		t.Fatalf("after release = %+v", got)
	}
	lu := got[0].LeaseUntil
	n := notice()
	if err := b.DeadLetter(ctx, first.Routing.ID, lu, lu, n); err != nil {
		t.Fatal(err)
	}
	if err := b.DeadLetter(ctx, first.Routing.ID, lu, lu, notice()); !errors.Is(err, store.ErrStale) {
		t.Fatalf("dead-letter twice: %v", err)
	}
	m, _ := b.Item(ctx, first.Routing.ID)
	if m.State != api.StateDeadLettered {
		t.Fatalf("state = %s", m.State)
	}
	ns, _ := b.Lease(ctx, "s", 10, lu, lu.Add(time.Minute))
	if len(ns) != 1 || ns[0].Routing.ID != n.ID {
		t.Fatalf("failed notice = %v", ids(ns))
	}
}

func testExpiry(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	var items []store.Item
	for i := 0; i < 5; i++ {
		exp := t0.Add(time.Hour)
		if i == 3 {
			exp = t0.Add(time.Minute) // behind three others
		}
		items = append(items, mustAccept(t, b, Message("s", "r", exp, t0.Add(time.Duration(i)))))
	}
	due, err := b.DueExpiry(ctx, t0.Add(2*time.Minute), 10)
	if err != nil || len(due) != 1 || due[0].Routing.ID != items[3].Routing.ID {
		t.Fatalf("due expiry = %v, %v", ids(due), err)
	}
	if err := b.Expire(ctx, items[3].Routing.ID, t0.Add(2*time.Minute), notice()); err != nil {
		t.Fatal(err)
	}
	if err := b.Expire(ctx, items[3].Routing.ID, t0.Add(2*time.Minute), notice()); !errors.Is(err, store.ErrStale) {
		t.Fatalf("expire twice: %v", err)
	}
	if due, _ := b.DueExpiry(ctx, t0.Add(2*time.Minute), 10); len(due) != 0 {
		t.Fatalf("still due: %v", ids(due))
	}
	got, _ := b.Lease(ctx, "r", 10, t0, t0.Add(time.Minute))
	if len(got) != 4 {
		t.Fatalf("mailbox after expiry = %v", ids(got))
	}
	for _, g := range got {
		if g.Routing.ID == items[3].Routing.ID {
			t.Fatal("expired message still offered")
		}
	}
	// A leased message expires too.
	if err := b.Expire(ctx, got[0].Routing.ID, t0.Add(2*time.Minute), notice()); err != nil {
		t.Fatalf("expire leased: %v", err)
	}
	if due, _ := b.DueLeases(ctx, t0.Add(time.Hour), 10); len(due) != 3 {
		t.Fatalf("leases after expiry = %v", ids(due))
	}
	ns, _ := b.Lease(ctx, "s", 10, t0, t0.Add(time.Minute))
	if len(ns) != 2 {
		t.Fatalf("expired notices = %d", len(ns))
	}
}

func testWait(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ch := b.Wait("r")
	select {
	case <-ch:
		t.Fatal("woken with nothing new")
	default:
	}
	other := b.Wait("x")
	mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("accept did not wake the receiver's waiter")
	}
	select {
	case <-other:
		t.Fatal("another mailbox woken")
	default:
	}
}

func testReopen(t *testing.T, open Opener) {
	dir := t.TempDir()
	ctx := t.Context()
	b := open(t, dir, nil)
	leased := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	queued := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0.Add(1)))
	big := Message("s", "r", t0.Add(time.Hour), t0.Add(2))
	part, err := b.StartUpload(ctx, big.Routing, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(part, bytes.Repeat([]byte{7}, 70000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Accept(ctx, big, store.Payload{SpoolFile: part}, nil); err != nil {
		t.Fatal(err)
	}
	pending := Message("s", "r", t0.Add(time.Hour), t0)
	if _, err := b.StartUpload(ctx, pending.Routing, t0); err != nil {
		t.Fatal(err)
	}
	until := t0.Add(time.Minute)
	if got, _ := b.Lease(ctx, "r", 1, t0, until); len(got) != 1 {
		t.Fatal("lease")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// A stray payload file (crash between rename and commit) is cleaned.
	stray := filepath.Join(dir, "payloads", uuid.NewString())
	_ = os.WriteFile(stray, []byte("x"), 0o600)

	b = open(t, dir, nil)
	defer b.Close()
	due, _ := b.DueLeases(ctx, until, 10)
	if len(due) != 1 || due[0].Routing.ID != leased.Routing.ID {
		t.Fatalf("lease lost across restart: %v", ids(due))
	}
	if err := b.Release(ctx, leased.Routing.ID, until, until); err != nil {
		t.Fatal(err)
	}
	got, _ := b.Lease(ctx, "r", 10, until, until.Add(time.Minute))
	want := []string{leased.Routing.ID, queued.Routing.ID, big.Routing.ID}
	if len(got) != 3 || got[0].Routing.ID != want[0] || got[1].Routing.ID != want[1] || got[2].Routing.ID != want[2] {
		t.Fatalf("after reopen = %v, want %v", ids(got), want)
	}
	p, err := b.Payload(ctx, big.Routing.ID)
	if err != nil || p.Size() != 70000 {
		t.Fatalf("big payload after reopen: %v", err)
	}
	_ = p.Close()
	if u, _, err := b.Upload(ctx, pending.Routing.ID); err != nil || u.Routing.Digest != pending.Routing.Digest {
		t.Fatalf("upload after reopen: %+v, %v", u, err)
	}
	if _, err := os.Stat(stray); err == nil {
		// Only the bbolt backend spools to dir/payloads; others ignore it.
		if _, err := os.Stat(filepath.Join(dir, "gateway.db")); err == nil {
			t.Fatal("stray payload file not cleaned at open")
		}
	}
}

func testCounts(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := t.Context()
	a := mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0))
	mustAccept(t, b, Message("s", "r", t0.Add(time.Hour), t0.Add(time.Second)))
	c, err := b.CountByState(ctx)
	if err != nil || c[api.StateAccepted]["no.kurer.test.v1"] != 2 {
		t.Fatalf("counts = %v, %v", c, err)
	}
	if _, err := b.Lease(ctx, "r", 1, t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Ack(ctx, "r", a.Routing.ID, t0.Add(time.Second), notice()); err != nil {
		t.Fatal(err)
	}
	c, _ = b.CountByState(ctx)
	if c[api.StateAccepted]["no.kurer.test.v1"] != 1 || c[api.StateDelivered]["no.kurer.test.v1"] != 1 || c[api.StateLeased]["no.kurer.test.v1"] != 0 {
		t.Fatalf("counts after ack = %v", c)
	}
	list, err := b.Messages(ctx, store.MessageFilter{State: api.StateDelivered})
	if err != nil || len(list) != 1 || list[0].Routing.ID != a.Routing.ID {
		t.Fatalf("list delivered = %v, %v", ids(list), err)
	}
	list, _ = b.Messages(ctx, store.MessageFilter{Account: "r", OlderThan: t0.Add(time.Millisecond)})
	if len(list) != 1 || list[0].Routing.ID != a.Routing.ID {
		t.Fatalf("list older = %v", ids(list))
	}
	if list, _ := b.Messages(ctx, store.MessageFilter{Type: "other"}); len(list) != 0 {
		t.Fatalf("list by type = %v", ids(list))
	}
	mb, err := b.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var depth = map[string]int{}
	for _, m := range mb {
		depth[m.Account] = m.Depth
	}
	if depth["r"] != 1 || depth["s"] != 1 {
		t.Fatalf("mailboxes = %+v", mb)
	}
	n, err := b.Purge(ctx, t0.Add(time.Hour), 100)
	if err != nil || n != 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	if _, err := b.Item(ctx, a.Routing.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("purged record: %v", err)
	}
	c, _ = b.CountByState(ctx)
	if c[api.StateDelivered]["no.kurer.test.v1"] != 0 {
		t.Fatalf("counts after purge = %v", c)
	}
}

func testUploads(t *testing.T, open Opener) {
	b, _ := openT(t, open)
	ctx := context.Background()
	it := Message("s", "r", t0.Add(time.Hour), t0)
	p1, err := b.StartUpload(ctx, it.Routing, t0)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := b.StartUpload(ctx, it.Routing, t0.Add(time.Second))
	if err != nil || p1 != p2 {
		t.Fatalf("restart upload = %q, %v", p2, err)
	}
	other := it.Routing
	other.Digest = "sha-256=:y:"
	if _, err := b.StartUpload(ctx, other, t0); !errors.Is(err, store.ErrExists) {
		t.Fatalf("upload with other digest: %v", err)
	}
	other = it.Routing
	other.To = "someone-else"
	if _, err := b.StartUpload(ctx, other, t0); !errors.Is(err, store.ErrExists) {
		t.Fatalf("upload with other receiver: %v", err)
	}
	other = it.Routing
	other.Expires = other.Expires.Add(time.Hour)
	if _, err := b.StartUpload(ctx, other, t0); !errors.Is(err, store.ErrExists) {
		t.Fatalf("upload with other expiry: %v", err)
	}
	// Stale: routing expired, or started too long ago.
	expiring := Message("s", "r", t0.Add(time.Minute), t0)
	if _, err := b.StartUpload(ctx, expiring.Routing, t0); err != nil {
		t.Fatal(err)
	}
	late := Message("s", "r", t0.Add(48*time.Hour), t0)
	if _, err := b.StartUpload(ctx, late.Routing, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	stale := func(now, startedBefore time.Time, limit int) []string {
		t.Helper()
		ids, err := b.StaleUploads(ctx, now, startedBefore, limit)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(ids)
		return ids
	}
	if got := stale(t0, t0, 10); len(got) != 0 {
		t.Fatalf("stale uploads at the start: %v", got)
	}
	if got := stale(t0.Add(time.Minute), t0, 10); !slices.Equal(got, []string{expiring.Routing.ID}) {
		t.Fatalf("stale once one's routing expired: %v, want [%s]", got, expiring.Routing.ID)
	}
	want := []string{it.Routing.ID, expiring.Routing.ID}
	slices.Sort(want)
	if got := stale(t0, t0.Add(time.Hour), 10); !slices.Equal(got, want) {
		t.Fatalf("stale by start time: %v, want %v", got, want)
	}
	if got := stale(t0.Add(72*time.Hour), t0, 2); len(got) != 2 {
		t.Fatalf("limit 2: %v", got)
	}
	for _, id := range []string{expiring.Routing.ID, late.Routing.ID} {
		if err := b.DropUpload(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p1, []byte("part"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.DropUpload(ctx, it.Routing.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p1); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial bytes kept after drop: %v", err)
	}
	if _, _, err := b.Upload(ctx, it.Routing.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("upload after drop: %v", err)
	}
}
