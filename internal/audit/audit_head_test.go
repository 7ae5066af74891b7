package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cutRecords keeps the first keep records of the closed log at path.
func cutRecords(tb testing.TB, path string, keep int) {
	tb.Helper()
	ls := lines(tb, path)
	if err := os.WriteFile(path, bytes.Join(ls[:keep], nil), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func removeHead(tb testing.TB, path string) {
	tb.Helper()
	if err := os.Remove(path + HeadSuffix); err != nil {
		tb.Fatal(err)
	}
}

func writeHeadFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path+HeadSuffix, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// TestTruncateAndDeleteHead is the attack from the audit: cut the last
// records and delete the head file. Verify must fail and Open must refuse
// without touching either file.
func TestTruncateAndDeleteHead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	recs := writeLog(t, path, 6, Options{})
	cutRecords(t, path, 4)
	removeHead(t, path)

	rep, err := Verify(path)
	if !errors.Is(err, ErrTampered) || errors.Is(err, ErrTornTail) {
		t.Fatalf("Verify = %v, want ErrTampered", err)
	}
	if rep.Records != 4 || rep.LastHash != recs[3].Hash || rep.FirstBad != 5 ||
		!strings.Contains(rep.Problem, "head file missing: records may have been removed from the end") {
		t.Fatalf("report = %+v", rep)
	}

	before, _ := os.ReadFile(path)
	l, err := Open(path, Options{})
	if err == nil {
		l.Close()
		t.Fatal("Open re-anchored a log without its head file")
	}
	if !errors.Is(err, ErrTampered) {
		t.Fatalf("Open = %v, want ErrTampered", err)
	}
	for _, want := range []string{"head file", "missing", "audit verify", "backup", "new chain"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open error %q does not say %q", err, want)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("Open changed the log")
	}
	if _, err := os.Stat(path + HeadSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open wrote a head file: %v", err)
	}

	// The operator restores the head file from a backup: the cut is found.
	writeHeadFile(t, path, `{"seq":6,"hash":"`+recs[5].Hash+`"}`)
	if _, err := Verify(path); !errors.Is(err, ErrTampered) {
		t.Fatalf("Verify with the restored head = %v", err)
	}
	// An older backup of the head, within what the log holds, re-anchors.
	writeHeadFile(t, path, `{"seq":3,"hash":"`+recs[2].Hash+`"}`)
	if _, err := Verify(path); err != nil {
		t.Fatalf("Verify with an older head = %v", err)
	}
	l = openLog(t, path, Options{})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if h, ok, err := readHead(path); err != nil || !ok || h.Seq != 4 || h.Hash != recs[3].Hash {
		t.Fatalf("head after reopen = %+v %v %v", h, ok, err)
	}
}

// TestNewLogHasHead: Open writes the head file of a new log before it
// returns, so a crash before the first head update leaves one.
func TestNewLogHasHead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{})
	h, ok, err := readHead(path)
	if err != nil || !ok || h.Seq != 0 || h.Hash != Genesis {
		t.Fatalf("head right after Open = %+v %v %v", h, ok, err)
	}
	if rep, err := Verify(path); err != nil || rep.Records != 0 {
		t.Fatalf("Verify of the new log = %+v, %v", rep, err)
	}
	if _, err := l.Append(t.Context(), "gateway", "message.accepted", "m-1", nil); err != nil {
		t.Fatal(err)
	}
	// A crash now may leave the head at seq 0: that is a lagging head.
	if rep, err := Verify(path); err != nil || rep.Records != 1 {
		t.Fatalf("Verify after one record = %+v, %v", rep, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if h, ok, err := readHead(path); err != nil || !ok || h.Seq != 1 {
		t.Fatalf("head after Close = %+v %v %v", h, ok, err)
	}
}

// TestNoHeadWritesNoHead: a log kept without head file gets none at
// creation, reopens with records and no head file, and verifies only as
// such.
func TestNoHeadWritesNoHead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, path, Options{NoHead: true})
	if _, err := os.Stat(path + HeadSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("NoHead log has a head file: %v", err)
	}
	l.Close()
	writeLog(t, path, 3, Options{NoHead: true})
	if _, err := os.Stat(path + HeadSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("NoHead log has a head file: %v", err)
	}
	if rep, err := VerifyWith(path, VerifyOptions{NoHead: true}); err != nil || rep.Records != 3 {
		t.Fatalf("VerifyWith NoHead = %+v, %v", rep, err)
	}
	if _, err := Verify(path); !errors.Is(err, ErrTampered) {
		t.Fatalf("Verify of a NoHead log = %v, want ErrTampered", err)
	}
}

