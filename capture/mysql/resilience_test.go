package mysql

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/capturetest"
)

// writer runs transactions of inserts, updates and deletes until halted.
type writer struct {
	stop  atomic.Bool
	wg    sync.WaitGroup
	count atomic.Int64
}

func startWriter(t testing.TB, e *env, table string, maxID int) *writer {
	w := &writer{}
	c, err := e.m.Conn(e.db)
	if err != nil {
		t.Fatal(err)
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer c.Close()
		rng := rand.New(rand.NewPCG(1, 2))
		for !w.stop.Load() {
			id := 1 + rng.IntN(maxID)
			var q string
			switch rng.IntN(3) {
			case 0:
				q = fmt.Sprintf("INSERT INTO %s VALUES (%d, %d) ON DUPLICATE KEY UPDATE n = n + 1", table, id, rng.IntN(1000))
			case 1:
				q = fmt.Sprintf("UPDATE %s SET n = n + 1 WHERE id = %d", table, id)
			default:
				q = fmt.Sprintf("DELETE FROM %s WHERE id = %d", table, id)
			}
			if _, err := c.Execute(q); err != nil {
				if w.stop.Load() {
					return
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			w.count.Add(1)
		}
	}()
	return w
}

func (w *writer) halt() {
	w.stop.Store(true)
	w.wg.Wait()
}

// converged waits until the sink's rows equal the table.
func converged(t testing.TB, e *env, src *Source, sink *capturetest.Sink, table string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		want := e.tableRows(src, sink, table)
		got := sink.Rows(table)
		if len(got) == len(want) || time.Now().After(deadline) {
			time.Sleep(300 * time.Millisecond)
			capturetest.SameRows(t, table, sink.Rows(table), e.tableRows(src, sink, table))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func seed(e *env, n int) {
	var vals []string
	for i := 1; i <= n; i++ {
		vals = append(vals, fmt.Sprintf("(%d, 0)", i))
	}
	e.exec("CREATE TABLE t (id int PRIMARY KEY, n int)", "INSERT INTO t VALUES "+strings.Join(vals, ", "))
}

// The snapshot and the stream meet without loss or double while a writer
// keeps changing the table, and a restart from the checkpoint (with a
// crash before a commit in between) converges too.
func TestSeamUnderConcurrentWrites(t *testing.T) {
	e := newEnv(t)
	seed(e, 3000)
	table := e.table("t")
	w := startWriter(t, e, table, 4000)
	defer w.halt()
	time.Sleep(200 * time.Millisecond)
	src, _ := e.source("tables: ["+table+"]", "snapshot_chunk_size: 500", "batch_size: 50")
	sink := capturetest.NewSink(map[string][]string{table: {"id"}})
	r := start(t, src, sink, nil)
	capturetest.WaitFor(t, 30*time.Second, "the initial snapshot", sink.SnapshotDone)
	time.Sleep(time.Second)
	r.Stop()
	// A crash: the next batch fails before it is durable.
	var crashed atomic.Bool
	sink.SetOnApply(func(b capture.Batch) error {
		if len(b.Changes) > 0 && !crashed.Load() {
			crashed.Store(true)
			return capturetest.ErrSimulated
		}
		return nil
	})
	src2, _ := e.source("tables: ["+table+"]", "batch_size: 50")
	if err := src2.Run(context.Background(), sink.Checkpoint(), sink); err == nil || !strings.Contains(err.Error(), "simulated") {
		t.Fatalf("Run after a failing Apply: %v", err)
	}
	start(t, src2, sink, sink.Checkpoint())
	time.Sleep(time.Second)
	w.halt()
	converged(t, e, src2, sink, table)
	sink.NoProblems(t)
	if w.count.Load() < 100 {
		t.Fatalf("only %d writes", w.count.Load())
	}
}

// A large transaction goes in several batches; a crash between them
// resumes inside it without repeating or losing a change.
func TestLargeTransactionResume(t *testing.T) {
	e := newEnv(t, "CREATE TABLE t (id int PRIMARY KEY, n int)")
	table := e.table("t")
	src, _ := e.source("tables: ["+table+"]", "batch_size: 100")
	sink := capturetest.NewSink(map[string][]string{table: {"id"}})
	r := start(t, src, sink, nil)
	capturetest.WaitFor(t, 30*time.Second, "the initial snapshot", sink.SnapshotDone)
	var fails atomic.Int32
	sink.SetOnApply(func(b capture.Batch) error {
		if len(b.Changes) > 0 && b.Snapshot == nil {
			if fails.Add(1) == 4 {
				return capturetest.ErrSimulated
			}
		}
		return nil
	})
	e.exec("INSERT INTO t SELECT seq, 0 FROM seq_1_to_1000")
	if err, ok := r.Exited(20 * time.Second); !ok || err == nil {
		t.Fatalf("Run did not stop at the failing Apply: %v", err)
	}
	cp, _ := decodeCheckpoint(sink.Checkpoint())
	if cp.Tx == nil || cp.Tx.Next != 300 {
		t.Fatalf("checkpoint inside the transaction = %+v", cp.Tx)
	}
	src2, _ := e.source("tables: ["+table+"]", "batch_size: 100")
	start(t, src2, sink, sink.Checkpoint())
	capturetest.WaitFor(t, 20*time.Second, "1000 rows", func() bool { return len(sink.Rows(table)) == 1000 })
	sink.NoProblems(t)
}

// Binlogs purged while the agent was down: the epoch breaks and a
// reconcile snapshot follows.
func TestBinlogPurgedWhileDown(t *testing.T) {
	e := newEnv(t)
	seed(e, 10)
	table := e.table("t")
	src, _ := e.source("tables: [" + table + "]")
	sink := capturetest.NewSink(map[string][]string{table: {"id"}})
	r := start(t, src, sink, nil)
	capturetest.WaitFor(t, 30*time.Second, "the initial snapshot", sink.SnapshotDone)
	r.Stop()
	e.exec("UPDATE t SET n = 5 WHERE id = 1", "DELETE FROM t WHERE id = 2", "FLUSH BINARY LOGS")
	rows, err := query(e.conn, "SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	last := str(rows[len(rows)-1][0])
	// The server keeps a file its replica threads still read: the first
	// Run's dump thread may linger for a moment.
	capturetest.WaitFor(t, 10*time.Second, "the purge", func() bool {
		e.exec("PURGE BINARY LOGS TO '" + last + "'")
		rows, err := query(e.conn, "SHOW BINARY LOGS")
		return err == nil && len(rows) == 1
	})
	src2, log := e.source("tables: [" + table + "]")
	start(t, src2, sink, sink.Checkpoint())
	capturetest.WaitFor(t, 30*time.Second, "a reconcile", func() bool {
		for _, b := range sink.Batches() {
			if b.EpochBreak != "" && b.Snapshot != nil && b.Snapshot.Begin && b.Snapshot.Reconcile {
				return strings.Contains(b.EpochBreak, "purged")
			}
		}
		return false
	})
	capturetest.WaitFor(t, 10*time.Second, "the reconcile's end", func() bool { return sink.Batches()[len(sink.Batches())-1].Snapshot != nil })
	if !log.Has("continuity with the checkpoint is broken") {
		t.Error("no warning about the break in the log")
	}
	e.exec("INSERT INTO t VALUES (100, 1)")
	converged(t, e, src2, sink, table)
}

// RESET MASTER while the agent was down breaks continuity too.
func TestResetMasterWhileDown(t *testing.T) {
	e := newEnv(t)
	seed(e, 10)
	table := e.table("t")
	src, _ := e.source("tables: [" + table + "]")
	sink := capturetest.NewSink(map[string][]string{table: {"id"}})
	r := start(t, src, sink, nil)
	capturetest.WaitFor(t, 30*time.Second, "the initial snapshot", sink.SnapshotDone)
	e.exec("UPDATE t SET n = 1 WHERE id = 1")
	capturetest.WaitFor(t, 10*time.Second, "the update", func() bool { return len(sink.Streamed()) == 1 })
	r.Stop()
	e.exec("RESET MASTER")
	for i := 0; i < 30; i++ {
		e.exec(fmt.Sprintf("UPDATE t SET n = n + 1 WHERE id = %d", 1+i%10))
	}
	src2, _ := e.source("tables: [" + table + "]")
	start(t, src2, sink, sink.Checkpoint())
	capturetest.WaitFor(t, 30*time.Second, "an epoch break", func() bool {
		for _, b := range sink.Batches() {
			if b.EpochBreak != "" {
				return true
			}
		}
		return false
	})
	converged(t, e, src2, sink, table)
}

// A restart of the server mid-stream: Run reconnects and loses nothing.
func TestServerRestart(t *testing.T) {
	e := newEnv(t)
	seed(e, 100)
	table := e.table("t")
	src, log := e.source("tables: ["+table+"]", "heartbeat_interval: 1s")
	sink := capturetest.NewSink(map[string][]string{table: {"id"}})
	start(t, src, sink, nil)
	capturetest.WaitFor(t, 30*time.Second, "the initial snapshot", sink.SnapshotDone)
	e.exec("UPDATE t SET n = 1 WHERE id <= 10")
	e.conn.Close()
	if err := e.m.Restart(); err != nil {
		t.Fatal(err)
	}
	c, err := e.m.Conn(e.db)
	if err != nil {
		t.Fatal(err)
	}
	e.conn = c
	e.exec("UPDATE t SET n = 2 WHERE id > 90", "DELETE FROM t WHERE id = 50")
	converged(t, e, src, sink, table)
	if !log.Has("reconnecting") {
		t.Error("no reconnect in the log")
	}
	sink.NoProblems(t)
}

// Schema changes mid-stream are followed; TRUNCATE empties the table.
func TestSchemaChangeAndTruncate(t *testing.T) {
	e := newEnv(t, "CREATE TABLE t (id int PRIMARY KEY, a varchar(10), b int)", "INSERT INTO t VALUES (1, 'x', 1)")
	table := e.table("t")
	src, log := e.source("tables: [" + table + "]")
	sink := capturetest.NewSink(map[string][]string{table: {"id"}})
	start(t, src, sink, nil)
	capturetest.WaitFor(t, 30*time.Second, "the initial snapshot", sink.SnapshotDone)
	e.exec("ALTER TABLE t ADD COLUMN c varchar(10) DEFAULT 'new'", "INSERT INTO t VALUES (2, 'y', 2, 'z')",
		"ALTER TABLE t DROP COLUMN b", "UPDATE t SET a = 'q' WHERE id = 1")
	capturetest.WaitFor(t, 10*time.Second, "2 changes", func() bool { return len(sink.Streamed()) >= 2 })
	ch := sink.Streamed()
	if got := ch[0].Values; fmt.Sprint(got) != "map[a:y b:2 c:z id:2]" {
		t.Errorf("insert after ADD COLUMN = %v", got)
	}
	if got := ch[1].Values; fmt.Sprint(got) != "map[a:q c:new id:1]" {
		t.Errorf("update after DROP COLUMN = %v", got)
	}
	capturetest.WaitFor(t, 5*time.Second, "the schema change in the log", func() bool { return log.Has("dropped column b") })
	e.exec("TRUNCATE TABLE t", "INSERT INTO t VALUES (3, 'r', 'c')")
	capturetest.WaitFor(t, 10*time.Second, "truncate", func() bool { return len(sink.Streamed()) >= 4 })
	if c := sink.Streamed()[2]; c.Op != capture.OpTruncate || c.Reason != "truncated" || c.Record != table {
		t.Errorf("change after TRUNCATE = %+v", c)
	}
	converged(t, e, src, sink, table)
	sink.NoProblems(t)
}
