package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
)

// Report is the result of Verify.
type Report struct {
	// Records is the number of records that verified, in order, from the
	// first one.
	Records uint64
	// LastHash is the Hash of the last record that verified; Genesis for an
	// empty log. Operators who note it somewhere else (a ticket, a second
	// system) anchor the chain against a rewrite of the whole file.
	LastHash string
	// FirstBad is the position (1-based, the seq it should have) of the
	// first record that failed, or 0 if the log verified.
	FirstBad uint64
	// Problem says what failed at FirstBad; empty if the log verified.
	Problem string
}

// Verify reads the log at path from the first record to the last and checks
// that every line is a record in canonical form whose hash matches its
// content, that seqs run 1, 2, 3, ... and that each record's Prev is the
// previous record's Hash. If the head file (path+".head") exists, the log
// must reach its seq and the record at that seq must have its hash, which
// detects records cut off the end.
//
// Errors: ErrTampered (wrapped) for any edit, removal, insertion or
// reordering, for records cut off the end when the head file shows it, and
// for a torn last line that the head file shows was acknowledged;
// ErrTornTail (wrapped) for an unterminated last line that may come from a
// crash during a write that was never acknowledged. Other errors are I/O
// errors. The Report describes what verified in every case.
//
// Limits: without the head file, removing whole records from the end of the
// file cannot be told from a shorter log. Someone able to write both the log
// and the head file can rewrite the whole chain consistently; only a copy
// of LastHash kept elsewhere detects that.
func Verify(path string) (Report, error) {
	rep := Report{LastHash: Genesis}
	h, hasHead, err := readHead(path)
	if err != nil {
		rep.FirstBad, rep.Problem = 1, err.Error()
		return rep, err
	}
	f, err := os.Open(path)
	if err != nil {
		return rep, fmt.Errorf("open audit log: %w", err)
	}
	defer f.Close()

	bad := func(at uint64, sentinel error, format string, args ...any) (Report, error) {
		rep.FirstBad = at
		rep.Problem = fmt.Sprintf(format, args...)
		return rep, fmt.Errorf("%w: record %d: %s", sentinel, at, rep.Problem)
	}
	checkHead := func(headHash string) (Report, error) {
		if !hasHead {
			return rep, nil
		}
		if h.Seq > rep.Records {
			return bad(rep.Records+1, ErrTampered,
				"head file says the log has %d records, it has %d: records were removed from the end", h.Seq, rep.Records)
		}
		if headHash != h.Hash {
			return bad(h.Seq, ErrTampered, "record does not match the head file's hash")
		}
		return rep, nil
	}

	br := bufio.NewReaderSize(f, MaxRecordSize+16)
	var headHash string
	for {
		line, err := br.ReadSlice('\n')
		n := rep.Records + 1
		switch {
		case errors.Is(err, io.EOF):
			if len(line) == 0 {
				return checkHead(headHash)
			}
			if r, err := checkHead(headHash); err != nil {
				// The head file proves the cut line had been acknowledged.
				return r, err
			}
			return bad(n, ErrTornTail, "last line of %d bytes has no newline (write cut short)", len(line))
		case errors.Is(err, bufio.ErrBufferFull):
			return bad(n, ErrTampered, "line longer than %d bytes", MaxRecordSize)
		case err != nil:
			return rep, fmt.Errorf("read audit log: %w", err)
		}
		r, err := parseLine(line[:len(line)-1])
		if err != nil {
			return bad(n, ErrTampered, "%v", err)
		}
		if r.Seq != n {
			return bad(n, ErrTampered, "seq %d where %d was expected: a record was removed, inserted or moved", r.Seq, n)
		}
		if r.Prev != rep.LastHash {
			return bad(n, ErrTampered, "prev is not the previous record's hash: a record was removed, inserted or moved")
		}
		rep.Records, rep.LastHash = n, r.Hash
		if hasHead && n == h.Seq {
			headHash = r.Hash
		}
	}
}
