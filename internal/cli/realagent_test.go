package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/errs"
)

// These tests run kurer send, kurer status and the localapi client against
// real agents and a real gateway (the demo's network, in-process on
// 127.0.0.1 with certs-dev).

const caseType = "no.kurer.barnevern.sak.overforing.v1"

func caseDir(t *testing.T) string {
	return filepath.Join(repoRoot(t), "examples", "cases", "sak-overforing")
}

func TestRealSendWaitAndStatus(t *testing.T) {
	n := startTestNet(t)
	tr, oslo := n.agents[0], n.agents[1]
	dir := caseDir(t)

	out, stderr, code := runCLI(t.Context(), "send", "--agent", tr.url, "--token-file", tr.tokenFile,
		"--to", "0301", "--type", caseType, "--metadata", filepath.Join(dir, "melding.json"),
		"--wait", "--timeout", "45s", dir)
	if code != ExitOK {
		t.Fatalf("send --wait: exit %d\n%s\n%s", code, out, stderr)
	}
	id := strings.Fields(out)[0]
	for _, s := range []string{"queued", "sent", "received"} {
		if !strings.Contains(out, "  "+s) {
			t.Errorf("send --wait output lacks %s:\n%s", s, out)
		}
	}

	// Trondheim's view: history and verified receipts from the gateway and
	// from Oslo's account.
	out, stderr, code = runCLI(t.Context(), "status", id, "--agent", tr.url, "--token-file", tr.tokenFile, "-o", "json")
	if code != ExitOK {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	var d localapi.MessageDetail
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	if d.ID != id || (d.State != localapi.StateReceived && d.State != localapi.StateProcessed) || d.To != oslo.party.ID {
		t.Fatalf("detail %+v", d)
	}
	kinds := map[string]localapi.Receipt{}
	for _, r := range d.Receipts {
		kinds[r.Kind] = r
	}
	if r, ok := kinds["accepted"]; !ok || !r.Verified || r.Signed == "" {
		t.Errorf("no verified accepted receipt: %+v", d.Receipts)
	}
	if r, ok := kinds["mottatt"]; !ok || !r.Verified || r.Issuer != oslo.party.ID {
		t.Errorf("no verified mottatt receipt from Oslo: %+v", d.Receipts)
	}
	out, _, code = runCLI(t.Context(), "status", id, "--agent", tr.url, "--token-file", tr.tokenFile)
	if code != ExitOK || !strings.Contains(out, "mottatt") || !strings.Contains(out, oslo.party.ID) || !strings.Contains(out, " ms") {
		t.Errorf("status text:\n%s", out)
	}

	// Oslo's view: the incoming message with its files.
	out, _, code = runCLI(t.Context(), "status", "--direction", "in", "--agent", oslo.url, "--token-file", oslo.tokenFile)
	if code != ExitOK || !strings.Contains(out, id) {
		t.Errorf("Oslo's list lacks %s:\n%s", id, out)
	}
}

func TestRealSendRefused(t *testing.T) {
	n := startTestNet(t)
	tr := n.agents[0]
	dir := caseDir(t)
	bad := filepath.Join(t.TempDir(), "melding.json")
	meta, err := os.ReadFile(filepath.Join(dir, "melding.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Break the schema: drop the child.
	var m map[string]any
	if err := json.Unmarshal(meta, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "barn")
	b, _ := json.Marshal(m)
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"schema error", []string{"--to", "0301", "--metadata", bad}, string(errs.SchemaInvalid)},
		{"unknown municipality", []string{"--to", "9999", "--metadata", filepath.Join(dir, "melding.json")}, string(errs.UnknownReceiver)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"send", "--agent", tr.url, "--token-file", tr.tokenFile, "--type", caseType}, tc.args...)
			_, stderr, code := runCLI(t.Context(), append(args, dir)...)
			if code != ExitError || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q, want %s", code, stderr, tc.want)
			}
		})
	}
}

