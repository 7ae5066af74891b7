// Package audit is kurer's append-only, hash-chained audit log. The gateway
// and every agent record each state change and catalog change in one; the
// `audit verify` commands check it with Verify.
//
// The log is one file of JSON lines, one Record per line. Each record holds
// the SHA-256 of the record before it (Prev) and its own hash over a
// canonical encoding that includes Prev, so editing, removing, inserting or
// reordering a record breaks the chain at that point. A small head file
// (path+".head", written when the log is created and replaced atomically
// at most every HeadInterval after that) holds the seq and hash of the last
// durable record, so that records cut off the end are detected too; a log
// with records but no head file is treated as tampered with. See
// docs/audit.md for the format, the verification procedure and the limits.
//
// Records carry identifiers and codes only, never personal data or payload
// content.
//
// Durability: Append returns only after its record is written and fsynced;
// concurrent Appends share one write and one fsync (group commit).
// AppendBatch writes several records contiguously in one write and fsync.
// A crash can leave a torn last line, which was never acknowledged; Open
// cuts it off and records an "audit.repaired" entry saying how many bytes it
// removed.
package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/kurer/kurer/internal/durable"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Options tune a Log. The zero value is the production setting.
type Options struct {
	// Now is the clock; default time.Now. Times are stored in UTC.
	Now func() time.Time
	// NoSync skips fsync of the log and the head file. Only for tests and
	// benchmarks: with NoSync an acknowledged record can be lost in a
	// crash. Default false (every Append is fsynced before it returns).
	NoSync bool
	// NoHead stops maintaining the head file (path+".head"): Open neither
	// writes one for a new log nor requires one for a log with records.
	// Such a log verifies only with VerifyOptions.NoHead, and records cut
	// off its end go unnoticed. Only for tests and test data. Default
	// false. An existing head file is still checked by Open and Verify.
	NoHead bool
	// HeadInterval is the least time between two head file writes (each an
	// fsync of the file and of its directory). A head that lags the log is
	// allowed (a crash can always leave it so); Close writes the last one.
	// Default 200ms; negative: after every written batch.
	HeadInterval time.Duration
}

// defaultHeadInterval keeps head file fsyncs off the disk's hot path under
// load while bounding how far the head lags.
const defaultHeadInterval = 200 * time.Millisecond

// maxBatch bounds how many records one group commit writes, roughly: a
// request is never split, so one larger than this is written whole.
const maxBatch = 256

// maxKeptBuf bounds the write buffer the writer keeps between commits.
const maxKeptBuf = 1 << 20

// Log is an open audit log. It is safe for concurrent use. Exactly one Log
// per file: Open takes an exclusive lock on the file.
type Log struct {
	path string
	f    *os.File
	opts Options

	mu     sync.RWMutex // guards closed and sending on reqs
	closed bool
	reqs   chan *request

	writerDone chan struct{}
	headCh     chan head
	headDone   chan struct{}

	stateMu sync.Mutex // guards seq, prev, headErr
	seq     uint64
	prev    string
	headErr error

	// broken is set by the writer after a failed write or fsync; the
	// writer alone reads and writes it.
	broken error

	closeOnce sync.Once
	closeErr  error
}

// Entry is what a caller records; the log adds seq, time and the chain.
// See Record for what the fields may carry.
type Entry struct {
	Actor, Action, Subject string
	Attrs                  map[string]string
}

// request hands 1..n entries to the writer, which writes them
// contiguously, in order, in one write. The writer reads attrs from recs,
// where the sender has put its copies, and fills in the rest of recs.
type request struct {
	entries []Entry
	recs    []Record // len(entries)
	err     error    // set by the writer; nothing was written if non-nil
	bad     int      // index of the entry err is about, or -1
	done    chan struct{}

	// Storage for a single entry and record, saving allocations.
	one    [1]Entry
	oneRec [1]Record
}

