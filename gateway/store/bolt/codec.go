package bolt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/kurer/kurer/gateway/api"
)

// Stored record formats. The first byte of a value in the items or notices
// bucket tells them apart: JSON records (written before the binary codec)
// start with '{', v1 records hold the whole item, v2 records only its fixed
// part (its state is in the states bucket, stateV1).
const (
	recordJSON = '{'
	recordV1   = 0x01
	recordV2   = 0x02
	stateV1    = 0x01
)

// maxHistory caps the state changes a stored record may carry. A message
// makes a handful of transitions (two per delivery attempt), so anything
// near the cap is corruption, not data.
const maxHistory = 4096

// Flag bits of a v1 or v2 record.
const (
	flagInline = 1 << iota
	flagSpool
	flagsKnown = flagInline | flagSpool
)

// The binary layouts, every integer a varint (signed) or uvarint
// (unsigned), every string a uvarint length followed by its bytes, every
// time as described at appendTime. Fields are positional: a change of
// layout needs a new version tag, and the decoders must keep reading the
// old ones.
//
// v1, the whole item in one value (written 2026-12-01 to 2026-12-02, and
// still for a record without a sequence number):
//
//	0x01 version
//	flags    byte (flagInline, flagSpool)
//	Kind     string
//	Routing  ID, From, To, Type string; Expires time; Size varint;
//	         Digest, Conversation, InReplyTo string
//	Owner    string
//	State    string
//	Attempts varint
//	LeaseUntil time
//	History  uvarint count, then per entry State string, At time, Reason string
//	Receipt  string
//	AcceptedAt, TerminalAt time
//	Seq      uvarint
//
// v2 splits the item by how often it changes. The items bucket (for a
// notice, the notices bucket) holds, under the id, what is fixed when the
// item is made (about 1 KiB, most of it the receipt), written once:
//
//	0x02 version
//	flags, Kind, Routing, Owner as in v1
//	Receipt  string
//	AcceptedAt time
//	Seq      uvarint, not 0
//
// and the states bucket holds, under Seq (8 bytes big-endian), what each
// transition changes (about 100 bytes):
//
//	0x01 version
//	State, Attempts, LeaseUntil, History as in v1
//	TerminalAt time
//
// A lease or an ack thus rewrites a small value next to those of the other
// items made about the same time, not a 1 KiB one among older ones: bbolt
// rewrites each leaf page a commit touches, and with whole records a
// commit's updates each had a leaf of their own (4 of the 9 pages a message
// cost the store's writer; see docs/decisions/2026-12-02-record-split.md).

// encodeRecord returns the v1 binary form of r in a buffer of exactly the
// right size. Times lose their location and monotonic reading (as with
// JSON); decodeRecord returns them in UTC.
func encodeRecord(r *record) []byte {
	b := make([]byte, 0, recordSize(r))
	b = append(b, recordV1, recordFlags(r))
	b = appendHead(b, r)
	b = appendState(b, r)
	b = appendString(b, r.Receipt)
	b = appendTime(b, r.AcceptedAt)
	b = appendTime(b, r.TerminalAt)
	return binary.AppendUvarint(b, r.Seq)
}

// encodeFixed returns the v2 items value of r (its fixed part), exactly
// sized.
func encodeFixed(r *record) []byte {
	b := make([]byte, 0, fixedSize(r))
	b = append(b, recordV2, recordFlags(r))
	b = appendHead(b, r)
	b = appendString(b, r.Receipt)
	b = appendTime(b, r.AcceptedAt)
	return binary.AppendUvarint(b, r.Seq)
}

// encodeState returns the states value of r (what transitions change),
// exactly sized.
func encodeState(r *record) []byte {
	b := make([]byte, 0, stateSize(r))
	b = append(b, stateV1)
	b = appendState(b, r)
	return appendTime(b, r.TerminalAt)
}

func recordFlags(r *record) byte {
	var flags byte
	if r.Inline {
		flags |= flagInline
	}
	if r.Spool {
		flags |= flagSpool
	}
	return flags
}

// appendHead writes Kind, Routing and Owner.
func appendHead(b []byte, r *record) []byte {
	b = appendString(b, r.Kind)
	rt := &r.Routing
	b = appendString(b, rt.ID)
	b = appendString(b, rt.From)
	b = appendString(b, rt.To)
	b = appendString(b, rt.Type)
	b = appendTime(b, rt.Expires)
	b = binary.AppendVarint(b, rt.Size)
	b = appendString(b, rt.Digest)
	b = appendString(b, rt.Conversation)
	b = appendString(b, rt.InReplyTo)
	return appendString(b, r.Owner)
}

