// Package folder is the agent's file-system adapter: the simplest way for a
// case system to exchange cases with kurer, through three folders.
//
//   - Outbox: a case is a folder holding case.json (routing: type, to, and
//     optionally id, conversation, in_reply_to, expires), melding.json (the
//     business message) and its documents. A case folder is picked up only
//     when it is complete: it was moved into the outbox with an atomic
//     rename (build it elsewhere on the same file system, or inside the
//     outbox under a name starting with "." or ending in ".partial"), or it
//     contains a ".ready" marker file. Sent cases move to Sent, refused ones
//     to Failed with a kurer-error.json saying why.
//   - Inbox: every received message appears atomically (built in a hidden
//     temp folder, then renamed) as Inbox/<message id>/ with its files,
//     manifest.json and signature.p7s (the sender's signed statement) and
//     message.json (routing and the id of the mottatt receipt sent back).
//     The payload files are copies: the case system may change or delete
//     them without touching the agent's verified copy. A message with a
//     payload file (or top folder) named like one of those three, in any
//     case, is refused with ReasonReservedName, and the sender gets a
//     signed avvist saying so.
//   - Receipts: each state change of an outgoing message rewrites
//     Receipts/<message id>.json (state, history, receipts), atomically.
//
// Exactly-once: before a case is handed to the agent, its message id is
// written durably into the case folder (.kurer-id), so a crash between the
// send and the move to Sent re-sends with the same id, which the agent
// answers idempotently. Deliver is idempotent by message id.
package folder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/durable"
	"github.com/kurer/kurer/internal/errs"
)

// Kind is the adapter kind in agent configs.
const Kind = "folder"

// Files with a meaning in a case folder.
const (
	CaseFile   = "case.json"
	ReadyFile  = ".ready"
	IDFile     = ".kurer-id"
	ErrorFile  = "kurer-error.json"
	maxCaseLen = 64 << 10
)

// Files the adapter writes into every Inbox/<id>/ besides the payload.
const (
	MessageFile   = "message.json"  // routing and the mottatt receipt's id (MessageInfo)
	ManifestFile  = "manifest.json" // the sender's signed manifest
	SignatureFile = "signature.p7s" // the sender's signature over ManifestFile
)

// reservedNames are the adapter's own files in Inbox/<id>/. A payload file
// whose first path component equals one of them (ignoring case and
// trailing dots and spaces) is refused with ReasonReservedName.
var reservedNames = [...]string{MessageFile, ManifestFile, SignatureFile}

// ReasonReservedName is the reason code of a message refused because a
// payload file would take the place of one of the adapter's own files; its
// message quotes the file's name.
const ReasonReservedName = "reserved_file_name"

