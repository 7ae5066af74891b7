package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLoadAgentConfigResolvesAdapterPaths: paths in adapter options (the
// folder adapter's folders, the webhook's secret and CA files) are relative
// to the config file, like every other path in it.
func TestLoadAgentConfigResolvesAdapterPaths(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "etc", "agent.yaml")
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o750); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join("..", "..", "examples", "agent-oslo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	src = append(src, []byte(`  - kind: webhook
    name: fagsystem
    options:
      url: https://fagsystem.example/kurer
      secret_file: secrets/webhook.key
      ca_file: /etc/kurer/ca.pem
`)...)
	if err := os.WriteFile(cfgPath, src, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadAgentConfig(cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Dir(cfgPath)
	want := map[string]string{
		"inbox":       filepath.Join(base, "../var/oslo/inbox"),
		"secret_file": filepath.Join(base, "secrets/webhook.key"),
		"ca_file":     "/etc/kurer/ca.pem", // absolute stays
		"url":         "https://fagsystem.example/kurer",
	}
	got := map[string]string{}
	for _, ac := range cfg.Adapters {
		var m map[string]any
		if err := ac.Options.Decode(&m); err != nil {
			t.Fatal(err)
		}
		for k, v := range m {
			if s, ok := v.(string); ok {
				got[k] = s
			}
		}
	}
	for k, w := range want {
		if filepath.Clean(got[k]) != filepath.Clean(w) && got[k] != w {
			t.Errorf("%s = %q, want %q", k, got[k], w)
		}
	}
}
