package cli

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

// TestBenchGateway runs `kurer bench gateway` for real on a small load and
// checks that its figures hang together.
func TestBenchGateway(t *testing.T) {
	out, errOut, code := runCLI(t.Context(), "bench", "gateway", "--json", "--accounts", "3", "--workers", "6", "--messages", "60", "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var res struct {
		Machine benchMachine        `json:"machine"`
		Gateway *gatewayBenchResult `json:"gateway"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	g := res.Gateway
	if g == nil || g.Accounts != 3 || g.Workers != 6 || g.Messages != 60 || g.Size != 10<<10 || res.Machine.CPUs < 1 {
		t.Fatalf("result does not echo the run: %s", out)
	}
	if g.PerSec <= 0 || g.P50ms <= 0 || g.P99ms < g.P50ms || g.HalfReached <= 0 || g.HalfP99ms < g.HalfP50ms || g.HalfP50ms <= 0 ||
		g.HalfRate != g.PerSec/2 || g.NoticesPerMsg <= 0 {
		t.Fatalf("implausible figures: %s", out)
	}
	// Every accept is fsynced: the writer committed and wrote pages, and
	// was busy for part of the run, never more than all of it.
	if g.CommitsPerS <= 0 || g.PagesPerMsg <= 0 || g.WriterBusy <= 0 || g.WriterBusy > 1.05 {
		t.Fatalf("implausible store figures: %s", out)
	}
	if g.TargetRate != (g.PerSec >= gatewayTargetRate) || g.TargetP99 != (g.HalfP99ms <= gatewayTargetP99ms) {
		t.Fatalf("targets do not follow from the figures: %s", out)
	}
	if runtime.GOOS == "linux" && g.CPUmsPerMsg <= 0 {
		t.Fatalf("no CPU per message on Linux: %s", out)
	}
	if !strings.Contains(errOut, "half rate") {
		t.Fatalf("no progress on stderr: %q", errOut)
	}

	// The text form names the parts and the targets.
	out, errOut, code = runCLI(t.Context(), "bench", "gateway", "--accounts", "2", "--workers", "2", "--messages", "4")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"peak", "half rate", "target >= 2000/s", "target p99 <= 50 ms", "writer"} {
		if !strings.Contains(out, want) {
			t.Fatalf("text output lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchGatewayUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--accounts", "1"},
		{"--accounts", "4", "--workers", "2"},
		{"--workers", "8", "--accounts", "2", "--messages", "4"},
	} {
		if _, _, code := runCLI(t.Context(), append([]string{"bench", "gateway"}, args...)...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, ExitUsage)
		}
	}
	if _, _, code := runCLI(t.Context(), "bench", "pipeline", "--skip-large", "--gateway-accounts", "1"); code != ExitUsage {
		t.Errorf("pipeline --gateway-accounts 1: exit %d, want %d", code, ExitUsage)
	}
}