// Config of a folder adapter. Paths must be on one file system per folder
// pair (Outbox with Sent and Failed; Inbox) so that renames are atomic.
type Config struct {
	// Outbox is watched for case folders. Empty: this adapter sends nothing.
	Outbox string `yaml:"outbox"`
	// Sent receives case folders once queued. Default Outbox/../sent.
	Sent string `yaml:"sent"`
	// Failed receives refused case folders with kurer-error.json. Default
	// Outbox/../failed.
	Failed string `yaml:"failed"`
	// Inbox receives incoming messages. Empty: this adapter takes none.
	Inbox string `yaml:"inbox"`
	// Receipts receives one JSON file per outgoing message, rewritten on
	// every state change. Empty: none written.
	Receipts string `yaml:"receipts"`
	// ReadyMarker, when true, takes only case folders holding a .ready file.
	// Default false (atomic rename into the outbox also counts).
	ReadyMarker bool `yaml:"ready_marker"`
	// PollInterval is how often the outbox is scanned. Default 500ms.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// CaseRouting is the content of case.json.
type CaseRouting struct {
	Type         string    `json:"type"`
	To           string    `json:"to"`
	ID           string    `json:"id,omitempty"`
	Conversation string    `json:"conversation,omitempty"`
	InReplyTo    string    `json:"in_reply_to,omitempty"`
	Expires      time.Time `json:"expires,omitzero"`
}

// MessageInfo is Inbox/<id>/message.json.
type MessageInfo = adapter.MessageInfo

// Refusal is Failed/<case>/kurer-error.json.
type Refusal struct {
	Code    errs.Code `json:"code"`
	Message string    `json:"message"`
	Detail  string    `json:"detail,omitempty"`
	At      time.Time `json:"at"`
}

// Folder is the adapter.
type Folder struct {
	name string
	cfg  Config
	log  *slog.Logger
}

var (
	_ adapter.Adapter  = (*Folder)(nil)
	_ adapter.Receiver = (*Folder)(nil)
)

func init() { adapter.RegisterNew(Kind, New) }

// New builds a folder adapter, creating its folders.
func New(name string, c Config, log *slog.Logger) (*Folder, error) {
	if c.Outbox == "" && c.Inbox == "" {
		return nil, errors.New("folder adapter: set outbox, inbox or both")
	}
	if c.Outbox != "" {
		parent := filepath.Dir(filepath.Clean(c.Outbox))
		if c.Sent == "" {
			c.Sent = filepath.Join(parent, "sent")
		}
		if c.Failed == "" {
			c.Failed = filepath.Join(parent, "failed")
		}
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	for _, d := range []string{c.Outbox, c.Sent, c.Failed, c.Inbox, c.Receipts} {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("folder adapter: %w", err)
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Folder{name: name, cfg: c, log: log.With("adapter", name)}, nil
}

// Name implements adapter.Adapter.
func (f *Folder) Name() string { return f.name }

// Run scans the outbox and follows state changes until ctx ends.
func (f *Folder) Run(ctx context.Context, h adapter.Host) error {
	errc := make(chan error, 1)
	if f.cfg.Receipts != "" {
		go func() { errc <- f.followReceipts(ctx, h) }()
	} else {
		errc <- nil
	}
	if f.cfg.Outbox != "" {
		t := time.NewTicker(f.cfg.PollInterval)
		defer t.Stop()
		for {
			f.ScanOnce(ctx, h)
			select {
			case <-ctx.Done():
				<-errc
				return nil
			case <-t.C:
			}
		}
	}
	<-ctx.Done()
	<-errc
	return nil
}

// ScanOnce hands every complete case folder in the outbox to h once.
func (f *Folder) ScanOnce(ctx context.Context, h adapter.Host) {
	entries, err := os.ReadDir(f.cfg.Outbox)
	if err != nil {
		f.log.Warn("outbox unreadable", "err", durable.Pathless(err))
		return
	}
	for _, e := range entries {
		if ctx.Err() != nil {
			return
		}
		n := e.Name()
		if !e.IsDir() || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".partial") {
			continue
		}
		dir := filepath.Join(f.cfg.Outbox, n)
		if f.cfg.ReadyMarker {
			if _, err := os.Stat(filepath.Join(dir, ReadyFile)); err != nil {
				continue
			}
		}
		f.sendCase(ctx, h, n, dir)
	}
}

func (f *Folder) sendCase(ctx context.Context, h adapter.Host, name, dir string) {
	// Logs name the message id only: case folder names are chosen by the case
	// system and may carry personal data, so neither they nor paths are logged.
	c, err := readCase(dir)
	if err == nil {
		c.ID, err = caseID(dir, c.ID)
	}
	if err == nil {
		var res localapi.SendResponse
		res, err = h.Send(ctx, c)
		if err == nil {
			if err := moveAside(dir, f.cfg.Sent, name); err != nil {
				f.log.Error("move sent case", "id", c.ID, "err", durable.Pathless(err))
				return
			}
			f.log.Info("case queued", "id", res.ID)
			return
		}
	}
	code := errs.CodeOf(err)
	if code == errs.Unavailable || code == errs.Internal && !isLocal(err) {
		f.log.Warn("case not sent yet, will retry", "id", c.ID, "code", code)
		return
	}
	ref := Refusal{Code: code, Message: code.Message(), At: time.Now().UTC()}
	var e *errs.Error
	if errors.As(err, &e) {
		ref.Detail = e.Detail
	} else {
		// A problem with the case folder itself; the reason file is for the
		// folder's owner, not a log.
		ref.Detail = err.Error()
	}
	data, _ := json.MarshalIndent(ref, "", "  ")
	if err := durable.WriteFile(filepath.Join(dir, ErrorFile), data, 0o640); err != nil {
		f.log.Error("write refusal", "id", c.ID, "err", durable.Pathless(err))
		return
	}
	if err := moveAside(dir, f.cfg.Failed, name); err != nil {
		f.log.Error("move failed case", "id", c.ID, "err", durable.Pathless(err))
		return
	}
	f.log.Warn("case refused", "id", c.ID, "code", code)
}

// localError marks problems found in the case folder itself (unreadable or
// malformed case.json): permanent, and safe to describe to the folder's owner.
type localError struct{ err error }

func (e localError) Error() string { return e.err.Error() }
func (e localError) Unwrap() error { return e.err }

func isLocal(err error) bool { var l localError; return errors.As(err, &l) }

func readCase(dir string) (adapter.Case, error) {
	var r CaseRouting
	data, err := durable.ReadFile(filepath.Join(dir, CaseFile), maxCaseLen)
	if err != nil {
		return adapter.Case{}, localError{fmt.Errorf("%s: %w", CaseFile, err)}
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return adapter.Case{}, localError{fmt.Errorf("%s: %w", CaseFile, err)}
	}
	if r.Type == "" || r.To == "" {
		return adapter.Case{}, localError{fmt.Errorf("%s: type and to are required", CaseFile)}
	}
	if len(r.To) == 4 && isDigits(r.To) {
		r.To = "municipality:" + r.To
	} else if len(r.To) == 9 && isDigits(r.To) {
		r.To = "org:" + r.To
	}
	melding, err := durable.ReadFile(filepath.Join(dir, localapi.MetadataFile), 1<<20)
	if err != nil {
		return adapter.Case{}, localError{fmt.Errorf("%s: %w", localapi.MetadataFile, err)}
	}
	c := adapter.Case{
		Type: r.Type, To: r.To, ID: r.ID, Conversation: r.Conversation,
		InReplyTo: r.InReplyTo, Expires: r.Expires, Metadata: melding,
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			return nil
		case rel == CaseFile || rel == localapi.MetadataFile || rel == ReadyFile || rel == IDFile || rel == ErrorFile:
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: not a regular file", rel)
		}
		c.Files = append(c.Files, adapter.File{Name: rel, Path: p})
		return nil
	})
	if err != nil {
		return adapter.Case{}, localError{err}
	}
	sort.Slice(c.Files, func(i, j int) bool { return c.Files[i].Name < c.Files[j].Name })
	return c, nil
}

