package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/gateway/store/bolt"
	"github.com/kurer/kurer/internal/audit"
)

func auditPath(e *gatewaytest.Env) string {
	if e.Cfg.AuditLog != "" {
		return e.Cfg.AuditLog
	}
	return filepath.Join(e.Cfg.DataDir, "audit.log")
}

// readAudit verifies the log at path and returns its records.
func readAudit(t *testing.T, path string) []audit.Record {
	t.Helper()
	if rep, err := audit.Verify(path); err != nil {
		t.Fatalf("audit verify: %v (%+v)", err, rep)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, audit.MaxRecordSize)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// journalSeqs checks that every record but audit.* ones carries a journal
// position, each once and increasing, and returns them by action+subject.
func journalSeqs(t *testing.T, recs []audit.Record) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	var last uint64
	for _, r := range recs {
		v, ok := r.Attrs["journal"]
		if !ok {
			t.Fatalf("record %d (%s) has no journal position", r.Seq, r.Action)
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n <= last {
			t.Fatalf("record %d (%s): journal position %q after %d: recorded twice or out of order", r.Seq, r.Action, v, last)
		}
		last = n
		out[r.Action+" "+r.Subject] = n
	}
	return out
}

// TestAuditTrailOfOneMessage: the audit log holds each change of a message
// once, in order, with what it is about, shipped from the store's journal.
func TestAuditTrailOfOneMessage(t *testing.T) {
	e := gatewaytest.New(t, nil)
	ctx := t.Context()
	oslo, bergen := e.Client("oslo"), e.Client("bergen")
	body := gatewaytest.RandBytes(3000)
	rt := e.Routing("oslo", "bergen", body)
	if _, err := oslo.Submit(ctx, rt, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	items := gatewaytest.PollUntil(t, bergen, 1)
	if err := bergen.Ack(ctx, items[0].Routing.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.Srv.FlushAudit(ctx); err != nil {
		t.Fatal(err)
	}
	recs := readAudit(t, auditPath(e))
	seqs := journalSeqs(t, recs)
	var trail []string
	for _, r := range recs {
		if r.Subject == rt.ID {
			trail = append(trail, r.Action)
		}
	}
	want := []string{"message.accepted", "message.leased", "message.delivered"}
	if len(trail) != len(want) || trail[0] != want[0] || trail[1] != want[1] || trail[2] != want[2] {
		t.Fatalf("audit trail of the message = %v, want %v", trail, want)
	}
	for _, name := range []string{"oslo", "bergen", "trondheim"} {
		if _, ok := seqs["account.created "+e.IDs[name]]; !ok {
			t.Errorf("no account.created record for %s", name)
		}
	}
	for _, r := range recs {
		switch {
		case r.Subject != rt.ID:
		case r.Action == "message.accepted":
			if r.Actor != e.IDs["oslo"] || r.Attrs["to"] != e.IDs["bergen"] || r.Attrs["digest"] != rt.Digest || r.Attrs["size"] != "3000" {
				t.Errorf("accepted record = %+v", r)
			}
		case r.Action == "message.delivered":
			if r.Actor != e.IDs["bergen"] || r.Attrs["notice"] == "" {
				t.Errorf("delivered record = %+v", r)
			}
		}
	}
}

// TestAuditJournalResumesExactlyOnce: a crash after the audit log took a
// batch but before the journal dropped it, and one before a batch was
// shipped at all: the next start records each entry once, none twice and
// none lost.
func TestAuditJournalResumesExactlyOnce(t *testing.T) {
	e := gatewaytest.New(t, nil)
	ctx := context.Background()
	e.Stop()

	// Play the crash with the gateway's own store and log: two messages
	// accepted; the first one's entry reached the audit log, then the
	// process died before it was dropped from the journal.
	b, err := bolt.Open(filepath.Join(e.Cfg.DataDir, "store"), bolt.Options{Journal: gateway.AuditJournal})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 2 {
		body := []byte("ciphertext " + strconv.Itoa(i))
		rt := e.Routing("oslo", "bergen", body)
		ids = append(ids, rt.ID)
		if _, err := b.Accept(ctx, store.Item{Routing: rt, AcceptedAt: time.Now().UTC()}, store.Payload{Inline: body}, nil); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := b.Journal(ctx, 10)
	if err != nil || len(ents) != 2 {
		t.Fatalf("journal = %d entries, %v; want 2", len(ents), err)
	}
	log, err := audit.Open(auditPath(e), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	shipped := ents[0]
	attrs := map[string]string{"journal": strconv.FormatUint(shipped.Seq, 10)}
	for k, v := range shipped.Attrs {
		attrs[k] = v
	}
	if _, err := log.Append(ctx, shipped.Actor, shipped.Action, shipped.Subject, attrs); err != nil {
		t.Fatal(err)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	e.Start()
	e.Stop() // a clean stop ships everything
	recs := readAudit(t, auditPath(e))
	journalSeqs(t, recs) // each position once, in order
	for i, id := range ids {
		n := 0
		for _, r := range recs {
			if r.Subject == id && r.Action == "message.accepted" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("message %d: %d accepted records, want exactly 1", i, n)
		}
	}
	// The journal is empty now.
	b, err = bolt.Open(filepath.Join(e.Cfg.DataDir, "store"), bolt.Options{Journal: gateway.AuditJournal})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if left, err := b.Journal(ctx, 10); err != nil || len(left) != 0 {
		t.Fatalf("journal after a clean stop: %d entries, %v", len(left), err)
	}
}

// TestAuditJournalCatalogVocabulary: catalog writes are described by what
// changed (AuditJournal diffs the account before and after).
func TestAuditJournalCatalogVocabulary(t *testing.T) {
	before := &store.Account{ID: "a", Name: "Oslo", OrgNumber: "974760673", Types: []string{"t"}, Certificates: [][]byte{{1}, {2}}}
	for _, tc := range []struct {
		name   string
		before *store.Account
		after  func(a store.Account) store.Account
		want   []string
	}{
		{"created", nil, func(a store.Account) store.Account { return a }, []string{"account.created"}},
		{"renamed", before, func(a store.Account) store.Account { a.Name = "Oslo kommune"; return a }, []string{"account.updated"}},
		{"unchanged", before, func(a store.Account) store.Account { return a }, []string{"account.updated"}},
		{"cert added", before, func(a store.Account) store.Account {
			a.Certificates = [][]byte{{1}, {2}, {3}}
			return a
		}, []string{"account.cert_added"}},
		{"cert removed", before, func(a store.Account) store.Account {
			a.Certificates = [][]byte{{2}}
			return a
		}, []string{"account.cert_removed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after := tc.after(*before)
			after.Certificates = append([][]byte(nil), after.Certificates...)
			got := gateway.AuditJournal(store.Change{Op: store.ChangeAccountPut, Before: tc.before, After: &after})
			var actions []string
			for _, e := range got {
				actions = append(actions, e.Action)
				if e.Actor != "operator" || e.Subject != "a" {
					t.Errorf("entry %+v: want actor operator, subject a", e)
				}
			}
			if len(actions) != len(tc.want) || actions[0] != tc.want[0] {
				t.Fatalf("entries %v, want %v", actions, tc.want)
			}
		})
	}
	// The fingerprint of an added certificate is pki.Fingerprint's.
	after := *before
	after.Certificates = [][]byte{{1}, {2}, {3}}
	got := gateway.AuditJournal(store.Change{Op: store.ChangeAccountPut, Before: before, After: &after})
	if fp := got[0].Attrs["fingerprint"]; fp != "084fed08b978af4d7d196a7446a86b58009e636b611db16211b65a9aadff29c5" {
		t.Fatalf("fingerprint of the added certificate = %s", fp)
	}
}
