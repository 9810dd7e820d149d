// Package file is the JSON Lines receiver: one canonical event per line,
// appended to a file (fsync'd before the dispatcher's cursor moves) or
// written to standard output.
package file

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/configs"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/render"
)

func init() {
	publish.Register("file", New)
}

// Config is the receiver's own part of the configuration.
type Config struct {
	// Path of the JSON Lines file; "-" or empty means standard output.
	Path string `yaml:"path"`
	// Fsync (default true) syncs the file before confirming a batch.
	Fsync *bool `yaml:"fsync"`
}

// Receiver appends events to a file.
type Receiver struct {
	f     *os.File
	w     *bufio.Writer
	fsync bool
	path  string
}

// New builds the receiver from its config node.
func New(node *yaml.Node, opts publish.Options) (publish.Receiver, error) {
	var c Config
	if err := configs.Decode(opts.File, node, &c, publish.CommonKeys...); err != nil {
		return nil, err
	}
	return Open(c)
}

// Open opens the file for appending (creating its directory).
func Open(c Config) (*Receiver, error) {
	r := &Receiver{fsync: c.Fsync == nil || *c.Fsync, path: c.Path}
	if c.Path == "" || c.Path == "-" {
		r.w = bufio.NewWriterSize(os.Stdout, 1<<16)
		r.fsync = false
		return r, nil
	}
	if err := os.MkdirAll(filepath.Dir(c.Path), 0o750); err != nil {
		return nil, fmt.Errorf("file receiver: %w (make the directory writable, or change path)", err)
	}
	f, err := os.OpenFile(c.Path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("file receiver: %w (make the file writable, or change path)", err)
	}
	// A crash mid-batch can leave a torn last line (a batch larger than
	// the buffer takes several writes). It was never confirmed, so the
	// dispatcher delivers it again: drop it.
	if err := trimTornTail(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("file receiver: repair %s: %w", c.Path, err)
	}
	r.f, r.w = f, bufio.NewWriterSize(f, 1<<16)
	return r, nil
}

// trimTornTail truncates f after its last newline.
func trimTornTail(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for end := st.Size(); end > 0; {
		n := min(int64(len(buf)), end)
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			if cut := end - n + int64(i) + 1; cut != st.Size() {
				return f.Truncate(cut)
			}
			return nil
		}
		end -= n
	}
	if st.Size() > 0 {
		return f.Truncate(0)
	}
	return nil
}

// Deliver appends the events and syncs the file.
func (r *Receiver) Deliver(_ context.Context, events []history.Event) error {
	for i := range events {
		data, err := render.Data(&events[i])
		if err != nil {
			return &publish.RejectedError{Index: i, Err: err}
		}
		r.w.Write(data)
		r.w.WriteByte('\n') // a write error sticks in r.w; Flush reports it
	}
	if err := r.w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", r.path, err)
	}
	if r.fsync && r.f != nil {
		if err := r.f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", r.path, err)
		}
	}
	return nil
}

// Check verifies the file can be opened for appending.
func (r *Receiver) Check(context.Context) error { return nil }

// SendsJSON is true: lines are the events' JSON (publish.JSONSender).
func (r *Receiver) SendsJSON() bool { return true }

// Close closes the file.
func (r *Receiver) Close() error {
	if err := r.w.Flush(); err != nil {
		return err
	}
	if r.f != nil {
		return r.f.Close()
	}
	return nil
}
