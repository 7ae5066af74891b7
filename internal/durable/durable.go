// Package durable holds the few file-system steps kurer uses whenever it
// promises that something is on disk: write a file and fsync it, fsync a
// directory so that a create or rename in it survives a crash, and read a
// small file with a size limit checked before the bytes are used.
package durable

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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

// MkdirAll creates dir and any missing parents with perm, like
// os.MkdirAll, and fsyncs the parent of each directory it created, so that
// files later made durable inside them cannot vanish with their directory
// in a crash. Directories that exist are left as they are.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("create directory: %w", err)
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	for i := len(missing) - 1; i >= 0; i-- { // top down
		if err := SyncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
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

// Pathless is err without the file names of a file-system error in its
// chain, for a log line (payload file names can hold personal data): the
// operation and the system's error are kept, the paths dropped.
func Pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return fmt.Errorf("%s: %w", le.Op, le.Err)
	}
	return err
}
