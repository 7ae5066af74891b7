package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
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

// Checkpoint is the seq and hash of one record, as an operator notes it
// somewhere the log's host cannot write (a ticket, a second system) and
// later expects to find again (VerifyOptions.Expect). Its text form is
// "SEQ:HASH", e.g. "42:3423e6…13f3".
type Checkpoint struct {
	Seq  uint64
	Hash string
}

// String returns the checkpoint as "SEQ:HASH".
func (c Checkpoint) String() string {
	return strconv.FormatUint(c.Seq, 10) + ":" + c.Hash
}

// validate checks that c can name a record: seq at least 1, hash 64
// lowercase hex digits.
func (c Checkpoint) validate() error {
	if c.Seq == 0 {
		return errors.New("seq must be at least 1")
	}
	if len(c.Hash) != len(Genesis) || strings.Trim(c.Hash, "0123456789abcdef") != "" {
		return errors.New("hash must be 64 lowercase hex digits")
	}
	return nil
}

// ParseCheckpoint parses "SEQ:HASH": SEQ a decimal record number of at
// least 1 without sign or leading zeros, HASH 64 lowercase hex digits, and
// nothing else (no spaces).
func ParseCheckpoint(s string) (Checkpoint, error) {
	seq, hash, ok := strings.Cut(s, ":")
	if !ok {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: want SEQ:HASH", s)
	}
	if seq == "" || strings.Trim(seq, "0123456789") != "" || len(seq) > 1 && seq[0] == '0' {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: seq must be a decimal number", s)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: seq out of range", s)
	}
	c := Checkpoint{Seq: n, Hash: hash}
	if err := c.validate(); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: %v", s, err)
	}
	return c, nil
}

// VerifyOptions tune VerifyWith. The zero value is what Verify does.
type VerifyOptions struct {
	// NoHead says the log is kept without a head file (Options.NoHead), so
	// a missing head file is not an error. Default false: a log with
	// records but no head file fails with ErrTampered, since records may
	// have been cut off its end. An existing head file is checked either
	// way.
	NoHead bool
	// Expect lists records the log must hold: for each, the record at Seq
	// must exist and have Hash, otherwise the log fails with ErrTampered.
	// This detects a consistent rewrite of the log and its head file, and
	// records cut off the end with the head file, against hashes kept
	// outside the host. Two checkpoints with the same seq must agree.
	Expect []Checkpoint
}

// Verify is VerifyWith(path, VerifyOptions{}): it checks the log at path
// and requires its head file if the log has records.
func Verify(path string) (Report, error) {
	return VerifyWith(path, VerifyOptions{})
}

// VerifyWith reads the log at path from the first record to the last and
// checks that every line is a record in canonical form whose hash matches
// its content, that seqs run 1, 2, 3, ... and that each record's Prev is the
// previous record's Hash. If the head file (path+".head") exists, the log
// must reach its seq and the record at that seq must have its hash, which
// detects records cut off the end. A log with records but no head file
// fails, unless opts.NoHead: Open writes the head file when it creates a
// log, so it is missing only if someone removed it. Each of opts.Expect
// must name a record of the log with that hash.
//
// Errors: ErrTampered (wrapped) for any edit, removal, insertion or
// reordering, for records cut off the end when the head file or an
// expected checkpoint shows it, for a missing head file, for a record that
// differs from an expected checkpoint, and for a torn last line that the
// head file or a checkpoint shows was acknowledged; ErrTornTail (wrapped)
// for an unterminated last line that may come from a crash during a write
// that was never acknowledged. An invalid checkpoint in opts.Expect is an
// error wrapping neither. Other errors are I/O errors. The Report
// describes what verified in every case.
//
// Limits: records appended after the head file's last update (at most
// HeadInterval) can be cut off the end without the head file showing it.
// Someone able to write both the log and the head file can rewrite the
// whole chain consistently; only a checkpoint kept elsewhere (opts.Expect)
// detects that.
func VerifyWith(path string, opts VerifyOptions) (Report, error) {
	rep := Report{LastHash: Genesis}
	expect := make(map[uint64]string, len(opts.Expect))
	var lastExpected uint64
	for _, c := range opts.Expect {
		if err := c.validate(); err != nil {
			return rep, fmt.Errorf("audit verify: checkpoint %s: %v", c, err)
		}
		if h, ok := expect[c.Seq]; ok && h != c.Hash {
			return rep, fmt.Errorf("audit verify: two checkpoints for record %d with different hashes", c.Seq)
		}
		expect[c.Seq] = c.Hash
		lastExpected = max(lastExpected, c.Seq)
	}
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
	// checkEnd runs once the complete records are read: what the head file
	// and the checkpoints say about the end of the log.
	checkEnd := func(headHash string) (Report, error) {
		if hasHead {
			if h.Seq > rep.Records {
				return bad(rep.Records+1, ErrTampered,
					"head file says the log has %d records, it has %d: records were removed from the end", h.Seq, rep.Records)
			}
			if headHash != h.Hash {
				return bad(h.Seq, ErrTampered, "record does not match the head file's hash")
			}
		}
		if lastExpected > rep.Records {
			return bad(rep.Records+1, ErrTampered,
				"expected record %d with hash %s, the log has %d records: records were removed from the end",
				lastExpected, expect[lastExpected], rep.Records)
		}
		if !hasHead && !opts.NoHead && rep.Records > 0 {
			return bad(rep.Records+1, ErrTampered,
				"head file missing: records may have been removed from the end")
		}
		return rep, nil
	}

	br := bufio.NewReaderSize(f, MaxRecordSize+16)
	var headHash string
	if hasHead && h.Seq == 0 {
		headHash = Genesis
	}
	for {
		line, err := br.ReadSlice('\n')
		n := rep.Records + 1
		switch {
		case errors.Is(err, io.EOF):
			if r, err := checkEnd(headHash); err != nil || len(line) == 0 {
				// A failure here proves the cut line had been acknowledged.
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
		if want, ok := expect[n]; ok && r.Hash != want {
			return bad(n, ErrTampered, "hash %s, expected %s: the log was rewritten at or before this record", r.Hash, want)
		}
		rep.Records, rep.LastHash = n, r.Hash
		if hasHead && n == h.Seq {
			headHash = r.Hash
		}
	}
}
