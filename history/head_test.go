package history

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/mapping"
	"github.com/os2sandbox/connector/state"
)

// An object written before images held their newest version (all its
// versions in the versions bucket) goes on correctly: the next version
// becomes the head, the old ones stay in the bucket, and the history reads
// the same.
func TestHeadlessImageGoesOn(t *testing.T) {
	db, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	maps, _, err := mapping.NewSet([]mapping.Config{{Type: "Person", Source: "src", Record: "people",
		ID: mapping.Field{From: "id"}, Fields: map[string]mapping.Field{"name": {From: "name"}},
		ValidFrom: &mapping.Field{From: "from"}}}, map[string]bool{"src": true})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	e, err := New(db, maps, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: func() time.Time {
		clock = clock.Add(time.Second)
		return clock
	}})
	if err != nil {
		t.Fatal(err)
	}
	sink := e.Sink(SourceInfo{Name: "src", Type: "test", ID: "test://src"})
	apply := func(op capture.Op, name, from string) {
		t.Helper()
		ch := capture.Change{Record: "people", Op: op, Values: map[string]any{"id": "1", "name": name, "from": from},
			ChangeKey: name + from}
		if err := sink.Apply(context.Background(), capture.Batch{Changes: []capture.Change{ch}}); err != nil {
			t.Fatal(err)
		}
	}
	bucketVersions := func() (n int) {
		_ = db.View(func(tx *state.Tx) error {
			return tx.Scan(state.Versions, state.Key("Person", "1", ""), func(_, _ []byte) error { n++; return nil })
		})
		return n
	}
	apply(capture.OpInsert, "Anna", "2024-01-01")
	if n := bucketVersions(); n != 0 {
		t.Fatalf("a new object has %d versions in the bucket, want 0 (the head is in its image)", n)
	}
	// Rewrite it the way earlier releases stored it.
	err = db.Update(func(tx *state.Tx) error {
		img, err := loadImage(tx, "Person", "1")
		if err != nil || img.head == nil {
			t.Fatalf("image %+v, %v: want a head", img, err)
		}
		if err := putVersion(tx, "Person", "1", img.head); err != nil {
			return err
		}
		img.head = nil
		return putImage(tx, "Person", "1", img)
	})
	if err != nil {
		t.Fatal(err)
	}
	apply(capture.OpUpdate, "Anne", "2024-01-01") // same period: korrektion, closes version 1
	apply(capture.OpUpdate, "Anne", "2025-01-01") // new period: aendring, version 2 stays open
	apply(capture.OpDelete, "Anne", "2025-01-01")
	if n := bucketVersions(); n != 3 {
		t.Errorf("%d versions in the bucket, want 3 (the fourth is the head)", n)
	}
	err = db.View(func(tx *state.Tx) error {
		vs, err := Versions(tx, "Person", "1")
		if err != nil {
			return err
		}
		if len(vs) != 4 {
			t.Fatalf("%d versions, want 4", len(vs))
		}
		for i, v := range vs {
			if v.Version != uint64(i+1) {
				t.Errorf("versions out of order: %d at %d", v.Version, i)
			}
		}
		if vs[0].RegTil == nil || !vs[0].RegTil.Equal(vs[1].RegFra.Time) || vs[0].Fields["name"] != "Anna" {
			t.Errorf("version 1 should be closed by the correction, data kept: %+v", vs[0])
		}
		if vs[1].ChangeKind != KindKorrektion || vs[1].Fields["name"] != "Anne" || len(vs[1].Supersedes) != 1 {
			t.Errorf("version 2: %+v", vs[1])
		}
		if vs[2].ChangeKind != KindAendring || vs[2].Operation != OpUpdate || vs[2].Sequence != 3 {
			t.Errorf("version 3: %+v", vs[2])
		}
		if !vs[3].Deleted || vs[3].Fields != nil || vs[3].Operation != OpDelete || vs[3].RegTil != nil {
			t.Errorf("version 4 (the deletion, the head): %+v", vs[3])
		}
		img, err := LoadImage(tx, "Person", "1")
		if err != nil || img.head == nil || img.head.Version != 4 || !img.Deleted {
			t.Errorf("image after: %+v, %v", img, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
