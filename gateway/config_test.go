package gateway

import (
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
