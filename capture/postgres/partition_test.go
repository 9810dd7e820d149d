package postgres

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/capturetest"
)

const partitionedSetup = `CREATE TABLE m (id int, region text, name text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`

// A partitioned table is captured through its root: the snapshot reads
// every partition, changes in any partition (also one created later)
// arrive as changes to the root, and an UPDATE that moves a row to another
// partition (logged as a delete and an insert) arrives as one update.
func TestPartitionedTable(t *testing.T) {
	e := newEnv(t, partitionedSetup,
		"CREATE TABLE m_north PARTITION OF m FOR VALUES IN ('north')",
		"CREATE TABLE m_south PARTITION OF m FOR VALUES IN ('south')",
		"INSERT INTO m SELECT i, CASE WHEN i % 2 = 0 THEN 'north' ELSE 'south' END, 'n' || i FROM generate_series(1, 10) i")
	// Small chunks and batches: the snapshot reads the root in key ranges,
	// and a moved row's delete and insert straddle batch cuts.
	src, log := e.source("tables: [public.m]", "snapshot_chunk_size: 3", "batch_size: 3")
	sink := capturetest.NewSink(map[string][]string{"public.m": {"id", "region"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "the snapshot", func() bool { return len(sink.Rows("public.m")) == 10 })
	capturetest.SameRows(t, "snapshot", sink.Rows("public.m"), e.tableRows(src, sink, "public.m"))
	if !log.Has("created publication") {
		t.Fatal("no publication created")
	}
	var viaRoot bool
	if err := e.conn.QueryRow(context.Background(), "SELECT pubviaroot FROM pg_publication WHERE pubname = 'connector_testpartitionedtable'").Scan(&viaRoot); err != nil || !viaRoot {
		t.Fatalf("publish_via_partition_root = %v, %v", viaRoot, err)
	}

	type want struct {
		op     capture.Op
		values map[string]any
		oldKey map[string]any
	}
	row := func(id, region, name string) map[string]any {
		return map[string]any{"id": n(id), "region": region, "name": name}
	}
	key := func(id, region string) map[string]any { return map[string]any{"id": n(id), "region": region} }
	steps := []struct {
		name string
		sql  string
		want []want
	}{
		{"insert into each partition", "INSERT INTO m VALUES (11, 'north', 'a'), (12, 'south', 'b')",
			[]want{{capture.OpInsert, row("11", "north", "a"), nil}, {capture.OpInsert, row("12", "south", "b"), nil}}},
		{"move one row", "UPDATE m SET region = 'north', name = 'moved' WHERE id = 1",
			[]want{{capture.OpUpdate, row("1", "north", "moved"), key("1", "south")}}},
		{"move three rows in one statement", "UPDATE m SET region = 'south' WHERE id IN (2, 4, 6)",
			[]want{{capture.OpUpdate, row("2", "south", "n2"), key("2", "north")},
				{capture.OpUpdate, row("4", "south", "n4"), key("4", "north")},
				{capture.OpUpdate, row("6", "south", "n6"), key("6", "north")}}},
		{"update within a partition", "UPDATE m SET name = 'x' WHERE id = 3",
			[]want{{capture.OpUpdate, row("3", "south", "x"), nil}}},
		{"delete", "DELETE FROM m WHERE id = 5",
			[]want{{capture.OpDelete, key("5", "south"), nil}}},
		{"delete and insert of other rows", "BEGIN; DELETE FROM m WHERE id = 7; INSERT INTO m VALUES (20, 'north', 'new'); COMMIT",
			[]want{{capture.OpDelete, key("7", "south"), nil}, {capture.OpInsert, row("20", "north", "new"), nil}}},
		{"a partition created later", "CREATE TABLE m_west PARTITION OF m FOR VALUES IN ('west'); INSERT INTO m VALUES (30, 'west', 'w')",
			[]want{{capture.OpInsert, row("30", "west", "w"), nil}}},
		{"move into it, then delete last", "BEGIN; UPDATE m SET region = 'west' WHERE id = 8; DELETE FROM m WHERE id = 9; COMMIT",
			[]want{{capture.OpUpdate, row("8", "west", "n8"), key("8", "north")}, {capture.OpDelete, key("9", "south"), nil}}},
	}
	seen := 0
	for _, step := range steps {
		e.exec(step.sql)
		capturetest.WaitFor(t, 10*time.Second, step.name, func() bool { return len(sink.Streamed()) >= seen+len(step.want) })
		got := sink.Streamed()[seen:]
		if len(got) != len(step.want) {
			t.Fatalf("%s: %d changes, want %d: %+v", step.name, len(got), len(step.want), got)
		}
		txid := got[0].TransactionID
		for i, w := range step.want {
			c := got[i]
			if c.Record != "public.m" || c.Op != w.op || !reflect.DeepEqual(c.Values, w.values) || !reflect.DeepEqual(c.OldKey, w.oldKey) {
				t.Errorf("%s: change %d = %s %s %v old %v, want %s %v old %v", step.name, i, c.Record, c.Op, c.Values, c.OldKey, w.op, w.values, w.oldKey)
			}
			if c.TransactionID != txid {
				t.Errorf("%s: transaction ids %q and %q", step.name, txid, c.TransactionID)
			}
		}
		seen += len(step.want)
	}
	capturetest.SameRows(t, "after streaming", sink.Rows("public.m"), e.tableRows(src, sink, "public.m"))

	// Not in the stream (pgoutput publishes neither): a TRUNCATE of one
	// partition, and the rows of a table attached as a partition. A
	// reconcile snapshot picks both up.
	e.exec("TRUNCATE m_south",
		"CREATE TABLE m_east (id int, region text, name text, PRIMARY KEY (id, region))",
		"INSERT INTO m_east VALUES (40, 'east', 'e')",
		"ALTER TABLE m ATTACH PARTITION m_east FOR VALUES IN ('east')",
		"INSERT INTO m VALUES (41, 'north', 'marker')")
	capturetest.WaitFor(t, 10*time.Second, "the marker insert", func() bool { return len(sink.Streamed()) == seen+1 })
	if _, ok := sink.Rows("public.m")["40|east"]; ok {
		t.Fatal("the attached table's row arrived through the stream; update the documentation")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := src.Snapshot(ctx, sink); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	capturetest.SameRows(t, "after the reconcile", sink.Rows("public.m"), e.tableRows(src, sink, "public.m"))
	sink.NoProblems(t)
}

// A root without a primary key needs a usable replica identity on every
// partition; an existing publication must publish through the root.
func TestPartitionedChecks(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t,
		"CREATE TABLE k (id int NOT NULL, region text, name text) PARTITION BY LIST (region)",
		"CREATE TABLE k_north PARTITION OF k FOR VALUES IN ('north')",
		"CREATE TABLE k_south PARTITION OF k FOR VALUES IN ('south')",
		"ALTER TABLE k_north REPLICA IDENTITY FULL",
		partitionedSetup,
		"CREATE TABLE m_north PARTITION OF m FOR VALUES IN ('north')",
		"CREATE PUBLICATION plain FOR TABLE m",
		"CREATE PUBLICATION plain2 FOR TABLE m")
	tests := []struct {
		name string
		yaml []string
		want []string
	}{
		{"partition without identity", []string{"tables: [public.k]", "keys: {public.k: [id]}"},
			[]string{`partitions public.k_south of public.k have a replica identity that does not include key column "id"`,
				"run ALTER TABLE public.k_south REPLICA IDENTITY FULL"}},
		{"no key at all", []string{"tables: [public.k]"},
			[]string{"table public.k has no primary key"}},
		{"publication not through the root", []string{"tables: [public.m]", "publication: plain", "create_publication: false"},
			[]string{`publication "plain" does not publish partitioned tables through their root`,
				"run ALTER PUBLICATION plain SET (publish_via_partition_root = true)"}},
		{"root and partition both listed", []string{"tables: [public.m, public.m_north]"},
			[]string{"public.m_north is a partition of public.m, which is captured too", "remove public.m_north from tables"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, _ := e.source(tt.yaml...)
			err := src.Check(ctx)
			if err == nil {
				t.Fatal("Check passed")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}

	// Fixed: every partition has an identity covering the key.
	e.exec("ALTER TABLE k_south REPLICA IDENTITY FULL")
	src, _ := e.source("tables: [public.k]", "keys: {public.k: [id]}")
	if err := src.Check(ctx); err != nil {
		t.Fatalf("Check after REPLICA IDENTITY FULL: %v", err)
	}
	// With create_publication (the default), the agent sets the option on
	// an existing publication itself.
	src, log := e.source("tables: [public.m]", "publication: plain2")
	sink := capturetest.NewSink(map[string][]string{"public.m": {"id", "region"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "the snapshot", func() bool { return sink.Checkpoint() != nil })
	if !log.Has("the publication now publishes partitioned tables through their root") {
		t.Fatal("publication not changed")
	}
	e.exec("INSERT INTO m VALUES (1, 'north', 'a')")
	capturetest.WaitFor(t, 10*time.Second, "the insert", func() bool { return len(sink.Streamed()) == 1 })
	if c := sink.Streamed()[0]; c.Record != "public.m" {
		t.Fatalf("change of %s, want public.m", c.Record)
	}
}

// Through the real agent (engine, state file, file receiver): a row moved
// to another partition is an update of the same object, its old partition
// key in before and the new one in after.
func TestPartitionMoveThroughAgent(t *testing.T) {
	bin := capturetest.Binary(t)
	e := newEnv(t, partitionedSetup,
		"CREATE TABLE m_north PARTITION OF m FOR VALUES IN ('north')",
		"CREATE TABLE m_south PARTITION OF m FOR VALUES IN ('south')",
		"INSERT INTO m VALUES (1, 'south', 'a'), (2, 'north', 'b')")
	dir := t.TempDir()
	cfg := fileAgentConfig(e, "public.m", "Thing", "{name: name, region: region}", "")
	capturetest.WriteConfig(t, dir, cfg)
	runOnce := func() { t.Helper(); capturetest.RunOnce(t, bin, dir) }
	runOnce()
	e.exec("UPDATE m SET region = 'north' WHERE id = 1", "DELETE FROM m WHERE id = 2")
	runOnce()
	b, err := os.ReadFile(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	type ev struct {
		Operation string              `json:"operation"`
		Object    struct{ ID string } `json:"object"`
		Before    map[string]any      `json:"before"`
		After     map[string]any      `json:"after"`
	}
	var got []string
	var move ev
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var x ev
		if err := json.Unmarshal([]byte(line), &x); err != nil {
			t.Fatal(err)
		}
		got = append(got, x.Operation+" "+x.Object.ID)
		if x.Operation == "update" {
			move = x
		}
	}
	if want := []string{"snapshot 1", "snapshot 2", "update 1", "delete 2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if move.Before["region"] != "south" || move.After["region"] != "north" || move.After["name"] != "a" {
		t.Fatalf("move: before %v, after %v", move.Before, move.After)
	}
}

// A crash between the batches of a transaction of deletes and partition
// moves resumes without losing the delete held back at a batch cut, and
// without repeating a change.
func TestPartitionMoveResume(t *testing.T) {
	e := newEnv(t, partitionedSetup,
		"CREATE TABLE m_north PARTITION OF m FOR VALUES IN ('north')",
		"CREATE TABLE m_south PARTITION OF m FOR VALUES IN ('south')",
		"INSERT INTO m SELECT i, CASE WHEN i % 2 = 0 THEN 'north' ELSE 'south' END, 'n' || i FROM generate_series(1, 10) i")
	src, _ := e.source("tables: [public.m]", "batch_size: 2")
	sink := capturetest.NewSink(map[string][]string{"public.m": {"id", "region"}})
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "the snapshot", func() bool { return len(sink.Rows("public.m")) == 10 })
	r.Stop()
	sink.CrashOnStreamBatch(3)
	r = capturetest.Start(t, src, sink, sink.Checkpoint())
	e.exec("BEGIN; DELETE FROM m WHERE region = 'south'; UPDATE m SET region = 'south' WHERE region = 'north'; COMMIT")
	if err, ok := r.Exited(20 * time.Second); !ok || err == nil || !strings.Contains(err.Error(), "simulated crash") {
		t.Fatalf("Run = %v (exited %v), want the sink's error", err, ok)
	}
	sink.SetOnApply(nil)
	src2, _ := e.source("tables: [public.m]", "batch_size: 2")
	capturetest.Start(t, src2, sink, sink.Checkpoint())
	capturetest.WaitFor(t, 20*time.Second, "10 changes", func() bool { return len(sink.Streamed()) >= 10 })
	time.Sleep(200 * time.Millisecond)
	var ops []string
	for _, c := range sink.Streamed() {
		ops = append(ops, c.Op.String())
	}
	want := "delete delete delete delete delete update update update update update"
	if strings.Join(ops, " ") != want {
		t.Fatalf("changes %v, want %s", ops, want)
	}
	capturetest.SameRows(t, "after resume", sink.Rows("public.m"), e.tableRows(src2, sink, "public.m"))
	sink.NoProblems(t)
}
