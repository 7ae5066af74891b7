package folder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/durable"
)

// verdictHost records the verdicts an adapter gives.
type verdictHost struct {
	recordingHost
	mu       sync.Mutex
	rejected map[string][]localapi.Reason
}

func (h *verdictHost) Rejected(_ context.Context, id string, reasons []localapi.Reason) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rejected == nil {
		h.rejected = map[string][]localapi.Reason{}
	}
	h.rejected[id] = reasons
	return nil
}

// payload writes a delivery's payload (the agent's verified copy) into a
// new folder: melding.json plus files, each holding its own name.
func payload(t *testing.T, names ...string) adapter.Delivery {
	t.Helper()
	src := filepath.Join(t.TempDir(), "payload")
	d := adapter.Delivery{ID: "6f1c2a9e-8c1b-4d43-9a55-2d0f7f1b5e10", Type: "t", From: "a", To: "b", Dir: src,
		Manifest: []byte(`{"kurer":"manifest"}`), Signature: []byte("kurer signature"), ReceiptID: "r1"}
	for _, n := range append([]string{localapi.MetadataFile}, names...) {
		p := filepath.Join(src, filepath.FromSlash(n))
		must(t, os.MkdirAll(filepath.Dir(p), 0o750))
		must(t, os.WriteFile(p, []byte("sender's "+n), 0o600))
		d.Files = append(d.Files, localapi.File{Name: n, Size: int64(len("sender's " + n))})
	}
	return d
}

// unchanged checks that every payload file still holds its own bytes.
func unchanged(t *testing.T, d adapter.Delivery) {
	t.Helper()
	for _, f := range d.Files {
		b, err := os.ReadFile(filepath.Join(d.Dir, filepath.FromSlash(f.Name)))
		must(t, err)
		if string(b) != "sender's "+f.Name {
			t.Fatalf("the agent's copy of %q changed: %q", f.Name, b)
		}
	}
}

// TestDeliverRefusesReservedNames: a payload file (or top folder) named
// like one of the adapter's own files, in any case, is neither written
// over nor retried: the message is rejected with ReasonReservedName and a
// reason quoting the file, nothing appears in the inbox, and the agent's
// copy of the payload is untouched.
func TestDeliverRefusesReservedNames(t *testing.T) {
	for _, name := range []string{
		"manifest.json", "message.json", "signature.p7s",
		"Manifest.JSON", "SIGNATURE.P7S", "manifest.json.", "message.json ",
		"message.json/x.pdf", "Message.json/x.pdf", "signature.p7s/a/b.txt",
	} {
		t.Run(name, func(t *testing.T) {
			inbox := filepath.Join(t.TempDir(), "inbox")
			f, err := New("f", Config{Inbox: inbox}, nil)
			must(t, err)
			d := payload(t, "dokumenter/vedtak.txt", name)
			h := &verdictHost{}
			err = f.Deliver(t.Context(), h, d)
			unchanged(t, d)
			must(t, err)
			reasons := h.rejected[d.ID]
			if len(reasons) != 1 || reasons[0].Code != ReasonReservedName || !strings.Contains(reasons[0].Message, name) {
				t.Fatalf("rejected with %+v; want one %s reason quoting %q", reasons, ReasonReservedName, name)
			}
			emptyInbox(t, inbox)
			// A redelivery (the agent retrying) refuses again, still
			// writing nothing.
			must(t, f.Deliver(t.Context(), h, d))
			emptyInbox(t, inbox)
		})
	}
	// Names that only look alike are delivered as they are.
	t.Run("lookalikes-delivered", func(t *testing.T) {
		inbox := filepath.Join(t.TempDir(), "inbox")
		f, err := New("f", Config{Inbox: inbox}, nil)
		must(t, err)
		d := payload(t, "dokumenter/manifest.json", "manifest.json.pdf", "x/message.json", "signature.p7s.txt")
		h := &verdictHost{}
		must(t, f.Deliver(t.Context(), h, d))
		if len(h.rejected) != 0 {
			t.Fatalf("rejected %+v", h.rejected)
		}
		for _, file := range d.Files {
			b, err := os.ReadFile(filepath.Join(inbox, d.ID, filepath.FromSlash(file.Name)))
			must(t, err)
			if string(b) != "sender's "+file.Name {
				t.Fatalf("%s holds %q", file.Name, b)
			}
		}
		b, err := os.ReadFile(filepath.Join(inbox, d.ID, ManifestFile))
		must(t, err)
		if string(b) != string(d.Manifest) {
			t.Fatalf("manifest.json holds %q", b)
		}
	})
}

// TestInboxFilesAreNotTheAgentsCopy: the inbox's payload files share no
// inode with the agent's verified copy, so that neither the adapter's own
// writes nor a case system editing a file in place (open with O_TRUNC,
// chmod) changes the agent's bytes, whose digest the local API serves.
func TestInboxFilesAreNotTheAgentsCopy(t *testing.T) {
	inbox := filepath.Join(t.TempDir(), "inbox")
	f, err := New("f", Config{Inbox: inbox}, nil)
	must(t, err)
	d := payload(t, "dokumenter/vedtak.txt", "dokumenter/sub/notat.txt")
	must(t, f.Deliver(t.Context(), &verdictHost{}, d))
	for _, file := range d.Files {
		src := filepath.Join(d.Dir, filepath.FromSlash(file.Name))
		dst := filepath.Join(inbox, d.ID, filepath.FromSlash(file.Name))
		si, err := os.Stat(src)
		must(t, err)
		di, err := os.Stat(dst)
		must(t, err)
		if os.SameFile(si, di) {
			t.Fatalf("%s in the inbox is a link to the agent's copy", file.Name)
		}
		// The case system rewrites the file in place.
		must(t, durable.WriteFile(dst, []byte("edited by the case system"), 0o640))
		must(t, os.Chmod(dst, 0o666))
	}
	unchanged(t, d)
	for _, file := range d.Files {
		si, err := os.Stat(filepath.Join(d.Dir, filepath.FromSlash(file.Name)))
		must(t, err)
		if si.Mode().Perm() != 0o600 {
			t.Fatalf("the agent's copy of %s has mode %v", file.Name, si.Mode().Perm())
		}
	}
}

func emptyInbox(t *testing.T, inbox string) {
	t.Helper()
	ents, err := os.ReadDir(inbox)
	must(t, err)
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("the inbox holds %v, want nothing", names)
	}
}
