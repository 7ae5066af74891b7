package agent_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/adapter/folder"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/durable"
)

// caseWithDocument is the example case plus one document named name
// (listed in melding.json, so that both agents' schema checks pass).
func caseWithDocument(t *testing.T, name string) (adapter.Case, []byte) {
	t.Helper()
	c := exampleCase(t)
	content := []byte("%PDF-1.7 syntetisk dokument " + name)
	p := filepath.Join(t.TempDir(), "doc")
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(c.Metadata, &m); err != nil {
		t.Fatal(err)
	}
	m["dokumenter"] = append(m["dokumenter"].([]any), map[string]any{"fil": name, "tittel": "Dokument",
		"dato": "2024-01-19", "kategori": "annet", "sett_av_familien": true})
	meta, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	c.Metadata = meta
	c.Files = append(c.Files, adapter.File{Name: name, Path: p})
	return c, content
}

// TestFolderRefusesReservedNamesEndToEnd: a case whose document is named
// like one of the folder adapter's own files (manifest.json; a folder
// Message.json/ in another case) goes from Trondheim through the real
// gateway to Oslo's folder adapter. Oslo must refuse it with the reason
// (not overwrite the document, not retry for ever): Trondheim's message
// ends rejected with folder.ReasonReservedName from Oslo's signed avvist,
// Oslo's inbox folder holds nothing, not even a half-written temp folder,
// and Oslo's verified copy still matches the sender's digests.
func TestFolderRefusesReservedNamesEndToEnd(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	for _, name := range []string{"manifest.json", "Message.json/x.pdf"} {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			c, _ := caseWithDocument(t, name)
			res, err := tr.Agent.Send(t.Context(), c)
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			id := res.ID
			// Oslo gives a verdict (or, wrongly, delivers).
			agenttest.Poll(t, "oslo to reject or deliver", func() bool {
				s := outState(osl.Agent, id)
				return s == localapi.InRejected || s == localapi.InDelivered
			})
			// Whatever the verdict, the agent's verified copy is intact
			// (a document manifest.json used to be written over, through
			// a hard link, with the manifest).
			agentCopyMatches(t, osl, id)
			d, err := osl.Agent.Message(id)
			if err != nil {
				t.Fatal(err)
			}
			if d.State != localapi.InRejected {
				t.Fatalf("oslo holds the message as %s; want rejected (history %+v)", d.State, d.History)
			}
			if last := d.History[len(d.History)-1]; last.Reason != folder.ReasonReservedName {
				t.Fatalf("oslo's last state change %+v; want reason %s", last, folder.ReasonReservedName)
			}
			// The signed avvist reaches the sender with the reason.
			agenttest.Poll(t, "rejected at the sender", func() bool { return outState(tr.Agent, id) == localapi.StateRejected })
			sd, err := tr.Agent.Message(id)
			if err != nil {
				t.Fatal(err)
			}
			if last := sd.History[len(sd.History)-1]; last.Reason != folder.ReasonReservedName {
				t.Fatalf("sender's last state change %+v; want reason %s", last, folder.ReasonReservedName)
			}
			if !slices.ContainsFunc(sd.Receipts, func(r localapi.Receipt) bool {
				return r.Kind == agent.KindAvvist && r.Verified && slices.ContainsFunc(r.Reasons, func(x localapi.Reason) bool {
					return x.Code == folder.ReasonReservedName && strings.Contains(x.Message, name)
				})
			}) {
				t.Fatalf("sender's receipts %+v; want a verified avvist with %s", sd.Receipts, folder.ReasonReservedName)
			}
			// Nothing in the inbox folder, not even hidden.
			if ents, err := os.ReadDir(osl.Inbox); err != nil || len(ents) != 0 {
				t.Fatalf("oslo's inbox folder holds %d entries (%v); want none", len(ents), err)
			}
		})
	}
}

// TestFolderInboxEditsLeaveAgentCopyIntact: a normal case is delivered into
// Oslo's inbox folder; the case system then rewrites every delivered file
// in place. Oslo's own verified copy must not change: its files still
// match the signed manifest's digests and the local API serves them with
// a matching Repr-Digest. (With the inbox's files hard-linked to the
// agent's copy, any write into the inbox went through to it.)
func TestFolderInboxEditsLeaveAgentCopyIntact(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	c := exampleCase(t)
	res, err := tr.Agent.Send(t.Context(), c)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	id := res.ID
	agenttest.Poll(t, "delivered at oslo", func() bool { return outState(osl.Agent, id) == localapi.InDelivered })
	agentCopyMatches(t, osl, id)
	d, err := osl.Agent.Message(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range d.Files {
		p := filepath.Join(osl.Inbox, id, filepath.FromSlash(f.Name))
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s not delivered: %v", f.Name, err)
		}
		if err := durable.WriteFile(p, []byte("endret av fagsystemet"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	agentCopyMatches(t, osl, id)
	lc, err := localapi.NewClient(osl.URL, osl.Token)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{localapi.MetadataFile: c.Metadata}
	for _, f := range c.Files {
		b, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		want[f.Name] = b
	}
	for _, f := range d.Files {
		rc, err := lc.File(t.Context(), id, f.Name)
		if err != nil {
			t.Fatalf("download %s: %v", f.Name, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("download %s: %v (the agent's copy no longer matches its digest)", f.Name, err)
		}
		if !bytes.Equal(got, want[f.Name]) {
			t.Fatalf("download %s: the bytes differ from the sender's", f.Name)
		}
	}
}

// agentCopyMatches checks that the receiving agent's stored payload of
// message id still matches the SHA-256 of every file in the signed
// manifest (when the message has files recorded).
func agentCopyMatches(t *testing.T, nd *agenttest.Node, id string) {
	t.Helper()
	d, err := nd.Agent.Message(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range d.Files {
		b, err := os.ReadFile(filepath.Join(nd.DataDir, "inbox", id, "payload", filepath.FromSlash(f.Name)))
		if err != nil {
			t.Fatalf("the agent's copy of %s: %v", f.Name, err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != f.SHA256 {
			t.Fatalf("the agent's copy of %s has sha256 %s; the signed manifest says %s", f.Name, got, f.SHA256)
		}
	}
}
