package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Record is one entry of the audit log, stored as one line of JSON.
//
// Attrs, Subject and Actor carry identifiers (account UUIDs, message ids,
// certificate fingerprints, reason codes), never personal data: no names, no
// national identity numbers, no case content. The log is kept for years and
// is read by operators; anything put here is effectively permanent.
type Record struct {
	// Seq numbers the records 1, 2, 3, ... without gaps.
	Seq uint64 `json:"seq"`
	// Time is when the record was appended, in UTC.
	Time time.Time `json:"time"`
	// Actor is who caused the change: an account UUID, "operator:<name>",
	// "gateway", "agent", "audit".
	Actor string `json:"actor"`
	// Action is a dotted verb such as "message.accepted" or "account.added".
	Action string `json:"action"`
	// Subject is the id the action is about (message id, account id), if any.
	Subject string `json:"subject,omitempty"`
	// Attrs are further identifiers and codes. No personal data.
	Attrs map[string]string `json:"attrs,omitempty"`
	// Prev is the Hash of the previous record; Genesis for the first one.
	Prev string `json:"prev"`
	// Hash is the lowercase hex SHA-256 of the record's canonical encoding
	// (see Record.ComputeHash), which includes Prev.
	Hash string `json:"hash"`
}

// Genesis is the Prev of the first record of every log.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// MaxRecordSize is the largest encoded record (one JSON line, newline
// included). Append refuses larger records; Verify treats a longer line as
// tampering. It bounds the memory any reader of a hostile file needs.
const MaxRecordSize = 64 << 10

// hashDomain separates this hash from any other SHA-256 use in kurer.
const hashDomain = "kurer-audit-v1\x00"

// ComputeHash returns the hex SHA-256 over the canonical encoding of r: a
// domain string, then each field as a uvarint length followed by its bytes,
// in this order: seq (decimal), time (RFC 3339 with nanoseconds, UTC),
// actor, action, subject, the number of attributes (decimal), each
// attribute key and value sorted by key, prev. The encoding is
// unambiguous, so no two different records share an input. r.Hash is not
// part of the input.
func (r Record) ComputeHash() string {
	var ab [16]attr
	var tb [64]byte
	var hb [512]byte
	attrs := sortedAttrs(r.Attrs, ab[:0])
	ts := r.Time.UTC().AppendFormat(tb[:0], time.RFC3339Nano)
	return hashHex(r.appendHashInput(hb[:0], attrs, ts))
}

// marshalLine returns the record's line: its JSON encoding by
// encoding/json and a newline. It is the definition of the line format and
// the only form Verify accepts, so that every byte of the file is covered;
// the writer's sealer makes the same bytes without reflection, and every
// Verify (parseLine) checks them against this.
func (r Record) marshalLine() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode audit record: %w", err)
	}
	b = append(b, '\n')
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxRecordSize)
	}
	return b, nil
}

// sealer computes records' hashes and lines for the writer, reusing its
// buffers. It is not safe for concurrent use.
type sealer struct {
	attrs []attr
	input []byte // hash input
}

// seal sets r.Hash and appends r's line to b. r.Time must be in UTC and ts
// must be appendTime's form of it, which is then also the hash input's
// form. On error b is returned unchanged.
func (s *sealer) seal(b []byte, r *Record, ts []byte) ([]byte, error) {
	s.attrs = sortedAttrs(r.Attrs, s.attrs)
	defer clear(s.attrs) // keep no caller strings alive
	s.input = r.appendHashInput(s.input[:0], s.attrs, ts)
	r.Hash = hashHex(s.input)
	if cap(s.input) > MaxRecordSize {
		s.input = nil // a refused huge record; don't keep its buffer
	}
	n0 := len(b)
	b = r.appendLine(b, s.attrs, ts)
	if n := len(b) - n0; n > MaxRecordSize {
		return b[:n0], fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, MaxRecordSize)
	}
	return b, nil
}

// attr is one attribute of a record.
type attr struct{ k, v string }

// sortedAttrs returns m's attributes sorted by key (byte-wise, as both the
// hash input and encoding/json order them), reusing buf.
func sortedAttrs(m map[string]string, buf []attr) []attr {
	buf = buf[:0]
	for k, v := range m {
		buf = append(buf, attr{k, v})
	}
	slices.SortFunc(buf, func(a, b attr) int { return strings.Compare(a.k, b.k) })
	return buf
}

// appendHashInput appends r's canonical encoding (see ComputeHash) to b.
// attrs are r.Attrs sorted by sortedAttrs; ts is r.Time in UTC formatted
// as RFC 3339 with nanoseconds.
func (r *Record) appendHashInput(b []byte, attrs []attr, ts []byte) []byte {
	var num [20]byte
	b = append(b, hashDomain...)
	b = appendField(b, strconv.AppendUint(num[:0], r.Seq, 10))
	b = appendField(b, ts)
	b = appendField(b, r.Actor)
	b = appendField(b, r.Action)
	b = appendField(b, r.Subject)
	b = appendField(b, strconv.AppendInt(num[:0], int64(len(attrs)), 10))
	for _, a := range attrs {
		b = appendField(b, a.k)
		b = appendField(b, a.v)
	}
	return appendField(b, r.Prev)
}

