package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/capturetest"
)

func n(s string) json.Number { return json.Number(s) }

// The initial snapshot arrives framed and complete, then inserts, updates
// (also of the key) and deletes stream under REPLICA IDENTITY DEFAULT and
// FULL, one transaction sharing one id.
func TestSnapshotThenStream(t *testing.T) {
	e := newEnv(t,
		"CREATE TABLE person (id int PRIMARY KEY, name text, age int)",
		"CREATE TABLE unit (id int PRIMARY KEY, name text, parent int)",
		"ALTER TABLE unit REPLICA IDENTITY FULL",
		"INSERT INTO person VALUES (1, 'Anne', 40), (2, 'Bo', 31), (3, 'Cai', 22)",
		"INSERT INTO unit VALUES (1, 'Top', NULL), (2, 'HR', 1), (3, 'IT', 1)")
	src, _ := e.source("tables: [public.person, public.unit]", "snapshot_chunk_size: 2")
	sink := capturetest.NewSink(map[string][]string{"public.person": {"id"}, "public.unit": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "the initial snapshot", func() bool {
		for _, b := range sink.Batches() {
			if b.Snapshot != nil && b.Snapshot.End {
				return true
			}
		}
		return false
	})
	bs := sink.Batches()
	first, last := bs[0].Snapshot, bs[len(bs)-1].Snapshot
	if !first.Begin || !first.Initial || first.Reconcile || !reflect.DeepEqual(first.Records, []string{"public.person", "public.unit"}) {
		t.Fatalf("first snapshot mark = %+v", first)
	}
	if !last.End || last.ID != first.ID || len(bs) < 4 {
		t.Fatalf("%d snapshot batches; last mark = %+v", len(bs), last)
	}
	capturetest.SameRows(t, "person after snapshot", sink.Rows("public.person"), e.tableRows(src, sink, "public.person"))
	if got := sink.Rows("public.person")["1"]; !reflect.DeepEqual(got, map[string]any{"id": n("1"), "name": "Anne", "age": n("40")}) {
		t.Fatalf("snapshot row 1 = %#v", got)
	}

	before := time.Now()
	e.exec(`BEGIN;
		INSERT INTO person VALUES (4, 'Dan', 50);
		UPDATE person SET name = 'Anna' WHERE id = 1;
		UPDATE person SET id = 20 WHERE id = 2;
		DELETE FROM person WHERE id = 3;
		INSERT INTO unit VALUES (4, 'Ops', 1);
		UPDATE unit SET name = 'People' WHERE id = 2;
		UPDATE unit SET id = 30 WHERE id = 3;
		DELETE FROM unit WHERE id = 1;
		COMMIT`)
	capturetest.WaitFor(t, 10*time.Second, "8 streamed changes", func() bool { return len(sink.Streamed()) >= 8 })
	ch := sink.Streamed()
	if len(ch) != 8 {
		t.Fatalf("%d changes, want 8", len(ch))
	}
	want := []struct {
		op     capture.Op
		record string
		values map[string]any
		oldKey map[string]any
	}{
		{capture.OpInsert, "public.person", map[string]any{"id": n("4"), "name": "Dan", "age": n("50")}, nil},
		{capture.OpUpdate, "public.person", map[string]any{"id": n("1"), "name": "Anna", "age": n("40")}, nil},
		{capture.OpUpdate, "public.person", map[string]any{"id": n("20"), "name": "Bo", "age": n("31")}, map[string]any{"id": n("2")}},
		{capture.OpDelete, "public.person", map[string]any{"id": n("3")}, nil}, // DEFAULT: the key only
		{capture.OpInsert, "public.unit", map[string]any{"id": n("4"), "name": "Ops", "parent": n("1")}, nil},
		{capture.OpUpdate, "public.unit", map[string]any{"id": n("2"), "name": "People", "parent": n("1")}, nil},
		{capture.OpUpdate, "public.unit", map[string]any{"id": n("30"), "name": "IT", "parent": n("1")}, map[string]any{"id": n("3")}},
		{capture.OpDelete, "public.unit", map[string]any{"id": n("1"), "name": "Top", "parent": nil}, nil}, // FULL: the whole row
	}
	txid := ch[0].ChangeKey[:strings.Index(ch[0].ChangeKey, ":")]
	for i, w := range want {
		c := ch[i]
		if c.Op != w.op || c.Record != w.record || !reflect.DeepEqual(c.Values, w.values) || !reflect.DeepEqual(c.OldKey, w.oldKey) {
			t.Errorf("change %d = %s %s %#v oldKey %#v; want %s %s %#v oldKey %#v", i, c.Op, c.Record, c.Values, c.OldKey, w.op, w.record, w.values, w.oldKey)
		}
		if c.ChangeKey != fmt.Sprintf("%s:%d", txid, i) {
			t.Errorf("change %d key %q, want %s:%d", i, c.ChangeKey, txid, i)
		}
		if c.ChangedAt.Before(before.Add(-2*time.Second)) || c.ChangedAt.After(time.Now()) {
			t.Errorf("change %d ChangedAt %v", i, c.ChangedAt)
		}
	}
	for _, b := range sink.Batches() {
		if b.Snapshot == nil && len(b.Changes) > 0 && b.TransactionID != txid {
			t.Errorf("batch transaction id %q, want %q (the commit LSN)", b.TransactionID, txid)
		}
	}
	capturetest.SameRows(t, "person", sink.Rows("public.person"), e.tableRows(src, sink, "public.person"))
	capturetest.SameRows(t, "unit", sink.Rows("public.unit"), e.tableRows(src, sink, "public.unit"))
	sink.NoProblems(t)

	// The server hears the durable position.
	cp, _ := decodeCheckpoint(sink.Checkpoint())
	capturetest.WaitFor(t, 5*time.Second, "confirmed_flush_lsn = checkpoint", func() bool {
		c, _, _ := e.slot(src.cfg.Slot)
		return c == cp.LSN
	})
	if id := src.ID(); !strings.HasPrefix(id, "postgres://") || !strings.HasSuffix(id, "/"+e.db) {
		t.Errorf("ID() = %q", id)
	}
}

// An unchanged TOASTed value is not sent on update: under DEFAULT the
// change lists it in Unchanged; under FULL the old row supplies it.
func TestToastUnchanged(t *testing.T) {
	e := newEnv(t,
		"CREATE TABLE doc (id int PRIMARY KEY, body text, n int)",
		"CREATE TABLE docf (id int PRIMARY KEY, body text, n int)",
		"ALTER TABLE docf REPLICA IDENTITY FULL")
	src, _ := e.source("tables: [public.doc, public.docf]")
	sink := capturetest.NewSink(map[string][]string{"public.doc": {"id"}, "public.docf": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "streaming", func() bool { return len(sink.Batches()) > 0 })
	// 40 kB of incompressible text is stored out of line.
	big := "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1250) i)"
	e.exec("INSERT INTO doc VALUES (1, "+big+", 1)", "INSERT INTO docf VALUES (1, "+big+", 1)")
	e.exec("UPDATE doc SET n = 2", "UPDATE docf SET n = 2")
	capturetest.WaitFor(t, 10*time.Second, "4 changes", func() bool { return len(sink.Streamed()) >= 4 })
	ch := sink.Streamed()
	if u := ch[2]; u.Op != capture.OpUpdate || !reflect.DeepEqual(u.Unchanged, []string{"body"}) || u.Values["body"] != nil {
		t.Errorf("DEFAULT update: op %s unchanged %v body present %v", u.Op, u.Unchanged, u.Values["body"] != nil)
	}
	if u := ch[3]; u.Op != capture.OpUpdate || len(u.Unchanged) != 0 || len(fmt.Sprint(u.Values["body"])) != 40000 {
		t.Errorf("FULL update: op %s unchanged %v body length %d", u.Op, u.Unchanged, len(fmt.Sprint(u.Values["body"])))
	}
	// The engine (here: the sink) completes the row from its stored image.
	capturetest.SameRows(t, "doc", sink.Rows("public.doc"), e.tableRows(src, sink, "public.doc"))
	capturetest.SameRows(t, "docf", sink.Rows("public.docf"), e.tableRows(src, sink, "public.docf"))
	sink.NoProblems(t)
}

// Every listed type decodes to the same JSON-friendly value in the
// snapshot and in the stream.
func TestTypesRoundTrip(t *testing.T) {
	e := newEnv(t,
		"CREATE TYPE mood AS ENUM ('sad', 'happy')",
		"CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
		"CREATE DOMAIN email AS text",
		`CREATE TABLE typ (
			id int PRIMARY KEY, i2 smallint, i8 bigint, num numeric, num_nan numeric, f8 float8, f4 real, b bool,
			t text, vc varchar(10), ch char(3), ts timestamptz, tsn timestamp, d date, tm time, tmtz timetz, iv interval,
			u uuid, j json, jb jsonb, ba bytea, ia int[], ta text[], na numeric[], ea mood[], m mood, p posint, em email,
			inet inet, pt point, bits bit(4), money money, xml xml, rng int4range, n_null text)`)
	row := `(1, -32768, 9223372036854775807, 12345678901234567890.000000000000000001, 'NaN', 3.141592653589793, 1.5, true,
		'tekst æøå "q"', 'kort', 'ab', '2024-02-29 13:14:15.123456+02', '2024-02-29 13:14:15.5', '2024-02-29', '13:14:15.25', '13:14:15+02',
		'1 year 2 mons 3 days 04:05:06', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1, "a": [1, 2.50]}', '{"b": 1, "a": [1, 2.50]}',
		'\x00ff10', '{1,NULL,3}', '{"a b","c,d",NULL}', '{1.10,2}', '{sad,happy}', 'happy', 7, 'x@example.org',
		'192.168.0.1/24', '(1,2)', B'1010', 12.34, '<a>x</a>', '[1,5)', NULL)`
	e.exec("INSERT INTO typ VALUES " + row)
	src, _ := e.source("tables: [public.typ]")
	sink := capturetest.NewSink(map[string][]string{"public.typ": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.typ")) == 1 })
	e.exec("INSERT INTO typ VALUES " + strings.Replace(row, "(1,", "(2,", 1))
	capturetest.WaitFor(t, 10*time.Second, "streamed row", func() bool { return len(sink.Streamed()) == 1 })
	want := map[string]any{
		"i2": n("-32768"), "i8": n("9223372036854775807"), "num": n("12345678901234567890.000000000000000001"), "num_nan": "NaN",
		"f8": n("3.141592653589793"), "f4": n("1.5"), "b": true, "t": `tekst æøå "q"`, "vc": "kort", "ch": "ab ",
		"ts": "2024-02-29T11:14:15.123456Z", "tsn": "2024-02-29T13:14:15.500000", "d": "2024-02-29", "tm": "13:14:15.25",
		"tmtz": "13:14:15+02", "iv": "P1Y2M3DT4H5M6S", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"j": map[string]any{"b": n("1"), "a": []any{n("1"), n("2.50")}}, "jb": map[string]any{"a": []any{n("1"), n("2.50")}, "b": n("1")},
		"ba": "AP8Q", "ia": []any{n("1"), nil, n("3")}, "ta": []any{"a b", "c,d", nil}, "na": []any{n("1.10"), n("2")},
		"ea": []any{"sad", "happy"}, "m": "happy", "p": n("7"), "em": "x@example.org", "inet": "192.168.0.1/24", "pt": "(1,2)",
		"bits": "1010", "money": "$12.34", "xml": "<a>x</a>", "rng": "[1,5)", "n_null": nil,
	}
	snap := sink.Rows("public.typ")["1"]
	live := sink.Streamed()[0].Values
	for k, w := range want {
		if !reflect.DeepEqual(snap[k], w) {
			t.Errorf("snapshot %s = %#v, want %#v", k, snap[k], w)
		}
		if !reflect.DeepEqual(live[k], w) {
			t.Errorf("stream %s = %#v, want %#v", k, live[k], w)
		}
	}
	if len(live) != len(want)+1 {
		t.Errorf("stream row has %d columns, want %d", len(live), len(want)+1)
	}
}

// A transaction larger than a batch is split; a crash between its batches
// resumes inside it without losing or repeating a change.
func TestLargeTransactionResume(t *testing.T) {
	e := newEnv(t, "CREATE TABLE big (id int PRIMARY KEY, v text)")
	src, _ := e.source("tables: [public.big]", "batch_size: 100")
	sink := capturetest.NewSink(map[string][]string{"public.big": {"id"}})
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "streaming", func() bool { return len(sink.Batches()) > 0 })
	r.Stop()
	// Apply fails on the 5th batch of the transaction: a crash mid-way.
	sink.CrashOnStreamBatch(5)
	r = capturetest.Start(t, src, sink, sink.Checkpoint())
	e.exec("INSERT INTO big SELECT i, 'v' || i FROM generate_series(1, 1000) i")
	err, ok := r.Exited(20 * time.Second)
	if !ok || err == nil || !strings.Contains(err.Error(), "simulated crash") {
		t.Fatalf("Run = %v (exited %v), want the sink's error", err, ok)
	}
	cp, _ := decodeCheckpoint(sink.Checkpoint())
	if cp.Tx == nil || cp.Tx.Next != 400 {
		t.Fatalf("checkpoint inside the transaction = %+v, want 400 changes durable", cp.Tx)
	}
	if c, _, _ := e.slot(src.cfg.Slot); mustLSN(c) >= mustLSN(cp.Tx.Commit) {
		t.Fatalf("confirmed_flush_lsn %s passed the half-applied transaction at %s", c, cp.Tx.Commit)
	}
	sink.SetOnApply(nil)
	src2, _ := e.source("tables: [public.big]", "batch_size: 100")
	capturetest.Start(t, src2, sink, sink.Checkpoint())
	capturetest.WaitFor(t, 20*time.Second, "1000 rows", func() bool { return len(sink.Rows("public.big")) == 1000 })
	if got := len(sink.Streamed()); got != 1000 {
		t.Errorf("%d changes delivered, want 1000", got)
	}
	sink.NoProblems(t)
}

// TRUNCATE arrives as OpTruncate of each truncated table.
func TestTruncate(t *testing.T) {
	e := newEnv(t, "CREATE TABLE a (id int PRIMARY KEY)", "CREATE TABLE b (id int PRIMARY KEY)",
		"INSERT INTO a VALUES (1), (2)", "INSERT INTO b VALUES (1)")
	src, _ := e.source("tables: [public.a, public.b]")
	sink := capturetest.NewSink(map[string][]string{"public.a": {"id"}, "public.b": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.a")) == 2 })
	e.exec("TRUNCATE a, b")
	capturetest.WaitFor(t, 10*time.Second, "truncate", func() bool { return len(sink.Streamed()) == 2 })
	for i, c := range sink.Streamed() {
		if c.Op != capture.OpTruncate || c.Reason != "truncated" || c.Record != []string{"public.a", "public.b"}[i] {
			t.Errorf("change %d = %s %s reason %q", i, c.Op, c.Record, c.Reason)
		}
	}
	if len(sink.Rows("public.a")) != 0 {
		t.Error("rows left after truncate")
	}
}

// Columns added, dropped, renamed or retyped mid-stream are captured from
// the right point and recorded in the checkpoint.
func TestSchemaChange(t *testing.T) {
	e := newEnv(t, "CREATE TABLE p (id int PRIMARY KEY, name text, age int)", "INSERT INTO p VALUES (1, 'a', 1)")
	src, log := e.source("tables: [public.p]")
	sink := capturetest.NewSink(map[string][]string{"public.p": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.p")) == 1 })
	e.exec("INSERT INTO p VALUES (2, 'b', 2)",
		"ALTER TABLE p ADD COLUMN email text", "INSERT INTO p VALUES (3, 'c', 3, 'c@x')",
		"ALTER TABLE p DROP COLUMN age", "ALTER TABLE p RENAME COLUMN name TO full_name", "ALTER TABLE p ALTER COLUMN id TYPE bigint",
		"UPDATE p SET email = 'a@x' WHERE id = 1")
	capturetest.WaitFor(t, 10*time.Second, "3 changes", func() bool { return len(sink.Streamed()) == 3 })
	ch := sink.Streamed()
	wants := []map[string]any{
		{"id": n("2"), "name": "b", "age": n("2")},
		{"id": n("3"), "name": "c", "age": n("3"), "email": "c@x"},
		{"id": n("1"), "full_name": "a", "email": "a@x"},
	}
	for i, w := range wants {
		if !reflect.DeepEqual(ch[i].Values, w) {
			t.Errorf("change %d = %#v, want %#v", i, ch[i].Values, w)
		}
	}
	for _, w := range []string{"added column email (text)", "renamed column name to full_name", "dropped column age", "column id changed type from integer to bigint"} {
		if !log.Has(w) {
			t.Errorf("log lacks %q", w)
		}
	}
	cp, _ := decodeCheckpoint(sink.Checkpoint())
	if got := cp.Tables["public.p"]; !reflect.DeepEqual(got, []colDesc{{Name: "id", Type: "bigint"}, {Name: "full_name", Type: "text"}, {Name: "email", Type: "text"}}) {
		t.Errorf("recorded description = %+v", got)
	}
}

// Keys configured for a table without a primary key (REPLICA IDENTITY
// FULL) drive the snapshot order and the delete images.
func TestConfiguredKey(t *testing.T) {
	e := newEnv(t, "CREATE TABLE nk (code text NOT NULL, v int)", "ALTER TABLE nk REPLICA IDENTITY FULL",
		"INSERT INTO nk SELECT 'k' || i, i FROM generate_series(1, 25) i")
	src, _ := e.source("tables: [public.nk]", "keys: {public.nk: [code]}", "snapshot_chunk_size: 10")
	sink := capturetest.NewSink(map[string][]string{"public.nk": {"code"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.nk")) == 25 })
	e.exec("DELETE FROM nk WHERE code = 'k7'", "UPDATE nk SET code = 'k77' WHERE code = 'k8'")
	capturetest.WaitFor(t, 10*time.Second, "2 changes", func() bool { return len(sink.Streamed()) == 2 })
	capturetest.SameRows(t, "nk", sink.Rows("public.nk"), e.tableRows(src, sink, "public.nk"))
	if ok := sink.Streamed()[1].OldKey; !reflect.DeepEqual(ok, map[string]any{"code": "k8"}) {
		t.Errorf("OldKey = %#v", ok)
	}
	sink.NoProblems(t)
}

// With Once, Run returns after delivering what the server had.
func TestOnce(t *testing.T) {
	e := newEnv(t, "CREATE TABLE o (id int PRIMARY KEY)", "INSERT INTO o VALUES (1)")
	src, _ := e.source("tables: [public.o]")
	src.opts.Once = true
	sink := capturetest.NewSink(map[string][]string{"public.o": {"id"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.Run(ctx, nil, sink); err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO o VALUES (2)", "INSERT INTO o VALUES (3)")
	if err := src.Run(ctx, sink.Checkpoint(), sink); err != nil {
		t.Fatal(err)
	}
	if got := len(sink.Rows("public.o")); got != 3 {
		t.Fatalf("%d rows after two Once runs, want 3", got)
	}
	if ctx.Err() != nil {
		t.Fatal("Once did not return before the deadline")
	}
}

// On a database whose captured tables are idle while others are busy, the
// heartbeat moves the slot's confirmed position (so WAL is not retained).
func TestHeartbeatAdvancesIdleSlot(t *testing.T) {
	e := newEnv(t, "CREATE TABLE hb (id int PRIMARY KEY)", "CREATE TABLE busy (id int)")
	src, _ := e.source("tables: [public.hb]", "heartbeat_interval: 300ms")
	sink := capturetest.NewSink(map[string][]string{"public.hb": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return sink.Checkpoint() != nil })
	e.exec("INSERT INTO busy SELECT generate_series(1, 10000)")
	var target string
	if err := e.conn.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()::text").Scan(&target); err != nil {
		t.Fatal(err)
	}
	capturetest.WaitFor(t, 10*time.Second, "confirmed_flush_lsn past "+target, func() bool {
		c, _, _ := e.slot(src.cfg.Slot)
		return mustLSN(c) >= mustLSN(target)
	})
	if len(sink.Streamed()) != 0 {
		t.Fatalf("heartbeats delivered changes: %+v", sink.Streamed())
	}
}

// A slow sink fills the queue; the source still answers the server in time
// (wal_sender_timeout 3s here) and loses nothing.
func TestSlowSinkKeepsConnection(t *testing.T) {
	e := newEnv(t, "CREATE TABLE slow (id int PRIMARY KEY)")
	src, log := e.source("dsn: "+e.dsn("postgres")+"&options=-c%20wal_sender_timeout%3D3s", "tables: [public.slow]", "batch_size: 10")
	sink := capturetest.NewSink(map[string][]string{"public.slow": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return sink.Checkpoint() != nil })
	// One Apply takes longer than wal_sender_timeout while the queue is
	// full: the reader is blocked handing over the next batch.
	withRows := 0
	sink.SetOnApply(func(b capture.Batch) error {
		if len(b.Changes) > 0 {
			if withRows++; withRows == 3 {
				time.Sleep(5 * time.Second)
			}
		}
		return nil
	})
	e.exec("INSERT INTO slow SELECT generate_series(1, 200)")
	capturetest.WaitFor(t, 30*time.Second, "200 rows", func() bool { return len(sink.Rows("public.slow")) == 200 })
	if log.Has("reconnecting") {
		t.Fatal("the server dropped the slow consumer")
	}
	sink.NoProblems(t)
}