// TestLaggingGenesisHead: a head file at seq 0 (a crash before the first head
// update) behind a log with records is the normal lag; Open moves it on.
func TestLaggingGenesisHead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	recs := writeLog(t, path, 3, Options{})
	writeHeadFile(t, path, `{"seq":0,"hash":"`+Genesis+`"}`+"\n")
	if rep, err := Verify(path); err != nil || rep.Records != 3 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	l := openLog(t, path, Options{})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if h, ok, err := readHead(path); err != nil || !ok || h.Seq != 3 || h.Hash != recs[2].Hash {
		t.Fatalf("head after reopen = %+v %v %v", h, ok, err)
	}
}

// TestGenesisHeadCrashes: a crash during the first write of a new log
// leaves a seq 0 head file and a torn line: a torn tail, which Open
// repairs. An empty log without head file (a crash before Open wrote it,
// or a log never written) verifies and gets a head file from Open.
func TestGenesisHeadCrashes(t *testing.T) {
	t.Run("torn first line", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.log")
		l := openLog(t, path, Options{})
		l.Close()
		if err := os.WriteFile(path, []byte(`{"seq":1,"ti`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(path); !errors.Is(err, ErrTornTail) || errors.Is(err, ErrTampered) {
			t.Fatalf("Verify = %v, want ErrTornTail", err)
		}
		l = openLog(t, path, Options{})
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if rep, err := Verify(path); err != nil || rep.Records != 1 {
			t.Fatalf("Verify after repair = %+v, %v", rep, err)
		}
	})
	t.Run("empty log without head file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.log")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if rep, err := Verify(path); err != nil || rep.Records != 0 || rep.LastHash != Genesis {
			t.Fatalf("Verify = %+v, %v", rep, err)
		}
		l := openLog(t, path, Options{})
		if h, ok, err := readHead(path); err != nil || !ok || h.Seq != 0 {
			t.Fatalf("head after Open = %+v %v %v", h, ok, err)
		}
		l.Close()
	})
	t.Run("seq 0 head with another hash", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.log")
		writeLog(t, path, 2, Options{})
		writeHeadFile(t, path, `{"seq":0,"hash":"`+strings.Repeat("1", 64)+`"}`)
		if _, err := Verify(path); !errors.Is(err, ErrTampered) {
			t.Fatalf("Verify = %v, want ErrTampered", err)
		}
		if _, err := Open(path, Options{}); !errors.Is(err, ErrTampered) {
			t.Fatalf("Open = %v, want ErrTampered", err)
		}
	})
}

