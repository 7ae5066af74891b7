package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type testConfig struct {
	Listen  string   `yaml:"listen"`
	Timeout Duration `yaml:"timeout"`
	Retry   struct {
		Max      int      `yaml:"max"`
		Interval Duration `yaml:"interval"`
	} `yaml:"retry"`
	Accounts []string `yaml:"accounts"`
}

type validated struct {
	Port int `yaml:"port"`
}

func (v *validated) Validate() error {
	if v.Port <= 0 || v.Port > 65535 {
		return errors.New("port must be 1..65535")
	}
	return nil
}

func writeFile(tb testing.TB, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "kurer.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func TestLoad(t *testing.T) {
	path := writeFile(t, `
listen: 127.0.0.1:8443
timeout: 30s
retry:
  max: 5
  interval: 1m30s
accounts: [oslo, bergen]
`)
	var c testConfig
	if err := Load(path, &c); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Listen != "127.0.0.1:8443" || time.Duration(c.Timeout) != 30*time.Second ||
		c.Retry.Max != 5 || time.Duration(c.Retry.Interval) != 90*time.Second ||
		len(c.Accounts) != 2 || c.Accounts[1] != "bergen" {
		t.Fatalf("decoded %+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // substrings of the error
	}{
		{"unknown field", "listen: x\nlisten_addr: y\n", []string{"line 2", "listen_addr"}},
		{"unknown nested field", "retry:\n  max: 1\n  maxx: 2\n", []string{"line 3", "maxx"}},
		{"wrong type", "retry:\n  max: many\n", []string{"line 2"}},
		{"duration without unit", "timeout: 30\n", []string{"line 1", "duration"}},
		{"duration garbage", "listen: x\ntimeout: soon\n", []string{"line 2", "soon"}},
		{"duration as map", "timeout:\n  s: 1\n", []string{"line 2", "duration"}},
		{"second document", "listen: x\n---\nlisten: y\n", []string{"line 2", "second"}},
		{"empty", "", []string{"empty"}},
		{"syntax", "listen: [\n", []string{"line"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content)
			var c testConfig
			err := Load(path, &c)
			if err == nil {
				t.Fatalf("Load accepted %q", tt.content)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadSizeLimit(t *testing.T) {
	// Valid YAML (a comment) just over the limit: refused on size alone.
	big := "listen: x\n#" + strings.Repeat("x", MaxFileSize) + "\n"
	var c testConfig
	err := Load(writeFile(t, big), &c)
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("Load of %d bytes = %v", len(big), err)
	}
	if c.Listen != "" {
		t.Fatal("oversize file was parsed")
	}
	// At the limit it is accepted.
	ok := "listen: x\n#" + strings.Repeat("x", MaxFileSize-12) + "\n"
	if len(ok) != MaxFileSize {
		t.Fatalf("test file is %d bytes", len(ok))
	}
	if err := Load(writeFile(t, ok), &c); err != nil || c.Listen != "x" {
		t.Fatalf("Load at the limit = %v", err)
	}
}

func TestLoadMissing(t *testing.T) {
	var c testConfig
	if err := Load(filepath.Join(t.TempDir(), "nope.yaml"), &c); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of missing file = %v", err)
	}
}

func TestLoadValidates(t *testing.T) {
	var v validated
	err := Load(writeFile(t, "port: 70000\n"), &v)
	if err == nil || !strings.Contains(err.Error(), "port must be") {
		t.Fatalf("Load = %v, want validation error", err)
	}
	if err := Load(writeFile(t, "port: 8443\n"), &v); err != nil || v.Port != 8443 {
		t.Fatalf("Load = %v", err)
	}
}

func TestDurationRoundTrip(t *testing.T) {
	d := Duration(5 * time.Minute)
	out, err := yaml.Marshal(struct {
		D Duration `yaml:"d"`
	}{d})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "d: 5m0s\n" {
		t.Fatalf("yaml = %q", out)
	}
	var back struct {
		D Duration `yaml:"d"`
	}
	if err := Parse(out, &back); err != nil || back.D != d {
		t.Fatalf("round trip = %v, %v", back.D, err)
	}
	j, err := json.Marshal(struct{ D Duration }{d})
	if err != nil || string(j) != `{"D":"5m0s"}` {
		t.Fatalf("json = %s, %v", j, err)
	}
	var jb struct{ D Duration }
	if err := json.Unmarshal([]byte(`{"D":"250ms"}`), &jb); err != nil || time.Duration(jb.D) != 250*time.Millisecond {
		t.Fatalf("json decode = %v, %v", jb.D, err)
	}
	if err := json.Unmarshal([]byte(`{"D":"1"}`), &jb); err == nil {
		t.Fatal("json accepted a duration without unit")
	}
}

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("from-file\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("s", MaxSecretSize+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KURER_TEST_SECRET", "from-env")
	t.Setenv("KURER_TEST_EMPTY", "")

	tests := []struct {
		name      string
		env, file string
		want      string
		wantErr   error
		errSubstr string
	}{
		{name: "env wins over file", env: "KURER_TEST_SECRET", file: file, want: "from-env"},
		{name: "env only", env: "KURER_TEST_SECRET", want: "from-env"},
		{name: "file when env unset", env: "KURER_TEST_UNSET", file: file, want: "from-file"},
		{name: "file when env empty", env: "KURER_TEST_EMPTY", file: file, want: "from-file"},
		{name: "file only", file: file, want: "from-file"},
		{name: "neither", wantErr: ErrNoSecret},
		{name: "env unset, no file", env: "KURER_TEST_UNSET", wantErr: ErrNoSecret, errSubstr: "$KURER_TEST_UNSET"},
		{name: "empty file", file: empty, wantErr: ErrNoSecret},
		{name: "missing file", file: filepath.Join(dir, "nope"), wantErr: os.ErrNotExist},
		{name: "file too large", file: big, errSubstr: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Secret(tt.env, tt.file)
			if tt.wantErr == nil && tt.errSubstr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Secret = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Secret = %q, want an error", got)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.errSubstr) {
				t.Fatalf("error %q lacks %q", err, tt.errSubstr)
			}
			if strings.Contains(err.Error(), "from-") || strings.Contains(err.Error(), "sss") {
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}