// appendState writes State, Attempts, LeaseUntil and History.
func appendState(b []byte, r *record) []byte {
	b = appendString(b, r.State)
	b = binary.AppendVarint(b, int64(r.Attempts))
	b = appendTime(b, r.LeaseUntil)
	b = binary.AppendUvarint(b, uint64(len(r.History)))
	for i := range r.History {
		h := &r.History[i]
		b = appendString(b, h.State)
		b = appendTime(b, h.At)
		b = appendString(b, h.Reason)
	}
	return b
}

func headSize(r *record) int {
	rt := &r.Routing
	return stringSize(r.Kind) +
		stringSize(rt.ID) + stringSize(rt.From) + stringSize(rt.To) + stringSize(rt.Type) +
		timeSize(rt.Expires) + varintSize(rt.Size) +
		stringSize(rt.Digest) + stringSize(rt.Conversation) + stringSize(rt.InReplyTo) +
		stringSize(r.Owner)
}

func stateFieldsSize(r *record) int {
	n := stringSize(r.State) + varintSize(int64(r.Attempts)) +
		timeSize(r.LeaseUntil) + uvarintSize(uint64(len(r.History)))
	for i := range r.History {
		h := &r.History[i]
		n += stringSize(h.State) + timeSize(h.At) + stringSize(h.Reason)
	}
	return n
}

// recordSize is the length of encodeRecord(r).
func recordSize(r *record) int {
	return 2 + headSize(r) + stateFieldsSize(r) + // version, flags
		stringSize(r.Receipt) + timeSize(r.AcceptedAt) + timeSize(r.TerminalAt) + uvarintSize(r.Seq)
}

// fixedSize is the length of encodeFixed(r).
func fixedSize(r *record) int {
	return 2 + headSize(r) + stringSize(r.Receipt) + timeSize(r.AcceptedAt) + uvarintSize(r.Seq)
}

// stateSize is the length of encodeState(r).
func stateSize(r *record) int { return 1 + stateFieldsSize(r) + timeSize(r.TerminalAt) }

func uvarintSize(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// varintSize matches binary.AppendVarint's zig-zag encoding.
func varintSize(v int64) int { return uvarintSize(uint64(v)<<1 ^ uint64(v>>63)) }

func stringSize(s string) int { return uvarintSize(uint64(len(s))) + len(s) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendTime writes t as a uvarint head: 0 for the zero time, otherwise
// nanoseconds+1, followed by the Unix seconds as a varint. The zero time
// thus takes one byte and decodes as time.Time{}.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(t.Nanosecond())+1)
	return binary.AppendVarint(b, t.Unix())
}

func timeSize(t time.Time) int {
	if t.IsZero() {
		return 1
	}
	return uvarintSize(uint64(t.Nanosecond())+1) + varintSize(t.Unix())
}

// decodeRecord reads a stored items value in any known format: v1 or v2
// binary, or JSON as written before the binary codec. A v2 record comes
// back with its state fields zero and split set: decodeState completes it.
// It never panics on bad input; errors start with "decode item:".
func decodeRecord(data []byte) (*record, error) {
	if len(data) == 0 {
		return nil, errors.New("decode item: empty value")
	}
	var (
		r   *record
		err error
	)
	switch data[0] {
	case recordJSON:
		r = new(record)
		err = json.Unmarshal(data, r)
	case recordV1:
		r, err = decodeV1(data)
	case recordV2:
		r, err = decodeV2(data)
	default:
		err = fmt.Errorf("unknown format 0x%02x", data[0])
	}
	if err != nil {
		return nil, fmt.Errorf("decode item: %w", err)
	}
	return r, nil
}

func decodeV1(data []byte) (*record, error) {
	d := decoder{data: data, pos: 1}
	r := new(record)
	d.flags(r)
	d.head(r)
	d.state(r)
	r.Receipt = d.string()
	r.AcceptedAt = d.time()
	r.TerminalAt = d.time()
	r.Seq = d.uvarint()
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeV2(data []byte) (*record, error) {
	d := decoder{data: data, pos: 1}
	r := &record{split: true}
	d.flags(r)
	d.head(r)
	r.Receipt = d.string()
	r.AcceptedAt = d.time()
	r.Seq = d.uvarint()
	if err := d.end(); err != nil {
		return nil, err
	}
	if r.Seq == 0 {
		return nil, errors.New("v2 record without a sequence number")
	}
	return r, nil
}

// decodeState reads a states value into r's state fields. It never panics
// on bad input; errors start with "decode state:".
func decodeState(data []byte, r *record) error {
	if len(data) == 0 {
		return errors.New("decode state: empty value")
	}
	if data[0] != stateV1 {
		return fmt.Errorf("decode state: unknown format 0x%02x", data[0])
	}
	d := decoder{data: data, pos: 1}
	var s record
	d.state(&s)
	s.TerminalAt = d.time()
	if err := d.end(); err != nil {
		return fmt.Errorf("decode state: %w", err)
	}
	r.State, r.Attempts, r.LeaseUntil, r.History, r.TerminalAt = s.State, s.Attempts, s.LeaseUntil, s.History, s.TerminalAt
	return nil
}

func (d *decoder) flags(r *record) {
	flags := d.byte()
	if flags&^flagsKnown != 0 {
		d.fail("unknown flags 0x%02x", flags)
		return
	}
	r.Inline, r.Spool = flags&flagInline != 0, flags&flagSpool != 0
}

// head reads what appendHead wrote.
func (d *decoder) head(r *record) {
	r.Kind = d.string()
	rt := &r.Routing
	rt.ID = d.string()
	rt.From = d.string()
	rt.To = d.string()
	rt.Type = d.string()
	rt.Expires = d.time()
	rt.Size = d.varint()
	rt.Digest = d.string()
	rt.Conversation = d.string()
	rt.InReplyTo = d.string()
	r.Owner = d.string()
}

// state reads what appendState wrote.
func (d *decoder) state(r *record) {
	r.State = d.string()
	r.Attempts = d.int()
	r.LeaseUntil = d.time()
	if n := d.count(maxHistory, 3); n > 0 { // an entry takes at least 3 bytes
		r.History = make([]api.StateChange, n)
		for i := range r.History {
			h := &r.History[i]
			h.State = d.string()
			h.At = d.time()
			h.Reason = d.string()
		}
	}
}

// end returns the first error, or one for input left over.
func (d *decoder) end() error {
	if d.err != nil {
		return d.err
	}
	if d.pos != len(d.data) {
		return fmt.Errorf("%d trailing bytes", len(d.data)-d.pos)
	}
	return nil
}

// decoder reads a binary record or state. The first error sticks: later reads return
// zero values, so decodeV1 checks once at the end.
type decoder struct {
	data []byte
	pos  int
	err  error
	// str is data as one string, made on first need: decoded strings are
	// slices of it, so a record costs one string allocation, not one per
	// field. A retained field keeps the whole record's bytes alive; the
	// receipt is most of them, and callers that keep an item keep it too.
	str string
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.pos >= len(d.data) {
		d.fail("truncated at byte %d", d.pos)
		return 0
	}
	c := d.data[d.pos]
	d.pos++
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data[d.pos:])
	if n <= 0 {
		d.fail("bad uvarint at byte %d", d.pos)
		return 0
	}
	d.pos += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.data[d.pos:])
	if n <= 0 {
		d.fail("bad varint at byte %d", d.pos)
		return 0
	}
	d.pos += n
	return v
}

