package capture

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// SnapshotRequest asks a running Run for an on-demand snapshot: Run takes
// it between transactions, delivers its batches to Sink and sends the
// outcome on Done (buffered, so Run never blocks on it).
type SnapshotRequest struct {
	Ctx  context.Context
	Sink Sink
	Done chan error
}

// NewSnapshotRequest returns a request whose Done can take the outcome.
func NewSnapshotRequest(ctx context.Context, sink Sink) *SnapshotRequest {
	return &SnapshotRequest{Ctx: ctx, Sink: sink, Done: make(chan error, 1)}
}

// Runs lets a source's Snapshot hand its request to the source's active
// Run, which alone can take it consistently with the stream. The zero
// value is ready to use.
type Runs struct {
	mu  sync.Mutex
	cur *activeRun
}

type activeRun struct {
	reqs chan *SnapshotRequest
	done chan struct{} // closed when Run returns
}

// Start marks a Run active and returns the channel Snapshot's requests
// arrive on, and stop, to call when Run returns. ok is false if a Run is
// already active.
func (r *Runs) Start() (reqs <-chan *SnapshotRequest, stop func(), ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil {
		return nil, nil, false
	}
	a := &activeRun{reqs: make(chan *SnapshotRequest), done: make(chan struct{})}
	r.cur = a
	return a.reqs, func() {
		r.mu.Lock()
		r.cur = nil
		r.mu.Unlock()
		close(a.done)
	}, true
}

// Handoff hands a snapshot to the active Run and waits for its outcome.
// handled is false when no Run is active, or it ended before taking the
// request: the caller then takes the snapshot itself.
func (r *Runs) Handoff(ctx context.Context, sink Sink) (handled bool, err error) {
	r.mu.Lock()
	a := r.cur
	r.mu.Unlock()
	if a == nil {
		return false, nil
	}
	req := NewSnapshotRequest(ctx, sink)
	select {
	case a.reqs <- req:
		select {
		case err := <-req.Done:
			return true, err
		case <-ctx.Done():
			return true, ctx.Err()
		}
	case <-a.done:
		return false, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// NewRunID returns a new snapshot run id (SnapshotMark.ID): its start time
// and a random suffix, so runs sort by time in logs.
func NewRunID() string {
	var b [6]byte
	rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}
