package mysql

import (
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
// (also of the key) and deletes stream, one transaction sharing one id and
// the change keys GTID:index.
func TestSnapshotThenStream(t *testing.T) {
	e := newEnv(t,
		"CREATE TABLE person (id int PRIMARY KEY, name varchar(50), age int)",
		"INSERT INTO person VALUES (1, 'Anne', 40), (2, 'Bo', 31), (3, 'Cai', 22)")
	person := e.table("person")
	src, _ := e.source("tables: ["+person+"]", "snapshot_chunk_size: 2")
	sink := capturetest.NewSink(map[string][]string{person: {"id"}})
	start(t, src, sink, nil)
	capturetest.WaitFor(t, 30*time.Second, "the initial snapshot", sink.SnapshotDone)
	bs := sink.Batches()
	first, last := bs[0].Snapshot, bs[len(bs)-1].Snapshot
	if !first.Begin || !first.Initial || first.Reconcile || !reflect.DeepEqual(first.Records, []string{person}) {
		t.Fatalf("first snapshot mark = %+v", first)
	}
	if !last.End || last.ID != first.ID || len(bs) < 3 {
		t.Fatalf("%d snapshot batches; last mark = %+v", len(bs), last)
	}
	if got := sink.Rows(person)["1"]; !reflect.DeepEqual(got, map[string]any{"id": n("1"), "name": "Anne", "age": n("40")}) {
		t.Fatalf("snapshot row 1 = %#v", got)
	}
	before := time.Now()
	e.exec("BEGIN",
		"INSERT INTO person VALUES (4, 'Dan', 50)",
		"UPDATE person SET name = 'Anna' WHERE id = 1",
		"UPDATE person SET id = 20 WHERE id = 2",
		"DELETE FROM person WHERE id = 3",
		"COMMIT")
	capturetest.WaitFor(t, 10*time.Second, "4 streamed changes", func() bool { return len(sink.Streamed()) >= 4 })
	ch := sink.Streamed()
	want := []struct {
		op     capture.Op
		values map[string]any
		oldKey map[string]any
	}{
		{capture.OpInsert, map[string]any{"id": n("4"), "name": "Dan", "age": n("50")}, nil},
		{capture.OpUpdate, map[string]any{"id": n("1"), "name": "Anna", "age": n("40")}, nil},
		{capture.OpUpdate, map[string]any{"id": n("20"), "name": "Bo", "age": n("31")}, map[string]any{"id": n("2")}},
		{capture.OpDelete, map[string]any{"id": n("3"), "name": "Cai", "age": n("22")}, nil},
	}
	if len(ch) != len(want) {
		t.Fatalf("%d changes, want %d", len(ch), len(want))
	}
	gtid := ch[0].TransactionID
	for i, w := range want {
		c := ch[i]
		if c.Op != w.op || c.Record != person || !reflect.DeepEqual(c.Values, w.values) || !reflect.DeepEqual(c.OldKey, w.oldKey) {
			t.Errorf("change %d = %s %s %#v oldKey %#v; want %s %#v oldKey %#v", i, c.Op, c.Record, c.Values, c.OldKey, w.op, w.values, w.oldKey)
		}
		if c.ChangeKey != fmt.Sprintf("%s:%d", gtid, i) || c.TransactionID != gtid {
			t.Errorf("change %d key %q tx %q, want %s:%d", i, c.ChangeKey, c.TransactionID, gtid, i)
		}
		if c.ChangedAt.Before(before.Add(-2*time.Second)) || c.ChangedAt.After(time.Now().Add(time.Second)) {
			t.Errorf("change %d ChangedAt %v", i, c.ChangedAt)
		}
	}
	if _, err := parseGTID(gtid); err != nil {
		t.Errorf("transaction id %q is not a GTID: %v", gtid, err)
	}
	capturetest.SameRows(t, "person", sink.Rows(person), e.tableRows(src, sink, person))
	sink.NoProblems(t)
	cp, err := decodeCheckpoint(sink.Checkpoint())
	if err != nil || !mustPos(cp.GTID).contains(mustGTID(t, gtid)) {
		t.Fatalf("checkpoint %+v (%v) does not contain %s", cp, err, gtid)
	}
	if id := src.ID(); !strings.HasPrefix(id, "mysql://") || !strings.HasSuffix(id, "/"+e.db) {
		t.Errorf("ID() = %q", id)
	}
}

func mustGTID(t testing.TB, s string) gtid {
	t.Helper()
	g, err := parseGTID(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Every type converts the same from the snapshot and from the stream: the
// before image of an update of an unrelated column equals the snapshot
// row, field by field.
func TestTypesRoundTrip(t *testing.T) {
	e := newEnv(t, `CREATE TABLE typ (
		id int PRIMARY KEY, touch int,
		ti tinyint, tiu tinyint unsigned, si smallint, siu smallint unsigned, mi mediumint, miu mediumint unsigned,
		i int, iu int unsigned, bi bigint, biu bigint unsigned,
		d decimal(20,6), d0 decimal(5,0), f float, db double,
		c char(5), vc varchar(20), tx text, l1 varchar(20) CHARACTER SET latin1, l1t text CHARACTER SET latin1,
		bn binary(4), vb varbinary(10), bl blob,
		dt date, dtm datetime, dtm3 datetime(3), dtm6 datetime(6), ts timestamp NULL, ts6 timestamp(6) NULL,
		tm time, tm2 time(2), yr year, js json, en enum('a','b','ø'), st set('x','y','z'), bt bit(10), b64 bit(64), nul int)`,
		`INSERT INTO typ VALUES (1, 0,
		-128, 255, -32768, 65535, -8388608, 16777215,
		-2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
		-12345678901234.123456, 99999, 1.1, 3.141592653589793,
		'ab', 'héllo', 'a long text ✓', 'grüß', 'café €',
		x'0102', x'00ff', x'deadbeef',
		'2024-02-29', '2024-02-29 13:14:15', '2024-02-29 13:14:15.123', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15', '2024-02-29 13:14:15.654321',
		'-838:59:59', '12:34:56.78', 2024, '{"a": [1, 2.5, "x"], "b": {"c": null}}', 'ø', 'z,x', b'1010101010', b'1111111111111111111111111111111111111111111111111111111111111111', NULL)`,
		`INSERT INTO typ (id, touch) VALUES (2, 0)`,
		`INSERT INTO typ (id, touch, ti, d, f, db, vc, dt, dtm, ts, tm, yr, js, en, st, bt) VALUES (3, 0, 0, 0, 0, -0.5, '', '1000-01-01', '9999-12-31 23:59:59', '1970-01-01 00:00:01', '00:00:00', 1901, '[]', 'a', '', b'0')`)
	typ := e.table("typ")
	src, _ := e.source("tables: [" + typ + "]")
	sink := capturetest.NewSink(map[string][]string{typ: {"id"}})
	start(t, src, sink, nil)
	capturetest.WaitFor(t, 30*time.Second, "the initial snapshot", sink.SnapshotDone)
	snap := sink.Rows(typ)
	e.exec("UPDATE typ SET touch = 1")
	// The before images: a second update's before image is the row after
	// the first, so capture them by deleting.
	e.exec("DELETE FROM typ")
	capturetest.WaitFor(t, 10*time.Second, "6 streamed changes", func() bool { return len(sink.Streamed()) >= 6 })
	for _, c := range sink.Streamed()[3:] {
		if c.Op != capture.OpDelete {
			t.Fatalf("change %s, want delete", c.Op)
		}
		id := fmt.Sprint(c.Values["id"])
		s := snap[id]
		for k, v := range s {
			if k == "touch" {
				continue
			}
			sj, _ := json.Marshal(v)
			cj, _ := json.Marshal(c.Values[k])
			if string(sj) != string(cj) {
				t.Errorf("row %s column %s: snapshot %s, stream %s", id, k, sj, cj)
			}
		}
		if len(c.Values) != len(s) {
			t.Errorf("row %s: %d columns streamed, %d in the snapshot", id, len(c.Values), len(s))
		}
	}
	r1 := snap["1"]
	want := map[string]any{
		"ti": n("-128"), "tiu": n("255"), "miu": n("16777215"), "iu": n("4294967295"), "biu": n("18446744073709551615"),
		"bi": n("-9223372036854775808"), "d": n("-12345678901234.123456"), "f": n("1.1"), "db": n("3.141592653589793"),
		"c": "ab", "vc": "héllo", "tx": "a long text ✓", "l1": "grüß", "l1t": "café €",
		"bn": "AQIAAA==", "vb": "AP8=", "bl": "3q2+7w==",
		"dt": "2024-02-29", "dtm": "2024-02-29T13:14:15.000000", "dtm3": "2024-02-29T13:14:15.123000",
		"ts": "2024-02-29T13:14:15.000000Z", "ts6": "2024-02-29T13:14:15.654321Z",
		"tm": "-838:59:59", "tm2": "12:34:56.78", "yr": n("2024"),
		"js": map[string]any{"a": []any{n("1"), n("2.5"), "x"}, "b": map[string]any{"c": nil}},
		"en": "ø", "st": []any{"x", "z"}, "bt": n("682"), "b64": n("18446744073709551615"), "nul": nil,
	}
	for k, w := range want {
		if !reflect.DeepEqual(r1[k], w) {
			t.Errorf("column %s = %#v, want %#v", k, r1[k], w)
		}
	}
	sink.NoProblems(t)
}
