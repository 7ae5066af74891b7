package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
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
	h := sha256.New()
	var lenbuf [binary.MaxVarintLen64]byte
	put := func(s string) {
		n := binary.PutUvarint(lenbuf[:], uint64(len(s)))
		h.Write(lenbuf[:n])
		h.Write([]byte(s))
	}
	h.Write([]byte(hashDomain))
	put(strconv.FormatUint(r.Seq, 10))
	put(r.Time.UTC().Format(time.RFC3339Nano))
	put(r.Actor)
	put(r.Action)
	put(r.Subject)
	keys := make([]string, 0, len(r.Attrs))
	for k := range r.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	put(strconv.Itoa(len(keys)))
	for _, k := range keys {
		put(k)
		put(r.Attrs[k])
	}
	put(r.Prev)
	return hex.EncodeToString(h.Sum(nil))
}

// encode returns the record's line: its JSON encoding and a newline. It is
// the only form Verify accepts, so that every byte of the file is covered.
func (r Record) encode() ([]byte, error) {
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
	enc, err := r.encode()
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

// validate checks the fields a caller passes to Append.
func validate(actor, action, subject string, attrs map[string]string) error {
	if actor == "" || action == "" {
		return errors.New("audit: actor and action are required")
	}
	check := func(what, s string) error {
		if !utf8.ValidString(s) {
			return fmt.Errorf("audit: %s is not valid UTF-8", what)
		}
		return nil
	}
	if err := check("actor", actor); err != nil {
		return err
	}
	if err := check("action", action); err != nil {
		return err
	}
	if err := check("subject", subject); err != nil {
		return err
	}
	for k, v := range attrs {
		if k == "" {
			return errors.New("audit: empty attribute key")
		}
		if err := check("attribute key", k); err != nil {
			return err
		}
		if err := check("attribute "+k, v); err != nil {
			return err
		}
	}
	return nil
}
