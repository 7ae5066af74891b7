package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/localapi"
)

// writeCase makes a case folder: case.json, documents in a sub-folder and a
// hidden file that must not be sent.
func writeCase(t *testing.T) (dir string, docs map[string][]byte) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "sak")
	docs = map[string][]byte{
		"vedtak.pdf":             make([]byte, 300<<10),
		"dokumenter/notat 1.txt": []byte("notat\n"),
	}
	_, _ = rand.Read(docs["vedtak.pdf"])
	for name, b := range docs {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "case.json"), []byte(`{"ok":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".DS_Store"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, docs
}

func TestSendFolder(t *testing.T) {
	a, url := newScriptAgent(t)
	dir, docs := writeCase(t)
	out, stderr, code := runCLI(t.Context(), "send", "--agent", url, "--token-file", a.tokenFile(t),
		"--to", "0301", "--type", "no.kurer.barnevern.sak.overforing.v1",
		"--metadata", filepath.Join(dir, "case.json"), dir)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	id := strings.TrimSpace(out)
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.msgs[id]; !ok {
		t.Fatalf("printed id %q is not the agent's; output %q", id, out)
	}
	if got := a.fields[id][localapi.FieldTo]; got != "municipality:0301" {
		t.Errorf("to = %q", got)
	}
	if got := string(a.meta[id]); got != `{"ok":true}` {
		t.Errorf("metadata = %q", got)
	}
	got := a.files[id]
	if len(got) != len(docs) {
		t.Errorf("sent %d files, want %d (case.json and hidden files excluded)", len(got), len(docs))
	}
	for name, b := range docs {
		if !bytes.Equal(got[name], b) {
			t.Errorf("file %q differs or missing", name)
		}
	}
}

func TestSendJSONAndEnv(t *testing.T) {
	a, url := newScriptAgent(t)
	dir, _ := writeCase(t)
	t.Setenv(envAgentURL, url)
	t.Setenv(envAgentToken, a.token)
	id := "5b0c2f0e-4a8e-4c1e-9d55-1f2a3b4c5d6e"
	out, stderr, code := runCLI(t.Context(), "send", "--to", "org:974760673", "--type", "T", "--id", id,
		"--metadata", filepath.Join(dir, "case.json"), "--output", "json", filepath.Join(dir, "vedtak.pdf"))
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res sendResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if res.ID != id || res.State != localapi.StateQueued || res.Files != 1 || res.Bytes != 300<<10 {
		t.Fatalf("result %+v", res)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fields[id][localapi.FieldTo] != "org:974760673" || len(a.files[id]["vedtak.pdf"]) != 300<<10 {
		t.Fatalf("agent got %v", a.fields[id])
	}
}

func TestSendWait(t *testing.T) {
	dir, _ := writeCase(t)
	tests := []struct {
		name     string
		steps    []string // states after queued
		reason   string
		timeout  string
		wantCode int
		wantErr  string
	}{
		{"received", []string{localapi.StateSent, localapi.StateDelivered, localapi.StateReceived}, "", "20s", ExitOK, ""},
		{"rejected by receiver", []string{localapi.StateSent, localapi.StateDelivered, localapi.StateRejected}, "schema_invalid", "20s", ExitNotDone, "rejected: schema_invalid"},
		{"expired", []string{localapi.StateSent, localapi.StateExpired}, "expired", "20s", ExitNotDone, "expired"},
		{"timeout while delivered", []string{localapi.StateSent, localapi.StateDelivered}, "", "1500ms", ExitNotDone, "still delivered after 1.5s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, url := newScriptAgent(t)
			a.onSend = func(id string) {
				for _, s := range tc.steps {
					reason := ""
					if s == tc.steps[len(tc.steps)-1] {
						reason = tc.reason
					}
					a.advance(id, s, reason)
				}
			}
			out, stderr, code := runCLI(t.Context(), "send", "--agent", url, "--token-file", a.tokenFile(t),
				"--to", "0301", "--type", "T", "--metadata", filepath.Join(dir, "case.json"),
				"--wait", "--timeout", tc.timeout, dir)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.wantCode, stderr)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("stderr %q lacks %q", stderr, tc.wantErr)
			}
			for _, s := range append([]string{localapi.StateQueued}, tc.steps...) {
				if !strings.Contains(out, "  "+s) {
					t.Errorf("output lacks state %s:\n%s", s, out)
				}
			}
		})
	}
}

func TestSendWaitJSON(t *testing.T) {
	dir, _ := writeCase(t)
	a, url := newScriptAgent(t)
	a.onSend = func(id string) {
		a.advance(id, localapi.StateSent, "")
		a.advance(id, localapi.StateReceived, "")
	}
	out, stderr, code := runCLI(t.Context(), "send", "--agent", url, "--token-file", a.tokenFile(t),
		"--to", "0301", "--type", "T", "--metadata", filepath.Join(dir, "case.json"), "--wait", "-o", "json", dir)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res sendResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if res.State != localapi.StateReceived || res.Detail == nil || len(res.Detail.Receipts) != 2 || !res.Detail.Receipts[1].Verified {
		t.Fatalf("result %+v", res)
	}
}

func TestSendRefusals(t *testing.T) {
	a, url := newScriptAgent(t)
	dir, _ := writeCase(t)
	tok := a.tokenFile(t)
	meta := filepath.Join(dir, "case.json")
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte(`{"not":"valid for the schema"}`), 0o644)
	notJSON := filepath.Join(t.TempDir(), "x.json")
	_ = os.WriteFile(notJSON, []byte(`{`), 0o644)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + l.Addr().String()
	l.Close()

	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bad receiver", []string{"--agent", url, "--token-file", tok, "--to", "Oslo", "--type", "T", "--metadata", meta, dir}, ExitUsage, "--to"},
		{"missing type", []string{"--agent", url, "--token-file", tok, "--to", "0301", "--metadata", meta, dir}, ExitError, "type"},
		{"metadata not JSON", []string{"--agent", url, "--token-file", tok, "--to", "0301", "--type", "T", "--metadata", notJSON, dir}, ExitUsage, "not valid JSON"},
		{"no such file", []string{"--agent", url, "--token-file", tok, "--to", "0301", "--type", "T", "--metadata", meta, filepath.Join(dir, "nope.pdf")}, ExitUsage, "nope.pdf"},
		{"duplicate names", []string{"--agent", url, "--token-file", tok, "--to", "0301", "--type", "T", "--metadata", meta, filepath.Join(dir, "vedtak.pdf"), dir}, ExitUsage, "two files"},
		{"schema refused by agent", []string{"--agent", url, "--token-file", tok, "--to", "0301", "--type", "T", "--metadata", bad, dir}, ExitError, "schema_invalid: $.ok: missing"},
		{"wrong token", []string{"--agent", url, "--to", "0301", "--type", "T", "--metadata", meta, dir}, ExitError, "unauthenticated"},
		{"agent down", []string{"--agent", down, "--token-file", tok, "--to", "0301", "--type", "T", "--metadata", meta, dir}, ExitUnavailable, "agent unavailable"},
		{"no agent", []string{"--to", "0301", "--type", "T", "--metadata", meta, dir}, ExitUsage, envAgentURL},
		{"bad output", []string{"--agent", url, "--token-file", tok, "--to", "0301", "--type", "T", "--metadata", meta, "-o", "yaml", dir}, ExitUsage, "--output"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envAgentURL, "")
			t.Setenv(envAgentToken, "")
			_, stderr, code := runCLI(t.Context(), append([]string{"send"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr, tc.msg)
			}
		})
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.msgs) != 0 {
		t.Fatalf("refused sends stored %d messages", len(a.msgs))
	}
}

func TestReceiverAddress(t *testing.T) {
	for in, want := range map[string]string{
		"0301":                                 "municipality:0301",
		"5001":                                 "municipality:5001",
		"974760673":                            "org:974760673",
		"org:974760673":                        "org:974760673",
		"municipality:0301":                    "municipality:0301",
		"5B0C2F0E-4A8E-4C1E-9D55-1F2A3B4C5D6E": "5b0c2f0e-4a8e-4c1e-9d55-1f2a3b4c5d6e",
	} {
		got, err := receiverAddress(in)
		if err != nil || got != want {
			t.Errorf("%q -> %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "301", "03011", "org:123", "Oslo", "municipality:abcd", "5b0c2f0e"} {
		if _, err := receiverAddress(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// The wait must not depend on sleeping: a state change is seen through the
// long poll within far less than the poll's wait.
func TestSendWaitIsPrompt(t *testing.T) {
	dir, _ := writeCase(t)
	a, url := newScriptAgent(t)
	release := make(chan struct{})
	a.onSend = func(id string) {
		<-release
		a.advance(id, localapi.StateReceived, "")
	}
	done := make(chan int, 1)
	go func() {
		_, _, code := runCLI(t.Context(), "send", "--agent", url, "--token-file", a.tokenFile(t),
			"--to", "0301", "--type", "T", "--metadata", filepath.Join(dir, "case.json"), "--wait", dir)
		done <- code
	}()
	// Wait (by polling) until the send is stored and the waiter is in its
	// long poll, then release the state change.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.mu.Lock()
		n := len(a.msgs)
		a.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("send not stored")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	close(release)
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("waiter took %s to see the change", el)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("waiter did not finish")
	}
}

func TestSendProgressBar(t *testing.T) {
	a, url := newScriptAgent(t)
	dir, _ := writeCase(t)
	args := []string{"send", "--agent", url, "--token-file", a.tokenFile(t), "--to", "0301", "--type", "T",
		"--metadata", filepath.Join(dir, "case.json")}
	// Not a terminal: no bar by default.
	_, stderr, code := runCLI(t.Context(), append(args, dir)...)
	if code != ExitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q (want no bar)", code, stderr)
	}
	// Forced: the bar is drawn on stderr and reaches the total.
	_, stderr, code = runCLI(t.Context(), append(args, "--progress", "always", dir)...)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "sending 2 file(s)") || !strings.Contains(stderr, "100%") {
		t.Fatalf("no complete progress bar on stderr: %q", stderr)
	}
}
