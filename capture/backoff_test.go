package capture

import (
	"context"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	var b Backoff
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if !b.Wait(ctx) {
		t.Fatal("the zero Backoff must not wait, even with ctx done")
	}
	now := time.Now()
	var prev time.Duration
	for i, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second} {
		d := b.Failed(now, false)
		// The delay doubles from its previous value (jitter included).
		if d < want || (i > 0 && d < 2*prev) || d > 2*prev+want/5+want {
			t.Fatalf("failure %d: delay %v, want about %v", i+1, d, want)
		}
		prev = d
	}
	for range 10 {
		b.Failed(now, false)
	}
	if d := b.Failed(now, false); d < 30*time.Second || d > 36*time.Second {
		t.Fatalf("the delay is capped at 30 s plus jitter, got %v", d)
	}
	if d := b.Failed(now, true); d < 500*time.Millisecond || d > 600*time.Millisecond {
		t.Fatalf("after progress the delay starts over, got %v", d)
	}
	if d := b.Failed(now.Add(-2*time.Minute), false); d > 600*time.Millisecond {
		t.Fatalf("after a session of two minutes the delay starts over, got %v", d)
	}
	if b.Wait(ctx) {
		t.Fatal("Wait with a delay must stop when ctx is done")
	}
	b.Reset()
	if !b.Wait(ctx) {
		t.Fatal("Reset must make Wait return at once")
	}
}
