package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kurer/kurer/internal/durable"
	"io"
	"os"
	"path/filepath"
)

// HeadSuffix is appended to the log's path to name its head file.
const HeadSuffix = ".head"

// maxHeadSize bounds what readHead reads of a head file.
const maxHeadSize = 4 << 10

// head is the content of the head file: the seq and hash of the last
// record known to be durable in the log. It anchors the end of the chain:
// records cut off the end of the log make the log shorter than its head.
// Open writes seq 0 and Genesis when it creates a log, so that a log with
// records always has a head file unless someone removed it.
type head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// readHead reads path's head file. ok is false when it does not exist.
func readHead(path string) (h head, ok bool, err error) {
	f, err := os.Open(path + HeadSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("open audit head: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxHeadSize+1))
	if err != nil {
		return h, false, fmt.Errorf("read audit head: %w", err)
	}
	if len(data) > maxHeadSize {
		return h, false, fmt.Errorf("%w: head file too large", ErrTampered)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil || len(h.Hash) != len(Genesis) || h.Seq == 0 && h.Hash != Genesis {
		return h, false, fmt.Errorf("%w: head file %s is unreadable", ErrTampered, path+HeadSuffix)
	}
	return h, true, nil
}

// writeHead replaces the head file atomically: write a temporary file,
// fsync it, rename it over the old one, fsync the directory.
func writeHead(path string, h head, sync bool) error {
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	data = append(data, '\n')
	tmp := path + HeadSuffix + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write audit head: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write audit head: %w", err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("sync audit head: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write audit head: %w", err)
	}
	if err := os.Rename(tmp, path+HeadSuffix); err != nil {
		return fmt.Errorf("write audit head: %w", err)
	}
	if sync {
		return durable.SyncDir(filepath.Dir(path))
	}
	return nil
}
