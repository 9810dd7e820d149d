package postgres

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/state"
	"github.com/os2sandbox/connector/testenv"
)

// Benchmarks run with -benchtime 1x (make bench): each does its workload
// once and reports figures. peak-RSS is the test process's high-water
// mark so far (the agent benchmarks, last, measure the agent process: the
// Kafka one runs its broker in this process). PG_BENCH_ROWS sets the insert count (default
// 1,000,000; updates are a fifth of it, deletes a twentieth).

func benchRows() int {
	if v, err := strconv.Atoi(os.Getenv("PG_BENCH_ROWS")); err == nil && v > 0 {
		return v
	}
	return 1_000_000
}

// walFixture is one WAL of inserts, updates and deletes (transactions of
// 1,000 rows) that two slots created before it can each replay.
type walFixture struct {
	e        *env
	slots    map[string]pglogrepl.LSN // slot → its consistent point
	end      pglogrepl.LSN
	events   int
	prepared time.Duration
}

var (
	fixtureOnce sync.Once
	fixture     *walFixture
)

func getFixture(b *testing.B) *walFixture {
	fixtureOnce.Do(func() {
		n := benchRows()
		// No autovacuum on the fixture: vacuuming its 250,000 dead rows
		// later, while another benchmark measures latency, wrote WAL every
		// walsender on the server had to read through (p99 117 ms instead
		// of 7 ms).
		e := newEnv(nopTB{b}, `CREATE TABLE w (id int PRIMARY KEY, name text, email text, dept int, salary numeric(12,2), updated timestamptz)
			WITH (autovacuum_enabled = false)`)
		f := &walFixture{e: e, slots: map[string]pglogrepl.LSN{}}
		ctx := context.Background()
		e.exec("CREATE PUBLICATION wpub FOR TABLE w")
		slots := []string{"bench_agent", "bench_kafka", "bench_relay", "bench_statelog"}
		for i := 1; i <= rounds; i++ {
			slots = append(slots, fmt.Sprintf("bench_decode_%d", i), fmt.Sprintf("bench_source_%d", i))
		}
		for _, slot := range slots {
			var lsn string
			if err := e.conn.QueryRow(ctx, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", slot).Scan(&lsn); err != nil {
				b.Fatal(err)
			}
			f.slots[slot] = mustLSN(lsn)
		}
		start := time.Now()
		const tx = 1000
		for i := 0; i < n; i += tx {
			e.exec(fmt.Sprintf(`INSERT INTO w SELECT i, 'name ' || i, 'user' || i || '@example.org', i %% 50, i * 1.25, now()
				FROM generate_series(%d, %d) i`, i, min(i+tx, n)-1))
		}
		for i := 0; i < n/5; i += tx {
			e.exec(fmt.Sprintf("UPDATE w SET salary = salary + 1, updated = now() WHERE id BETWEEN %d AND %d", i, min(i+tx, n/5)-1))
		}
		for i := n - n/20; i < n; i += tx {
			e.exec(fmt.Sprintf("DELETE FROM w WHERE id BETWEEN %d AND %d", i, min(i+tx, n)-1))
		}
		// An end marker: consumers stop at it instead of waiting for a
		// keepalive.
		var end string
		if err := e.conn.QueryRow(ctx, "SELECT pg_logical_emit_message(false, 'bench', 'end')::text").Scan(&end); err != nil {
			b.Fatal(err)
		}
		f.end, f.events, f.prepared = mustLSN(end), n+n/5+n/20, time.Since(start)
		e.exec("CHECKPOINT") // the fixture's dirty pages written now, not during a measurement
		fixture = f
	})
	if fixture == nil {
		b.Fatal("fixture failed")
	}
	fixture.e.t = nopTB{b}
	return fixture
}

// nopTB lets the fixture outlive the benchmark that created it (its
// cleanups run at the end of the process instead).
type nopTB struct{ testing.TB }

func (nopTB) Cleanup(func()) {}

