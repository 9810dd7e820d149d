package capturetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
)

// Running is a source's Run in the background.
type Running struct {
	cancel context.CancelFunc
	errc   chan error
	once   sync.Once
	err    error
}

// Start runs src.Run(ctx, cp, sink) in the background until Stop or the
// end of the test.
func Start(t testing.TB, src capture.Source, sink capture.Sink, cp []byte) *Running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- src.Run(ctx, cp, sink) }()
	t.Cleanup(func() { r.Stop() })
	return r
}

// Stop cancels Run and returns its error.
func (r *Running) Stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.errc
	})
	return r.err
}

// Exited returns Run's error if it ends within wait.
func (r *Running) Exited(wait time.Duration) (error, bool) {
	select {
	case err := <-r.errc:
		r.once.Do(func() { r.err = err })
		return err, true
	case <-time.After(wait):
		return nil, false
	}
}

// WaitFor polls cond until it holds, failing t after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

// SameRows compares two row sets (by key, values as JSON) and fails t
// with the first differences.
func SameRows(t testing.TB, what string, got, want map[string]map[string]any) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			diffs = append(diffs, "missing "+k)
			continue
		}
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		if string(gj) != string(wj) {
			diffs = append(diffs, fmt.Sprintf("row %s: got %s, want %s", k, gj, wj))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, "extra "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		if len(diffs) > 10 {
			diffs = append(diffs[:10], fmt.Sprintf("... %d more", len(diffs)-10))
		}
		t.Fatalf("%s: %d rows vs %d expected:\n%s", what, len(got), len(want), strings.Join(diffs, "\n"))
	}
}
