package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerify feeds arbitrary file contents, without head file, to Verify
// and, when they verify as a log kept without head file, to Open and
// Append: no panic, a verified file extends into a verified file, and a
// log with records but no head file fails Verify and Open unless kept
// without one.
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
		rep, err := VerifyWith(path, VerifyOptions{NoHead: true})
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
		noHead := rep.Records > 0
		if noHead {
			// No head file next to records: tampering, unless kept so.
			if rep2, err := Verify(path); !errors.Is(err, ErrTampered) || rep2.FirstBad != rep.Records+1 {
				t.Fatalf("Verify of records without head file: %+v, %v", rep2, err)
			}
			if l, err := Open(path, Options{NoSync: true}); !errors.Is(err, ErrTampered) {
				if err == nil {
					l.Close()
				}
				t.Fatalf("Open of records without head file: %v", err)
			}
		}
		l, err := Open(path, Options{NoSync: true, NoHead: noHead})
		if err != nil {
			t.Fatalf("Open of a verified log: %v", err)
		}
		if _, err := l.Append(t.Context(), "fuzz", "fuzz.appended", "", nil); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		rep2, err := VerifyWith(path, VerifyOptions{NoHead: noHead})
		if err != nil || rep2.Records != rep.Records+1 {
			t.Fatalf("after Append: %+v, %v", rep2, err)
		}
	})
}