// TestRealClient drives every localapi.Client call against real agents:
// send at Trondheim, find it at Oslo, read its manifest and files, mark it
// processed, and see Trondheim's message reach processed through the events
// long poll; then reject a second one and see rejected.
func TestRealClient(t *testing.T) {
	n := startTestNet(t)
	tr, oslo := n.agents[0], n.agents[1]
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	tc, err := localapi.NewClient(tr.url, tr.token)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := localapi.NewClient(oslo.url, oslo.token)
	if err != nil {
		t.Fatal(err)
	}
	dir := caseDir(t)
	meta, err := os.ReadFile(filepath.Join(dir, "melding.json"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := collectFiles([]string{dir}, filepath.Join(dir, "melding.json"))
	if err != nil {
		t.Fatal(err)
	}
	send := func() string {
		req := localapi.SendRequest{Type: caseType, To: "municipality:0301", Metadata: meta}
		for _, f := range files {
			p := f.path
			req.Files = append(req.Files, localapi.SendFile{Name: f.name, Size: f.size, Open: func() (io.ReadCloser, error) { return os.Open(p) }})
		}
		resp, err := tc.Send(ctx, req)
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		return resp.ID
	}
	// waitIn waits until Oslo has the message.
	waitIn := func(id string) localapi.MessageDetail {
		var cursor uint64
		for {
			d, err := oc.Message(ctx, id)
			if err == nil {
				return d
			}
			if errs.CodeOf(err) != errs.NotFound {
				t.Fatalf("oslo message: %v", err)
			}
			ev, err := oc.Events(ctx, cursor, 5*time.Second)
			if err != nil {
				t.Fatalf("oslo events: %v", err)
			}
			cursor = ev.Next
		}
	}
	// waitOut follows Trondheim's message to want via the events long poll.
	waitOut := func(id, want string) localapi.MessageDetail {
		var cursor uint64
		for {
			d, err := tc.Message(ctx, id)
			if err != nil {
				t.Fatalf("message %s: %v", id, err)
			}
			if d.State == want {
				return d
			}
			switch d.State {
			case localapi.StateRejected, localapi.StateExpired, localapi.StateFailed, localapi.StateProcessed:
				t.Fatalf("message %s ended %s, want %s", id, d.State, want)
			}
			ev, err := tc.Events(ctx, cursor, 5*time.Second)
			if err != nil {
				t.Fatalf("events: %v", err)
			}
			cursor = ev.Next
		}
	}

	id := send()
	in := waitIn(id)
	if in.Direction != localapi.DirectionIn || in.From != tr.party.ID || len(in.Files) == 0 {
		t.Fatalf("incoming detail %+v", in)
	}
	list, err := oc.List(ctx, localapi.DirectionIn, "", 10)
	if err != nil || !containsSummary(list, id) {
		t.Fatalf("list in: %v %v", list, err)
	}
	rc, err := oc.Manifest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	man, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Contains(man, []byte(id)) {
		t.Fatalf("manifest lacks the id: %s", man)
	}
	for _, f := range files {
		rc, err := oc.File(ctx, id, f.name)
		if err != nil {
			t.Fatalf("file %s: %v", f.name, err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		want, _ := os.ReadFile(f.path)
		if !bytes.Equal(got, want) {
			t.Fatalf("file %s differs", f.name)
		}
	}
	if err := oc.Processed(ctx, id); err != nil {
		t.Fatal(err)
	}
	d := waitOut(id, localapi.StateProcessed)
	if !hasReceipt(d, "behandlet", oslo.party.ID) {
		t.Fatalf("no verified behandlet receipt: %+v", d.Receipts)
	}

	id2 := send()
	waitIn(id2)
	if err := oc.Rejected(ctx, id2, localapi.RejectRequest{Reasons: []localapi.Reason{{Code: string(errs.SchemaInvalid), Path: "/barn/navn", Message: "test"}}}); err != nil {
		t.Fatal(err)
	}
	d2 := waitOut(id2, localapi.StateRejected)
	if !hasReceipt(d2, "avvist", oslo.party.ID) {
		t.Fatalf("no verified avvist receipt: %+v", d2.Receipts)
	}
	// Oslo's own record keeps the case system's reasons, path and all.
	in2, err := oc.Message(ctx, id2)
	if err != nil || in2.State != localapi.InRejected || len(in2.Reasons) != 1 ||
		in2.Reasons[0].Code != string(errs.SchemaInvalid) || in2.Reasons[0].Path != "/barn/navn" {
		t.Fatalf("Oslo's view of the rejected message: %+v %v", in2, err)
	}
	if err := waitVerdict(d2); err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Fatalf("verdict of a rejected message: %v", err)
	}
}

func containsSummary(list []localapi.MessageSummary, id string) bool {
	for _, m := range list {
		if m.ID == id {
			return true
		}
	}
	return false
}

func hasReceipt(d localapi.MessageDetail, kind, issuer string) bool {
	for _, r := range d.Receipts {
		if r.Kind == kind && r.Issuer == issuer && r.Verified {
			return true
		}
	}
	return false
}
