package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/publish/file/filetest"
)

// fileAgentConfig is an agent's configuration for one table of e: source
// "pg" (with extra, indented source settings, if any), one mapping of typ
// with fields (a YAML flow map), and a file receiver writing
// ./events.jsonl.
func fileAgentConfig(e *env, table, typ, fields, extra string) string {
	return fmt.Sprintf(`state: ./state.db
sources:
  - name: pg
    type: postgres
    dsn: %s
    tables: [%s]
%smappings:
  - type: %s
    source: pg
    record: %s
    id: id
    fields: %s
    classification: internal
receivers:
  - name: out
    type: file
    path: ./events.jsonl
    start: beginning
    classification: internal
`, e.dsn("postgres"), table, extra, typ, table, fields)
}

// TestKill9 runs `connector run` (the real engine, state file and file
// receiver) against PostgreSQL while a workload of inserts, updates and
// deletes runs, SIGKILLs it at 20 random moments and restarts it each
// time. At the end the receiver's file holds exactly one event per change
// (no sequence missing, duplicate deliveries only identical), and the
// images equal the table. PG_KILL_CHANGES scales the workload (default
// 20,000 changes; the figure is 200,000).
func TestKill9(t *testing.T) {
	changes := 20_000
	if v, err := strconv.Atoi(os.Getenv("PG_KILL_CHANGES")); err == nil && v > 0 {
		changes = v
	}
	bin := capturetest.Binary(t)
	const seed = 1000
	e := newEnv(t, "CREATE TABLE person (id int PRIMARY KEY, name text, n int)",
		fmt.Sprintf("INSERT INTO person SELECT i, 'p' || i, 0 FROM generate_series(1, %d) i", seed))
	dir := t.TempDir()
	cfg := fileAgentConfig(e, "public.person", "Person", "{name: name, n: n}", "    heartbeat_interval: 1s\n")
	capturetest.WriteConfig(t, dir, cfg)
	runOnce := func() { t.Helper(); capturetest.RunOnce(t, bin, dir) }
	// The initial load first (crashes inside a snapshot are covered by
	// TestSnapshotResumeAfterCrash): then every change maps to one event.
	runOnce()

	// The workload: transactions of inserts, updates (n+1, a mapped change)
	// and deletes; counted by the rows they touched.
	var inserted, updated, deleted int
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx := context.Background()
		c, err := pgx.Connect(ctx, e.dsn("postgres"))
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		rng := rand.New(rand.NewPCG(3, 4))
		next := seed + 1
		live := make([]int, 0, seed)
		for i := 1; i <= seed; i++ {
			live = append(live, i)
		}
		for inserted+updated+deleted < changes {
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			ins := 5 + rng.IntN(20)
			tag, err := tx.Exec(ctx, "INSERT INTO person SELECT i, 'p' || i, 0 FROM generate_series($1::int, $2::int) i", next, next+ins-1)
			if err != nil {
				t.Error(err)
				return
			}
			for i := 0; i < ins; i++ {
				live = append(live, next+i)
			}
			next += ins
			n := int(tag.RowsAffected())
			var upd []int32
			for i := 0; i < 10; i++ {
				upd = append(upd, int32(live[rng.IntN(len(live))]))
			}
			tag, err = tx.Exec(ctx, "UPDATE person SET n = n + 1 WHERE id = ANY($1)", upd)
			if err != nil {
				t.Error(err)
				return
			}
			u := int(tag.RowsAffected())
			var del []int32
			for i := 0; i < 3 && len(live) > 100; i++ {
				j := rng.IntN(len(live))
				del = append(del, int32(live[j]))
				live = append(live[:j], live[j+1:]...)
			}
			tag, err = tx.Exec(ctx, "DELETE FROM person WHERE id = ANY($1)", del)
			if err != nil {
				t.Error(err)
				return
			}
			d := int(tag.RowsAffected())
			if err := tx.Commit(ctx); err != nil {
				t.Error(err)
				return
			}
			inserted, updated, deleted = inserted+n, updated+u, deleted+d
			// Spread the workload over the kills (about 15 s at the default size).
			time.Sleep(time.Duration(15*time.Second) * 35 / time.Duration(changes))
		}
	}()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	kills := 0
	for kills < 20 {
		capturetest.RunAndKill(t, bin, dir, time.Duration(200+rng.IntN(1300))*time.Millisecond)
		kills++
		// The killed walsender is noticed by the server at once; give
		// it a moment so the next start does not retry for the slot.
		e.waitInactive("connector_pg")
	}
	<-done
	if t.Failed() {
		return
	}
	before, _ := os.ReadFile(filepath.Join(dir, "events.jsonl"))
	runOnce()

	// Every change is one event, reached the receiver, in sequence.
	want := seed + inserted + updated + deleted
	lines, dups := filetest.Delivered(t, filepath.Join(dir, "events.jsonl"))
	if len(lines) != want {
		t.Fatalf("%d events, want %d (%d snapshot + %d inserts + %d updates + %d deletes)",
			len(lines), want, seed, inserted, updated, deleted)
	}
	type ev struct {
		EventID   string              `json:"eventId"`
		Sequence  uint64              `json:"sequence"`
		Operation string              `json:"operation"`
		Object    struct{ ID string } `json:"object"`
		After     map[string]any      `json:"after"`
	}
	last := map[string]ev{}
	for _, l := range lines {
		var x ev
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatal(err)
		}
		last[x.Object.ID] = x
	}
	// The last event of each object agrees with the table.
	rows, err := e.conn.Query(context.Background(), "SELECT id, n FROM person")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]int{}
	for rows.Next() {
		var id, n int
		rows.Scan(&id, &n)
		table[strconv.Itoa(id)] = n
	}
	for id, x := range last {
		n, exists := table[id]
		if exists != (x.Operation != "delete") {
			t.Fatalf("object %s: last event %s, row exists %v", id, x.Operation, exists)
		}
		if exists && fmt.Sprint(x.After["n"]) != strconv.Itoa(n) {
			t.Fatalf("object %s: last event n=%v, table n=%d", id, x.After["n"], n)
		}
	}
	if len(table) != len(last)-deleted {
		t.Fatalf("table has %d rows, events describe %d live objects", len(table), len(last)-deleted)
	}
	if n := bytes.Count(before, []byte("\n")); n < want/10 {
		t.Errorf("only %d of %d events were delivered while the agent was being killed", n, want)
	}
	t.Logf("%d kills; %d events (%d inserts, %d updates, %d deletes after a %d-row load); %d duplicate deliveries, all identical",
		kills, want, inserted, updated, deleted, seed, dups)
}
