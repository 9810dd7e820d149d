package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
)

// exported is a snapshot exported by CREATE_REPLICATION_SLOT: the
// database as of the slot's consistent point. It is valid while conn runs
// no other command; once imported into a transaction, conn can go.
type exported struct {
	Name string
	LSN  pglogrepl.LSN
	conn *pgconn.PgConn
}

func (e *exported) release() {
	if e.conn != nil {
		e.conn.Close(context.Background())
		e.conn = nil
	}
}

// createSlot creates the source's slot on repl, exporting its snapshot.
func (s *Source) createSlot(ctx context.Context, repl *pgconn.PgConn) (*exported, error) {
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, s.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return nil, s.slotError("create replication slot "+s.cfg.Slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return nil, fmt.Errorf("postgres source %q: slot %s: bad consistent point %q", s.name, s.cfg.Slot, res.ConsistentPoint)
	}
	s.log.Info("created replication slot", "source", s.name, "slot", s.cfg.Slot, "consistent_point", res.ConsistentPoint)
	return &exported{Name: res.SnapshotName, LSN: lsn, conn: repl}, nil
}

// tempExport exports a fresh snapshot through a temporary slot, which the
// server drops when the connection closes. It gives the exact LSN the
// snapshot is consistent with, which pg_export_snapshot() does not.
func (s *Source) tempExport(ctx context.Context) (*exported, error) {
	repl, err := s.connectReplication(ctx)
	if err != nil {
		return nil, err
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	name := s.cfg.Slot + "_snap_" + hex.EncodeToString(rnd[:])
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, name, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		repl.Close(context.Background())
		return nil, s.slotError("create temporary replication slot "+name+" for a snapshot", err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		repl.Close(context.Background())
		return nil, fmt.Errorf("postgres source %q: bad consistent point %q", s.name, res.ConsistentPoint)
	}
	return &exported{Name: res.SnapshotName, LSN: lsn, conn: repl}, nil
}

func (s *Source) slotError(what string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "53400" {
		return fmt.Errorf("postgres source %q: %s: all replication slots are in use (a snapshot needs one more for a moment); run ALTER SYSTEM SET max_replication_slots = <more> and restart the server, or drop an unused slot: %w",
			s.name, what, err)
	}
	if isTransient(err) {
		return capture.Transient(fmt.Errorf("postgres source %q: %s: %w", s.name, what, err))
	}
	return fmt.Errorf("postgres source %q: %s: %w", s.name, what, err)
}

// snapshotRun reads a snapshot run (new or resumed) in exp and delivers
// it. base is the checkpoint the run's batches carry (with Snapshot set to
// the progress); on success it returns the checkpoint after End.
type snapshotRun struct {
	sp         *snapProgress
	begin      bool   // the first batch carries Begin (a new run)
	epochBreak string // set on the first batch
	base       checkpoint
	// catchUp: the stream has applied every transaction before exp.LSN, so
	// the stream resumes at exp.LSN (an on-demand reconcile).
	catchUp bool
}

var errRunLost = errors.New("the engine holds no staged rows of this snapshot run")

func (s *Source) readSnapshot(ctx context.Context, sink capture.Sink, exp *exported, run snapshotRun) (checkpoint, error) {
	where := fmt.Sprintf("postgres source %q", s.name)
	defer exp.release()
	c, err := s.connect(ctx)
	if err != nil {
		return checkpoint{}, err
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return checkpoint{}, fmt.Errorf("%s: begin snapshot transaction: %w", where, err)
	}
	if _, err := c.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(exp.Name)); err != nil {
		return checkpoint{}, fmt.Errorf("%s: import snapshot %s: %w", where, exp.Name, err)
	}
	exp.release() // the transaction holds the snapshot now
	sp := run.sp
	sp.Segments = append(sp.Segments, segment{LSN: exp.LSN.String(), Table: sp.Table, After: sp.After})
	kind := "initial"
	if !sp.Initial {
		kind = "reconcile"
	}
	s.log.Info("snapshot: reading tables", "source", s.name, "run", sp.ID, "kind", kind, "consistent_point", exp.LSN.String(),
		"tables", sp.Tables, "resume_table", sp.Table, "resumed", !run.begin)
	start := time.Now()
	mark := func() *capture.SnapshotMark {
		return &capture.SnapshotMark{ID: sp.ID, Records: sp.Tables, Initial: sp.Initial, Reconcile: !sp.Initial}
	}
	first := true
	apply := func(b capture.Batch) error {
		if first {
			b.Snapshot.Begin = run.begin
			b.EpochBreak = run.epochBreak
		}
		err := sink.Apply(ctx, b)
		if err != nil && first && !run.begin && errors.Is(err, capture.ErrNoRun) {
			return errRunLost
		}
		first = false
		return err
	}
	descs := map[string][]colDesc{}
	for sp.Table < len(sp.Tables) {
		name := sp.Tables[sp.Table]
		t, err := s.inspectTable(ctx, c, name)
		if err != nil {
			return checkpoint{}, err
		}
		if t == nil || len(t.Key) == 0 {
			return checkpoint{}, fmt.Errorf("%s: table %s vanished or lost its key during the snapshot", where, name)
		}
		descs[name] = describe(t)
		for {
			rows, after, err := s.readChunk(ctx, c, t, sp.After)
			if err != nil {
				return checkpoint{}, err
			}
			if len(rows) > 0 {
				sp.After = after
				sp.Rows += int64(len(rows))
			}
			done := len(rows) < s.cfg.SnapshotChunkSize
			progress := *sp
			progress.Pending = false
			if done {
				// The checkpoint points at the next table.
				progress.Table, progress.After = sp.Table+1, nil
			}
			cp := run.base
			cp.Snapshot = &progress
			b := capture.Batch{Changes: rows, TransactionID: "snapshot:" + sp.ID, Snapshot: mark(), Checkpoint: cp.encode()}
			if err := apply(b); err != nil {
				return checkpoint{}, err
			}
			if done {
				break
			}
		}
		sp.Table, sp.After = sp.Table+1, nil
	}
	if _, err := c.Exec(ctx, "COMMIT"); err != nil {
		return checkpoint{}, fmt.Errorf("%s: end snapshot transaction: %w", where, err)
	}
	// The stream resumes at base.LSN; the fences keep it from applying
	// again what the snapshot read. A run over every captured table makes
	// every change before its first segment redundant: skip them at the
	// server instead.
	done := run.base
	done.Snapshot = nil
	p := done.lsn()
	if run.catchUp {
		p = max(p, exp.LSN)
	} else if coversAll(sp.Tables, s.tables) {
		p = max(p, mustLSN(sp.Segments[0].LSN))
	}
	done.LSN = p.String()
	if done.Tx != nil && mustLSN(done.Tx.Commit) < p {
		done.Tx = nil
	}
	done.Fences = append(keepFences(done.Fences, p), fencesFor(sp, p)...)
	done.Captured = sqltable.Union(done.Captured, sp.Tables)
	done.Tables = sqltable.MergeColumns(done.Tables, descs)
	b := capture.Batch{TransactionID: "snapshot:" + sp.ID, Snapshot: mark(), Checkpoint: done.encode()}
	b.Snapshot.End = true
	if err := apply(b); err != nil {
		return checkpoint{}, err
	}
	s.log.Info("snapshot: done", "source", s.name, "run", sp.ID, "rows", sp.Rows, "took", time.Since(start).Round(time.Millisecond).String(),
		"stream_from", done.LSN, "fences", len(done.Fences))
	return done, nil
}

