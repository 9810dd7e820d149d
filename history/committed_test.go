package history_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"

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

// Batches large enough to be prepared on another goroutine log the same
// events, in the same order, as small ones; a batch that fails midway
// commits nothing and leaves no goroutine behind.
func TestLargeBatches(t *testing.T) {
	big := func(from, n int, name string) []capture.Change {
		var out []capture.Change
		for i := from; i < from+n; i++ {
			out = append(out, person(capture.OpInsert, fmt.Sprint(i), name+fmt.Sprint(i)))
		}
		return out
	}
	f := newFixture(t, personMapping(t, false), history.SourceInfo{})
	f.apply(capture.Batch{TransactionID: "a", Changes: big(0, 300, "A")})
	f.apply(capture.Batch{TransactionID: "b", Changes: append(big(0, 150, "B"), big(300, 150, "C")...)})
	evs := f.events()
	if len(evs) != 600 || len(f.logged) != 600 {
		t.Fatalf("%d events logged, %d handed over; want 600", len(evs), len(f.logged))
	}
	for i, ev := range evs {
		want := history.OpCreate
		if i >= 300 && i < 450 {
			want = history.OpUpdate
		}
		if ev.Sequence != uint64(i+1) || ev.Operation != want || f.logged[i].Sequence != ev.Sequence {
			t.Fatalf("event #%d: sequence %d, %s; want %d, %s", i, ev.Sequence, ev.Operation, i+1, want)
		}
		if want == history.OpUpdate && !slices.Equal(ev.Changed, []string{"name"}) {
			t.Fatalf("event %d changed %v, want [name]", ev.Sequence, ev.Changed)
		}
	}

	// A corrupt image halfway through a batch fails it.
	err := f.db.Update(func(tx *state.Tx) error { return tx.Put(state.Images, state.Key("Person", "100"), []byte{0xff}) })
	if err != nil {
		t.Fatal(err)
	}
	goroutines := runtime.NumGoroutine()
	err = f.sink.Apply(context.Background(), capture.Batch{TransactionID: "c", Changes: big(0, 300, "D")})
	if !errors.Is(err, state.ErrCorrupt) {
		t.Fatalf("Apply over a corrupt image: %v, want ErrCorrupt", err)
	}
	if n := len(f.events()); n != 600 {
		t.Errorf("the failed batch left %d events, want none (600 in all)", n-600)
	}
	for range 100 {
		if runtime.NumGoroutine() <= goroutines {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("%d goroutines after the failed batch, %d before", n, goroutines)
	}
}

// A reconcile whose chunks of 2,000 objects hold a few changes hands over
// those few events without room for 2,000: the dispatcher caches them,
// and each cached event keeps its whole array alive (a 1,000,000-object
// drift once held 750 MB that way).
func TestHandedOverEventsAreTight(t *testing.T) {
	db, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var lens, caps []int
	e, err := history.New(db, personMapping(t, false), history.Options{Log: quiet, Committed: func(_ uint64, logged []history.Event) {
		lens, caps = append(lens, len(logged)), append(caps, cap(logged))
	}})
	if err != nil {
		t.Fatal(err)
	}
	sink := e.Sink(history.SourceInfo{Name: "src", Type: "test", ID: "test://src"})
	apply := func(bs []capture.Batch) {
		for _, b := range bs {
			if err := sink.Apply(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(snapshot("s1", true, people(3000, nil)...))
	lens, caps = nil, nil
	apply(snapshot("s2", false, people(3000, map[int]string{5: "A", 2500: "B"})...))
	if len(lens) == 0 {
		t.Fatal("the reconcile handed over nothing")
	}
	for i := range lens {
		if caps[i] > 2*lens[i] {
			t.Errorf("a commit of %d events handed them over in an array for %d", lens[i], caps[i])
		}
	}
}

// KeepLogged below zero hands no events over; Committed still says where
// the log ends.
func TestKeepLoggedNone(t *testing.T) {
	db, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var last uint64
	var handed int
	e, err := history.New(db, personMapping(t, false), history.Options{Log: quiet, KeepLogged: -1,
		Committed: func(l uint64, logged []history.Event) { last, handed = l, handed+len(logged) }})
	if err != nil {
		t.Fatal(err)
	}
	err = e.Sink(history.SourceInfo{Name: "src", Type: "test", ID: "test://src"}).Apply(context.Background(),
		capture.Batch{Changes: []capture.Change{person(capture.OpInsert, "1", "A"), person(capture.OpInsert, "2", "B")}})
	if err != nil {
		t.Fatal(err)
	}
	if last != 2 || handed != 0 {
		t.Errorf("Committed got last %d and %d events, want 2 and none", last, handed)
	}
}
