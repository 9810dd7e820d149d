package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/testenv"
)

// writer runs random inserts, updates (some moving the key) and deletes
// on tables with (id int primary key, v int) until stopped.
type writer struct {
	stop   chan struct{}
	done   chan struct{}
	ops    atomic.Int64
	errors atomic.Int64
}

func startWriter(t testing.TB, dsn string, tables []string, maxID int) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		ctx := context.Background()
		var c *pgx.Conn
		rnd := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
		for {
			select {
			case <-w.stop:
				if c != nil {
					c.Close(ctx)
				}
				return
			default:
			}
			if c == nil {
				var err error
				if c, err = pgx.Connect(ctx, dsn); err != nil {
					w.errors.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
			}
			tab := tables[rnd.IntN(len(tables))]
			id := rnd.IntN(maxID)
			var sql string
			switch rnd.IntN(6) {
			case 0, 1:
				sql = fmt.Sprintf("INSERT INTO %s VALUES (%d, %d) ON CONFLICT (id) DO UPDATE SET v = excluded.v", tab, id, rnd.IntN(1000))
			case 2, 3:
				sql = fmt.Sprintf("UPDATE %s SET v = v + 1 WHERE id = %d", tab, id)
			case 4:
				sql = fmt.Sprintf("DELETE FROM %s WHERE id = %d", tab, id)
			case 5:
				// Move a row's key elsewhere in the key order.
				sql = fmt.Sprintf("UPDATE %s SET id = %d WHERE id = %d AND NOT EXISTS (SELECT 1 FROM %[1]s WHERE id = %[2]d)", tab, rnd.IntN(maxID), id)
			}
			if rnd.IntN(4) == 0 {
				sql = "BEGIN; " + sql + "; " + strings.Replace(sql, fmt.Sprint(id), fmt.Sprint((id+7)%maxID), 1) + "; COMMIT"
			}
			if _, err := c.Exec(ctx, sql); err != nil {
				w.errors.Add(1)
				c.Close(ctx)
				c = nil
				continue
			}
			w.ops.Add(1)
		}
	}()
	return w
}

func (w *writer) halt() {
	close(w.stop)
	<-w.done
}

