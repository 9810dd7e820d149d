package mysql

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/capturetest"
)

// binlogFixture is one binlog of inserts, updates and deletes on a table,
// between the GTID positions From and To.
type binlogFixture struct {
	e        *env
	table    string
	from, to string
	changes  int
}

var (
	fixOnce sync.Once
	fix     *binlogFixture
)

// benchRows is MY_BENCH_ROWS (default 100,000 inserts; half as many
// updates and a quarter as many deletes follow).
func benchRows() int {
	if v, err := strconv.Atoi(os.Getenv("MY_BENCH_ROWS")); err == nil && v > 0 {
		return v
	}
	return 100_000
}

func getFixture(b *testing.B) *binlogFixture {
	fixOnce.Do(func() {
		n := benchRows()
		e := newEnv(nopTB{b}, "CREATE TABLE t (id int PRIMARY KEY, name varchar(40), n int, amount decimal(12,2), at datetime(6))")
		rows, err := query(e.conn, "SELECT @@GLOBAL.gtid_binlog_pos")
		if err != nil {
			b.Fatal(err)
		}
		f := &binlogFixture{e: e, table: e.table("t"), from: str(rows[0][0])}
		const tx = 1000
		for i := 1; i <= n; i += tx {
			e.exec(fmt.Sprintf("INSERT INTO t SELECT seq, CONCAT('name ', seq), 0, seq / 100, NOW(6) FROM seq_%d_to_%d", i, min(i+tx-1, n)))
		}
		for i := 1; i <= n/2; i += tx {
			e.exec(fmt.Sprintf("UPDATE t SET n = n + 1 WHERE id BETWEEN %d AND %d", i, min(i+tx-1, n/2)))
		}
		for i := n/2 + 1; i <= n/2+n/4; i += tx {
			e.exec(fmt.Sprintf("DELETE FROM t WHERE id BETWEEN %d AND %d", i, min(i+tx-1, n/2+n/4)))
		}
		rows, err = query(e.conn, "SELECT @@GLOBAL.gtid_binlog_pos")
		if err != nil {
			b.Fatal(err)
		}
		f.to = str(rows[0][0])
		f.changes = n + n/2 + n/4
		fix = f
	})
	if fix == nil {
		b.Fatal("no fixture")
	}
	return fix
}

// nopTB lets newEnv serve a benchmark's shared fixture (no Cleanup: the
// package's server goes with TestMain).
type nopTB struct{ *testing.B }

func (nopTB) Cleanup(func()) {}

// decodeOnly reads the fixture's binlog with a bare BinlogSyncer, decoding
// every row event and touching every value: the ceiling for the source.
func decodeOnly(b *testing.B, f *binlogFixture) (int, time.Duration) {
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: 1<<30 + 7, Flavor: gomysql.MariaDBFlavor, Host: "127.0.0.1", Port: uint16(f.e.m.Port), User: "root",
		TimestampStringLocation: time.UTC, DisableRetrySync: true, EventCacheCount: 1024,
		Logger: slog.New(slog.DiscardHandler),
	})
	defer syncer.Close()
	set, _ := gomysql.ParseMariadbGTIDSet(f.from)
	start := time.Now()
	bs, err := syncer.StartSyncGTID(set)
	if err != nil {
		b.Fatal(err)
	}
	to := mustPos(f.to)
	cur := mustPos(f.from)
	rows := 0
	for done := false; !done; {
		ev, err := bs.GetEvent(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		switch e := ev.Event.(type) {
		case *replication.MariadbGTIDEvent:
			cur[e.GTID.DomainID] = gtid{e.GTID.DomainID, e.GTID.ServerID, e.GTID.SequenceNumber}
		case *replication.XIDEvent:
			done = cur.covers(to)
		case *replication.RowsEvent:
			step := 1
			if ev.Header.EventType == replication.UPDATE_ROWS_EVENTv1 {
				step = 2
			}
			for _, r := range e.Rows {
				for range r {
				}
			}
			rows += len(e.Rows) / step
		}
	}
	return rows, time.Since(start)
}

// fileSink writes each change as a JSON line and syncs the file per batch:
// the source into a durable file.
type fileSink struct {
	f   *os.File
	w   *bufio.Writer
	n   int
	end pos
	hit chan struct{}
}

func (s *fileSink) Apply(_ context.Context, b capture.Batch) error {
	for _, c := range b.Changes {
		line, err := json.Marshal(map[string]any{"record": c.Record, "op": c.Op.String(), "key": c.ChangeKey, "values": c.Values, "at": c.ChangedAt})
		if err != nil {
			return err
		}
		s.w.Write(line)
		s.w.WriteByte('\n')
	}
	s.n += len(b.Changes)
	if err := s.w.Flush(); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	if cp, err := decodeCheckpoint(b.Checkpoint); err == nil && cp.GTID != "" && mustPos(cp.GTID).covers(s.end) {
		select {
		case <-s.hit:
		default:
			close(s.hit)
		}
	}
	return nil
}

func sourceToFile(b *testing.B, f *binlogFixture) (int, time.Duration) {
	src, _ := f.e.source("tables: [" + f.table + "]")
	path := filepath.Join(b.TempDir(), "events.jsonl")
	file, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer file.Close()
	sink := &fileSink{f: file, w: bufio.NewWriterSize(file, 1<<20), end: mustPos(f.to), hit: make(chan struct{})}
	cp := checkpoint{Server: "", GTID: f.from, Captured: []string{f.table}}
	rows, err := query(f.e.conn, "SELECT @@GLOBAL.server_id, @@GLOBAL.gtid_domain_id")
	if err != nil {
		b.Fatal(err)
	}
	cp.Server = "mariadb:server_id=" + str(rows[0][0]) + ",domain=" + str(rows[0][1])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, cp.encode(), sink) }()
	select {
	case <-sink.hit:
	case err := <-errc:
		b.Fatalf("Run ended: %v", err)
	case <-time.After(10 * time.Minute):
		b.Fatal("timed out")
	}
	took := time.Since(start)
	cancel()
	<-errc
	return sink.n, took
}

// BenchmarkBinlog reads one binlog of N inserts, N/2 updates and N/4
// deletes (a) with a bare go-mysql BinlogSyncer that only decodes (the
// baseline) and (b) with the source into a JSON Lines file synced per
// batch, and reports both rates, their ratio and the peak RSS.
func BenchmarkBinlog(b *testing.B) {
	f := getFixture(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rawN, rawT := decodeOnly(b, f)
		srcN, srcT := sourceToFile(b, f)
		if rawN != f.changes || srcN != f.changes {
			b.Fatalf("decoded %d, delivered %d, want %d changes", rawN, srcN, f.changes)
		}
		raw := float64(rawN) / rawT.Seconds()
		agent := float64(srcN) / srcT.Seconds()
		b.ReportMetric(raw, "raw-events/s")
		b.ReportMetric(agent, "source-events/s")
		b.ReportMetric(agent/raw, "ratio")
		b.ReportMetric(capturetest.PeakRSS(), "peak-RSS-MiB")
	}
}
