package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerify feeds arbitrary file contents to Verify and, when they verify,
// to Open and Append: no panic, and a verified file extends into a verified
// file.
func FuzzVerify(f *testing.F) {
	valid, err := os.ReadFile("testdata/valid.log")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte{})
	f.Add(valid[:len(valid)/2])
	f.Add(bytes.Replace(valid, []byte("msg"), []byte("gsm"), 1))
	f.Add([]byte("{}\n"))
	f.Add([]byte(`{"seq":1,"time":"2026-11-23T12:00:00Z","actor":"a","action":"b","prev":"` + Genesis + `","hash":""}` + "\n"))
	// One directory per worker process: execs run one at a time in it.
	path := filepath.Join(f.TempDir(), "audit.log")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.Remove(path + HeadSuffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(path)
		if err != nil {
			if rep.FirstBad == 0 || rep.Problem == "" {
				t.Fatalf("error %v without FirstBad/Problem: %+v", err, rep)
			}
			return
		}
		if got := uint64(bytes.Count(data, []byte("\n"))); got != rep.Records {
			t.Fatalf("verified %d records in %d lines", rep.Records, got)
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			t.Fatal("verified a file with a torn last line")
		}
		l, err := Open(path, Options{NoSync: true})
		if err != nil {
			t.Fatalf("Open of a verified log: %v", err)
		}
		if _, err := l.Append(t.Context(), "fuzz", "fuzz.appended", "", nil); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		rep2, err := Verify(path)
		if err != nil || rep2.Records != rep.Records+1 {
			t.Fatalf("after Append: %+v, %v", rep2, err)
		}
	})
}