func (d *decoder) int() int {
	v := d.varint()
	if int64(int(v)) != v {
		d.fail("integer %d out of range", v)
		return 0
	}
	return int(v)
}

// count reads a uvarint element count, refusing more than max or more than
// the remaining input could hold at minSize bytes per element.
func (d *decoder) count(max, minSize int) int {
	at := d.pos
	v := d.uvarint()
	if d.err != nil {
		return 0
	}
	if v > uint64(max) || v > uint64((len(d.data)-d.pos)/minSize) {
		d.fail("count %d at byte %d out of range", v, at)
		return 0
	}
	return int(v)
}

func (d *decoder) string() string {
	at := d.pos
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.data)-d.pos) {
		d.fail("string length %d at byte %d exceeds input", n, at)
		return ""
	}
	b := d.data[d.pos : d.pos+int(n)]
	start := d.pos
	d.pos += int(n)
	if s, ok := knownString(b); ok {
		return s
	}
	if d.str == "" {
		d.str = string(d.data)
	}
	return d.str[start:d.pos]
}

// knownString returns the constant equal to b for the kinds, states and
// reasons most records repeat, so that they share no record's bytes.
func knownString(b []byte) (string, bool) {
	switch string(b) { // no allocation: the compiler compares in place
	case "":
		return "", true
	case api.KindMessage:
		return api.KindMessage, true
	case api.KindNotice:
		return api.KindNotice, true
	case api.StateAccepted:
		return api.StateAccepted, true
	case api.StateLeased:
		return api.StateLeased, true
	case api.StateDelivered:
		return api.StateDelivered, true
	case api.StateRejected:
		return api.StateRejected, true
	case api.StateExpired:
		return api.StateExpired, true
	case api.StateDeadLettered:
		return api.StateDeadLettered, true
	case "lease_timeout":
		return "lease_timeout", true
	case "max_attempts":
		return "max_attempts", true
	}
	return "", false
}

// time reads a time written by appendTime, in UTC.
func (d *decoder) time() time.Time {
	head := d.uvarint()
	if d.err != nil || head == 0 {
		return time.Time{}
	}
	if head > 1e9 {
		d.fail("nanoseconds %d out of range", head-1)
		return time.Time{}
	}
	sec := d.varint()
	if d.err != nil {
		return time.Time{}
	}
	return time.Unix(sec, int64(head-1)).UTC()
}