// appendField appends s with its uvarint length in front.
func appendField[T string | []byte](b []byte, s T) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// hashHex returns the lowercase hex SHA-256 of in.
func hashHex(in []byte) string {
	sum := sha256.Sum256(in)
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], sum[:])
	return string(out[:])
}

// appendLine appends r's line (see marshalLine) to b: the fields in the order
// of the struct, subject and attrs omitted when empty, attrs sorted by key,
// strings escaped as encoding/json escapes them. attrs are r.Attrs sorted
// by sortedAttrs; ts is appendTime's form of r.Time.
func (r *Record) appendLine(b []byte, attrs []attr, ts []byte) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"time":"`...)
	b = append(b, ts...)
	b = append(b, `","actor":`...)
	b = appendJSONString(b, r.Actor)
	b = append(b, `,"action":`...)
	b = appendJSONString(b, r.Action)
	if r.Subject != "" {
		b = append(b, `,"subject":`...)
		b = appendJSONString(b, r.Subject)
	}
	if len(attrs) > 0 {
		b = append(b, `,"attrs":{`...)
		for i, a := range attrs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, a.k)
			b = append(b, ':')
			b = appendJSONString(b, a.v)
		}
		b = append(b, '}')
	}
	b = append(b, `,"prev":`...)
	b = appendJSONString(b, r.Prev)
	b = append(b, `,"hash":`...)
	b = appendJSONString(b, r.Hash)
	return append(b, "}\n"...)
}

// appendTime appends t as time.Time.MarshalJSON does, without the quotes:
// RFC 3339 with nanoseconds in t's own zone, refusing years outside
// [0,9999] and zone offsets of 24 hours or more.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	num2 := func(b []byte) byte { return 10*(b[0]-'0') + (b[1] - '0') }
	switch {
	case b[n0+len("9999")] != '-':
		return b[:n0], errors.New("time: year outside of range [0,9999]")
	case b[len(b)-1] != 'Z':
		c := b[len(b)-len("Z07:00")]
		if ('0' <= c && c <= '9') || num2(b[len(b)-len("07:00"):]) >= 24 {
			return b[:n0], errors.New("time: timezone hour outside of range [0,23]")
		}
	}
	return b, nil
}

// jsonSafeLo and jsonSafeHi are bit sets of the ASCII bytes (0-63 and
// 64-127) that encoding/json writes unescaped: all but control characters,
// '"', '\\', '<', '>' and '&'.
const (
	jsonSafeLo = 0xffffffff00000000 &^ (1<<'"' | 1<<'&' | 1<<'<' | 1<<'>')
	jsonSafeHi = 0xffffffffffffffff &^ (1 << ('\\' - 64))
)

// jsonSafe reports whether the ASCII byte c needs no escaping.
func jsonSafe(c byte) bool {
	set := uint64(jsonSafeLo)
	if c >= 64 {
		set = jsonSafeHi
	}
	return set>>(c&63)&1 != 0
}

// appendJSONString appends s as a JSON string exactly as encoding/json
// does with HTML escaping on (json.Marshal's default): '"', '\\' and
// control characters escaped (\n \r \t \b \f short), '<' '>' '&' U+2028
// U+2029 as \uXXXX, invalid UTF-8 as \ufffd.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// parseLine parses one line (without its newline) and checks that it is in
// canonical form and that its hash is right. It does not check the chain.
func parseLine(line []byte) (Record, error) {
	var r Record
	if len(line) >= MaxRecordSize {
		return r, fmt.Errorf("line of %d bytes exceeds the record limit", len(line))
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("not a record: %v", err)
	}
	enc, err := r.marshalLine()
	if err != nil {
		return r, fmt.Errorf("record cannot be re-encoded: %v", err)
	}
	if !bytes.Equal(enc[:len(enc)-1], line) {
		return r, errors.New("line is not in canonical form (edited)")
	}
	if want := r.ComputeHash(); r.Hash != want {
		return r, errors.New("hash does not match the record's content (edited)")
	}
	return r, nil
}

// validate checks the fields a caller passes to Append. It allocates only
// to report a problem.
func validate(actor, action, subject string, attrs map[string]string) error {
	if actor == "" || action == "" {
		return errors.New("audit: actor and action are required")
	}
	for _, f := range [...]struct{ what, s string }{{"actor", actor}, {"action", action}, {"subject", subject}} {
		if !utf8.ValidString(f.s) {
			return fmt.Errorf("audit: %s is not valid UTF-8", f.what)
		}
	}
	for k, v := range attrs {
		switch {
		case k == "":
			return errors.New("audit: empty attribute key")
		case !utf8.ValidString(k):
			return errors.New("audit: attribute key is not valid UTF-8")
		case !utf8.ValidString(v):
			return fmt.Errorf("audit: attribute %s is not valid UTF-8", k)
		}
	}
	return nil
}