// caseID returns the case's message id: the one in case.json, else the one
// recorded in .kurer-id by an earlier attempt, else a new one recorded
// durably before first use.
func caseID(dir, fromCase string) (string, error) {
	if fromCase != "" {
		return fromCase, nil
	}
	p := filepath.Join(dir, IDFile)
	if b, err := durable.ReadFile(p, 64); err == nil {
		if id := strings.TrimSpace(string(b)); uuid.Validate(id) == nil {
			return id, nil
		}
	}
	id := uuid.NewString()
	if err := durable.WriteFile(p, []byte(id+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("record message id: %w", err)
	}
	return id, durable.SyncDir(dir)
}

var _ adapter.Receives = (*Folder)(nil)

// Receives implements adapter.Receives: a folder adapter takes incoming
// messages only when it has an inbox.
func (f *Folder) Receives() bool { return f.cfg.Inbox != "" }

// Deliver writes an incoming message into Inbox/<id>/ atomically. A message
// already there is left as is. The payload files are copies, never links to
// the agent's verified copy, so that nothing written into the inbox (by the
// adapter or, later, by the case system) can change the agent's bytes.
//
// A message with a payload file that would take the place of one of the
// adapter's own files (reservedNames) is refused for good: it is marked
// rejected with ReasonReservedName (the sender gets a signed avvist) and
// nothing is written into the inbox.
func (f *Folder) Deliver(ctx context.Context, h adapter.Host, d adapter.Delivery) (err error) {
	if f.cfg.Inbox == "" {
		return errors.New("folder adapter has no inbox")
	}
	if uuid.Validate(d.ID) != nil {
		return fmt.Errorf("delivery with an invalid id")
	}
	final := filepath.Join(f.cfg.Inbox, d.ID)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	tmp := filepath.Join(f.cfg.Inbox, "."+d.ID+".partial")
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if reasons := reservedReasons(d.Files); len(reasons) > 0 {
		return f.refuse(ctx, h, d.ID, reasons)
	}
	if err := os.Mkdir(tmp, 0o750); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// Leave no half-written copy of the payload behind; the
			// next attempt starts over.
			_ = os.RemoveAll(tmp)
		}
	}()
	dirs := map[string]bool{tmp: true}
	for _, file := range d.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		dst := filepath.Join(tmp, filepath.FromSlash(file.Name))
		for p := filepath.Dir(dst); p != tmp && !dirs[p]; p = filepath.Dir(p) {
			dirs[p] = true
		}
		if err := copyFile(filepath.Join(d.Dir, filepath.FromSlash(file.Name)), dst); err != nil {
			return fmt.Errorf("inbox file: %w", err)
		}
	}
	meta, _ := json.MarshalIndent(d.Info(), "", "  ")
	for _, own := range []struct {
		name string
		data []byte
	}{{MessageFile, meta}, {ManifestFile, d.Manifest}, {SignatureFile, d.Signature}} {
		// Created new, never opened over an existing file: a name
		// taken by the payload is an error here, not an overwrite.
		if err := createFile(filepath.Join(tmp, own.name), bytes.NewReader(own.data)); err != nil {
			return err
		}
	}
	for dir := range dirs {
		if err := durable.SyncDir(dir); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return durable.SyncDir(f.cfg.Inbox)
}

