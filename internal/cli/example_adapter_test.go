package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/examples/adapter/inboxsync"
)

// TestExampleAdapter runs the example external adapter's core against real
// agents and a real gateway: a case sent by Trondheim is copied byte for byte
// into the case system's folder at Oslo and marked processed, and Trondheim's
// message reaches processed through the signed behandlet receipt. A second
// sync takes nothing more.
func TestExampleAdapter(t *testing.T) {
	n := startTestNet(t)
	tr, oslo := n.agents[0], n.agents[1]
	trc, err := localapi.NewClient(tr.url, tr.token)
	if err != nil {
		t.Fatal(err)
	}
	osc, err := localapi.NewClient(oslo.url, oslo.token)
	if err != nil {
		t.Fatal(err)
	}
	dir := caseDir(t)
	names, err := collectFiles([]string{dir}, "")
	if err != nil {
		t.Fatal(err)
	}
	meta := mustRead(t, filepath.Join(dir, "melding.json"))
	req := localapi.SendRequest{Type: caseType, To: "municipality:0301", Metadata: meta}
	for _, f := range names {
		req.Files = append(req.Files, localapi.SendFile{Name: f.name, Size: f.size, Open: func() (io.ReadCloser, error) { return os.Open(f.path) }})
	}
	res, err := trc.Send(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	took := 0
	waitUntil(t, 30*time.Second, func() bool {
		k, err := inboxsync.Sync(t.Context(), osc, out)
		if err != nil {
			t.Fatal(err)
		}
		took += k
		return took > 0
	})
	if took != 1 {
		t.Fatalf("took %d messages, want 1", took)
	}
	for _, f := range names {
		if !bytes.Equal(mustRead(t, f.path), mustRead(t, filepath.Join(out, res.ID, filepath.FromSlash(f.name)))) {
			t.Errorf("%s differs in the case system's folder", f.name)
		}
	}
	waitUntil(t, 30*time.Second, func() bool {
		d, err := trc.Message(t.Context(), res.ID)
		return err == nil && d.State == localapi.StateProcessed
	})
	if k, err := inboxsync.Sync(t.Context(), osc, out); err != nil || k != 0 {
		t.Fatalf("second sync took %d (%v), want 0", k, err)
	}
}
