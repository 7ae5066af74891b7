package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kurer/kurer/internal/audit"
)

// writeAuditLog creates an audit log of n records (with its head file) and
// returns its path and records.
func writeAuditLog(t *testing.T, n int) (string, []audit.Record) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var es []audit.Entry
	for i := range n {
		es = append(es, audit.Entry{Actor: "gateway", Action: "message.accepted", Subject: fmt.Sprint("msg-", i)})
	}
	recs, err := l.AppendBatch(t.Context(), es)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, recs
}

// TestAuditVerifyExpect: `audit verify --expect SEQ:HASH` passes only if
// the log holds that record with that hash, fails like tampering (exit 3)
// otherwise, and refuses a malformed value as a usage error (exit 2).
func TestAuditVerifyExpect(t *testing.T) {
	path, recs := writeAuditLog(t, 5)
	cp := func(i int) string { return fmt.Sprintf("%d:%s", recs[i].Seq, recs[i].Hash) }
	upper := fmt.Sprintf("5:%s", strings.ToUpper(recs[4].Hash))
	tests := []struct {
		name   string
		expect []string
		code   int
	}{
		{"no expectation", nil, ExitOK},
		{"last record", []string{cp(4)}, ExitOK},
		{"two records", []string{cp(1), cp(4)}, ExitOK},
		{"same expectation twice", []string{cp(2), cp(2)}, ExitOK},
		{"wrong hash", []string{"3:" + recs[3].Hash}, ExitVerify},
		{"one of two wrong", []string{cp(1), "5:" + recs[3].Hash}, ExitVerify},
		{"beyond the end", []string{"6:" + recs[4].Hash}, ExitVerify},
		{"no colon", []string{recs[4].Hash}, ExitUsage},
		{"empty", []string{""}, ExitUsage},
		{"no hash", []string{"5:"}, ExitUsage},
		{"no seq", []string{":" + recs[4].Hash}, ExitUsage},
		{"seq 0", []string{"0:" + audit.Genesis}, ExitUsage},
		{"leading zero", []string{"05:" + recs[4].Hash}, ExitUsage},
		{"signed seq", []string{"+5:" + recs[4].Hash}, ExitUsage},
		{"seq not a number", []string{"five:" + recs[4].Hash}, ExitUsage},
		{"short hash", []string{"5:" + recs[4].Hash[:40]}, ExitUsage},
		{"upper-case hash", []string{upper}, ExitUsage},
		{"trailing space", []string{cp(4) + " "}, ExitUsage},
		{"two hashes for one record", []string{cp(4), "5:" + recs[3].Hash}, ExitUsage},
	}
	for _, who := range []string{"gateway", "agent"} {
		for _, tt := range tests {
			t.Run(who+"/"+tt.name, func(t *testing.T) {
				args := []string{who, "audit", "verify", "--audit", path}
				for _, e := range tt.expect {
					args = append(args, "--expect", e)
				}
				out, errOut, code := runCLI(t.Context(), args...)
				if code != tt.code {
					t.Fatalf("%v: exit %d, want %d\n%s%s", tt.expect, code, tt.code, out, errOut)
				}
				if code == ExitOK && !strings.HasPrefix(out, "ok: 5 records") {
					t.Fatalf("output %q", out)
				}
				if code == ExitUsage && !strings.Contains(errOut, "--expect") {
					t.Fatalf("usage error does not name --expect: %q", errOut)
				}
			})
		}
	}

	t.Run("json", func(t *testing.T) {
		out, errOut, code := runCLI(t.Context(), "gateway", "audit", "verify", "--audit", path, "-o", "json", "--expect", "6:"+recs[4].Hash)
		if code != ExitVerify {
			t.Fatalf("exit %d, want %d\n%s%s", code, ExitVerify, out, errOut)
		}
		var got struct {
			OK     bool         `json:"ok"`
			Report audit.Report `json:"report"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if got.OK || got.Report.Records != 5 || got.Report.FirstBad != 6 || got.Report.Problem == "" {
			t.Fatalf("json = %+v", got)
		}
	})
}

// TestAuditVerifyMissingHead: records cut off the end together with the
// head file fail the verification (exit 3); before, this verified.
func TestAuditVerifyMissingHead(t *testing.T) {
	path, recs := writeAuditLog(t, 5)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if err := os.WriteFile(path, bytes.Join(lines[:3], nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + audit.HeadSuffix); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t.Context(), "gateway", "audit", "verify", "--audit", path)
	if code != ExitVerify || !strings.Contains(errOut, "head file missing") {
		t.Fatalf("exit %d, want %d\n%s%s", code, ExitVerify, out, errOut)
	}
	// The operator's noted hash shows what is gone, with or without head.
	if _, _, code := runCLI(t.Context(), "gateway", "audit", "verify", "--audit", path, "--expect", fmt.Sprintf("5:%s", recs[4].Hash)); code != ExitVerify {
		t.Fatalf("--expect past the cut: exit %d, want %d", code, ExitVerify)
	}
	// An empty log without head file is fine.
	empty := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runCLI(t.Context(), "gateway", "audit", "verify", "--audit", empty); code != ExitOK {
		t.Fatalf("empty log: exit %d\n%s%s", code, out, errOut)
	}
}
