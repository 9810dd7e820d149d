package publishtest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
)

// Feed is a dispatcher-like loop in the background: it delivers events
// in slices, pausing between successful calls as a live feed does, and
// after an error again from the first unconfirmed event, with backoff.
type Feed struct {
	total    int
	next     atomic.Int64
	failures atomic.Int64
	lastErr  atomic.Value // string
	stop     chan struct{}
	result   chan error
}

// StartFeed starts delivering events to r, slice events per Deliver call
// and pause after each successful one; it stops at a RejectedError, or
// when t ends.
func StartFeed(t testing.TB, r publish.Receiver, events []history.Event, slice int, pause time.Duration) *Feed {
	f := &Feed{total: len(events), stop: make(chan struct{}), result: make(chan error, 1)}
	f.lastErr.Store("")
	go func() {
		backoff := 50 * time.Millisecond
		for n := 0; n < len(events); {
			select {
			case <-f.stop:
				f.result <- fmt.Errorf("stuck at %d of %d; last error: %v", n, len(events), f.lastErr.Load())
				return
			default:
			}
			end := min(n+slice, len(events))
			err := r.Deliver(context.Background(), events[n:end])
			var re *publish.RejectedError
			switch {
			case err == nil:
				n = end
				backoff = 50 * time.Millisecond
				time.Sleep(pause)
			case errors.As(err, &re):
				f.result <- err
				return
			default:
				f.failures.Add(1)
				f.lastErr.Store(err.Error())
				n += publish.Confirmed(err)
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
			}
			f.next.Store(int64(n))
		}
		f.result <- nil
	}()
	t.Cleanup(f.halt)
	return f
}

func (f *Feed) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
}

// Next is the number of events confirmed so far.
func (f *Feed) Next() int64 { return f.next.Load() }

// Failures is the number of failed Deliver calls so far.
func (f *Feed) Failures() int64 { return f.failures.Load() }

// WaitFor waits until n events are confirmed, failing t after timeout.
func (f *Feed) WaitFor(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for f.Next() < n {
		if time.Now().After(deadline) {
			t.Fatalf("feed: %d of %d events confirmed after %v, waited for %d; last error: %v", f.Next(), f.total, timeout, n, f.lastErr.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Wait returns once every event is confirmed (nil) or one is rejected
// (its error); after timeout it stops the feed and returns where it was
// stuck.
func (f *Feed) Wait(timeout time.Duration) error {
	select {
	case err := <-f.result:
		return err
	case <-time.After(timeout):
		f.halt()
		return fmt.Errorf("not done within %v: %w", timeout, <-f.result)
	}
}
