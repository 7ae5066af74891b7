// Package durable holds the few file-system steps kurer uses whenever it
// promises that something is on disk: write a file and fsync it, fsync a
// directory so that a create or rename in it survives a crash, and read a
// small file with a size limit checked before the bytes are used.
package durable

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrTooLarge is returned by ReadFile for a file over its limit.
var ErrTooLarge = errors.New("file is larger than allowed")

// SyncDir fsyncs directory dir, making creates, renames and removals of its
// entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// WriteFile writes data to path (created or truncated, with perm) and fsyncs
// the file before it returns. The caller syncs the directory when the file
// is new or renamed.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadFile reads path, refusing it with ErrTooLarge when it holds more than
// limit bytes; at most limit+1 bytes are ever read.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w (%d bytes)", ErrTooLarge, limit)
	}
	return b, nil
}