// Open opens the log at path, creating it (mode 0600) if it does not
// exist, and resumes its chain. It checks that the last record's hash is
// right and that the log reaches the head file's seq and agrees with its
// hash; otherwise it refuses with an error wrapping ErrTampered rather than
// extend a broken chain. A log with records but no head file is refused
// the same way (records may have been cut off its end); an empty log
// without one, such as a new log, gets one (seq 0, Genesis), fsynced with
// its directory before Open returns. A torn last line (no newline: a write
// cut short by a crash, never acknowledged) is cut off and an
// "audit.repaired" record is appended with attribute torn_bytes. Open does
// not verify the whole file; run Verify for that.
//
// With opts.NoHead no head file is written or required.
func Open(path string, opts Options) (*Log, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HeadInterval == 0 {
		opts.HeadInterval = defaultHeadInterval
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	l, err := open(path, f, created, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

func open(path string, f *os.File, created bool, opts Options) (*Log, error) {
	if err := lockFile(f); err != nil {
		return nil, err
	}
	tail, err := readTail(f)
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	h, hasHead, err := readHead(path)
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	lastHash := tail.last.Hash
	if tail.last.Seq == 0 {
		lastHash = Genesis
	}
	anchor := false // write the first head file now
	switch {
	case hasHead && h.Seq > tail.last.Seq:
		return nil, fmt.Errorf("open audit log %s: %w: head file says %d records, log ends at %d: records were removed from the end",
			path, ErrTampered, h.Seq, tail.last.Seq)
	case hasHead && h.Seq == tail.last.Seq && h.Hash != lastHash:
		return nil, fmt.Errorf("open audit log %s: %w: last record does not match the head file", path, ErrTampered)
	case !hasHead && !opts.NoHead && tail.last.Seq > 0:
		return nil, fmt.Errorf("open audit log %s: %w: head file %s is missing but the log has %d records: "+
			"records may have been removed from the end. Check the log with `kurer gateway audit verify` "+
			"(or `kurer agent audit verify`) and the last hash you noted elsewhere (--expect SEQ:HASH), "+
			"then restore the head file from a backup, or move the log aside to start a new chain",
			path, ErrTampered, path+HeadSuffix, tail.last.Seq)
	case !hasHead && !opts.NoHead:
		// A new (or never written) log: anchor it before the first
		// record, so that a missing head file next to records is never
		// legitimate, even after a crash.
		anchor = true
	}
	if anchor {
		// writeHead fsyncs the directory, which holds the log too.
		if err := writeHead(path, head{Seq: 0, Hash: Genesis}, !opts.NoSync); err != nil {
			return nil, fmt.Errorf("open audit log %s: %w", path, err)
		}
	} else if created && !opts.NoSync {
		if err := durable.SyncDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	if tail.tornBytes > 0 {
		if err := f.Truncate(tail.goodSize); err != nil {
			return nil, fmt.Errorf("repair audit log: %w", err)
		}
		if !opts.NoSync {
			if err := f.Sync(); err != nil {
				return nil, fmt.Errorf("repair audit log: %w", err)
			}
		}
	}

	l := &Log{
		path:       path,
		f:          f,
		opts:       opts,
		reqs:       make(chan *request, maxBatch),
		writerDone: make(chan struct{}),
		headCh:     make(chan head, 1),
		headDone:   make(chan struct{}),
		seq:        tail.last.Seq,
		prev:       tail.last.Hash,
	}
	if l.seq == 0 {
		l.prev = Genesis
	}
	go l.writer()
	go l.headWriter()
	if l.seq > 0 && !opts.NoHead && (!hasHead || h.Seq < l.seq) {
		l.publishHead(head{Seq: l.seq, Hash: l.prev})
	}
	if tail.tornBytes > 0 {
		_, err := l.Append(context.Background(), "audit", "audit.repaired", "",
			map[string]string{"torn_bytes": strconv.FormatInt(tail.tornBytes, 10)})
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("record audit repair: %w", err)
		}
	}
	return l, nil
}

// tailInfo describes the end of a log file.
type tailInfo struct {
	last      Record // zero if the log has no complete record
	goodSize  int64  // size up to and including the last newline
	tornBytes int64  // bytes after the last newline
}

// readTail finds and checks the last complete record of f.
func readTail(f *os.File) (tailInfo, error) {
	var t tailInfo
	st, err := f.Stat()
	if err != nil {
		return t, err
	}
	size := st.Size()
	if size == 0 {
		return t, nil
	}
	// A complete line is at most MaxRecordSize bytes and a torn one less,
	// so the last two lines fit in this window.
	start := max(size-2*MaxRecordSize, 0)
	buf := make([]byte, size-start)
	if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return t, fmt.Errorf("read tail: %w", err)
	}
	if buf[len(buf)-1] != '\n' {
		i := bytes.LastIndexByte(buf, '\n')
		if i < 0 && start > 0 {
			return t, fmt.Errorf("%w: last line longer than %d bytes", ErrTampered, MaxRecordSize)
		}
		buf = buf[:i+1]
		t.goodSize = start + int64(i+1)
		t.tornBytes = size - t.goodSize
	} else {
		t.goodSize = size
	}
	if len(buf) == 0 {
		return t, nil
	}
	body := buf[:len(buf)-1]
	j := bytes.LastIndexByte(body, '\n')
	if j < 0 && start > 0 {
		return t, fmt.Errorf("%w: last line longer than %d bytes", ErrTampered, MaxRecordSize)
	}
	r, err := parseLine(body[j+1:])
	if err != nil {
		return t, fmt.Errorf("%w: last record: %v", ErrTampered, err)
	}
	if r.Seq == 0 {
		return t, fmt.Errorf("%w: last record has seq 0", ErrTampered)
	}
	t.last = r
	return t, nil
}

// Append records one event and returns the record once it is durable.
// actor and action are required; all strings must be valid UTF-8. attrs is
// copied. It is safe for concurrent use; concurrent calls share one write
// and fsync.
//
// ctx bounds the wait to hand the record to the writer; once handed over,
// Append waits for the fsync (bounded by the disk), so that a nil error
// always means durable and a non-nil error from ctx means not recorded.
// After a failed write or fsync every later Append fails: the file's end
// is then unknown, and reopening the log repairs it.
func (l *Log) Append(ctx context.Context, actor, action, subject string, attrs map[string]string) (Record, error) {
	if err := validate(actor, action, subject, attrs); err != nil {
		return Record{}, err
	}
	req := &request{done: make(chan struct{})}
	req.one[0] = Entry{Actor: actor, Action: action, Subject: subject}
	req.oneRec[0].Attrs = cloneAttrs(attrs)
	req.entries, req.recs = req.one[:], req.oneRec[:]
	if err := l.send(ctx, req); err != nil {
		return Record{}, err
	}
	return req.oneRec[0], nil
}

// AppendBatch records entries as consecutive records, in order, with one
// write and one fsync, and returns them once they are durable. It is
// Append for several entries at once, with the same rules, and all or
// nothing: if any entry is invalid or too large nothing is appended and
// the error is an *EntryError naming the entry. Entries' attrs are copied. An empty batch
// appends nothing and returns nil, nil.
func (l *Log) AppendBatch(ctx context.Context, entries []Entry) ([]Record, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	for i, e := range entries {
		if err := validate(e.Actor, e.Action, e.Subject, e.Attrs); err != nil {
			return nil, &EntryError{Index: i, Err: err}
		}
	}
	req := &request{entries: entries, done: make(chan struct{})}
	if len(entries) == 1 {
		req.recs = req.oneRec[:]
	} else {
		req.recs = make([]Record, len(entries))
	}
	for i, e := range entries {
		req.recs[i].Attrs = cloneAttrs(e.Attrs)
	}
	if err := l.send(ctx, req); err != nil {
		if req.bad >= 0 {
			return nil, &EntryError{Index: req.bad, Err: err}
		}
		return nil, err
	}
	return req.recs, nil
}

// send hands req to the writer and waits for its answer. ctx bounds only
// the hand-over.
func (l *Log) send(ctx context.Context, req *request) error {
	req.bad = -1 // until the writer names an entry
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	select {
	case l.reqs <- req:
		l.mu.RUnlock()
	case <-ctx.Done():
		l.mu.RUnlock()
		return ctx.Err()
	}
	<-req.done
	return req.err
}

// cloneAttrs copies attrs; nil when empty, as a record stores no attrs then.
func cloneAttrs(attrs map[string]string) map[string]string {
	if len(attrs) == 0 {
		return nil
	}
	return maps.Clone(attrs)
}

// Tail returns up to the last n durable records, oldest first. It reads
// at most n*MaxRecordSize bytes from the end of the file, whatever its
// size. A line being written concurrently is left out.
func (l *Log) Tail(n int) ([]Record, error) {
	if n <= 0 {
		return nil, nil
	}
	st, err := l.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit tail: %w", err)
	}
	size := st.Size()
	start := max(size-int64(n)*MaxRecordSize, 0)
	buf := make([]byte, size-start)
	if _, err := l.f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("audit tail: %w", err)
	}
	buf = buf[:bytes.LastIndexByte(buf, '\n')+1] // whole lines only
	if start > 0 {
		// The window may begin inside a line: skip to the next one.
		buf = buf[bytes.IndexByte(buf, '\n')+1:]
	}
	var out []Record
	for len(buf) > 0 {
		i := bytes.IndexByte(buf, '\n')
		r, err := parseLine(buf[:i])
		if err != nil {
			return nil, fmt.Errorf("%w: record near the end: %v", ErrTampered, err)
		}
		out = append(out, r)
		buf = buf[i+1:]
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}

// Last returns the seq and hash of the last durable record (0 and Genesis
// for an empty log).
func (l *Log) Last() (seq uint64, hash string) {
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	return l.seq, l.prev
}

// Path returns the log's file path.
func (l *Log) Path() string { return l.path }

// Close stops accepting records, writes those already handed over, updates
// the head file and closes the file. It is idempotent. It reports a failed
// head file update, which Append does not.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		close(l.reqs)
		l.mu.Unlock()
		<-l.writerDone
		<-l.headDone
		l.stateMu.Lock()
		headErr := l.headErr
		l.stateMu.Unlock()
		l.closeErr = errors.Join(headErr, l.f.Close())
	})
	return l.closeErr
}