// refuse marks message id rejected with reasons (the agent sends the signed
// avvist) and leaves nothing in the inbox. A message that already has a
// verdict keeps it.
func (f *Folder) refuse(ctx context.Context, h adapter.Host, id string, reasons []localapi.Reason) error {
	if h == nil {
		return errors.New("folder adapter: message has a reserved file name and no host to refuse it")
	}
	// The reasons quote file names, which can hold personal data: the logs
	// name the message id and the code only.
	if err := h.Rejected(ctx, id, reasons); errs.CodeOf(err) == errs.NotDeliverable {
		f.log.Warn("message already has a verdict; not delivered (reserved file name)", "id", id, "reason", ReasonReservedName)
		return nil
	} else if err != nil {
		return fmt.Errorf("folder adapter: mark rejected: %w", err)
	}
	f.log.Warn("message refused: a payload file has a name reserved for the adapter's own files",
		"id", id, "reason", ReasonReservedName)
	return nil
}

// reservedReasons returns one reason per reserved name that a payload file
// would take, quoting the first such file; none when there is no clash.
func reservedReasons(files []localapi.File) []localapi.Reason {
	var out []localapi.Reason
	seen := map[string]bool{}
	for _, file := range files {
		own := reservedName(file.Name)
		if own == "" || seen[own] {
			continue
		}
		seen[own] = true
		out = append(out, localapi.Reason{Code: ReasonReservedName, Message: fmt.Sprintf(
			"the file %q would take the place of %s, which the receiver's folder adapter writes into every message folder; rename it",
			cutName(file.Name), own)})
	}
	return out
}

// reservedName returns the adapter's own file that payload name would take
// the place of in Inbox/<id>/, or "". The first path component counts (a
// folder "message.json/" clashes as much as a file), compared without
// regard to case and to trailing dots and spaces: inboxes on SMB shares,
// Windows and macOS fold case, and Windows drops trailing dots and spaces.
func reservedName(name string) string {
	first, _, _ := strings.Cut(name, "/")
	first = strings.TrimRight(first, ". ")
	for _, own := range reservedNames {
		if strings.EqualFold(first, own) {
			return own
		}
	}
	return ""
}

// cutName keeps a quoted file name within the length a reason's message
// allows.
func cutName(s string) string {
	const maxName = 256
	if len(s) <= maxName {
		return s
	}
	for i := maxName; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "..."
		}
	}
	return ""
}

// copyFile copies src to a new file dst (never over an existing one),
// creating dst's folders, and fsyncs it. A copy, not a hard link: the
// agent's copy must stay as verified whatever is done to the inbox's. (On
// Linux io.Copy between files uses copy_file_range, which file systems
// that share extents may do without moving the bytes.)
func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return createFile(dst, in)
}

// createFile writes r into a new file path (O_EXCL: an existing file is an
// error, never truncated) and fsyncs it.
func createFile(path string, r io.Reader) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// followReceipts writes Receipts/<id>.json for each outgoing state change.
func (f *Folder) followReceipts(ctx context.Context, h adapter.Host) error {
	var after uint64
	for ctx.Err() == nil {
		res, err := h.Events(ctx, after, 25*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			f.log.Warn("events", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		seen := map[string]bool{}
		for _, ev := range res.Events {
			if ev.Direction != localapi.DirectionOut || seen[ev.ID] {
				continue
			}
			seen[ev.ID] = true
			d, err := h.Message(ctx, ev.ID)
			if err != nil {
				f.log.Warn("receipt detail", "id", ev.ID, "err", err)
				continue
			}
			data, _ := json.MarshalIndent(d, "", "  ")
			if err := writeAtomic(f.cfg.Receipts, ev.ID+".json", data); err != nil {
				f.log.Warn("write receipt file", "id", ev.ID, "err", durable.Pathless(err))
			}
		}
		after = res.Next
	}
	return nil
}

func moveAside(dir, toParent, name string) error {
	dst := filepath.Join(toParent, name)
	for i := 2; ; i++ {
		if _, err := os.Stat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = filepath.Join(toParent, fmt.Sprintf("%s.%d", name, i))
	}
	if err := os.Rename(dir, dst); err != nil {
		return err
	}
	if err := durable.SyncDir(toParent); err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(dir))
}

func writeAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, "."+name+".partial")
	if err := durable.WriteFile(tmp, data, 0o640); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
