package cli

import (
	"encoding/json"
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestBenchOrgNumbersValid(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range benchOrgNumbers(40) {
		if !validOrgNumber(n) || seen[n] {
			t.Fatalf("%s: invalid or repeated", n)
		}
		seen[n] = true
	}
}

// TestBenchPipelineThroughput runs the throughput part for real on a tiny
// load (the large-file part execs the kurer binary, which a test binary is
// not; the crash suite covers real processes).
func TestBenchPipelineThroughput(t *testing.T) {
	out, errOut, code := runCLI(t.Context(), "bench", "pipeline", "--json", "--skip-large", "--agents", "1", "--messages", "6",
		"--gateway-accounts", "2", "--gateway-workers", "2", "--gateway-messages", "4", "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var res pipelineResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if g := res.Gateway; g == nil || g.Accounts != 2 || g.Messages != 4 || g.PerSec <= 0 {
		t.Fatalf("no gateway part: %s", out)
	}
	tp := res.Throughput
	if tp == nil || !tp.InProcess || tp.Messages != 6 || tp.PerSec <= 0 || tp.P50ms <= 0 || tp.P99ms < tp.P50ms || tp.HalfP99ms <= 0 || res.Large != nil {
		t.Fatalf("implausible result: %s", out)
	}
	// An RSA-3072 private operation takes milliseconds, not microseconds or
	// seconds, and the ceiling follows from it.
	if tp.RSAPrivateOpMs < 0.1 || tp.RSAPrivateOpMs > 1000 || tp.CryptoCeiling <= 0 ||
		math.Abs(tp.CryptoCeiling-float64(res.Machine.CPUs)/(4*tp.RSAPrivateOpMs/1000)) > 1e-6*tp.CryptoCeiling {
		t.Fatalf("implausible RSA figures: op %.3f ms, ceiling %.1f/s", tp.RSAPrivateOpMs, tp.CryptoCeiling)
	}
	if runtime.GOOS == "linux" && tp.CPUmsPerMsg <= 0 {
		t.Fatalf("no CPU per message on Linux: %s", out)
	}
	if _, _, code := runCLI(t.Context(), "bench", "pipeline", "--agents", "0"); code != ExitUsage {
		t.Fatalf("--agents 0: exit %d", code)
	}
	if !strings.Contains(errOut, "throughput") {
		t.Fatalf("no progress on stderr: %q", errOut)
	}
}
