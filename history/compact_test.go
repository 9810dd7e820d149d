package history_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/state"
)

// compactFixture logs, one batch each: 1–4 create p1–p4; 5 update p1;
// 6 update p2; 7 delete p3; 8 update p1; 9 delete p4 (the log's last).
func compactFixture(t *testing.T) *fixture {
	f := newFixture(t, personMapping(t, false), history.SourceInfo{})
	for _, b := range [][]capture.Change{
		{person(capture.OpInsert, "p1", "A"), person(capture.OpInsert, "p2", "B"), person(capture.OpInsert, "p3", "C"), person(capture.OpInsert, "p4", "D")},
		{person(capture.OpUpdate, "p1", "A2")},
		{person(capture.OpUpdate, "p2", "B2")},
		{person(capture.OpDelete, "p3", "C")},
		{person(capture.OpUpdate, "p1", "A3")},
		{person(capture.OpDelete, "p4", "D")},
	} {
		f.apply(capture.Batch{Changes: b})
	}
	if got := sequences(f); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("fixture log %v", got)
	}
	return f
}

func sequences(f *fixture) []uint64 {
	var seqs []uint64
	for _, ev := range f.events() {
		seqs = append(seqs, ev.Sequence)
	}
	return seqs
}

func through(n uint64) func(*state.Tx) (uint64, error) {
	return func(*state.Tx) (uint64, error) { return n, nil }
}

func TestCompactLog(t *testing.T) {
	future := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		c     history.Compaction
		setup func(f *fixture) history.Compaction
		keep  []uint64
	}{
		{
			// Superseded events and those of deleted objects go; the
			// newest of each live object stays, and so does the last.
			name: "everything confirmed and old",
			c:    history.Compaction{Through: through(9), Before: future},
			keep: []uint64{6, 8, 9},
		},
		{
			name: "in chunks of one",
			c:    history.Compaction{Through: through(9), Before: future, Chunk: 1},
			keep: []uint64{6, 8, 9},
		},
		{
			name: "a receiver has confirmed only up to 5",
			c:    history.Compaction{Through: through(5), Before: future},
			keep: []uint64{6, 7, 8, 9},
		},
		{
			name: "nothing confirmed",
			c:    history.Compaction{Through: through(0), Before: future},
			keep: []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9},
		},
		{
			name: "only the first batch is older than the retention",
			setup: func(f *fixture) history.Compaction {
				return history.Compaction{Through: through(9), Before: f.events()[4].ObservedAt.Time}
			},
			keep: []uint64{5, 6, 7, 8, 9},
		},
		{
			name: "a dead letter stays",
			setup: func(f *fixture) history.Compaction {
				err := f.db.Update(func(tx *state.Tx) error {
					return tx.Put(state.DeadLetters, append(state.Key("hr", ""), state.U64(2)...), []byte(`{}`))
				})
				if err != nil {
					t.Fatal(err)
				}
				return history.Compaction{Through: through(9), Before: future}
			},
			keep: []uint64{2, 6, 8, 9},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := compactFixture(t)
			c := tt.c
			if tt.setup != nil {
				c = tt.setup(f)
			}
			st, err := history.CompactLog(context.Background(), f.db, c)
			if err != nil {
				t.Fatal(err)
			}
			if got := sequences(f); !slices.Equal(got, tt.keep) {
				t.Errorf("log after compaction %v, want %v", got, tt.keep)
			}
			if st.Removed != 9-len(tt.keep) || st.First != tt.keep[0] || compacted(t, f) != uint64(st.Removed) {
				t.Errorf("stats %+v, want %d removed, first %d", st, 9-len(tt.keep), tt.keep[0])
			}
		})
	}
}

// TestCompactLogKeepsNumbering: the engine numbers on after a compacted
// log, and the next pass removes what the new events superseded.
func TestCompactLogKeepsNumbering(t *testing.T) {
	f := compactFixture(t)
	all := history.Compaction{Through: func(tx *state.Tx) (uint64, error) { return history.LastSequence(tx), nil }, Before: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := history.CompactLog(context.Background(), f.db, all); err != nil {
		t.Fatal(err)
	}
	f.apply(capture.Batch{Changes: []capture.Change{person(capture.OpUpdate, "p2", "B3")}})
	if _, err := history.CompactLog(context.Background(), f.db, all); err != nil {
		t.Fatal(err)
	}
	if got, want := sequences(f), []uint64{8, 10}; !slices.Equal(got, want) {
		t.Fatalf("log %v, want %v", got, want)
	}
	// The versions, the bitemporal history, are all still there.
	err := f.db.View(func(tx *state.Tx) error {
		vs, err := history.Versions(tx, "Person", "p1")
		if err != nil {
			return err
		}
		if len(vs) != 3 {
			t.Errorf("p1 has %d versions after compaction, want 3", len(vs))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func compacted(t *testing.T, f *fixture) (n uint64) {
	t.Helper()
	_ = f.db.View(func(tx *state.Tx) error { n = history.Compacted(tx); return nil })
	return n
}
