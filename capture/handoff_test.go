package capture

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRunsHandoff(t *testing.T) {
	ctx := context.Background()
	var r Runs
	if handled, err := r.Handoff(ctx, nil); handled || err != nil {
		t.Fatalf("no Run active: handled %v, %v", handled, err)
	}
	reqs, stop, ok := r.Start()
	if !ok {
		t.Fatal("Start refused with no Run active")
	}
	if _, _, ok := r.Start(); ok {
		t.Fatal("a second Start was allowed")
	}
	// The Run takes the request and answers it.
	failed := errors.New("snapshot failed")
	go func() {
		req := <-reqs
		req.Done <- failed
	}()
	if handled, err := r.Handoff(ctx, nil); !handled || !errors.Is(err, failed) {
		t.Fatalf("active Run: handled %v, %v", handled, err)
	}
	// The caller gives up while the Run is busy.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if handled, err := r.Handoff(cctx, nil); !handled || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled: handled %v, %v", handled, err)
	}
	// The Run ends before taking the request: the caller takes it.
	go func() { time.Sleep(20 * time.Millisecond); stop() }()
	if handled, err := r.Handoff(ctx, nil); handled || err != nil {
		t.Fatalf("Run ended: handled %v, %v", handled, err)
	}
	if _, stop, ok := r.Start(); !ok {
		t.Fatal("Start refused after the Run stopped")
	} else {
		stop()
	}
}
