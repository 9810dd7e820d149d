package history

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/mapping"
	"github.com/os2sandbox/connector/state"
)

// A batch large enough to be prepared on another goroutine gives the same
// events as the same changes applied one batch each (never prepared):
// creates, updates, unchanged columns filled from the stored row, rows
// leaving the mapping's where, deletes and quarantined rows.
func TestPreparedBatchMatchesUnprepared(t *testing.T) {
	maps, _, err := mapping.NewSet([]mapping.Config{{Type: "Person", Source: "src", Record: "people",
		ID: mapping.Field{From: "id"}, Fields: map[string]mapping.Field{"name": {From: "name"}, "bio": {From: "bio"}},
		Where: `status != "gone"`}}, map[string]bool{"src": true})
	if err != nil {
		t.Fatal(err)
	}
	var changes []capture.Change
	add := func(op capture.Op, values map[string]any, unchanged ...string) {
		changes = append(changes, capture.Change{Record: "people", Op: op, Values: values, Unchanged: unchanged,
			ChangeKey: fmt.Sprint(len(changes)), Position: fmt.Sprint(len(changes))})
	}
	for i := range 60 {
		add(capture.OpInsert, map[string]any{"id": json.Number(fmt.Sprint(i)), "name": fmt.Sprint("n", i), "bio": "long text", "status": "ok"})
	}
	for i := range 20 {
		add(capture.OpUpdate, map[string]any{"id": json.Number(fmt.Sprint(i)), "name": fmt.Sprint("m", i), "status": "ok"}, "bio")
	}
	for i := 20; i < 30; i++ {
		add(capture.OpUpdate, map[string]any{"id": json.Number(fmt.Sprint(i)), "name": "x", "bio": "b", "status": "gone"})
	}
	for i := 30; i < 40; i++ {
		add(capture.OpDelete, map[string]any{"id": json.Number(fmt.Sprint(i))})
	}
	add(capture.OpInsert, map[string]any{"name": "no id", "status": "ok"})
	add(capture.OpUpdate, map[string]any{"id": json.Number("999"), "name": "never seen", "status": "ok"}, "bio")

	run := func(batch int) []Event {
		db, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		// A clock that stands still: batches read it too, so a ticking one
		// would differ between the runs (registration time still
		// increases per object).
		e, err := New(db, maps, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: func() time.Time {
			return time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
		}})
		if err != nil {
			t.Fatal(err)
		}
		sink := e.Sink(SourceInfo{Name: "src", Type: "test", ID: "test://src", KeepRows: true})
		for i := 0; i < len(changes); i += batch {
			b := capture.Batch{Changes: changes[i:min(i+batch, len(changes))], TransactionID: "tx"}
			if err := sink.Apply(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
		var out []Event
		err = db.View(func(tx *state.Tx) error {
			return tx.Scan(state.Log, nil, func(_, v []byte) error {
				var ev Event
				if err := DecodeEvent(v, &ev); err != nil {
					return err
				}
				ev.EventID, ev.Raw, ev.Supersedes = "", nil, nil
				out = append(out, ev)
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	prepared, one := run(len(changes)), run(1)
	if len(prepared) != len(one) || len(one) < 90 {
		t.Fatalf("%d events prepared, %d one by one", len(prepared), len(one))
	}
	for i := range one {
		one[i].Trace, prepared[i].Trace = Trace{}, Trace{}
		if !reflect.DeepEqual(prepared[i], one[i]) {
			t.Fatalf("event %d differs:\nprepared %+v\none      %+v", i, prepared[i], one[i])
		}
	}
}
