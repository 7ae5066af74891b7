package gateway

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// validConfig is the least configuration Validate accepts.
func validConfig() Config {
	return Config{
		Audience: "https://gateway.example", TLSCert: "c.pem", TLSKey: "k.pem",
		TrustRoots: []string{"ca.pem"}, SigningKey: "s.pem",
		OperatorTokenSHA256: strings.Repeat("ab", 32),
	}
}

func TestConfigGCPercent(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   int
		want int
		err  bool
	}{
		{"default", 0, DefaultGCPercent, false},
		{"set", 150, 150, false},
		{"off", -1, -1, false},
		{"below off", -2, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			c.GCPercent = tc.in
			err := c.Validate()
			if tc.err {
				if err == nil || !strings.Contains(err.Error(), "gc_percent") {
					t.Fatalf("Validate = %v, want a gc_percent error", err)
				}
				return
			}
			if err != nil || c.GCPercent != tc.want {
				t.Fatalf("Validate = %v, GCPercent %d; want nil, %d", err, c.GCPercent, tc.want)
			}
		})
	}
}

func TestConfigMemoryLimit(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil || c.MemoryLimit != DefaultMemoryLimit {
		t.Fatalf("default: %v, MemoryLimit %d", err, c.MemoryLimit)
	}
	c = validConfig()
	c.MemoryLimit = 256 << 20
	if err := c.Validate(); err != nil || c.MemoryLimit != 256<<20 {
		t.Fatalf("set: %v, MemoryLimit %d", err, c.MemoryLimit)
	}
	c = validConfig()
	c.MemoryLimit = 1 << 20
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "memory_limit") {
		t.Fatalf("1MiB: %v, want a memory_limit error", err)
	}
}

func TestConfigMaxProcs(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil || c.MaxProcs != DefaultMaxProcs() || c.MaxProcs < 4 {
		t.Fatalf("default: %v, MaxProcs %d", err, c.MaxProcs)
	}
	c = validConfig()
	c.MaxProcs = 3
	if err := c.Validate(); err != nil || c.MaxProcs != 3 {
		t.Fatalf("set: %v, MaxProcs %d", err, c.MaxProcs)
	}
	c = validConfig()
	c.MaxProcs = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "max_procs") {
		t.Fatalf("negative: %v", err)
	}
}

// TestSetRuntime: the settings reach the runtime (defaults for zero
// values), the environment's win, and restore puts back what was there.
// Not parallel: it changes process-wide settings.
func TestSetRuntime(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMAXPROCS", "")
	t.Setenv("GOMEMLIMIT", "")
	gc0, procs0, lim0 := debug.SetGCPercent(-1), runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1)
	debug.SetGCPercent(gc0)
	t.Cleanup(func() { debug.SetGCPercent(gc0); runtime.GOMAXPROCS(procs0); debug.SetMemoryLimit(lim0) })

	restore := SetRuntime(Config{GCPercent: 321, MaxProcs: 7, MemoryLimit: 300 << 20})
	gc := debug.SetGCPercent(321)
	if gc != 321 || runtime.GOMAXPROCS(0) != 7 || debug.SetMemoryLimit(-1) != 300<<20 {
		t.Fatalf("set: gc %d, procs %d, limit %d", gc, runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1))
	}
	restore()
	if gc := debug.SetGCPercent(gc0); gc != gc0 || runtime.GOMAXPROCS(0) != procs0 || debug.SetMemoryLimit(-1) != lim0 {
		t.Fatalf("restore: gc %d, procs %d, limit %d; want %d, %d, %d", gc, runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1), gc0, procs0, lim0)
	}

	restore = SetRuntime(Config{})
	gc = debug.SetGCPercent(DefaultGCPercent)
	if gc != DefaultGCPercent || runtime.GOMAXPROCS(0) != DefaultMaxProcs() || debug.SetMemoryLimit(-1) != DefaultMemoryLimit {
		t.Fatalf("defaults: gc %d, procs %d, limit %d", gc, runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1))
	}
	restore()

	// The operator's environment wins: nothing is changed.
	t.Setenv("GOGC", "100")
	t.Setenv("GOMAXPROCS", "2")
	t.Setenv("GOMEMLIMIT", "1GiB")
	restore = SetRuntime(Config{GCPercent: 321, MaxProcs: 7, MemoryLimit: 300 << 20})
	defer restore()
	if gc := debug.SetGCPercent(gc0); gc != gc0 || runtime.GOMAXPROCS(0) != procs0 || debug.SetMemoryLimit(-1) != lim0 {
		t.Fatalf("environment set: gc %d, procs %d, limit %d; want %d, %d, %d", gc, runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1), gc0, procs0, lim0)
	}
}
