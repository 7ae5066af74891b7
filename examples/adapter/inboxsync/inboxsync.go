// Package inboxsync is the core of the example external adapter
// (examples/adapter): it uses only the agent's local API (agent/localapi) to
// copy every received message into a folder of the case system's and mark it
// processed, which sends the signed behandlet receipt to the sender.
//
// It is deliberately small; a real adapter would hand the files to its case
// system instead of a folder, and mark a message rejected (Client.Rejected,
// with reasons) when the case system refuses it.
package inboxsync

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kurer/kurer/agent/localapi"
)

// Sync copies every incoming message that is not yet processed or rejected
// into outDir/<id>/ (built in a temp folder and renamed, so the case system
// never sees half a message) and marks it processed. It returns how many
// messages it took. Safe to run again: a message already in outDir is only
// marked processed.
func Sync(ctx context.Context, c *localapi.Client, outDir string) (int, error) {
	n := 0
	for _, state := range []string{localapi.InStored, localapi.InDelivered} {
		list, err := c.List(ctx, localapi.DirectionIn, state, 100)
		if err != nil {
			return n, fmt.Errorf("list %s messages: %w", state, err)
		}
		for _, m := range list {
			if err := take(ctx, c, outDir, m.ID); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func take(ctx context.Context, c *localapi.Client, outDir, id string) error {
	final := filepath.Join(outDir, id)
	if _, err := os.Stat(final); err != nil {
		d, err := c.Message(ctx, id)
		if err != nil {
			return fmt.Errorf("message %s: %w", id, err)
		}
		tmp := filepath.Join(outDir, "."+id+".partial")
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		for _, f := range d.Files {
			if strings.Contains(f.Name, "..") || filepath.IsAbs(f.Name) {
				return fmt.Errorf("message %s: unexpected file name", id) // the agent already refuses these
			}
			if err := download(ctx, c, id, f.Name, filepath.Join(tmp, filepath.FromSlash(f.Name))); err != nil {
				return fmt.Errorf("message %s: %w", id, err)
			}
		}
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
	}
	return c.Processed(ctx, id)
}

func download(ctx context.Context, c *localapi.Client, id, name, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return err
	}
	rc, err := c.File(ctx, id, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Watch runs Sync at start and whenever the agent reports a state change,
// until ctx ends.
func Watch(ctx context.Context, c *localapi.Client, outDir string, report func(taken int)) error {
	var after uint64
	for ctx.Err() == nil {
		n, err := Sync(ctx, c, outDir)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if n > 0 && report != nil {
			report(n)
		}
		ev, err := c.Events(ctx, after, 25*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("events: %w", err)
		}
		after = ev.Next
	}
	return nil
}
