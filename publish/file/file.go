// Package file is the JSON Lines receiver: one canonical event per line,
// appended to a file (fsync'd before the dispatcher's cursor moves) or
// written to standard output.
package file

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/configs"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
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
	f, err := os.OpenFile(c.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("file receiver: %w (make the file writable, or change path)", err)
	}
	r.f, r.w = f, bufio.NewWriterSize(f, 1<<16)
	return r, nil
}

// Deliver appends the events and syncs the file.
func (r *Receiver) Deliver(_ context.Context, events []history.Event) error {
	enc := json.NewEncoder(r.w)
	enc.SetEscapeHTML(false)
	for i := range events {
		if err := enc.Encode(&events[i]); err != nil {
			return &publish.RejectedError{Index: i, Err: err}
		}
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
