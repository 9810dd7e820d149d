package mysql

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
)

// consistent is a transaction started WITH CONSISTENT SNAPSHOT and the
// binlog position it is consistent with: every transaction committed
// before At is visible in it, none after.
type consistent struct {
	c    *client.Conn
	At   pos
	File string
	Pos  uint32
}

func (k *consistent) close() {
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

// openConsistent starts the snapshot transaction. MariaDB reports the
// binlog position of exactly this snapshot in the session's
// binlog_snapshot_* status, so no lock is needed.
func (s *Source) openConsistent(ctx context.Context) (*consistent, error) {
	c, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	k := &consistent{c: c}
	fail := func(what string, err error) (*consistent, error) {
		k.close()
		if isTransient(err) {
			return nil, capture.Transient(fmt.Errorf("%s: %s: %w", s.where(), what, err))
		}
		return nil, fmt.Errorf("%s: %s: %w", s.where(), what, err)
	}
	// Results in each column's own character set: the stream sees the
	// same bytes (see types.go).
	for _, q := range []string{"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", "SET character_set_results = binary",
		"START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"} {
		if _, err := c.Execute(q); err != nil {
			return fail("start the snapshot transaction ("+q+")", err)
		}
	}
	rows, err := query(c, "SHOW STATUS LIKE 'binlog_snapshot_%'")
	if err != nil {
		return fail("read the snapshot's binlog position", err)
	}
	for _, r := range rows {
		switch strings.ToLower(str(r[0])) {
		case "binlog_snapshot_file":
			k.File = str(r[1])
		case "binlog_snapshot_position":
			var p uint64
			fmt.Sscan(str(r[1]), &p)
			k.Pos = uint32(p)
		}
	}
	if k.File == "" {
		return fail("read the snapshot's binlog position", errors.New("binlog_snapshot_file is empty (is the binary log on?)"))
	}
	rows, err = query(c, "SELECT BINLOG_GTID_POS(?, ?)", k.File, k.Pos)
	if err != nil || len(rows) != 1 {
		return fail("read the snapshot's GTID position", err)
	}
	if k.At, err = parsePos(str(rows[0][0])); err != nil {
		return fail("read the snapshot's GTID position", err)
	}
	return k, nil
}

// snapshotRun reads a run and delivers it. base is the checkpoint the
// run's batches carry (with Snapshot set to the run); on success it returns
// the checkpoint after End.
type snapshotRun struct {
	sp         *snapProgress
	epochBreak string
	base       checkpoint
	// fenced: the stream stays at base.GTID and skips, for the run's
	// tables, what the snapshot contains (a run while streaming, or tables
	// added later). Otherwise the stream moves to the snapshot's position.
	fenced bool
}

func (s *Source) readSnapshot(ctx context.Context, sink capture.Sink, k *consistent, run snapshotRun) (checkpoint, error) {
	defer k.close()
	sp := run.sp
	kind := "initial"
	if !sp.Initial {
		kind = "reconcile"
	}
	s.log.Info("snapshot: reading tables", "source", s.name, "run", sp.ID, "kind", kind, "gtid", k.At.String(),
		"binlog", fmt.Sprintf("%s:%d", k.File, k.Pos), "tables", sp.Tables)
	start := time.Now()
	mark := func() *capture.SnapshotMark {
		return &capture.SnapshotMark{ID: sp.ID, Records: sp.Tables, Initial: sp.Initial, Reconcile: !sp.Initial}
	}
	first := true
	apply := func(b capture.Batch) error {
		if first {
			b.Snapshot.Begin = true
			b.EpochBreak = run.epochBreak
			first = false
		}
		return sink.Apply(ctx, b)
	}
	progress := run.base
	progress.Snapshot = sp
	cpBytes := progress.encode()
	descs := map[string][]colDesc{}
	var rows int64
	for _, name := range sp.Tables {
		t, err := s.inspectTable(k.c, name)
		if err != nil {
			return checkpoint{}, err
		}
		if t == nil || len(t.Key) == 0 {
			return checkpoint{}, fmt.Errorf("%s: table %s vanished or lost its key during the snapshot", s.where(), name)
		}
		descs[name] = describe(t)
		var after []any
		for {
			chunk, last, err := s.readChunk(k.c, t, after)
			if err != nil {
				return checkpoint{}, err
			}
			rows += int64(len(chunk))
			b := capture.Batch{Changes: chunk, TransactionID: "snapshot:" + sp.ID, Snapshot: mark(), Checkpoint: cpBytes}
			if err := apply(b); err != nil {
				return checkpoint{}, err
			}
			if len(chunk) < s.cfg.SnapshotChunkSize {
				break
			}
			after = last
		}
	}
	if _, err := k.c.Execute("COMMIT"); err != nil {
		return checkpoint{}, capture.Transient(fmt.Errorf("%s: end the snapshot transaction: %w", s.where(), err))
	}
	done := run.base
	done.Snapshot = nil
	if run.fenced && done.GTID != "" {
		at := k.At.String()
		for _, t := range sp.Tables {
			done.Fences = append(removeFence(done.Fences, t), fence{Table: t, At: at})
		}
	} else {
		done.GTID, done.File, done.Pos, done.Tx, done.Fences = k.At.String(), k.File, k.Pos, nil, nil
	}
	done.Captured = sqltable.Union(done.Captured, sp.Tables)
	done.Tables = sqltable.MergeColumns(done.Tables, descs)
	b := capture.Batch{TransactionID: "snapshot:" + sp.ID, Snapshot: mark(), Checkpoint: done.encode()}
	b.Snapshot.End = true
	if err := apply(b); err != nil {
		return checkpoint{}, err
	}
	s.log.Info("snapshot: done", "source", s.name, "run", sp.ID, "rows", rows, "took", time.Since(start).Round(time.Millisecond).String(),
		"stream_from", done.GTID, "fences", len(done.Fences))
	return done, nil
}

// readChunk reads up to SnapshotChunkSize rows after key (nil: from the
// start), in key order, with the binary protocol. last is the key of the
// last row, as parameters for the next chunk.
func (s *Source) readChunk(c *client.Conn, t *tableInfo, after []any) ([]capture.Change, []any, error) {
	cols := make([]string, 0, len(t.Columns)+len(t.Key))
	for _, col := range t.Columns {
		cols = append(cols, quoteIdent(col.Name))
	}
	keys := make([]string, len(t.Key))
	keyIdx := make([]int, len(t.Key))
	keyText := make([]bool, len(t.Key))
	for i, k := range t.Key {
		keys[i] = quoteIdent(k)
		for j, col := range t.Columns {
			if col.Name == k {
				keyIdx[i] = j
				switch col.typ.kind {
				case kText, kEnum, kSet, kJSON:
					// Read back in the connection's character set, so
					// that it compares as a parameter.
					keyText[i] = true
					keyIdx[i] = len(cols)
					cols = append(cols, "CONVERT("+quoteIdent(k)+" USING utf8mb4)")
				}
			}
		}
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + quoteTable(t.Name)
	var args []any
	if after != nil {
		ph := strings.TrimSuffix(strings.Repeat("?, ", len(keys)), ", ")
		if len(keys) == 1 {
			q += " WHERE " + keys[0] + " > ?"
		} else {
			q += " WHERE (" + strings.Join(keys, ", ") + ") > (" + ph + ")"
		}
		args = append(args, after...)
	}
	q += " ORDER BY " + strings.Join(keys, ", ") + " LIMIT ?"
	args = append(args, int64(s.cfg.SnapshotChunkSize))
	stmt, err := c.Prepare(q)
	if err != nil {
		return nil, nil, s.readErr(t.Name, err)
	}
	defer stmt.Close()
	var out []capture.Change
	var last []any
	var res gomysql.Result
	err = stmt.ExecuteSelectStreaming(&res, func(row []gomysql.FieldValue) error {
		vals := make(map[string]any, len(t.Columns))
		for i := range t.Columns {
			vals[t.Columns[i].Name] = fromSnapshot(&row[i], &t.Columns[i].typ)
		}
		last = make([]any, len(keyIdx))
		for i, j := range keyIdx {
			fv := &row[j]
			switch fv.Type {
			case gomysql.FieldValueTypeNull:
				last[i] = nil
			case gomysql.FieldValueTypeString:
				if keyText[i] {
					last[i] = string(fv.AsString())
				} else {
					last[i] = append([]byte(nil), fv.AsString()...)
				}
			default:
				last[i] = fv.Value()
			}
		}
		out = append(out, capture.Change{Record: t.Name, Op: capture.OpSnapshot, Values: vals, Position: "snapshot"})
		return nil
	}, nil, args...)
	if err != nil {
		return nil, nil, s.readErr(t.Name, err)
	}
	return out, last, nil
}

func (s *Source) readErr(table string, err error) error {
	err = fmt.Errorf("%s: read %s: %w", s.where(), table, err)
	if isTransient(err) {
		return capture.Transient(err)
	}
	return err
}

func removeFence(fs []fence, table string) []fence {
	var out []fence
	for _, f := range fs {
		if f.Table != table {
			out = append(out, f)
		}
	}
	return out
}
