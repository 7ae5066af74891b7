package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/localapi"
)

// sendOne stores one message at the script agent through kurer send.
func sendOne(t *testing.T, a *scriptAgent, url string) string {
	t.Helper()
	dir, _ := writeCase(t)
	out, stderr, code := runCLI(t.Context(), "send", "--agent", url, "--token-file", a.tokenFile(t),
		"--to", "0301", "--type", "no.kurer.barnevern.sak.overforing.v1", "--metadata", filepath.Join(dir, "case.json"), dir)
	if code != ExitOK {
		t.Fatalf("send: exit %d: %s", code, stderr)
	}
	return strings.TrimSpace(out)
}

func TestStatusOne(t *testing.T) {
	a, url := newScriptAgent(t)
	id := sendOne(t, a, url)
	a.advance(id, localapi.StateSent, "")
	a.advance(id, localapi.StateRejected, "schema_invalid")
	tok := a.tokenFile(t)

	out, stderr, code := runCLI(t.Context(), "status", id, "--agent", url, "--token-file", tok)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{id, "state", "rejected", "queued", "sent", "+", " ms", "accepted", "gateway", "avvist", "acc-oslo", "yes", "schema_invalid"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, _, code = runCLI(t.Context(), "status", id, "--agent", url, "--token-file", tok, "--output", "json")
	var d localapi.MessageDetail
	if err := json.Unmarshal([]byte(out), &d); code != ExitOK || err != nil {
		t.Fatalf("exit %d, %v: %q", code, err, out)
	}
	if d.ID != id || d.State != localapi.StateRejected || len(d.History) != 3 || len(d.Receipts) != 2 || d.Receipts[1].Kind != "avvist" {
		t.Fatalf("detail %+v", d)
	}

	_, stderr, code = runCLI(t.Context(), "status", "5b0c2f0e-4a8e-4c1e-9d55-1f2a3b4c5d6e", "--agent", url, "--token-file", tok)
	if code != ExitError || !strings.Contains(stderr, "not_found") {
		t.Fatalf("unknown id: exit %d, %q", code, stderr)
	}
}

func TestStatusList(t *testing.T) {
	a, url := newScriptAgent(t)
	id1 := sendOne(t, a, url)
	id2 := sendOne(t, a, url)
	a.advance(id2, localapi.StateFailed, "not_deliverable")
	tok := a.tokenFile(t)

	out, _, code := runCLI(t.Context(), "status", "--agent", url, "--token-file", tok)
	if code != ExitOK || !strings.Contains(out, id1) || !strings.Contains(out, id2) || !strings.Contains(out, "STATE") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	out, _, code = runCLI(t.Context(), "status", "--agent", url, "--token-file", tok, "--state", "failed", "-o", "json")
	var list []localapi.MessageSummary
	if err := json.Unmarshal([]byte(out), &list); code != ExitOK || err != nil {
		t.Fatalf("exit %d, %v: %q", code, err, out)
	}
	if len(list) != 1 || list[0].ID != id2 {
		t.Fatalf("list %+v", list)
	}
}

// waitFor polls the output until it contains s.
func waitFor(t *testing.T, out *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("output never contained %q:\n%s", s, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStatusWatch(t *testing.T) {
	for _, output := range []string{"text", "json"} {
		t.Run(output, func(t *testing.T) {
			a, url := newScriptAgent(t)
			old := sendOne(t, a, url)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var out, errb syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- ExecuteContext(ctx, []string{"status", "--watch", "--agent", url, "--token-file", a.tokenFile(t), "-o", output}, &out, &errb)
			}()
			if output == "text" {
				waitFor(t, &out, "watching out messages (1 known)")
			} else {
				// JSON mode prints nothing until a change; wait until the
				// watcher has its cursor, seen as its first long poll.
				deadline := time.Now().Add(10 * time.Second)
				for {
					a.mu.Lock()
					n := a.polls
					a.mu.Unlock()
					if n > 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("watcher never polled")
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			a.advance(old, localapi.StateSent, "")
			id := sendOne(t, a, url)
			a.advance(id, localapi.StateFailed, "not_deliverable")
			waitFor(t, &out, "not_deliverable")
			cancel()
			select {
			case code := <-done:
				if code != ExitOK {
					t.Fatalf("watch ended with %d: %s", code, errb.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("watch did not stop on cancel")
			}
			got := out.String()
			if output == "text" {
				for _, want := range []string{old + "  sent", id + "  queued", id + "  failed", "not_deliverable"} {
					if !strings.Contains(got, want) {
						t.Errorf("watch output lacks %q:\n%s", want, got)
					}
				}
				return
			}
			sc := bufio.NewScanner(strings.NewReader(got))
			var states []string
			for sc.Scan() {
				var l watchLine
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					t.Fatalf("line %q: %v", sc.Text(), err)
				}
				if l.Message == nil || l.Message.ID != l.Event.ID {
					t.Fatalf("line without its message: %q", sc.Text())
				}
				states = append(states, l.Event.ID[len(l.Event.ID)-1:]+":"+l.Event.State)
			}
			if len(states) < 2 || states[len(states)-1] != id[len(id)-1:]+":failed" {
				t.Fatalf("states %v", states)
			}
		})
	}
}