// converged waits until the sink holds exactly the tables' rows.
func converged(t testing.TB, e *env, src *Source, sink *capturetest.Sink, tables []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, tab := range tables {
			want := e.tableRows(src, sink, tab)
			got := sink.Rows(tab)
			if len(got) != len(want) {
				ok = false
				break
			}
			for k, w := range want {
				gj, _ := json.Marshal(got[k])
				wj, _ := json.Marshal(w)
				if string(gj) != string(wj) {
					ok = false
					break
				}
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for _, tab := range tables {
				capturetest.SameRows(t, tab, sink.Rows(tab), e.tableRows(src, sink, tab))
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func seedTables(n int, tables ...string) []string {
	var out []string
	for _, t := range tables {
		out = append(out, fmt.Sprintf("CREATE TABLE %s (id int PRIMARY KEY, v int)", t),
			fmt.Sprintf("INSERT INTO %s SELECT i, i FROM generate_series(0, %d) i", t, n-1))
	}
	return out
}

// The initial snapshot and the stream meet at the slot's consistent point
// while writes go on: nothing lost, nothing doubled.
func TestSeamUnderConcurrentWrites(t *testing.T) {
	tables := []string{"public.s1", "public.s2"}
	e := newEnv(t, seedTables(5000, "s1", "s2")...)
	w := startWriter(t, e.dsn("postgres"), []string{"s1", "s2"}, 6000)
	time.Sleep(200 * time.Millisecond)
	src, _ := e.source("tables: [public.s1, public.s2]", "snapshot_chunk_size: 250")
	sink := capturetest.NewSink(map[string][]string{"public.s1": {"id"}, "public.s2": {"id"}})
	sink.SetDelay(20 * time.Millisecond) // a slow engine: the snapshot spans many writes
	capturetest.Start(t, src, sink, nil)
	time.Sleep(1500 * time.Millisecond)
	w.halt()
	sink.SetDelay(0)
	if w.ops.Load() < 100 {
		t.Fatalf("only %d writes ran", w.ops.Load())
	}
	converged(t, e, src, sink, tables, 20*time.Second)
	sink.NoProblems(t)
	t.Logf("%d writes during and after the snapshot, %d streamed changes", w.ops.Load(), len(sink.Streamed()))
}

// A crash in the middle of the initial snapshot: the run goes on from its
// last durable chunk in a new exported snapshot (no new Begin), and the
// stream skips what the later segment already read.
func TestSnapshotResumeAfterCrash(t *testing.T) {
	tables := []string{"public.r1", "public.r2", "public.r3"}
	e := newEnv(t, seedTables(2000, "r1", "r2", "r3")...)
	lines := []string{"tables: [public.r1, public.r2, public.r3]", "snapshot_chunk_size: 200"}
	src, _ := e.source(lines...)
	sink := capturetest.NewSink(map[string][]string{"public.r1": {"id"}, "public.r2": {"id"}, "public.r3": {"id"}})
	sink.FailAt(16) // table 2, chunk 6
	w := startWriter(t, e.dsn("postgres"), []string{"r1", "r2", "r3"}, 2500)
	sink.SetDelay(10 * time.Millisecond)
	r := capturetest.Start(t, src, sink, nil)
	err, ok := r.Exited(30 * time.Second)
	if !ok || err == nil || !strings.Contains(err.Error(), "simulated crash") {
		t.Fatalf("Run = %v, want the simulated crash", err)
	}
	cp, _ := decodeCheckpoint(sink.Checkpoint())
	if cp.Snapshot == nil || cp.Snapshot.Table != 1 || cp.Snapshot.After == nil {
		t.Fatalf("checkpoint after the crash: %+v", cp.Snapshot)
	}
	runID := cp.Snapshot.ID
	time.Sleep(300 * time.Millisecond) // writes between the crash and the restart
	src2, log := e.source(lines...)
	capturetest.Start(t, src2, sink, sink.Checkpoint())
	time.Sleep(800 * time.Millisecond)
	w.halt()
	sink.SetDelay(0)
	converged(t, e, src2, sink, tables, 20*time.Second)
	sink.NoProblems(t)
	var begins, ends int
	for _, b := range sink.Batches() {
		if b.Snapshot != nil {
			if b.Snapshot.ID != runID {
				t.Fatalf("snapshot batch of run %q, want the resumed run %q", b.Snapshot.ID, runID)
			}
			if b.Snapshot.Begin {
				begins++
			}
			if b.Snapshot.End {
				ends++
			}
		}
	}
	if begins != 1 || ends != 1 || !log.Has("resumed=true") {
		t.Fatalf("begins %d ends %d; resumed logged %v", begins, ends, log.Has("resumed=true"))
	}
	// Replaying a change the second segment already read would not show in
	// the final rows (full images), so check the fence directly: a streamed
	// change committed before the second segment's point must be to a row
	// the first segment read.
	var segs []segment
	for _, b := range sink.Batches() {
		if b.Snapshot != nil && !b.Snapshot.End {
			c, _ := decodeCheckpoint(b.Checkpoint)
			segs = c.Snapshot.Segments
		}
	}
	if len(segs) != 2 {
		t.Fatalf("segments %+v, want 2", segs)
	}
	c2, boundary := mustLSN(segs[1].LSN), *segs[1].After[0]
	var before int
	for _, c := range sink.Streamed() {
		commit := mustLSN(c.ChangeKey[:strings.Index(c.ChangeKey, ":")])
		if commit >= c2 {
			continue
		}
		before++
		id, _ := c.Values["id"].(json.Number).Int64()
		b, _ := json.Number(boundary).Int64()
		if c.Record == "public.r3" || (c.Record == "public.r2" && id > b) {
			t.Errorf("change %s %s id %d committed before the second segment (%s) was applied again", c.ChangeKey, c.Record, id, c2)
		}
	}
	t.Logf("%d streamed changes committed between the segments", before)
	t.Logf("%d writes; fences: %v", w.ops.Load(), log.Has("passed the snapshot's consistent points"))
}

// The slot is dropped while the agent is down: the next batch breaks the
// epoch, a reconcile snapshot follows, and the state is right again.
func TestSlotDroppedWhileDown(t *testing.T) {
	e := newEnv(t, seedTables(100, "d")...)
	src, _ := e.source("tables: [public.d]")
	sink := capturetest.NewSink(map[string][]string{"public.d": {"id"}})
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.d")) == 100 })
	e.exec("DELETE FROM d WHERE id < 10")
	capturetest.WaitFor(t, 10*time.Second, "deletes", func() bool { return len(sink.Rows("public.d")) == 90 })
	r.Stop()
	n := len(sink.Batches())
	e.waitInactive(src.cfg.Slot)
	e.exec("SELECT pg_drop_replication_slot('" + src.cfg.Slot + "')")
	e.exec("DELETE FROM d WHERE id < 20", "INSERT INTO d VALUES (500, 1)", "UPDATE d SET v = -1 WHERE id = 50")
	src2, log := e.source("tables: [public.d]")
	capturetest.Start(t, src2, sink, sink.Checkpoint())
	converged(t, e, src2, sink, []string{"public.d"}, 20*time.Second)
	b := sink.Batches()[n]
	if !strings.Contains(b.EpochBreak, "no longer exists") || b.Snapshot == nil || !b.Snapshot.Begin ||
		b.Snapshot.Initial || !b.Snapshot.Reconcile {
		t.Fatalf("first batch after the drop: epoch %q snapshot %+v", b.EpochBreak, b.Snapshot)
	}
	if !log.Has("continuity with the checkpoint is broken") {
		t.Error("the break is not logged")
	}
	if _, _, exists := e.slot(src.cfg.Slot); !exists {
		t.Error("slot not recreated")
	}
	sink.NoProblems(t)
}

// A slot advanced behind the agent's back is a gap too.
func TestSlotAdvancedWhileDown(t *testing.T) {
	e := newEnv(t, seedTables(10, "adv")...)
	src, _ := e.source("tables: [public.adv]")
	sink := capturetest.NewSink(map[string][]string{"public.adv": {"id"}})
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.adv")) == 10 })
	r.Stop()
	n := len(sink.Batches())
	e.waitInactive(src.cfg.Slot)
	e.exec("DELETE FROM adv WHERE id = 1", "SELECT pg_switch_wal()")
	e.exec("SELECT pg_replication_slot_advance('" + src.cfg.Slot + "', pg_current_wal_insert_lsn())")
	src2, _ := e.source("tables: [public.adv]")
	capturetest.Start(t, src2, sink, sink.Checkpoint())
	converged(t, e, src2, sink, []string{"public.adv"}, 20*time.Second)
	if b := sink.Batches()[n]; !strings.Contains(b.EpochBreak, "was advanced to") || b.Snapshot == nil || b.Snapshot.Initial {
		t.Fatalf("first batch after the advance: epoch %q snapshot %+v", b.EpochBreak, b.Snapshot)
	}
}

// The server restarts mid-stream: Run reconnects with backoff and loses
// nothing.
func TestServerRestart(t *testing.T) {
	p := testenv.NewPostgres(t, testenv.PostgresOptions{})
	e := newEnvOn(t, p, seedTables(100, "rs")...)
	src, log := e.source("tables: [public.rs]")
	sink := capturetest.NewSink(map[string][]string{"public.rs": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.rs")) == 100 })
	w := startWriter(t, e.dsn("postgres"), []string{"rs"}, 300)
	time.Sleep(500 * time.Millisecond)
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	e.conn.Close(context.Background())
	time.Sleep(1500 * time.Millisecond)
	w.halt()
	c, err := pgx.Connect(context.Background(), e.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	e.conn = c
	converged(t, e, src, sink, []string{"public.rs"}, 30*time.Second)
	sink.NoProblems(t)
	if !log.Has("replication interrupted; reconnecting") {
		t.Error("no reconnect logged")
	}
	t.Logf("%d writes, %d failed during the restart", w.ops.Load(), w.errors.Load())
}

// The server's confirmed_flush_lsn never passes what Apply made durable,
// also when Apply fails.
func TestConfirmedFlushNeverPassesApply(t *testing.T) {
	e := newEnv(t, seedTables(10, "cf")...)
	src, _ := e.source("tables: [public.cf]", "batch_size: 50")
	var durable atomic.Uint64
	sink := capturetest.NewSink(map[string][]string{"public.cf": {"id"}})
	sink.SetDelay(30 * time.Millisecond)
	var fail atomic.Bool
	sink.SetOnApply(func(b capture.Batch) error {
		if fail.Load() {
			return fmt.Errorf("simulated disk full")
		}
		cp, _ := decodeCheckpoint(b.Checkpoint)
		if l := uint64(cp.lsn()); b.Checkpoint != nil && l > durable.Load() {
			// Recorded before Apply returns: the source can ack only after.
			durable.Store(l)
		}
		return nil
	})
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.cf")) == 10 })
	var violations []string
	var mu sync.Mutex
	stop := make(chan struct{})
	polled := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				polled <- n
				return
			default:
			}
			var c string
			conn, err := pgx.Connect(context.Background(), e.dsn("postgres"))
			if err != nil {
				continue
			}
			for i := 0; i < 50; i++ {
				if conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", src.cfg.Slot).Scan(&c) == nil {
					d := pglogrepl.LSN(durable.Load())
					if mustLSN(c) > d {
						mu.Lock()
						violations = append(violations, fmt.Sprintf("confirmed %s > durable %s", c, d))
						mu.Unlock()
					}
					n++
				}
				time.Sleep(5 * time.Millisecond)
			}
			conn.Close(context.Background())
		}
	}()
	w := startWriter(t, e.dsn("postgres"), []string{"cf"}, 200)
	time.Sleep(1500 * time.Millisecond)
	fail.Store(true)
	err, ok := r.Exited(10 * time.Second)
	w.halt()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	polls := <-polled
	if !ok || err == nil || !strings.Contains(err.Error(), "simulated disk full") {
		t.Fatalf("Run = %v, want the sink's error", err)
	}
	c, _, _ := e.slot(src.cfg.Slot)
	if d := pglogrepl.LSN(durable.Load()); mustLSN(c) > d {
		t.Fatalf("after the failure: confirmed %s > durable %s", c, d)
	}
	if len(violations) > 0 {
		t.Fatalf("%d violations in %d polls, first: %s", len(violations), polls, violations[0])
	}
	if polls < 50 || durable.Load() == 0 {
		t.Fatalf("only %d polls, durable %v", polls, pglogrepl.LSN(durable.Load()))
	}
	t.Logf("%d polls, %d writes", polls, w.ops.Load())
}

// An on-demand snapshot while Run streams: the stream catches up to the
// snapshot's point, the reconcile is read, streaming goes on; nothing lost
// or doubled.
func TestSnapshotOnDemandWhileRunning(t *testing.T) {
	tables := []string{"public.od"}
	e := newEnv(t, seedTables(3000, "od")...)
	src, _ := e.source("tables: [public.od]", "snapshot_chunk_size: 500")
	sink := capturetest.NewSink(map[string][]string{"public.od": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.od")) == 3000 })
	w := startWriter(t, e.dsn("postgres"), []string{"od"}, 3500)
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.Snapshot(ctx, sink); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	w.halt()
	converged(t, e, src, sink, tables, 20*time.Second)
	sink.NoProblems(t)
	var runs []*capture.SnapshotMark
	for _, b := range sink.Batches() {
		if b.Snapshot != nil && b.Snapshot.Begin {
			runs = append(runs, b.Snapshot)
		}
	}
	if len(runs) != 2 || runs[1].Initial || !runs[1].Reconcile {
		t.Fatalf("snapshot runs: %+v", runs)
	}
}

// Snapshot without a running Run reads a reconcile and moves the stream to
// its consistent point; Run goes on from there.
func TestSnapshotStandalone(t *testing.T) {
	e := newEnv(t, seedTables(50, "sa")...)
	src, _ := e.source("tables: [public.sa]")
	sink := capturetest.NewSink(map[string][]string{"public.sa": {"id"}})
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.sa")) == 50 })
	r.Stop()
	e.exec("DELETE FROM sa WHERE id < 5")
	if err := src.Snapshot(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	if got := len(sink.Rows("public.sa")); got != 45 {
		t.Fatalf("%d rows after the reconcile, want 45", got)
	}
	e.exec("DELETE FROM sa WHERE id < 10")
	capturetest.Start(t, src, sink, sink.Checkpoint())
	converged(t, e, src, sink, []string{"public.sa"}, 20*time.Second)
	sink.NoProblems(t)
}

// countSink counts and forgets: for memory bounds and benchmarks.
type countSink struct {
	changes atomic.Int64
	cp      atomic.Value
}

func (s *countSink) count() int64 { return s.changes.Load() }

func (s *countSink) Apply(_ context.Context, b capture.Batch) error {
	s.changes.Add(int64(len(b.Changes)))
	if b.Checkpoint != nil {
		s.cp.Store(b.Checkpoint)
	}
	return nil
}

// A 100,000-row transaction streams through in bounded memory.
func TestLargeTransactionBoundedHeap(t *testing.T) {
	e := newEnv(t, "CREATE TABLE h (id int PRIMARY KEY, a text, b text, c numeric, d timestamptz)")
	src, _ := e.source("tables: [public.h]")
	sink := &countSink{}
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "streaming", func() bool { return sink.cp.Load() != nil })
	peak := heapSampler(t)
	e.exec(`INSERT INTO h SELECT i, md5(i::text) || md5((i+1)::text), repeat('x', 100), i * 1.5, now() FROM generate_series(1, 100000) i`)
	capturetest.WaitFor(t, 60*time.Second, "100000 changes", func() bool { return sink.changes.Load() == 100000 })
	r.Stop()
	p := peak()
	t.Logf("peak heap in use while streaming 100k rows: %.1f MiB", float64(p)/(1<<20))
	if p > 64<<20 {
		t.Fatalf("peak heap %d MiB, want under 64 MiB", p>>20)
	}
}

// heapSampler samples the heap until the returned function is called and
// returns the peak.
func heapSampler(t testing.TB) func() uint64 {
	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return func() uint64 {
		close(stop)
		<-done
		return peak.Load()
	}
}

// A TRUNCATE between a crash mid-snapshot and the resume: skipped for a
// table the new segment read entirely, reconciled for the table it read in
// part.
func TestTruncateInsideResumedSnapshot(t *testing.T) {
	tables := []string{"public.t1", "public.t2", "public.t3"}
	e := newEnv(t, seedTables(1000, "t1", "t2", "t3")...)
	lines := []string{"tables: [public.t1, public.t2, public.t3]", "snapshot_chunk_size: 100"}
	src, _ := e.source(lines...)
	sink := capturetest.NewSink(map[string][]string{"public.t1": {"id"}, "public.t2": {"id"}, "public.t3": {"id"}})
	sink.FailAt(15) // inside t2
	r := capturetest.Start(t, src, sink, nil)
	if err, ok := r.Exited(30 * time.Second); !ok || err == nil {
		t.Fatalf("Run = %v, want the simulated crash", err)
	}
	e.exec("TRUNCATE t2, t3", "INSERT INTO t2 SELECT i, i FROM generate_series(5000, 5009) i",
		"INSERT INTO t3 SELECT i, i FROM generate_series(5000, 5009) i", "UPDATE t1 SET v = -v WHERE id < 10")
	src2, log := e.source(lines...)
	capturetest.Start(t, src2, sink, sink.Checkpoint())
	converged(t, e, src2, sink, tables, 20*time.Second)
	if !log.Has("a reconcile snapshot follows") {
		t.Error("the partial truncate did not ask for a reconcile")
	}
}

// The server invalidates the slot of a stopped agent that held back more
// WAL than max_slot_wal_keep_size: a gap, handled like a dropped slot.
func TestSlotInvalidatedWhileDown(t *testing.T) {
	p := testenv.NewPostgres(t, testenv.PostgresOptions{Settings: map[string]string{"max_slot_wal_keep_size": "1MB", "max_wal_size": "64MB"}})
	e := newEnvOn(t, p, append(seedTables(10, "inv"), "CREATE TABLE filler (x text)")...)
	src, _ := e.source("tables: [public.inv]")
	sink := capturetest.NewSink(map[string][]string{"public.inv": {"id"}})
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.inv")) == 10 })
	r.Stop()
	e.waitInactive(src.cfg.Slot)
	n := len(sink.Batches())
	e.exec("DELETE FROM inv WHERE id = 1")
	for i := 0; i < 4; i++ {
		e.exec("INSERT INTO filler SELECT repeat(md5(i::text), 30) FROM generate_series(1, 10000) i", "SELECT pg_switch_wal()")
	}
	e.exec("CHECKPOINT")
	var status string
	if err := e.conn.QueryRow(context.Background(), "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", src.cfg.Slot).Scan(&status); err != nil || status != "lost" {
		t.Fatalf("wal_status = %q (%v), want lost", status, err)
	}
	src2, _ := e.source("tables: [public.inv]")
	capturetest.Start(t, src2, sink, sink.Checkpoint())
	converged(t, e, src2, sink, []string{"public.inv"}, 20*time.Second)
	if b := sink.Batches()[n]; !strings.Contains(b.EpochBreak, "invalidated") || b.Snapshot == nil || b.Snapshot.Initial {
		t.Fatalf("first batch after the invalidation: epoch %q snapshot %+v", b.EpochBreak, b.Snapshot)
	}
}

// A table added to the configuration gets an initial load of its own; the
// stream of the other tables goes on from its checkpoint.
func TestTableAddedLater(t *testing.T) {
	e := newEnv(t, seedTables(20, "first", "second")...)
	src, _ := e.source("tables: [public.first]")
	sink := capturetest.NewSink(map[string][]string{"public.first": {"id"}, "public.second": {"id"}})
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.first")) == 20 })
	r.Stop()
	n := len(sink.Batches())
	e.exec("DELETE FROM first WHERE id < 5", "DELETE FROM second WHERE id < 3")
	src2, _ := e.source("tables: [public.first, public.second]")
	capturetest.Start(t, src2, sink, sink.Checkpoint())
	w := startWriter(t, e.dsn("postgres"), []string{"first", "second"}, 40)
	time.Sleep(500 * time.Millisecond)
	w.halt()
	converged(t, e, src2, sink, []string{"public.first", "public.second"}, 20*time.Second)
	sink.NoProblems(t)
	b := sink.Batches()[n]
	if b.Snapshot == nil || !b.Snapshot.Initial || !reflect.DeepEqual(b.Snapshot.Records, []string{"public.second"}) || b.EpochBreak != "" {
		t.Fatalf("first batch after adding a table: %+v epoch %q", b.Snapshot, b.EpochBreak)
	}
}

// A checkpoint from another cluster (a restore, a replaced server) is a
// gap: the system identifier is compared at every start.
func TestOtherSystemIdentifier(t *testing.T) {
	e := newEnv(t, seedTables(10, "sid")...)
	src, _ := e.source("tables: [public.sid]")
	sink := capturetest.NewSink(map[string][]string{"public.sid": {"id"}})
	r := capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "snapshot", func() bool { return len(sink.Rows("public.sid")) == 10 })
	r.Stop()
	e.waitInactive(src.cfg.Slot)
	cp, _ := decodeCheckpoint(sink.Checkpoint())
	cp.SystemID = "7000000000000000001"
	n := len(sink.Batches())
	e.exec("UPDATE sid SET v = -1 WHERE id = 3")
	src2, _ := e.source("tables: [public.sid]")
	capturetest.Start(t, src2, sink, cp.encode())
	converged(t, e, src2, sink, []string{"public.sid"}, 20*time.Second)
	if b := sink.Batches()[n]; !strings.Contains(b.EpochBreak, "system identifier") || b.Snapshot == nil || b.Snapshot.Initial {
		t.Fatalf("first batch: epoch %q snapshot %+v", b.EpochBreak, b.Snapshot)
	}
}