// readChunk reads up to SnapshotChunkSize rows after key, in key order,
// as text (the same text the stream carries).
func (s *Source) readChunk(ctx context.Context, c *pgx.Conn, t *tableInfo, after []*string) ([]capture.Change, []*string, error) {
	cols := make([]string, len(t.Columns))
	for i, col := range t.Columns {
		cols[i] = quoteIdent(col.Name)
	}
	keys := make([]string, len(t.Key))
	params := make([]string, len(t.Key))
	for i, k := range t.Key {
		keys[i] = quoteIdent(k)
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	sql := "SELECT " + strings.Join(cols, ", ") + " FROM " + quoteTable(t.Name)
	var args [][]byte
	if after != nil {
		sql += " WHERE (" + strings.Join(keys, ", ") + ") > (" + strings.Join(params, ", ") + ")"
		for _, v := range after {
			if v == nil {
				args = append(args, nil)
			} else {
				args = append(args, []byte(*v))
			}
		}
	}
	sql += " ORDER BY " + strings.Join(keys, ", ") + fmt.Sprintf(" LIMIT %d", s.cfg.SnapshotChunkSize)
	decs := make([]decodeFunc, len(t.Columns))
	for i, col := range t.Columns {
		decs[i] = s.types.decoder(ctx, c, col.Type)
	}
	keyIdx := make([]int, len(t.Key))
	for i, k := range t.Key {
		for j, col := range t.Columns {
			if col.Name == k {
				keyIdx[i] = j
			}
		}
	}
	rr := c.PgConn().ExecParams(ctx, sql, args, nil, nil, []int16{pgx.TextFormatCode})
	var out []capture.Change
	var last []*string
	for rr.NextRow() {
		vals := rr.Values()
		row := make(map[string]any, len(vals))
		n := 0
		for _, v := range vals {
			n += len(v)
		}
		var sb strings.Builder
		sb.Grow(n)
		for _, v := range vals {
			sb.Write(v)
		}
		all, off := sb.String(), 0
		for i, v := range vals {
			text := all[off : off+len(v)]
			off += len(v)
			if v == nil {
				row[t.Columns[i].Name] = nil
			} else {
				row[t.Columns[i].Name] = decs[i](text)
			}
		}
		last = make([]*string, len(keyIdx))
		for i, j := range keyIdx {
			if vals[j] != nil {
				v := string(vals[j])
				last[i] = &v
			}
		}
		out = append(out, capture.Change{Record: t.Name, Op: capture.OpSnapshot, Values: row, Position: "snapshot"})
	}
	if _, err := rr.Close(); err != nil {
		return nil, nil, fmt.Errorf("postgres source %q: read %s: %w", s.name, t.Name, err)
	}
	return out, last, nil
}

// describe is a table's column list for schema-change reports.
func describe(t *tableInfo) []colDesc {
	out := make([]colDesc, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = colDesc{Name: c.Name, Type: c.TypeName}
	}
	return out
}

func coversAll(run, all []string) bool {
	for _, t := range all {
		found := false
		for _, r := range run {
			found = found || r == t
		}
		if !found {
			return false
		}
	}
	return true
}

func keepFences(fs []fence, p pglogrepl.LSN) []fence {
	var out []fence
	for _, f := range fs {
		if mustLSN(f.LSN) > p {
			out = append(out, f)
		}
	}
	return out
}
