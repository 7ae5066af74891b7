package cli

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "100MiB": 100 << 20, "1MiB": 1 << 20, "512KiB": 512 << 10, "4096": 4096, "10B": 10, " 2 MiB": 2 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1MiB", "1TB", "MiB", "1.5GiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestBenchEnvelopeUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "envelope", "--size", "lots"},
		{"bench", "envelope", "--profile", "des"},
		{"bench", "envelope", "--runs", "0"},
		{"bench", "envelope", "--openssl", "/nonexistent/openssl"},
	} {
		if _, code, err := runEnvelopeCLI(t, args...); code != ExitUsage {
			t.Errorf("%v: code %d (%v), want %d", args, code, err, ExitUsage)
		}
	}
}
