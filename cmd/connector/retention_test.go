package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestLogRetention runs the demo with retention.log so short that the
// final pass of run --once compacts everything it may. A receiver added
// afterwards with start: beginning must then arrive at the same current
// state as the receiver that saw every event, from fewer events, each
// byte-identical to the original; and --current-state must still build
// complete backfill events.
func TestLogRetention(t *testing.T) {
	dir := demoDir(t, func(s string) string { return "retention: {log: 1ns}\n" + s })
	if r := run(t, dir, "run", "--once", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("run: %s", r.stderr)
	}
	orig := readLines(t, filepath.Join(dir, "demo-out", "events.jsonl"))
	rep := statusOf(t, dir)
	if rep.LogCompacted == 0 || rep.LogLength != orig[len(orig)-1].ev.Sequence {
		t.Fatalf("status after compaction: log of %d, %d compacted; the receiver's last event is %d", rep.LogLength, rep.LogCompacted, orig[len(orig)-1].ev.Sequence)
	}
	if r := run(t, dir, "status", "-c", "demo.yaml"); !strings.Contains(r.stdout, "compacted away by retention.log") {
		t.Errorf("status does not say the log is compacted:\n%s", r.stdout)
	}

	b, _ := os.ReadFile(filepath.Join(dir, "demo.yaml"))
	writeFile(t, filepath.Join(dir, "demo2.yaml"), string(b)+`  - name: late
    type: file
    path: ./demo-out/late.jsonl
    start: beginning
    classification: internal
`)
	if r := run(t, dir, "run", "--once", "-c", "demo2.yaml"); r.code != 0 {
		t.Fatalf("run with the new receiver: %s", r.stderr)
	}
	late := readLines(t, filepath.Join(dir, "demo-out", "late.jsonl"))
	if len(late) == 0 || len(late) >= len(orig) {
		t.Fatalf("the new receiver got %d events of the compacted log; the first got %d", len(late), len(orig))
	}
	bySeq := map[uint64]string{}
	for _, l := range orig {
		bySeq[l.ev.Sequence] = l.raw
	}
	for _, l := range late {
		if bySeq[l.ev.Sequence] != l.raw {
			t.Fatalf("event %d differs from the original:\n%s\n%s", l.ev.Sequence, l.raw, bySeq[l.ev.Sequence])
		}
	}
	want, got := fold(orig), fold(late)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the compacted log folds to %d objects, the full one to %d, or their images differ", len(got), len(want))
	}

	r := run(t, dir, "replay", "-c", "demo2.yaml", "--receiver", "late", "--current-state")
	if r.code != 0 {
		t.Fatalf("replay --current-state: %d %s", r.code, r.stderr)
	}
	all := readLines(t, filepath.Join(dir, "demo-out", "late.jsonl"))
	backfill := all[len(late):]
	if len(backfill) != len(want) {
		t.Fatalf("backfill sent %d events for %d live objects", len(backfill), len(want))
	}
	for _, l := range backfill {
		if !strings.Contains(l.raw, `"name":"demokommune"`) || !strings.Contains(l.raw, `"transactionId":"`) {
			t.Fatalf("backfill event lacks what the compacted log should still provide:\n%s", l.raw)
		}
	}
	t.Logf("%d events delivered; the compacted log holds %d (%d compacted) for %d live objects",
		len(orig), len(late), rep.LogCompacted, len(want))
}

// fold replays events into the live objects' current images.
func fold(lines []line) map[string]map[string]any {
	live := map[string]map[string]any{}
	for _, l := range lines {
		key := l.ev.Object.Type + "/" + l.ev.Object.ID
		if l.ev.Operation == "delete" {
			delete(live, key)
			continue
		}
		live[key] = l.ev.After
	}
	return live
}