// decodeOnly replays the slot with pglogrepl and nothing else: parse every
// pgoutput message, acknowledge what was received. The raw baseline.
func decodeOnly(b *testing.B, f *walFixture, slot string) (events int, took time.Duration) {
	ctx := context.Background()
	cfg, err := pgconn.ParseConfig(f.e.dsn("postgres") + "&replication=database")
	if err != nil {
		b.Fatal(err)
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	start := time.Now()
	if err := pglogrepl.StartReplication(ctx, conn, slot, f.slots[slot], pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '2'", "publication_names 'wpub'", "messages 'true'"}}); err != nil {
		b.Fatal(err)
	}
	var received pglogrepl.LSN
	lastAck := time.Now()
	inTx := false
	for {
		if time.Since(lastAck) > time.Second {
			pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: received,
				WALFlushPosition: received, WALApplyPosition: received, ReplyRequested: true})
			lastAck = time.Now()
		}
		conn.Conn().SetReadDeadline(time.Now().Add(time.Second))
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			b.Fatal(err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			b.Fatalf("unexpected %T", msg)
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, _ := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if !inTx && pkm.ServerWALEnd >= f.end {
				return events, time.Since(start)
			}
			if pkm.ReplyRequested {
				lastAck = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				b.Fatal(err)
			}
			received = xld.WALStart + pglogrepl.LSN(len(xld.WALData))
			m, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				b.Fatal(err)
			}
			switch m := m.(type) {
			case *pglogrepl.BeginMessage:
				if m.FinalLSN >= f.end {
					return events, time.Since(start)
				}
				inTx = true
			case *pglogrepl.CommitMessage:
				inTx = false
			case *pglogrepl.LogicalDecodingMessage:
				if m.LSN >= f.end {
					return events, time.Since(start)
				}
			case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage:
				events++
				if os.Getenv("PGBENCH_TRACE") != "" && events%25000 == 1 {
					fmt.Fprintln(os.Stderr, "event", events, time.Since(start))
				}
			}
		}
	}
}

// rounds alternates decode-only and source runs on their own slots of the
// same WAL: the machine's load changes between runs, so each consumer's
// best round is compared.
const rounds = 3

type consumerResult struct {
	rate     float64 // events per wall-clock second
	cpuUS    float64 // process CPU (user+system) µs per event
	serverUS float64 // the PostgreSQL server's CPU µs per event (its walsender, mostly)
	events   int
}

// ceiling is the rate at which the consumer and the server together would
// use every core of the machine: what no amount of overlap could beat
// without spending less CPU per event.
func (r consumerResult) ceiling() float64 {
	return float64(runtime.NumCPU()) * 1e6 / (r.cpuUS + r.serverUS)
}

// timed measures run's rate and its process and server CPU per event;
// run returns the events it consumed and how long that took.
func timed(f *walFixture, run func() (int, time.Duration)) consumerResult {
	cpu, server := cpuTime(), serverCPU(f.e.pg.Dir)
	n, took := run()
	return result(n, took, cpuTime()-cpu, serverCPU(f.e.pg.Dir)-server)
}

// result is n events consumed in took, using cpu and the server's CPU.
func result(n int, took, cpu, server time.Duration) consumerResult {
	return consumerResult{
		rate:     float64(n) / took.Seconds(),
		cpuUS:    float64(cpu.Microseconds()) / float64(n),
		serverUS: float64(server.Microseconds()) / float64(n),
		events:   n,
	}
}

var measured struct {
	once                sync.Once
	decode, source      consumerResult
	peakHeapMiB, rssMiB float64
}

func measure(b *testing.B, f *walFixture) {
	measured.once.Do(func() {
		for i := 1; i <= rounds; i++ {
			r := timed(f, func() (int, time.Duration) { return decodeOnly(b, f, fmt.Sprintf("bench_decode_%d", i)) })
			if r.events != f.events {
				b.Fatalf("decode-only saw %d events, want %d", r.events, f.events)
			}
			if r.rate > measured.decode.rate {
				measured.decode = r
			}
			peak := heapSampler(b)
			r = timed(f, func() (int, time.Duration) { return sourceRun(b, f, fmt.Sprintf("bench_source_%d", i), nil) })
			measured.peakHeapMiB = max(measured.peakHeapMiB, float64(peak())/(1<<20))
			if r.rate > measured.source.rate {
				measured.source = r
			}
		}
		measured.rssMiB = capturetest.PeakRSS()
	})
}

// BenchmarkDecodeOnly: the raw pglogrepl consumer on the fixture WAL.
func BenchmarkDecodeOnly(b *testing.B) {
	f := getFixture(b)
	for range b.N {
		measure(b, f)
	}
	reportCPU(b, measured.decode)
	b.ReportMetric(float64(f.events), "events")
}