// writer is the only goroutine that writes the log file. It gathers the
// requests waiting, up to about maxBatch records (one request is never
// split), and commits them together.
func (l *Log) writer() {
	defer close(l.writerDone)
	defer close(l.headCh)
	var (
		batch = make([]*request, 0, maxBatch)
		buf   []byte
		s     sealer
	)
	for req := range l.reqs {
		batch = append(batch[:0], req)
		n := len(req.entries)
	drain:
		for n < maxBatch {
			select {
			case r, ok := <-l.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
				n += len(r.entries)
			default:
				break drain
			}
		}
		buf = l.commit(batch, buf[:0], &s)
		clear(batch) // let answered requests go
		if cap(buf) > maxKeptBuf {
			buf = nil
		}
	}
}

// commit writes the records of batch with one write and one fsync, then
// answers each request. A request whose record cannot be encoded fails
// whole and takes no seq. All records of one commit get the same time. It
// returns buf for reuse.
func (l *Log) commit(batch []*request, buf []byte, s *sealer) []byte {
	answer := func(err error) {
		for _, req := range batch {
			if req.err == nil {
				req.err = err
			}
			close(req.done)
		}
	}
	if l.broken != nil {
		answer(l.broken)
		return buf
	}
	now := l.opts.Now().UTC()
	var tb [64]byte
	ts, err := appendTime(tb[:0], now)
	if err != nil {
		answer(fmt.Errorf("encode audit record: %w", err))
		return buf
	}
	seq, prev := l.seq, l.prev // only the writer changes them
	written := 0
	for _, req := range batch {
		start, seq0, prev0 := len(buf), seq, prev
		for i, e := range req.entries {
			r := &req.recs[i]
			*r = Record{
				Seq:     seq + 1,
				Time:    now,
				Actor:   e.Actor,
				Action:  e.Action,
				Subject: e.Subject,
				Attrs:   r.Attrs,
				Prev:    prev,
			}
			if buf, err = s.seal(buf, r, ts); err != nil {
				req.err, req.bad = err, i
				break
			}
			seq, prev = r.Seq, r.Hash
		}
		if req.err != nil {
			buf, seq, prev = buf[:start], seq0, prev0
			clear(req.recs)
			continue
		}
		written++
	}
	if written == 0 {
		answer(nil)
		return buf
	}
	if err := l.write(buf); err != nil {
		l.broken = fmt.Errorf("audit log unusable after a failed write (reopen to repair): %w", err)
		for _, req := range batch {
			if req.err == nil {
				clear(req.recs)
			}
		}
		answer(l.broken)
		return buf
	}
	l.stateMu.Lock()
	l.seq, l.prev = seq, prev
	l.stateMu.Unlock()
	answer(nil)
	if !l.opts.NoHead {
		l.publishHead(head{Seq: seq, Hash: prev})
	}
	return buf
}