// TestVerifyExpect: a checkpoint kept elsewhere must be found in the log.
func TestVerifyExpect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	recs := writeLog(t, path, 6, Options{})
	cp := func(i int) Checkpoint { return Checkpoint{Seq: recs[i].Seq, Hash: recs[i].Hash} }
	tests := []struct {
		name     string
		expect   []Checkpoint
		want     error
		firstBad uint64
		records  uint64
	}{
		{"none", nil, nil, 0, 6},
		{"last record", []Checkpoint{cp(5)}, nil, 0, 6},
		{"middle record", []Checkpoint{cp(2)}, nil, 0, 6},
		{"several", []Checkpoint{cp(0), cp(4), cp(4)}, nil, 0, 6},
		{"wrong hash", []Checkpoint{{Seq: 3, Hash: recs[3].Hash}}, ErrTampered, 3, 2},
		{"genesis hash", []Checkpoint{{Seq: 1, Hash: Genesis}}, ErrTampered, 1, 0},
		{"beyond the end", []Checkpoint{cp(2), {Seq: 7, Hash: recs[5].Hash}}, ErrTampered, 7, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := VerifyWith(path, VerifyOptions{Expect: tt.expect})
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("VerifyWith = %v, want %v", err, tt.want)
			}
			if rep.FirstBad != tt.firstBad || rep.Records != tt.records || (err != nil) != (rep.Problem != "") {
				t.Fatalf("report = %+v, want FirstBad %d Records %d", rep, tt.firstBad, tt.records)
			}
		})
	}

	t.Run("invalid checkpoints", func(t *testing.T) {
		for _, c := range [][]Checkpoint{
			{{Seq: 0, Hash: Genesis}},
			{{Seq: 1, Hash: "abc"}},
			{{Seq: 1, Hash: strings.ToUpper(recs[0].Hash)}},
			{cp(1), {Seq: 2, Hash: recs[0].Hash}},
		} {
			if _, err := VerifyWith(path, VerifyOptions{Expect: c}); err == nil || errors.Is(err, ErrTampered) {
				t.Errorf("%v: %v, want a non-tamper error", c, err)
			}
		}
	})

	// Records cut off with the head file rewritten to match: only the
	// checkpoint shows it.
	t.Run("cut with head rewritten", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "audit.log")
		recs := writeLog(t, p, 6, Options{})
		cutRecords(t, p, 4)
		writeHeadFile(t, p, `{"seq":4,"hash":"`+recs[3].Hash+`"}`)
		if _, err := Verify(p); err != nil {
			t.Fatalf("Verify without checkpoint = %v (a consistent cut)", err)
		}
		rep, err := VerifyWith(p, VerifyOptions{Expect: []Checkpoint{{Seq: 6, Hash: recs[5].Hash}}})
		if !errors.Is(err, ErrTampered) || rep.FirstBad != 5 || !strings.Contains(rep.Problem, "removed from the end") {
			t.Fatalf("VerifyWith = %+v, %v", rep, err)
		}
	})

	// A rewrite of the whole chain and its head file: only the checkpoint
	// shows it.
	t.Run("consistent rewrite", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "audit.log")
		recs := writeLog(t, p, 4, Options{})
		ls := lines(t, p)[:4]
		prev := Genesis
		for i := range ls {
			ls[i] = rehash(t, ls[i], func(r *Record) {
				if i == 1 {
					r.Attrs["sender"] = "acc-evil"
				}
				r.Prev = prev
			})
			r, err := parseLine(bytes.TrimSuffix(ls[i], []byte("\n")))
			if err != nil {
				t.Fatal(err)
			}
			prev = r.Hash
		}
		if err := os.WriteFile(p, bytes.Join(ls, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		writeHeadFile(t, p, `{"seq":4,"hash":"`+prev+`"}`)
		if _, err := Verify(p); err != nil {
			t.Fatalf("Verify of a consistent rewrite = %v", err)
		}
		rep, err := VerifyWith(p, VerifyOptions{Expect: []Checkpoint{{Seq: 4, Hash: recs[3].Hash}}})
		if !errors.Is(err, ErrTampered) || rep.FirstBad != 4 {
			t.Fatalf("VerifyWith = %+v, %v", rep, err)
		}
	})

	// A torn line where the checkpoint's record should be: it had been
	// acknowledged, so this is no crash.
	t.Run("torn line at the checkpoint", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "audit.log")
		recs := writeLog(t, p, 3, Options{})
		ls := lines(t, p)
		ls[2] = ls[2][:10]
		if err := os.WriteFile(p, bytes.Join(ls, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		writeHeadFile(t, p, `{"seq":2,"hash":"`+recs[1].Hash+`"}`)
		if _, err := Verify(p); !errors.Is(err, ErrTornTail) {
			t.Fatalf("Verify = %v, want ErrTornTail", err)
		}
		_, err := VerifyWith(p, VerifyOptions{Expect: []Checkpoint{{Seq: 3, Hash: recs[2].Hash}}})
		if !errors.Is(err, ErrTampered) || errors.Is(err, ErrTornTail) {
			t.Fatalf("VerifyWith = %v, want ErrTampered", err)
		}
	})
}

func TestParseCheckpoint(t *testing.T) {
	h := strings.Repeat("0123456789abcdef", 4)
	good := map[string]Checkpoint{
		"1:" + h:                    {1, h},
		"42:" + h:                   {42, h},
		"18446744073709551615:" + h: {18446744073709551615, h},
	}
	for in, want := range good {
		got, err := ParseCheckpoint(in)
		if err != nil || got != want {
			t.Errorf("ParseCheckpoint(%q) = %+v, %v", in, got, err)
		}
		if got.String() != in {
			t.Errorf("String() = %q, want %q", got.String(), in)
		}
	}
	for _, in := range []string{
		"", ":", "1", h, ":" + h, "1:", "0:" + h, "01:" + h, "+1:" + h, "-1:" + h, " 1:" + h, "1 :" + h,
		"1: " + h, "1:" + h + " ", "1:" + h + "\n", "0x1:" + h, "1e3:" + h, "18446744073709551616:" + h,
		"1:" + h[:63], "1:" + h + "0", "1:" + strings.ToUpper(h), "1:" + h[:63] + "g", "1:" + h + ":1", "1::" + h,
	} {
		if c, err := ParseCheckpoint(in); err == nil {
			t.Errorf("ParseCheckpoint(%q) = %+v, want an error", in, c)
		}
	}
}
