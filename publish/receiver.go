// Package publish delivers the agent's event log to receivers: one goroutine
// and one durable cursor per receiver, in sequence order, at least once.
//
// A receiver adapter (publish/file, publish/kafka, …) implements Receiver and
// registers a Factory. The dispatcher owns ordering, filtering, redaction,
// retries with backoff, dead letters and the cursor; the adapter only has to
// deliver a batch and say truthfully what the far side confirmed.
package publish

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/history"
)

// Receiver delivers events to one destination.
type Receiver interface {
	// Deliver sends events, which are in sequence order, and returns nil
	// only when the destination has confirmed all of them (Kafka acks=all,
	// an fsync, an HTTP 2xx). On failure it returns an error; a
	// *PartialError says how many leading events were confirmed, a
	// *RejectedError names an event the destination refuses for good.
	// Redelivery after an error resends the same events with the same ids.
	// Deliver must not modify the events, which may be shared with other
	// receivers, nor keep them after it returns: their slice is reused.
	Deliver(ctx context.Context, events []history.Event) error
	// Close releases connections; buffered events must already be confirmed.
	Close() error
}

// JSONSender is a receiver that sends events as their JSON (Event.Raw, or
// the event encoded again) and never reads their Before and After: the
// dispatcher need not decode those for it, which is most of decoding.
type JSONSender interface {
	SendsJSON() bool
}

// Checker is a receiver that can test its connection (connector check).
type Checker interface {
	Check(ctx context.Context) error
}

// PartialError reports that the first Confirmed events were delivered and
// confirmed before Err happened.
type PartialError struct {
	Confirmed int
	Err       error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("%d events confirmed, then: %v", e.Confirmed, e.Err)
}

func (e *PartialError) Unwrap() error { return e.Err }

// RejectedError reports that the destination refuses events[Index] for good
// (too large, schema refused, not authorised for that topic). Events before
// Index were confirmed. The dispatcher dead-letters it and moves on.
type RejectedError struct {
	Index int
	Err   error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("event %d refused: %v", e.Index, e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// Confirmed returns how many leading events err says were confirmed.
func Confirmed(err error) int {
	var p *PartialError
	if errors.As(err, &p) {
		return p.Confirmed
	}
	var r *RejectedError
	if errors.As(err, &r) {
		return r.Index
	}
	return 0
}

// Options are what the dispatcher tells a receiver when it is built.
type Options struct {
	// Name is the receiver's name in the config.
	Name string
	// File is the config file's path, for error messages.
	File string
	// InstallationID is the agent installation's UUID (CloudEvents source).
	InstallationID string
	// Log is the receiver's logger.
	Log Logger
}

// Logger is the part of *slog.Logger a receiver uses.
type Logger interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
	Error(msg string, args ...any)
	Debug(msg string, args ...any)
}

// Factory builds a receiver from its YAML config node (the whole receiver
// entry; the adapter decodes it strictly and ignores the common keys listed
// in CommonKeys).
type Factory func(node *yaml.Node, opts Options) (Receiver, error)

// CommonKeys are the receiver keys the dispatcher owns.
var CommonKeys = []string{"name", "type", "start", "filter", "classification", "batch", "retry", "rate", "delivery_timeout"}

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes a receiver type available; adapters call it from init.
func Register(typ string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[typ]; dup {
		panic("publish: receiver type registered twice: " + typ)
	}
	factories[typ] = f
}

// Lookup returns the factory for a receiver type.
func Lookup(typ string) (Factory, bool) {
	mu.RLock()
	defer mu.RUnlock()
	f, ok := factories[typ]
	return f, ok
}

// Types lists the registered receiver types, sorted.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(factories))
	for t := range factories {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