func (l *Log) write(buf []byte) error {
	if _, err := l.f.Write(buf); err != nil {
		return err
	}
	if l.opts.NoSync {
		return nil
	}
	return l.f.Sync()
}

// publishHead hands the newest head to headWriter, replacing one it has not
// picked up yet. Only the writer goroutine (and open, before any Append)
// calls it.
func (l *Log) publishHead(h head) {
	for {
		select {
		case l.headCh <- h:
			return
		default:
		}
		select {
		case <-l.headCh:
		default:
		}
	}
}

// headWriter writes head files off the Append path: a head file that lags
// behind the log is allowed (a crash can always leave it so), one ahead of
// it never happens because a head is published only after its fsync.
//
// Writes are at least HeadInterval apart: a head published meanwhile
// replaces the one waiting, and the end of the writer cuts the wait short.
func (l *Log) headWriter() {
	defer close(l.headDone)
	var last time.Time
	for h := range l.headCh {
		if wait := l.opts.HeadInterval - time.Since(last); wait > 0 && !last.IsZero() {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-l.writerDone:
			}
			t.Stop()
			select { // a newer head (or, once closed, the last one buffered)
			case newer, ok := <-l.headCh:
				if ok {
					h = newer
				}
			default:
			}
		}
		last = time.Now()
		if err := writeHead(l.path, h, !l.opts.NoSync); err != nil {
			l.stateMu.Lock()
			if l.headErr == nil {
				l.headErr = err
			}
			l.stateMu.Unlock()
		}
	}
}
