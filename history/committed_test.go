package history_test

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/state"
)

// The events the engine hands to Options.Committed are the committed
// ones exactly: the same JSON as the log holds, and the same event as
// decoding that JSON gives. Receivers get them instead of the log's, so
// any difference would make a live delivery differ from a replay.
func TestCommittedEventsAreTheLoggedOnes(t *testing.T) {
	f := newFixture(t, personMapping(t, true), history.SourceInfo{})
	for _, b := range snapshot("s1", true, people(5, nil)...) {
		f.apply(b)
	}
	f.apply(capture.Batch{TransactionID: "tx1", Changes: []capture.Change{
		person(capture.OpInsert, "10", "Anna", "from", "2024-01-01"),
		person(capture.OpUpdate, "10", "Anne", "from", "2024-01-01"), // korrektion: supersedes
		person(capture.OpUpdate, "10", "Anne", "from", "2025-01-01", "unit", "u2"),
		person(capture.OpUpdate, "10", "Anne", "status", "inactive"), // moved out of scope
		person(capture.OpUpdate, "10", "Anne", "from", "2025-02-01"), // undelete
		{Record: "people", Op: capture.OpDelete, Values: map[string]any{"id": "1"}},
		{Record: "people", Op: capture.OpTruncate},
	}})
	for _, b := range snapshot("s2", false, people(3, map[int]string{2: "Renamed"})...) {
		f.apply(b)
	}
	logged := map[uint64][]byte{}
	err := f.db.View(func(tx *state.Tx) error {
		return tx.Scan(state.Log, nil, func(k, v []byte) error {
			logged[state.ParseU64(k)] = bytes.Clone(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.logged) != len(logged) || len(logged) < 15 {
		t.Fatalf("%d events handed over, %d logged; want all, and at least 15", len(f.logged), len(logged))
	}
	for i, got := range f.logged {
		raw, ok := logged[got.Sequence]
		if !ok || got.Sequence != uint64(i+1) {
			t.Fatalf("handed over #%d has sequence %d, logged: %v", i, got.Sequence, ok)
		}
		if !bytes.Equal(got.Raw, raw) {
			t.Fatalf("event %d: handed-over JSON differs from the log's:\n%s\n%s", got.Sequence, got.Raw, raw)
		}
		var want history.Event
		if err := history.DecodeEvent(raw, &want); err != nil {
			t.Fatal(err)
		}
		want.Raw = raw
		if err := got.Images(); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("event %d: handed over\n%#v\ndecoded from the log\n%#v", got.Sequence, got, want)
		}
	}
	if last := f.lasts[len(f.lasts)-1]; last != uint64(len(logged)) {
		t.Errorf("last sequence given %d, the log ends at %d", last, len(logged))
	}
}
