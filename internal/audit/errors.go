package audit

import (
	"errors"
	"strconv"
)

// Sentinel errors. Verify and Open wrap them with the details.
var (
	// ErrTampered means the log or its head file is not what this package
	// wrote: a record was edited, removed, reordered or inserted, or records
	// were cut off the end (detected through the head file).
	ErrTampered = errors.New("audit log tampered")
	// ErrTornTail means the last line has no newline: a write was cut short,
	// normally by a crash. Such a record was never acknowledged (Append
	// returns only after the whole line is fsynced). Open repairs it.
	ErrTornTail = errors.New("audit log has a torn last line")
	// ErrTooLarge means a record would exceed MaxRecordSize.
	ErrTooLarge = errors.New("audit record too large")
	// ErrClosed is returned by Append after Close.
	ErrClosed = errors.New("audit log closed")
	// ErrLocked means another process (or Log) has the file open.
	ErrLocked = errors.New("audit log is in use by another process")
)

// EntryError is AppendBatch's error for an entry it cannot record (invalid
// or too large); nothing of the batch was appended.
type EntryError struct {
	Index int // the entry's index in the batch
	Err   error
}

func (e *EntryError) Error() string {
	return "audit entry " + strconv.Itoa(e.Index) + ": " + e.Err.Error()
}

func (e *EntryError) Unwrap() error { return e.Err }
