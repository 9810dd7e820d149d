// Package filetest checks what the file receiver wrote, for the tests that
// SIGKILL the agent (capture adapters' and cmd/connector's): it is a
// normal package so that they can share it, but only tests (files ending
// in _test.go) may import it.
package filetest

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"
)

// Delivered reads a file receiver's JSON Lines file and checks it as a
// crash test wants it: a sequence delivered more than once has the same
// bytes each time, the distinct sequences are 1, 2, … without a gap, and
// distinct sequences have distinct event ids. It returns one line per
// sequence, in sequence order, and the number of duplicate deliveries.
func Delivered(t testing.TB, path string) (lines []string, dups int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bySeq := map[uint64]string{}
	ids := map[string]uint64{}
	var top uint64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		var x struct {
			EventID  string `json:"eventId"`
			Sequence uint64 `json:"sequence"`
		}
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			t.Fatalf("%s: line %d is not JSON: %v", path, n, err)
		}
		if x.Sequence == 0 {
			t.Fatalf("%s: line %d has no sequence", path, n)
		}
		if prev, ok := bySeq[x.Sequence]; ok {
			dups++
			if prev != sc.Text() {
				t.Fatalf("sequence %d delivered twice with different content:\n%s\n%s", x.Sequence, prev, sc.Text())
			}
			continue
		}
		if seq, ok := ids[x.EventID]; ok {
			t.Fatalf("sequences %d and %d have the same event id %s", seq, x.Sequence, x.EventID)
		}
		bySeq[x.Sequence], ids[x.EventID] = sc.Text(), x.Sequence
		top = max(top, x.Sequence)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	lines = make([]string, len(bySeq))
	for seq := uint64(1); seq <= top; seq++ {
		l, ok := bySeq[seq]
		if !ok {
			t.Fatalf("sequence %d missing (the receiver has %d sequences up to %d)", seq, len(bySeq), top)
		}
		lines[seq-1] = l
	}
	return lines, dups
}