// BenchmarkSourceToDiscardSink: the source (values decoded to JSON-friendly
// Go values, batches, checkpoints, acknowledgement) on the same WAL into a
// sink that only counts; ratio = its rate / the decode-only rate.
func BenchmarkSourceToDiscardSink(b *testing.B) {
	f := getFixture(b)
	for range b.N {
		measure(b, f)
	}
	reportCPU(b, measured.source)
	b.ReportMetric(measured.source.rate/measured.decode.rate, "ratio")
	b.ReportMetric(measured.peakHeapMiB, "peak-heap-MiB")
	b.ReportMetric(measured.rssMiB, "peak-RSS-MiB")
}

// countingSink is a sink that says how many changes it was given.
type countingSink interface {
	capture.Sink
	count() int64
}

// sourceRun replays the slot through the source with Once into sink (a
// countSink if nil).
func sourceRun(b *testing.B, f *walFixture, slot string, sink countingSink) (int, time.Duration) {
	ctx := context.Background()
	var sys, db string
	if err := f.e.conn.QueryRow(ctx, "SELECT system_identifier::text, current_database() FROM pg_control_system()").Scan(&sys, &db); err != nil {
		b.Fatal(err)
	}
	src, _ := f.e.source("tables: [public.w]", "publication: wpub", "slot: "+slot, "create_publication: false", "create_slot: false")
	src.opts.Once = true
	// A checkpoint at the slot's start, so the source replays the whole
	// WAL instead of taking a snapshot.
	c, err := src.connectReplication(ctx)
	if err != nil {
		b.Fatal(err)
	}
	ident, err := pglogrepl.IdentifySystem(ctx, c)
	c.Close(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cp := checkpoint{SystemID: sys, Database: db, Slot: slot, Timeline: ident.Timeline, LSN: f.slots[slot].String(), Captured: []string{"public.w"}}
	if sink == nil {
		sink = &countSink{}
	}
	start := time.Now()
	if err := src.Run(ctx, cp.encode(), sink); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	if got := sink.count(); got != int64(f.events) {
		b.Fatalf("source delivered %d events, want %d", got, f.events)
	}
	return f.events, took
}

// relaySink is what a stateless relay with durability does: each change
// as a JSON line (what the WAL gives: no before image, no history), the
// batch fsynced before the source is acknowledged.
type relaySink struct {
	f *os.File
	w *bufio.Writer
	n int64
}

func (s *relaySink) Apply(_ context.Context, b capture.Batch) error {
	for _, c := range b.Changes {
		line, err := relayLine(c)
		if err != nil {
			return err
		}
		s.w.Write(line)
		s.w.WriteByte('\n')
	}
	s.n += int64(len(b.Changes))
	if err := s.w.Flush(); err != nil {
		return err
	}
	return s.f.Sync()
}

func (s *relaySink) count() int64 { return s.n }

// relayLine is a change as a relay would write it: what the WAL gives, no
// before image, no history.
func relayLine(c capture.Change) ([]byte, error) {
	return json.Marshal(map[string]any{"record": c.Record, "op": c.Op.String(), "position": c.Position,
		"transactionId": c.TransactionID, "values": c.Values})
}

var relay struct {
	once sync.Once
	consumerResult
}

// measureRelay runs the source into a relaySink once: a second baseline,
// for how much of the agent's cost is its state and history rather than
// durability as such.
func measureRelay(b *testing.B, f *walFixture) float64 {
	relay.once.Do(func() {
		file, err := os.Create(filepath.Join(b.TempDir(), "relay.jsonl"))
		if err != nil {
			b.Fatal(err)
		}
		defer file.Close()
		sink := &relaySink{f: file, w: bufio.NewWriterSize(file, 1<<20)}
		relay.consumerResult = timed(f, func() (int, time.Duration) { return sourceRun(b, f, "bench_relay", sink) })
	})
	return relay.rate
}

// BenchmarkSourceToDurableFile: the source into a relaySink, the cost of
// durability without state; ratio = its rate / the decode-only rate.
func BenchmarkSourceToDurableFile(b *testing.B) {
	f := getFixture(b)
	measure(b, f)
	for range b.N {
		measureRelay(b, f)
	}
	reportCPU(b, relay.consumerResult)
	b.ReportMetric(relay.rate/measured.decode.rate, "ratio")
}

// stateLogSink is the least a consumer that keeps a bbolt log does: each
// change as a JSON line appended to the state file's log, one write
// transaction per batch with the checkpoint, fsynced before the source is
// acknowledged. No images, no versions, no diff.
type stateLogSink struct {
	db  *state.DB
	seq uint64
	n   int64
}

func (s *stateLogSink) Apply(_ context.Context, b capture.Batch) error {
	err := s.db.Update(func(tx *state.Tx) error {
		for _, c := range b.Changes {
			line, err := relayLine(c)
			if err != nil {
				return err
			}
			s.seq++
			if err := tx.Put(state.Log, state.U64(s.seq), line); err != nil {
				return err
			}
		}
		return tx.Put(state.Checkpoints, []byte("pg"), b.Checkpoint)
	})
	if err == nil {
		s.n += int64(len(b.Changes))
	}
	return err
}

func (s *stateLogSink) count() int64 { return s.n }

// BenchmarkSourceToStateLog: the source into a stateLogSink (a state file
// with our page size); ratio = its rate / the decode-only rate. With the
// relay, it shows what the single bbolt transaction per batch costs by
// itself, before any history.
func BenchmarkSourceToStateLog(b *testing.B) {
	f := getFixture(b)
	measure(b, f)
	for range b.N {
		db, err := state.Open(filepath.Join(b.TempDir(), "state.db"), state.Options{})
		if err != nil {
			b.Fatal(err)
		}
		r := timed(f, func() (int, time.Duration) { return sourceRun(b, f, "bench_statelog", &stateLogSink{db: db}) })
		db.Close()
		reportCPU(b, r)
		b.ReportMetric(r.rate/measured.decode.rate, "ratio")
	}
}

// reportCPU reports a consumer's rate, CPU per event (its own and the
// server's) and its CPU ceiling on this machine.
func reportCPU(b *testing.B, r consumerResult) {
	b.ReportMetric(r.rate, "events/s")
	b.ReportMetric(r.cpuUS, "cpu-µs/event")
	b.ReportMetric(r.serverUS, "server-cpu-µs/event")
	b.ReportMetric(r.ceiling(), "cpu-ceiling-events/s")
}

// serverCPU is the CPU time the PostgreSQL cluster in dir has used: its
// processes' and, through the postmaster's children's times, those of
// backends that have exited (a walsender ends with its connection).
func serverCPU(dir string) time.Duration {
	pidFile, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	postmaster := strings.SplitN(string(pidFile), "\n", 2)[0]
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: state ppid … utime
		// stime cutime cstime are the 2nd and 12th–15th.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(data[i+1:]))
		pid := filepath.Base(filepath.Dir(p))
		if len(fields) < 15 || (pid != postmaster && fields[1] != postmaster) {
			continue
		}
		times := fields[11:13] // utime, stime
		if pid == postmaster {
			times = fields[11:15] // and its exited children's
		}
		for _, t := range times {
			v, _ := strconv.ParseInt(t, 10, 64)
			ticks += v
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return rusageCPU(&ru)
}

// rusageCPU is the user and system time in ru.
func rusageCPU(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLargeTransaction1M: one transaction of 1,000,000 inserts
// through the source in bounded memory.
func BenchmarkLargeTransaction1M(b *testing.B) {
	for range b.N {
		e := newEnv(b, "CREATE TABLE lt (id int PRIMARY KEY, a text, b text, c numeric, d timestamptz)")
		src, _ := e.source("tables: [public.lt]")
		sink := &countSink{}
		r := capturetest.Start(b, src, sink, nil)
		capturetest.WaitFor(b, 20*time.Second, "streaming", func() bool { return sink.cp.Load() != nil })
		peak := heapSampler(b)
		e.exec(`INSERT INTO lt SELECT i, md5(i::text) || md5((i+1)::text), repeat('x', 100), i * 1.5, now() FROM generate_series(1, 1000000) i`)
		committed := time.Now()
		capturetest.WaitFor(b, 10*time.Minute, "1,000,000 changes", func() bool { return sink.changes.Load() == 1_000_000 })
		took := time.Since(committed)
		r.Stop()
		b.ReportMetric(1e6/took.Seconds(), "events/s")
		b.ReportMetric(float64(peak())/(1<<20), "peak-heap-MiB")
		b.ReportMetric(capturetest.PeakRSS(), "peak-RSS-MiB")
	}
}

// BenchmarkCommitToApplyLatency: at a steady 5,000 changes/s (50
// transactions of 100 rows per second), the time from commit to the batch
// reaching the sink.
func BenchmarkCommitToApplyLatency(b *testing.B) {
	for range b.N {
		e := newEnv(b, "CREATE TABLE lat (id int PRIMARY KEY, v text)")
		src, _ := e.source("tables: [public.lat]")
		var mu sync.Mutex
		var lat []time.Duration
		var count atomic.Int64
		sink := sinkFunc(func(_ context.Context, bt capture.Batch) error {
			now := time.Now()
			mu.Lock()
			for _, c := range bt.Changes {
				lat = append(lat, now.Sub(c.ChangedAt))
			}
			mu.Unlock()
			count.Add(int64(len(bt.Changes)))
			return nil
		})
		r := capturetest.Start(b, src, sink, nil)
		// The test cluster runs with synchronous_commit = off, which leaves
		// commits unflushed (and undecodable) for up to wal_writer_delay.
		e.exec("SET synchronous_commit = on")
		time.Sleep(2 * time.Second)
		const seconds, perTx, txPerSec = 10, 100, 50
		tick := time.NewTicker(time.Second / txPerSec)
		id := 0
		for i := 0; i < seconds*txPerSec; i++ {
			<-tick.C
			e.exec(fmt.Sprintf("INSERT INTO lat SELECT i, 'v' || i FROM generate_series(%d, %d) i", id, id+perTx-1))
			id += perTx
		}
		tick.Stop()
		capturetest.WaitFor(b, 30*time.Second, "all changes", func() bool { return count.Load() == int64(id) })
		r.Stop()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkAgentToFileReceiver: `connector run --once` (the real engine
// with a durable state file, and a file receiver) on the same WAL; ratio =
// its rate / the decode-only rate. The events are counted in the
// receiver's file.
func BenchmarkAgentToFileReceiver(b *testing.B) {
	benchAgent(b, "bench_agent", func() string { return "type: file\n    path: ./events.jsonl" },
		func(dir string) (int, error) { return countLines(filepath.Join(dir, "events.jsonl")) })
}

// benchAgent runs `connector run --once` from a checkpoint seeded at
// slot's start, into the receiver whose settings receiver returns; count
// says how many distinct events arrived (given the agent's directory). It
// reports rate, ratio and the agent's peak RSS. PG_BENCH_PROFILE=file
// writes a CPU profile of the agent.
func benchAgent(b *testing.B, slot string, receiver func() string, count func(dir string) (int, error)) {
	f := getFixture(b)
	measure(b, f)
	bin := capturetest.Binary(b)
	for range b.N {
		dir := b.TempDir()
		capturetest.WriteConfig(b, dir, benchAgentConfig(f, slot, receiver()))
		// A stored checkpoint at the slot's start: the agent replays the
		// WAL instead of taking a snapshot.
		seedCheckpoint(b, f, dir, slot)
		args := []string{"run", "--once", "-c", "connector.yaml"}
		if prof := os.Getenv("PG_BENCH_PROFILE"); prof != "" {
			args = append(args, "--cpu-profile", prof)
		}
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		server := serverCPU(f.e.pg.Dir)
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("connector run --once: %v\n%s", err, out.String())
		}
		took := time.Since(start)
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		n, err := count(dir)
		if err != nil {
			b.Fatal(err)
		}
		if n != f.events {
			b.Fatalf("the receiver got %d distinct events, want %d\n%s", n, f.events, out.String())
		}
		r := result(f.events, took, rusageCPU(ru), serverCPU(f.e.pg.Dir)-server)
		reportCPU(b, r)
		b.ReportMetric(r.rate/measured.decode.rate, "ratio")
		b.ReportMetric(r.rate/measureRelay(b, f), "ratio-to-durable-relay")
		b.ReportMetric(float64(ru.Maxrss)/1024, "agent-peak-RSS-MiB")
	}
}

// BenchmarkAgentLatency: commit-to-receiver latency at a steady 5,000
// changes/s through `connector run` (the real engine, state file and file
// receiver). A writer commits a transaction of 50 inserts every 10 ms for
// 20 s (PG_BENCH_LATENCY_SECONDS) and records when each commit returned; a
// tailer follows the receiver's file and records when each row's event
// appeared. Latency = appearance - commit, per row.
// PG_BENCH_LATENCY_DUMP=file writes each transaction's commit time and
// slowest latency there.
func BenchmarkAgentLatency(b *testing.B) {
	seconds := 20
	if v, err := strconv.Atoi(os.Getenv("PG_BENCH_LATENCY_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	const perTx, interval = 50, 10 * time.Millisecond
	bin := capturetest.Binary(b)
	for range b.N {
		e := newEnv(b, "CREATE TABLE lat (id int PRIMARY KEY, v text)")
		dir := b.TempDir()
		cfg := fileAgentConfig(e, "public.lat", "Row", "{v: v}", "")
		capturetest.WriteConfig(b, dir, cfg)
		cmd := exec.Command(bin, "run", "-c", "connector.yaml")
		cmd.Dir = dir
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stopAgent := func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		capturetest.WaitFor(b, 30*time.Second, "the agent streaming", func() bool {
			_, active, _ := e.slot("connector_pg")
			return active
		})

		total := seconds * int(time.Second/interval) * perTx
		arrived := make([]time.Time, total)
		var seen atomic.Int64
		tailCtx, stopTail := context.WithCancel(context.Background())
		tailDone := make(chan error, 1)
		go func() { tailDone <- tailEvents(tailCtx, filepath.Join(dir, "events.jsonl"), arrived, &seen) }()

		// The writer: synchronous_commit on, so that a commit is decodable
		// when it returns (the cluster runs with it off).
		ctx := context.Background()
		c, err := pgx.Connect(ctx, e.dsn("postgres"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Exec(ctx, "SET synchronous_commit = on"); err != nil {
			b.Fatal(err)
		}
		committed := make([]time.Time, total/perTx)
		begin := time.Now()
		for tx := range committed {
			if d := time.Until(begin.Add(time.Duration(tx) * interval)); d > 0 {
				time.Sleep(d)
			}
			if _, err := c.Exec(ctx, "INSERT INTO lat SELECT i, 'v' || i FROM generate_series($1::int, $2::int) i", tx*perTx, tx*perTx+perTx-1); err != nil {
				b.Fatal(err)
			}
			committed[tx] = time.Now()
		}
		wrote := time.Since(begin)
		c.Close(ctx)
		deadline := time.Now().Add(60 * time.Second)
		for seen.Load() < int64(total) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		stopTail()
		if err := <-tailDone; err != nil {
			b.Fatal(err)
		}
		stopAgent()
		if n := seen.Load(); n < int64(total) {
			b.Fatalf("%d of %d events reached the receiver\n%s", n, total, logs.String())
		}
		lat := make([]time.Duration, total)
		for id := range arrived {
			lat[id] = max(arrived[id].Sub(committed[id/perTx]), 0)
		}
		if path := os.Getenv("PG_BENCH_LATENCY_DUMP"); path != "" {
			// Per transaction: commit time since the start and its slowest
			// row's latency (ms), to see when the slow ones happen.
			var dump bytes.Buffer
			for tx, at := range committed {
				fmt.Fprintf(&dump, "%d %.1f %.1f\n", tx, float64(at.Sub(begin).Microseconds())/1000,
					float64(slices.Max(lat[tx*perTx:(tx+1)*perTx]).Microseconds())/1000)
			}
			if err := os.WriteFile(path, dump.Bytes(), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		b.ReportMetric(ms(lat[total/2]), "p50-ms")
		b.ReportMetric(ms(lat[total*9/10]), "p90-ms")
		b.ReportMetric(ms(lat[total*99/100]), "p99-ms")
		b.ReportMetric(ms(lat[total-1]), "max-ms")
		b.ReportMetric(float64(total)/wrote.Seconds(), "written-rows/s")
		b.ReportMetric(float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)/1024, "agent-peak-RSS-MiB")
	}
}

// tailEvents follows a JSON Lines file of events as it grows and records
// when the first event of each object (the row id) appeared.
func tailEvents(ctx context.Context, path string, arrived []time.Time, seen *atomic.Int64) error {
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(path); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Millisecond):
			}
		}
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var partial []byte
	var ev struct {
		Object struct{ ID string } `json:"object"`
	}
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			partial = append(partial, line...)
			continue
		}
		if err == io.EOF {
			partial = append(partial, line...)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(500 * time.Microsecond):
			}
			continue
		}
		if err != nil {
			return err
		}
		now := time.Now()
		if len(partial) > 0 {
			line = append(partial, line...)
			partial = nil
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("events.jsonl: %w: %s", err, line)
		}
		id, err := strconv.Atoi(ev.Object.ID)
		if err != nil || id < 0 || id >= len(arrived) {
			return fmt.Errorf("events.jsonl: unexpected object id %q", ev.Object.ID)
		}
		if arrived[id].IsZero() {
			arrived[id] = now
			seen.Add(1)
		}
	}
}

// BenchmarkAgentToKafka: `connector run --once` on the WAL fixture of
// BenchmarkAgentToFileReceiver with a kafka receiver (kfake, in this
// process, on loopback): events/s, the ratio to the decode-only rate, the
// agent's peak RSS. The events are counted by consuming the topic (distinct
// ce_id headers).
func BenchmarkAgentToKafka(b *testing.B) {
	var k *testenv.Kafka
	benchAgent(b, "bench_kafka", func() string {
		k = testenv.NewKafka(b, testenv.KafkaOptions{InMemory: true})
		return "type: kafka\n    brokers: [" + k.Addr + "]"
	}, func(string) (int, error) { return countKafka(k.Addr, "connector.pg.worker", getFixture(b).events) })
}

// seedCheckpoint stores a checkpoint at slot's start in dir/state.db: the
// agent replays the fixture's WAL instead of taking a snapshot.
func seedCheckpoint(b *testing.B, f *walFixture, dir, slot string) {
	ctx := context.Background()
	var sys, db string
	if err := f.e.conn.QueryRow(ctx, "SELECT system_identifier::text, current_database() FROM pg_control_system()").Scan(&sys, &db); err != nil {
		b.Fatal(err)
	}
	var tl int32
	if err := f.e.conn.QueryRow(ctx, "SELECT timeline_id FROM pg_control_checkpoint()").Scan(&tl); err != nil {
		b.Fatal(err)
	}
	cp := checkpoint{SystemID: sys, Database: db, Slot: slot, Timeline: tl, LSN: f.slots[slot].String(), Captured: []string{"public.w"}}
	st, err := state.Open(filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		b.Fatal(err)
	}
	err = st.Update(func(tx *state.Tx) error {
		return history.SaveSource(tx, "pg", history.SourceState{Checkpoint: cp.encode()})
	})
	st.Close()
	if err != nil {
		b.Fatal(err)
	}
}

// countKafka reads topic from the start until want distinct events (by
// ce_id) arrived or nothing came for 10 s.
func countKafka(addr, topic string, want int) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ids := make(map[string]struct{}, want)
	for len(ids) < want {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		if ctx.Err() != nil && fs.NumRecords() == 0 {
			break
		}
		if errs := fs.Errors(); len(errs) > 0 && !errors.Is(errs[0].Err, context.DeadlineExceeded) {
			return len(ids), fmt.Errorf("consume %s: %w", topic, errs[0].Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "ce_id" {
					ids[string(h.Value)] = struct{}{}
				}
			}
		})
	}
	return len(ids), nil
}

// benchAgentConfig is the agent's configuration for the WAL fixture:
// replay slot into one receiver (its type and keys given).
func benchAgentConfig(f *walFixture, slot, receiver string) string {
	return fmt.Sprintf(`state: ./state.db
sources:
  - name: pg
    type: postgres
    dsn: %s
    tables: [public.w]
    publication: wpub
    slot: %s
    create_publication: false
    create_slot: false
mappings:
  - type: Worker
    source: pg
    record: public.w
    id: id
    fields: {name: name, email: email, dept: dept, salary: salary, updated: updated}
    classification: internal
receivers:
  - name: out
    %s
    start: beginning
    classification: internal
`, f.e.dsn("postgres"), slot, receiver)
}

type sinkFunc func(context.Context, capture.Batch) error

func (f sinkFunc) Apply(ctx context.Context, b capture.Batch) error { return f(ctx, b) }

func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	n := 0
	for {
		m, err := f.Read(buf)
		n += bytes.Count(buf[:m], []byte("\n"))
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
