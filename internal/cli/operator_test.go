package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway/api"
)

// TestOperatorPath runs what an operator and an integrator do with the
// example configs, through the real commands: kurer gateway serve, kurer
// gateway account add/list/show, kurer agent run (twice), kurer agent keys
// check, a case dropped into Trondheim's outbox folder arriving byte for byte
// in Oslo's inbox folder with the receipt back in Trondheim's receipts
// folder, and kurer gateway/agent audit verify, which must catch an edit.
func TestOperatorPath(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	ports := freePorts(t, 7)
	repl := strings.NewReplacer(
		"../certs-dev/", filepath.Join(root, "certs-dev")+"/",
		"../var/", filepath.Join(dir, "var")+"/",
		"dev/agent.token", filepath.Join(root, "examples", "dev", "agent.token"),
		"127.0.0.1:8443", ports[0], "127.0.0.1:8444", ports[1], "127.0.0.1:9464", ports[2],
		"127.0.0.1:7481", ports[3], "127.0.0.1:9481", ports[4],
		"127.0.0.1:7482", ports[5], "127.0.0.1:9482", ports[6],
	)
	for _, name := range []string{"gateway.yaml", "agent-trondheim.yaml", "agent-oslo.yaml"} {
		data, err := os.ReadFile(filepath.Join(root, "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(repl.Replace(string(data))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KURER_AGENT_TOKEN", "")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := map[string]chan int{}
	start := func(name string, args ...string) {
		ch := make(chan int, 1)
		done[name] = ch
		go func() {
			out, errOut, code := runCLI(ctx, args...)
			if code != 0 && ctx.Err() == nil {
				t.Errorf("%s exited %d early:\n%s\n%s", name, code, out, errOut)
			}
			ch <- code
		}()
	}
	stop := func(name string) {
		select {
		case code := <-done[name]:
			if code != 0 {
				t.Errorf("%s: exit %d", name, code)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not stop within 20s", name)
		}
	}

	start("gateway", "gateway", "serve", "--config", filepath.Join(dir, "gateway.yaml"), "--dev")
	waitHTTP(t, "http://"+ports[2]+api.PathReady)

	admin := []string{"--admin", "https://" + ports[1], "--ca", filepath.Join(root, "certs-dev", "ca.pem"), "--dev",
		"--token-file", filepath.Join(root, "examples", "dev", "operator.token")}
	types := "no.kurer.barnevern.sak.overforing.v1,no.kurer.kvittering.mottatt.v1,no.kurer.kvittering.avvist.v1,no.kurer.kvittering.behandlet.v1"
	for _, a := range []struct{ id, name, org, mun, cert string }{
		{"66293165-c747-50c2-a568-57c33b1ca42f", "Trondheim kommune, barneverntjenesten", "310000019", "5001", "trondheim.pem"},
		{"897028ee-1d43-591c-bb6c-b98ced0afa70", "Oslo kommune, barneverntjenesten", "310000027", "0301", "oslo.pem"},
	} {
		args := append([]string{"gateway", "account", "add", "--id", a.id, "--name", a.name, "--org", a.org,
			"--municipality", a.mun, "--service", "barneverntjenesten", "--type", types,
			"--cert", filepath.Join(root, "certs-dev", a.cert)}, admin...)
		if out, errOut, code := runCLI(ctx, args...); code != 0 {
			t.Fatalf("account add %s: exit %d\n%s%s", a.name, code, out, errOut)
		}
	}
	// A bad org number is refused by the gateway with its stable code.
	_, errOut, code := runCLI(ctx, append([]string{"gateway", "account", "add", "--name", "x", "--org", "310000018",
		"--type", types, "--cert", filepath.Join(root, "certs-dev", "bergen.pem")}, admin...)...)
	if code == 0 || !strings.Contains(errOut, "kurer: account add:") {
		t.Fatalf("bad org number: exit %d, %q", code, errOut)
	}
	out, errOut, code := runCLI(ctx, append([]string{"gateway", "account", "list", "-o", "json"}, admin...)...)
	if code != 0 {
		t.Fatalf("account list: %d %s", code, errOut)
	}
	var accts []api.Account
	if err := json.Unmarshal([]byte(out), &accts); err != nil || len(accts) != 2 {
		t.Fatalf("account list: %v %s", err, out)
	}
	out, _, code = runCLI(ctx, append([]string{"gateway", "account", "show", "897028ee-1d43-591c-bb6c-b98ced0afa70"}, admin...)...)
	if code != 0 || !strings.Contains(out, "Oslo kommune") || !strings.Contains(out, "valid") {
		t.Fatalf("account show: %d\n%s", code, out)
	}
	// Without the operator token the admin API refuses.
	_, errOut, code = runCLI(ctx, "gateway", "account", "list", "--admin", "https://"+ports[1], "--ca", filepath.Join(root, "certs-dev", "ca.pem"), "--dev", "--token-file", filepath.Join(root, "examples", "dev", "agent.token"))
	if code == 0 || !strings.Contains(errOut, "operator") && !strings.Contains(errOut, "unauthenticated") {
		t.Fatalf("wrong operator token: exit %d %q", code, errOut)
	}

	start("trondheim", "agent", "run", "--config", filepath.Join(dir, "agent-trondheim.yaml"), "--dev")
	start("oslo", "agent", "run", "--config", filepath.Join(dir, "agent-oslo.yaml"), "--dev")
	token := strings.TrimSpace(readFile(t, filepath.Join(root, "examples", "dev", "agent.token")))
	for _, p := range []string{ports[3], ports[5]} {
		c, err := localapi.NewClient("http://"+p, token)
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 20*time.Second, func() bool { return c.Ready(ctx) == nil })
	}
	out, errOut, code = runCLI(ctx, "agent", "keys", "check", "--config", filepath.Join(dir, "agent-oslo.yaml"), "--dev")
	if code != 0 || !strings.Contains(out, "yes") {
		t.Fatalf("keys check: exit %d\n%s%s", code, out, errOut)
	}
	// Without --dev the development CA is refused.
	if _, _, code := runCLI(ctx, "agent", "keys", "check", "--config", filepath.Join(dir, "agent-oslo.yaml")); code == 0 {
		t.Fatal("keys check trusted the dev CA without --dev")
	}

	// The integrator's path: build a case folder beside the outbox, rename it in.
	caseSrc := filepath.Join(root, "examples", "cases", "sak-overforing")
	staging := filepath.Join(dir, "var", "trondheim", ".sak-1")
	copyTree(t, caseSrc, staging)
	writeFile(t, filepath.Join(staging, "case.json"), `{"type":"no.kurer.barnevern.sak.overforing.v1","to":"0301"}`)
	if err := os.Rename(staging, filepath.Join(dir, "var", "trondheim", "outbox", "sak-1")); err != nil {
		t.Fatal(err)
	}
	var msgID string
	waitUntil(t, 30*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "var", "trondheim", "sent", "sak-1", ".kurer-id"))
		msgID = strings.TrimSpace(string(b))
		return err == nil
	})
	inbox := filepath.Join(dir, "var", "oslo", "inbox", msgID)
	waitUntil(t, 30*time.Second, func() bool { _, err := os.Stat(inbox); return err == nil })
	_ = filepath.WalkDir(caseSrc, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(caseSrc, p)
		if !bytes.Equal(mustRead(t, p), mustRead(t, filepath.Join(inbox, rel))) {
			t.Errorf("%s differs in Oslo's inbox", rel)
		}
		return nil
	})
	receipt := filepath.Join(dir, "var", "trondheim", "receipts", msgID+".json")
	waitUntil(t, 30*time.Second, func() bool {
		var d localapi.MessageDetail
		return json.Unmarshal(mustReadOK(receipt), &d) == nil && d.State == localapi.StateReceived
	})

	cancel()
	for _, n := range []string{"trondheim", "oslo", "gateway"} {
		stop(n)
	}

	for _, c := range []struct{ who, log string }{
		{"gateway", filepath.Join(dir, "var", "gateway", "audit.log")},
		{"agent", filepath.Join(dir, "var", "oslo", "data", "audit.log")},
	} {
		out, errOut, code := runCLI(t.Context(), c.who, "audit", "verify", "--audit", c.log)
		if code != 0 || !strings.HasPrefix(out, "ok: ") {
			t.Fatalf("%s audit verify: exit %d\n%s%s", c.who, code, out, errOut)
		}
		data := mustRead(t, c.log)
		i := bytes.Index(data, []byte(`"action":"`)) + len(`"action":"`)
		data[i] ^= 0x01 // one flipped bit in the first record's action
		if err := os.WriteFile(c.log, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, code := runCLI(t.Context(), c.who, "audit", "verify", "--audit", c.log); code != ExitVerify {
			t.Fatalf("%s audit verify after an edit: exit %d, want %d", c.who, code, ExitVerify)
		}
	}
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	waitUntil(t, 20*time.Second, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitUntil(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustReadOK(p string) []byte { b, _ := os.ReadFile(p); return b }

func readFile(t *testing.T, p string) string { return string(mustRead(t, p)) }

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o750)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o640)
	})
	if err != nil {
		t.Fatal(fmt.Errorf("copy %s: %w", src, err))
	}
}
