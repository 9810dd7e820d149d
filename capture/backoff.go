package capture

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff paces a source's reconnections: 0.5 s after the first failure,
// doubling up to 30 s, each with up to 20% jitter; it starts over once a
// session made progress or lasted a minute. The zero value waits nothing.
type Backoff struct {
	delay time.Duration
}

// Wait sleeps the current delay; false if ctx ended first. With no delay
// it returns true at once, so the caller's next session runs (and can
// answer what it owes) even when ctx is done.
func (b *Backoff) Wait(ctx context.Context) bool {
	if b.delay <= 0 {
		return true
	}
	return Sleep(ctx, b.delay)
}

// Sleep waits d; false if ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Reset makes the next Wait return at once (a pause, not a failure).
func (b *Backoff) Reset() { b.delay = 0 }

// Failed sets and returns the delay after a session that started at
// started and failed; progressed says whether it got anywhere.
func (b *Backoff) Failed(started time.Time, progressed bool) time.Duration {
	if progressed || time.Since(started) > time.Minute {
		b.delay = 0
	}
	b.delay = min(max(2*b.delay, 500*time.Millisecond), 30*time.Second)
	b.delay += time.Duration(rand.Int64N(int64(b.delay / 5)))
	return b.delay
}
