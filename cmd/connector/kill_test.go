package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/os2sandbox/connector/publish/file/filetest"
	"github.com/os2sandbox/connector/state"
)

// TestKill9 runs the demo through `connector run` with a slow receiver,
// SIGKILLs the agent at random moments (at least 20 times) and restarts
// it each time. At the end the receiver's file must hold every event, no
// sequence missing, duplicates only as identical lines, and the log must
// equal that of a run that was never interrupted.
func TestKill9(t *testing.T) {
	slow := func(s string) string {
		// A slow receiver (small batches, capped rate) so kills land in
		// delivery as well as in capture.
		return strings.Replace(s, "    start: beginning\n    classification: internal",
			"    start: beginning\n    classification: internal\n    batch: 7\n    rate: 700", 1)
	}
	ref := demoDir(t, slow)
	dir := demoDir(t, slow)
	// Both runs start from the same empty state file: event ids are
	// UUIDv5 in the installation's namespace, created with the file.
	db, err := state.Open(filepath.Join(ref, "demo-out", "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	copyState(t, filepath.Join(ref, "demo-out", "state.db"), filepath.Join(dir, "demo-out", "state.db"))
	if r := run(t, ref, "run", "--once", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("reference run: %s", r.stderr)
	}
	want := logOf(t, ref)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for i := 0; kills < 20 && i < 60; i++ {
		// Half the kills early (capture and snapshot application), half
		// spread over delivery.
		var after time.Duration
		if i%2 == 0 {
			after = time.Duration(rng.IntN(250)) * time.Millisecond
		} else {
			after = time.Duration(rng.IntN(1200)) * time.Millisecond
		}
		startAndKill(t, dir, after)
		kills++
		t.Logf("kill %d after %v", kills, after)
	}
	if r := run(t, dir, "run", "--once", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("final run: %s", r.stderr)
	}

	// The state's log equals the uninterrupted one: same ids, same order.
	got := logOf(t, dir)
	if len(got) != len(want) {
		t.Fatalf("log has %d events, the uninterrupted run %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("log event %d differs:\n got %s\nwant %s", i+1, got[i], want[i])
		}
	}

	// The receiver holds every event; duplicates are identical.
	delivered, dups := filetest.Delivered(t, filepath.Join(dir, "demo-out", "events.jsonl"))
	if len(delivered) != len(want) {
		t.Fatalf("receiver has %d distinct sequences, log %d", len(delivered), len(want))
	}
	for i, l := range delivered {
		if !strings.Contains(l, want[i][:36]) {
			t.Fatalf("sequence %d has another event id than the log", i+1)
		}
	}
	t.Logf("%d kills; %d events; %d duplicate deliveries, all identical", kills, len(want), dups)
}

func copyState(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// logOf reads the state's log through the binary's view of it: each
// event's id, sequence, operation, object and content hash (registration
// times differ between runs by nature).
func logOf(t *testing.T, dir string) []string {
	t.Helper()
	r := run(t, dir, "replay", "-c", "demo.yaml", "--receiver", "organisation", "--from", "beginning")
	if r.code != 0 {
		t.Fatalf("replay for comparison: %s", r.stderr)
	}
	// The replay appended the whole log once more; take that tail.
	lines := readLines(t, filepath.Join(dir, "demo-out", "events.jsonl"))
	var out []string
	for _, l := range lines {
		if l.ev.Emission != "replay" {
			continue
		}
		b, _ := json.Marshal(l.ev.After)
		out = append(out, fmt.Sprintf("%s %d %s %s/%s %s %s", l.ev.EventID, l.ev.Sequence, l.ev.Operation, l.ev.Object.Type, l.ev.Object.ID, l.ev.Integrity.ContentHash, b))
	}
	// Drop the replayed tail from the file again, so the delivery check
	// sees only live deliveries.
	var keep []string
	for _, l := range lines {
		if l.ev.Emission != "replay" {
			keep = append(keep, l.raw)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "demo-out", "events.jsonl"), []byte(strings.Join(keep, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
