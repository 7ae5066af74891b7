package cli

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// repoRoot is the repository root (where go.mod is), found from the test's
// working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	p, err := findUp("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(p)
}

// startTestNet starts the demo's gateway and two agents in a temp dir and
// waits until both agents are ready. It stops them when the test ends.
func startTestNet(t *testing.T) *demoNet {
	t.Helper()
	acc, err := loadDemoAccounts(filepath.Join(repoRoot(t), "certs-dev"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := startDemoNet(t.Context(), t.TempDir(), acc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := n.waitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDemoOnce runs `kurer demo --once` through the cobra command, as
// `make run` runs `kurer demo` (without the waiting).
func TestDemoOnce(t *testing.T) {
	dir := t.TempDir()
	out, stderr, code := runCLI(t.Context(), "demo", "--once", "--dir", dir)
	if code != ExitOK {
		t.Fatalf("demo --once: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	for _, want := range []string{
		"gateway", "trondheim", "oslo",
		"queued", "sent", "delivered", "received", " ms]",
		"In Oslo's inbox folder", "melding.json", "03-vedtak-hjelpetiltak-2024-03-18.txt",
		"accepted", "mottatt", "OK: every file arrived byte for byte",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// Step and receipt times are measured on one clock: never negative.
	if neg := regexp.MustCompile(`(\+\s*-\d+ ms|\s-\d+ ms)`).FindString(out); neg != "" {
		t.Errorf("demo output has a negative duration %q:\n%s", neg, out)
	}
	// --dir is kept, with the pieces the printed commands point to.
	for _, p := range []string{"demo.log", "trondheim/agent.token", "oslo/inbox", "gateway"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("demo dir: %v", err)
		}
	}
	// And a kept --dir runs again: the accounts are there already.
	out, stderr, code = runCLI(t.Context(), "demo", "--once", "--dir", dir)
	if code != ExitOK || !strings.Contains(out, "OK: every file arrived byte for byte") {
		t.Fatalf("demo --once again in the kept dir: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
}

// TestDemoDetectsDamage checks that --once is not a rubber stamp: a case
// whose files differ from what arrives fails. The comparison is run on a
// real delivered folder against a changed copy of the case.
func TestDemoCompareCase(t *testing.T) {
	src := t.TempDir()
	inbox := t.TempDir()
	write := func(dir, name, s string) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(src, "dokumenter/a.txt", "same")
	write(src, "dokumenter/b.txt", "original")
	write(inbox, "dokumenter/a.txt", "same")
	write(inbox, "dokumenter/b.txt", "changed!")
	write(inbox, "melding.json", `{"x":1}`)
	files, err := collectFiles([]string{src}, "")
	if err != nil {
		t.Fatal(err)
	}
	bad := compareCase(inbox, files, []byte(`{"x":1}`))
	if len(bad) != 1 || bad[0] != "dokumenter/b.txt" {
		t.Fatalf("compare: %v", bad)
	}
	bad = compareCase(inbox, files, []byte(`{"x":2}`))
	if len(bad) != 2 {
		t.Fatalf("metadata change not seen: %v", bad)
	}
	r := demoResult{missing: bad}
	r.detail.State = "received"
	if err := r.verdict(); err == nil {
		t.Fatal("verdict accepted missing files")
	}
	r = demoResult{receipt: false}
	r.detail.State = "received"
	if err := r.verdict(); err == nil {
		t.Fatal("verdict accepted an unverified receipt")
	}
	r = demoResult{receipt: true}
	r.detail.State = "received"
	if err := r.verdict(); err != nil {
		t.Fatalf("good result refused: %v", err)
	}
}
