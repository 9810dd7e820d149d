package history_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/mapping"
	"github.com/os2sandbox/connector/state"
)

// BenchmarkApply drives the engine with the PostgreSQL benchmark's
// workload shape (inserts, a fifth as many updates, a twentieth as many
// deletes; batches of 1,000; durable commits), so the engine's own cost per
// change can be profiled without a server: go test -bench Apply -cpuprofile.
func BenchmarkApply(b *testing.B) {
	const n, batch = 50_000, 1000
	c := mapping.Config{
		Type: "Worker", Source: "pg", Record: "public.w",
		ID: mapping.Field{From: "id"},
		Fields: map[string]mapping.Field{
			"name": {From: "name"}, "email": {From: "email"}, "dept": {From: "dept"},
			"salary": {From: "salary"}, "updated": {From: "updated"},
		},
	}
	maps, _, err := mapping.NewSet([]mapping.Config{c}, map[string]bool{"pg": true})
	if err != nil {
		b.Fatal(err)
	}
	row := func(i, salary int) map[string]any {
		return map[string]any{
			"id": json.Number(strconv.Itoa(i)), "name": "name " + strconv.Itoa(i),
			"email": "user" + strconv.Itoa(i) + "@example.org", "dept": json.Number(strconv.Itoa(i % 50)),
			"salary": json.Number(strconv.Itoa(salary) + ".25"), "updated": "2026-11-22T10:00:00.000000Z",
		}
	}
	for range b.N {
		db, err := state.Open(filepath.Join(b.TempDir(), "state.db"), state.Options{NoSync: os.Getenv("BENCH_NOSYNC") != ""})
		if err != nil {
			b.Fatal(err)
		}
		e, err := history.New(db, maps, history.Options{Log: quiet})
		if err != nil {
			b.Fatal(err)
		}
		sink := e.Sink(history.SourceInfo{Name: "pg", Type: "postgres", ID: "postgres://bench", KeepRows: true})
		var changes []capture.Change
		lsn := 0
		flush := func() {
			if len(changes) == 0 {
				return
			}
			lsn++
			err := sink.Apply(context.Background(), capture.Batch{Changes: changes, TransactionID: strconv.Itoa(lsn), Checkpoint: []byte(strconv.Itoa(lsn))})
			if err != nil {
				b.Fatal(err)
			}
			changes = nil
		}
		add := func(op capture.Op, values map[string]any) {
			changes = append(changes, capture.Change{Record: "public.w", Op: op, Values: values,
				ChangedAt: time.Unix(1_790_000_000+int64(lsn), 0), ChangeKey: fmt.Sprintf("%d:%d", lsn, len(changes))})
			if len(changes) == batch {
				flush()
			}
		}
		start := time.Now()
		for i := range n {
			add(capture.OpInsert, row(i, i))
		}
		for i := range n / 5 {
			add(capture.OpUpdate, row(i, i+1))
		}
		for i := n - n/20; i < n; i++ {
			add(capture.OpDelete, map[string]any{"id": json.Number(strconv.Itoa(i))})
		}
		flush()
		took := time.Since(start)
		total := n + n/5 + n/20
		b.ReportMetric(float64(total)/took.Seconds(), "changes/s")
		b.ReportMetric(float64(took.Microseconds())/float64(total), "µs/change")
		db.Close()
	}
}
