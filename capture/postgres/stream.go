package postgres

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
)

var (
	// errStop: the stream reached its stop position (Once, or the catch-up
	// before an on-demand snapshot).
	errStop = errors.New("stop position reached")
	// errPause: a snapshot was requested; streaming stopped between
	// transactions.
	errPause = errors.New("paused for a snapshot")
)

// streamer is one replication session. One goroutine (read) owns the
// replication connection and meta: it receives, answers keepalives,
// decodes and cuts batches; another (apply) hands them to the sink. The
// server hears flush = the LSN of the last checkpoint Apply made durable.
type streamer struct {
	s    *Source
	repl *pgconn.PgConn
	meta *pgx.Conn
	srv  *server
	out  chan queued
	reqs <-chan *capture.SnapshotRequest
	req  *capture.SnapshotRequest
	sink capture.Sink
	// runCtx is Run's context (read's ends with the session).
	runCtx context.Context
	// selfReconcile asks for a reconcile at the next transaction boundary.
	selfReconcile bool

	// read's state
	cp            checkpoint // as of the last queued batch
	pending       pglogrepl.LSN
	rels          map[uint32]*relation
	tx            *txState
	batch         []capture.Change
	received      pglogrepl.LSN
	sentFlush     pglogrepl.LSN
	nextStatus    time.Time
	lastStatus    time.Time
	lastQueued    time.Time
	lastHeartbeat time.Time
	deadline      time.Time // the socket's read deadline
	stopAt        pglogrepl.LSN
	fenceEnd      pglogrepl.LSN
	tick          *time.Ticker
	// held is a delete from a partitioned table kept back for one change:
	// an UPDATE that moves a row to another partition is logged as a
	// delete and an insert, which become one update.
	held *heldDelete

	// shared
	durable   atomic.Uint64 // flush position for the server
	progress  atomic.Int64  // unix nanos of the last durable advance
	mu        sync.Mutex
	durableCP checkpoint
	applied   atomic.Int64
}

type queued struct {
	b  capture.Batch
	cp checkpoint
}

type txState struct {
	commit    pglogrepl.LSN
	commitStr string
	xid       uint32
	at        time.Time
	idx       int // index of the next change in the transaction
	skipBelow int // changes already durable (resumed transaction)
}

type relation struct {
	table       string
	captured    bool
	partitioned bool // a partitioned table published through its root
	cols        []relCol
	key         []int // the agent's key columns (index into cols)
	// stable are the key columns that do not choose the partition: equal
	// in a delete and the insert after it, they mark a row that moved.
	stable []int
}

type heldDelete struct {
	c   capture.Change
	idx int // its index in the transaction
	rel *relation
}

type relCol struct {
	name  string
	typ   uint32
	ident bool // part of the replica identity
	dec   decodeFunc
}

// stream runs one replication session from cp. It returns the last durable
// checkpoint and why it ended: errStop, errPause (st.req set), or an error.
func (s *Source) stream(ctx context.Context, meta *pgx.Conn, srv *server, cp checkpoint, sink capture.Sink,
	stopAt pglogrepl.LSN, reqs <-chan *capture.SnapshotRequest) (checkpoint, *capture.SnapshotRequest, error) {
	repl, err := s.connectReplication(ctx)
	if err != nil {
		return cp, nil, err
	}
	defer repl.Close(context.Background())
	args := []string{"proto_version '1'", "publication_names " + quoteLiteral(quoteIdent(s.cfg.Publication))}
	if srv.Version >= 140000 {
		// Version 2 adds streaming of in-progress transactions, which is
		// not switched on: the agent only ever sees committed work.
		// messages carries the heartbeats.
		args = []string{"proto_version '2'", "publication_names " + quoteLiteral(quoteIdent(s.cfg.Publication)), "messages 'true'"}
	}
	if err := pglogrepl.StartReplication(ctx, repl, s.cfg.Slot, cp.lsn(), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: args}); err != nil {
		return cp, nil, s.slotError("start replication from slot "+s.cfg.Slot+" at "+cp.LSN, err)
	}
	s.log.Info("streaming", "source", s.name, "slot", s.cfg.Slot, "from", cp.LSN)
	st := &streamer{s: s, repl: repl, meta: meta, srv: srv, cp: cp, durableCP: cp, stopAt: stopAt, reqs: reqs, sink: sink, runCtx: ctx,
		out: make(chan queued, 4), rels: map[uint32]*relation{}, fenceEnd: maxFence(cp.Fences)}
	st.durable.Store(uint64(cp.lsn()))
	st.progress.Store(time.Now().UnixNano())
	st.lastHeartbeat = time.Now()
	if stopAt != 0 {
		st.heartbeat(ctx) // WAL after the stop position, so the stream reaches it
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		rerr = st.read(sctx)
	}()
	aerr := st.apply(ctx, sink)
	if aerr != nil {
		cancel()
		for range st.out {
		}
	}
	<-done
	if aerr == nil && ctx.Err() == nil {
		// Tell the server the final durable position.
		st.status(false)
	}
	st.mu.Lock()
	last := st.durableCP
	st.mu.Unlock()
	if aerr != nil {
		return last, nil, fmt.Errorf("postgres source %q: %w", s.name, aerr)
	}
	return last, st.req, rerr
}

// apply hands queued batches to the sink in order. Plain stream batches
// waiting in the queue are merged into one (up to BatchSize changes, each
// keeping its transaction id), so a stream of small transactions costs one
// commit per merged batch, not one per transaction.
func (st *streamer) apply(ctx context.Context, sink capture.Sink) error {
	for q := range st.out {
		if ctx.Err() != nil {
			continue // shutting down: not durable, sent again next time
		}
		q, pending := st.coalesce(q)
		if err := st.applyOne(ctx, sink, q); err != nil {
			return err
		}
		if ctx.Err() != nil {
			continue // the batch may not be durable: sent again next time
		}
		if pending != nil {
			// A batch that could not be merged (a snapshot or an epoch
			// break) goes on its own, in order.
			if err := st.applyOne(ctx, sink, *pending); err != nil {
				return err
			}
		}
	}
	return nil
}

// mergeable reports whether a queued batch is a plain stream batch.
func mergeable(q queued) bool { return q.b.Snapshot == nil && q.b.EpochBreak == "" }

// coalesce merges the plain stream batches already queued behind q. It
// returns the merged batch and, if it took one that must go alone, that one.
func (st *streamer) coalesce(q queued) (queued, *queued) {
	if !mergeable(q) {
		return q, nil
	}
	merged := false
	for len(q.b.Changes) < st.s.cfg.BatchSize {
		var next queued
		var ok bool
		select {
		case next, ok = <-st.out:
		default:
		}
		if !ok {
			break
		}
		if !mergeable(next) {
			return q, &next
		}
		if !merged {
			q.b.Changes = stampTx(append([]capture.Change(nil), q.b.Changes...), q.b.TransactionID)
			merged = true
		}
		q.b.Changes = append(q.b.Changes, stampTx(next.b.Changes, next.b.TransactionID)...)
		if next.b.Checkpoint != nil {
			q.b.Checkpoint = next.b.Checkpoint
		}
		q.b.TransactionID = next.b.TransactionID
		q.cp = next.cp
	}
	return q, nil
}

func stampTx(cs []capture.Change, txid string) []capture.Change {
	for i := range cs {
		if cs[i].TransactionID == "" {
			cs[i].TransactionID = txid
		}
	}
	return cs
}

// applyOne applies a single queued batch and records it as durable.
func (st *streamer) applyOne(ctx context.Context, sink capture.Sink, q queued) error {
	if err := sink.Apply(ctx, q.b); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	st.mu.Lock()
	st.durableCP = q.cp
	st.mu.Unlock()
	if l := uint64(q.cp.lsn()); l > st.durable.Load() {
		st.durable.Store(l)
		st.progress.Store(time.Now().UnixNano())
	}
	st.applied.Add(int64(len(q.b.Changes)))
	return nil
}

// status sends a standby status update: write = received, flush = apply =
// durable. All three are set: pglogrepl copies write into a zero flush.
func (st *streamer) status(reply bool) error {
	flush := pglogrepl.LSN(st.durable.Load())
	if flush == 0 {
		return nil
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), st.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: max(st.received, flush), WALFlushPosition: flush, WALApplyPosition: flush,
		ClientTime: time.Now(), ReplyRequested: reply})
	if err != nil {
		return capture.Transient(fmt.Errorf("postgres source %q: send standby status: %w", st.s.name, err))
	}
	st.sentFlush, st.lastStatus = flush, time.Now()
	st.nextStatus = st.lastStatus.Add(st.s.cfg.StatusInterval)
	return nil
}

func (st *streamer) read(ctx context.Context) error {
	defer close(st.out)
	st.tick = time.NewTicker(time.Second)
	defer st.tick.Stop()
	hb := *st.s.cfg.HeartbeatInterval
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := time.Now()
		if st.tx == nil {
			if st.req == nil && st.selfReconcile {
				st.req = capture.NewSnapshotRequest(st.runCtx, st.sink)
				st.selfReconcile = false
			}
			if st.req == nil && st.reqs != nil {
				select {
				case st.req = <-st.reqs:
				default:
				}
			}
			if st.req != nil {
				if err := st.flushPending(ctx); err != nil {
					return err
				}
				return errPause
			}
			if st.pending > st.cp.lsn() && now.Sub(st.lastQueued) >= time.Second {
				if err := st.flushPending(ctx); err != nil {
					return err
				}
			}
			idle := now.Sub(time.Unix(0, st.progress.Load()))
			if hb > 0 && idle >= hb && now.Sub(st.lastHeartbeat) >= hb && st.srv.Version >= 140000 {
				st.heartbeat(ctx)
			}
		}
		flush := pglogrepl.LSN(st.durable.Load())
		if !now.Before(st.nextStatus) || (flush != st.sentFlush && now.Sub(st.lastStatus) >= 100*time.Millisecond) {
			if err := st.status(st.stopAt != 0); err != nil {
				return err
			}
		}
		deadline := st.nextStatus
		if d := now.Add(time.Second); d.Before(deadline) {
			deadline = d
		}
		if flush != st.sentFlush {
			deadline = now.Add(100 * time.Millisecond)
		}
		// A read deadline on the socket rather than a context per message:
		// pgconn watches a cancellable context with a goroutine each time.
		// Run's cancellation is seen within a second.
		if deadline.Sub(st.deadline) > 10*time.Millisecond || deadline.Before(st.deadline) {
			st.repl.Conn().SetReadDeadline(deadline)
			st.deadline = deadline
		}
		msg, err := st.repl.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return capture.Transient(fmt.Errorf("postgres source %q: replication stream: %w", st.s.name, err))
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("postgres source %q: keepalive: %w", st.s.name, err)
				}
				if pkm.ReplyRequested {
					if err := st.status(false); err != nil {
						return err
					}
				}
				if st.stopAt != 0 && st.tx == nil && pkm.ServerWALEnd >= st.stopAt {
					if err := st.flushPending(ctx); err != nil {
						return err
					}
					return errStop
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("postgres source %q: XLogData: %w", st.s.name, err)
				}
				if end := xld.WALStart + pglogrepl.LSN(len(xld.WALData)); end > st.received {
					st.received = end
				}
				if err := st.handle(ctx, xld); err != nil {
					return err
				}
			}
		case *pgproto3.ErrorResponse:
			err := pgconn.ErrorResponseToPgError(msg)
			if isTransient(err) {
				return capture.Transient(fmt.Errorf("postgres source %q: replication stream: %w", st.s.name, err))
			}
			return fmt.Errorf("postgres source %q: replication stream: %w", st.s.name, err)
		case *pgproto3.CopyDone:
			return capture.Transient(fmt.Errorf("postgres source %q: the server ended the replication stream", st.s.name))
		}
	}
}

// heartbeat writes a logical message: an idle database then still moves
// the slot's confirmed position (through the checkpoint of the message's
// LSN), and WAL does not pile up behind it.
func (st *streamer) heartbeat(ctx context.Context) {
	st.lastHeartbeat = time.Now()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := st.meta.Exec(hctx, "SELECT pg_logical_emit_message(false, 'connector', 'heartbeat')"); err != nil {
		st.s.log.Warn("heartbeat failed", "source", st.s.name, "error", err)
	}
}

// flushPending queues a checkpoint-only batch for a position after the
// last checkpoint (empty transactions, logical messages).
func (st *streamer) flushPending(ctx context.Context) error {
	if st.pending <= st.cp.lsn() {
		return nil
	}
	cp := st.cp
	cp.LSN = st.pending.String()
	cp.Tx = nil
	st.dropFences(&cp, st.pending)
	return st.enqueue(ctx, capture.Batch{}, cp)
}

func (st *streamer) dropFences(cp *checkpoint, at pglogrepl.LSN) {
	if len(cp.Fences) > 0 && at >= st.fenceEnd {
		cp.Fences = nil
		st.s.log.Info("stream passed the snapshot's consistent points", "source", st.s.name, "lsn", at.String())
	}
}

func (st *streamer) enqueue(ctx context.Context, b capture.Batch, cp checkpoint) error {
	b.Checkpoint = cp.encode()
	for {
		select {
		case st.out <- queued{b: b, cp: cp}:
			st.cp = cp
			st.lastQueued = time.Now()
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-st.tick.C:
			// The sink is slow: keep the server from timing us out.
			if err := st.status(false); err != nil {
				return err
			}
		}
	}
}

func (st *streamer) handle(ctx context.Context, xld pglogrepl.XLogData) error {
	msg, err := pglogrepl.Parse(xld.WALData)
	if err != nil {
		return fmt.Errorf("postgres source %q: decode pgoutput message at %s: %w", st.s.name, xld.WALStart, err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		return st.relation(ctx, m)
	case *pglogrepl.BeginMessage:
		if st.stopAt != 0 && m.FinalLSN >= st.stopAt {
			if err := st.flushPending(ctx); err != nil {
				return err
			}
			return errStop
		}
		st.tx = &txState{commit: m.FinalLSN, commitStr: m.FinalLSN.String(), xid: m.Xid, at: m.CommitTime.UTC()}
		if st.cp.Tx != nil && mustLSN(st.cp.Tx.Commit) == m.FinalLSN {
			st.tx.skipBelow = st.cp.Tx.Next
		}
	case *pglogrepl.CommitMessage:
		if st.tx == nil {
			return fmt.Errorf("postgres source %q: commit at %s without a begin", st.s.name, m.CommitLSN)
		}
		end := m.TransactionEndLSN
		tx := st.tx
		st.release()
		st.tx = nil
		if len(st.batch) == 0 && (st.cp.Tx == nil || mustLSN(st.cp.Tx.Commit) != tx.commit) {
			// Nothing of ours in it: remember the position only.
			st.pending = max(st.pending, end)
			return nil
		}
		cp := st.cp
		cp.LSN, cp.Tx = end.String(), nil
		st.dropFences(&cp, end)
		st.pending = max(st.pending, end)
		return st.cut(ctx, cp, tx)
	case *pglogrepl.InsertMessage:
		return st.change(ctx, m.RelationID, func(rel *relation) (*capture.Change, error) {
			vals, unch := st.values(rel, m.Tuple, false)
			c := &capture.Change{Record: rel.table, Op: capture.OpInsert, Values: vals, Unchanged: unch}
			return st.fence(ctx, rel, c, keyText(rel, m.Tuple), nil)
		})
	case *pglogrepl.UpdateMessage:
		return st.change(ctx, m.RelationID, func(rel *relation) (*capture.Change, error) {
			vals, unch := st.values(rel, m.NewTuple, false)
			if m.OldTuple != nil && m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld && len(unch) > 0 {
				// REPLICA IDENTITY FULL logs the old row with its TOASTed
				// values: an unchanged value is the old one.
				unch = fillUnchanged(rel, m.OldTuple, vals, unch)
			}
			c := &capture.Change{Record: rel.table, Op: capture.OpUpdate, Values: vals, Unchanged: unch}
			newKey := keyText(rel, m.NewTuple)
			var oldKey []*string
			if m.OldTuple != nil {
				if k := keyText(rel, m.OldTuple); k != nil && !sameKey(k, newKey) {
					oldKey = k
					c.OldKey = st.keyValues(rel, m.OldTuple)
				}
			}
			return st.fence(ctx, rel, c, newKey, oldKey)
		})
	case *pglogrepl.DeleteMessage:
		return st.change(ctx, m.RelationID, func(rel *relation) (*capture.Change, error) {
			vals, _ := st.values(rel, m.OldTuple, m.OldTupleType == pglogrepl.DeleteMessageTupleTypeKey)
			c := &capture.Change{Record: rel.table, Op: capture.OpDelete, Values: vals}
			return st.fence(ctx, rel, c, keyText(rel, m.OldTuple), nil)
		})
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if err := st.change(ctx, id, func(rel *relation) (*capture.Change, error) {
				switch st.truncateFence(rel.table) {
				case fenceAll:
					return nil, nil // the snapshot read the table after it
				case fencePart:
					// Rows after the fence key were read after the
					// truncate and would be lost with it: reconcile once
					// the stream is past this transaction.
					st.s.log.Warn("TRUNCATE inside a resumed snapshot's window; a reconcile snapshot follows", "source", st.s.name, "table", rel.table)
					st.selfReconcile = true
				}
				return &capture.Change{Record: rel.table, Op: capture.OpTruncate, Reason: "truncated"}, nil
			}); err != nil {
				return err
			}
		}
	case *pglogrepl.LogicalDecodingMessage:
		if !m.Transactional && st.tx == nil {
			// Every commit before a non-transactional message has been
			// sent before it: its LSN is a safe resume position.
			st.pending = max(st.pending, m.LSN)
			if st.stopAt != 0 && m.LSN >= st.stopAt {
				if err := st.flushPending(ctx); err != nil {
					return err
				}
				return errStop
			}
		}
	}
	return nil
}

// change numbers a row change within its transaction, skips what a resumed
// transaction already delivered, and batches the rest.
func (st *streamer) change(ctx context.Context, relID uint32, build func(*relation) (*capture.Change, error)) error {
	tx := st.tx
	if tx == nil {
		return fmt.Errorf("postgres source %q: row change outside a transaction", st.s.name)
	}
	idx := tx.idx
	tx.idx++
	if idx < tx.skipBelow {
		return nil
	}
	rel := st.rels[relID]
	if rel == nil {
		return fmt.Errorf("postgres source %q: change for relation %d before its Relation message", st.s.name, relID)
	}
	var c *capture.Change
	if rel.captured {
		var err error
		if c, err = build(rel); err != nil {
			return err
		}
	}
	if h := st.held; h != nil {
		st.held = nil
		if c != nil && c.Op == capture.OpInsert && rel.table == h.rel.table && len(rel.stable) > 0 &&
			sameValues(h.c.Values, c.Values, rel.cols, rel.stable) {
			// A row moved to another partition: an update of the row,
			// numbered as the delete (the first of the pair).
			c.Op, idx = capture.OpUpdate, h.idx
			if !sameValues(h.c.Values, c.Values, rel.cols, rel.key) {
				c.OldKey = keyOf(h.c.Values, rel)
			}
		} else {
			st.add(h.c, h.idx, tx)
		}
	}
	if c != nil && c.Op == capture.OpDelete && len(rel.stable) > 0 {
		st.held = &heldDelete{c: *c, idx: idx, rel: rel}
	} else if c != nil {
		st.add(*c, idx, tx)
	}
	if len(st.batch) >= st.s.cfg.BatchSize {
		// A large transaction goes in several batches; the checkpoint
		// records how far into it they reach (not past a held delete).
		next := tx.idx
		if st.held != nil {
			next = st.held.idx
		}
		cp := st.cp
		cp.Tx = &txProgress{Commit: tx.commitStr, Next: next}
		return st.cut(ctx, cp, tx)
	}
	return nil
}

// release adds the held delete (if any) to the batch.
func (st *streamer) release() {
	if h := st.held; h != nil {
		st.held = nil
		st.add(h.c, h.idx, st.tx)
	}
}

func (st *streamer) add(c capture.Change, idx int, tx *txState) {
	c.ChangedAt = tx.at
	c.ChangeKey = tx.commitStr + ":" + strconv.Itoa(idx)
	c.Position = c.ChangeKey
	st.batch = append(st.batch, c)
}

// sameValues reports whether columns cols[idx...] have the same values in
// a and b.
func sameValues(a, b map[string]any, cols []relCol, idx []int) bool {
	for _, j := range idx {
		name := cols[j].name
		if !reflect.DeepEqual(a[name], b[name]) {
			return false
		}
	}
	return true
}

func keyOf(vals map[string]any, rel *relation) map[string]any {
	out := make(map[string]any, len(rel.key))
	for _, j := range rel.key {
		out[rel.cols[j].name] = vals[rel.cols[j].name]
	}
	return out
}

func (st *streamer) cut(ctx context.Context, cp checkpoint, tx *txState) error {
	b := capture.Batch{Changes: st.batch, TransactionID: tx.commitStr}
	st.batch = make([]capture.Change, 0, min(st.s.cfg.BatchSize, 2*len(b.Changes)+16))
	return st.enqueue(ctx, b, cp)
}

// values decodes a tuple; keyOnly keeps just the replica identity columns
// (a 'K' tuple sends the others as null).
func (st *streamer) values(rel *relation, tup *pglogrepl.TupleData, keyOnly bool) (map[string]any, []string) {
	vals := make(map[string]any, len(rel.cols))
	var unch []string
	if tup == nil {
		return vals, nil
	}
	// One string holds every column's text; values are substrings of it
	// (one allocation per row instead of one per column).
	n := 0
	for _, col := range tup.Columns {
		n += len(col.Data)
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, col := range tup.Columns {
		sb.Write(col.Data)
	}
	all, off := sb.String(), 0
	for i, col := range tup.Columns {
		text := all[off : off+len(col.Data)]
		off += len(col.Data)
		if i >= len(rel.cols) {
			break
		}
		rc := rel.cols[i]
		if keyOnly && !rc.ident && col.DataType == pglogrepl.TupleDataTypeNull {
			// A key tuple sends the other columns as null. (The identity
			// flags are the published table's: a partitioned table's
			// partitions may have another identity, so sent values count.)
			continue
		}
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			vals[rc.name] = nil
		case pglogrepl.TupleDataTypeToast:
			unch = append(unch, rc.name)
		default: // text; binary is not requested
			vals[rc.name] = rc.dec(text)
		}
	}
	return vals, unch
}

func fillUnchanged(rel *relation, old *pglogrepl.TupleData, vals map[string]any, unch []string) []string {
	var rest []string
	for _, name := range unch {
		filled := false
		for i, rc := range rel.cols {
			if rc.name == name && i < len(old.Columns) {
				switch old.Columns[i].DataType {
				case pglogrepl.TupleDataTypeText:
					vals[name] = rc.dec(string(old.Columns[i].Data))
					filled = true
				case pglogrepl.TupleDataTypeNull:
					vals[name] = nil
					filled = true
				}
			}
		}
		if !filled {
			rest = append(rest, name)
		}
	}
	return rest
}

// keyText is the text of the agent's key columns in tup (nil if the tuple
// lacks them).
func keyText(rel *relation, tup *pglogrepl.TupleData) []*string {
	if tup == nil || len(rel.key) == 0 {
		return nil
	}
	out := make([]*string, len(rel.key))
	for i, j := range rel.key {
		if j >= len(tup.Columns) {
			return nil
		}
		switch tup.Columns[j].DataType {
		case pglogrepl.TupleDataTypeText:
			s := string(tup.Columns[j].Data)
			out[i] = &s
		case pglogrepl.TupleDataTypeNull:
		default:
			return nil
		}
	}
	return out
}

func (st *streamer) keyValues(rel *relation, tup *pglogrepl.TupleData) map[string]any {
	out := make(map[string]any, len(rel.key))
	for _, j := range rel.key {
		col := tup.Columns[j]
		if col.DataType == pglogrepl.TupleDataTypeText {
			out[rel.cols[j].name] = rel.cols[j].dec(string(col.Data))
		} else {
			out[rel.cols[j].name] = nil
		}
	}
	return out
}

func sameKey(a, b []*string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if (a[i] == nil) != (b[i] == nil) || (a[i] != nil && *a[i] != *b[i]) {
			return false
		}
	}
	return true
}

// fence drops or reshapes a change that a snapshot already contains: the
// row (at its key) was read in a snapshot consistent with a later LSN than
// the change's commit. A key-changing update is judged at both keys.
func (st *streamer) fence(ctx context.Context, rel *relation, c *capture.Change, key, oldKey []*string) (*capture.Change, error) {
	if len(st.cp.Fences) == 0 || st.tx.commit >= st.fenceEnd {
		return c, nil
	}
	seen := func(k []*string) (bool, error) {
		if k == nil {
			return false, nil
		}
		f, err := st.fenceLSN(ctx, rel.table, k)
		return f != 0 && st.tx.commit < f, err
	}
	newSeen, err := seen(key)
	if err != nil {
		return nil, err
	}
	if oldKey == nil {
		if newSeen {
			return nil, nil
		}
		return c, nil
	}
	oldSeen, err := seen(oldKey)
	if err != nil {
		return nil, err
	}
	switch {
	case newSeen && oldSeen:
		return nil, nil
	case newSeen: // the snapshot has the new row, not yet the old one's removal
		return &capture.Change{Record: c.Record, Op: capture.OpDelete, Values: c.OldKey}, nil
	case oldSeen: // the old row's removal is in the snapshot, the new row is not
		c.Op, c.OldKey = capture.OpInsert, nil
	}
	return c, nil
}

type fenceCover int

const (
	fenceNone fenceCover = iota
	fencePart
	fenceAll
)

// truncateFence says how much of table a snapshot read after the current
// transaction committed.
func (st *streamer) truncateFence(table string) fenceCover {
	if len(st.cp.Fences) == 0 || st.tx.commit >= st.fenceEnd {
		return fenceNone
	}
	var fs []fence
	for _, f := range st.cp.Fences {
		if f.Table == table {
			fs = append(fs, f)
		}
	}
	if len(fs) == 0 {
		return fenceNone
	}
	all := fs[0].After == nil
	any := false
	for _, f := range fs {
		later := mustLSN(f.LSN) > st.tx.commit
		all = all && later
		any = any || later
	}
	switch {
	case all:
		return fenceAll
	case any:
		return fencePart
	}
	return fenceNone
}

// fenceLSN returns the LSN of the snapshot segment that read key in table
// (0 if no fence covers it).
func (st *streamer) fenceLSN(ctx context.Context, table string, key []*string) (pglogrepl.LSN, error) {
	var lsn pglogrepl.LSN
	for _, f := range st.cp.Fences {
		if f.Table != table {
			continue
		}
		if f.After == nil {
			lsn = mustLSN(f.LSN)
			continue
		}
		after, err := st.keyAfter(ctx, table, key, f.After)
		if err != nil {
			return 0, err
		}
		if after {
			lsn = mustLSN(f.LSN)
		}
	}
	return lsn, nil
}

// keyAfter asks the server whether key sorts after ref in the table's key
// order (the snapshot's ORDER BY: the columns' types and collations).
func (st *streamer) keyAfter(ctx context.Context, table string, key, ref []*string) (bool, error) {
	t := st.srv.Tables[table]
	if t == nil || len(t.Key) != len(key) || len(ref) != len(key) {
		return false, fmt.Errorf("postgres source %q: cannot compare keys of %s", st.s.name, table)
	}
	var l, r []string
	var args []any
	for i, k := range t.Key {
		var col colInfo
		for _, c := range t.Columns {
			if c.Name == k {
				col = c
			}
		}
		coll := ""
		if col.Collation != "" {
			coll = " COLLATE " + col.Collation
		}
		l = append(l, fmt.Sprintf("CAST($%d AS %s)%s", i+1, col.TypeName, coll))
		r = append(r, fmt.Sprintf("CAST($%d AS %s)%s", len(key)+i+1, col.TypeName, coll))
		args = append(args, key[i])
	}
	for _, v := range ref {
		args = append(args, v)
	}
	var after *bool // NULL when a configured key column is NULL: not after
	err := st.meta.QueryRow(ctx, "SELECT ROW("+strings.Join(l, ", ")+") > ROW("+strings.Join(r, ", ")+")", args...).Scan(&after)
	if err != nil {
		return false, fmt.Errorf("postgres source %q: compare keys of %s: %w", st.s.name, table, err)
	}
	return after != nil && *after, nil
}

// relation records a table's columns as the stream describes them from
// this point on, and reports schema changes against the stored description.
func (st *streamer) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	table := m.Namespace + "." + m.RelationName
	rel := &relation{table: table}
	for _, t := range st.s.tables {
		rel.captured = rel.captured || t == table
	}
	if t := st.srv.Tables[table]; t != nil && t.Kind == "p" {
		rel.partitioned = true
	}
	oids := make([]uint32, len(m.Columns))
	mods := make([]int32, len(m.Columns))
	for i, c := range m.Columns {
		rel.cols = append(rel.cols, relCol{name: c.Name, typ: c.DataType, ident: c.Flags&1 != 0,
			dec: st.s.types.decoder(ctx, st.meta, c.DataType)})
		oids[i], mods[i] = c.DataType, c.TypeModifier
	}
	st.rels[m.RelationID] = rel
	if !rel.captured {
		return nil
	}
	var names []string
	err := st.meta.QueryRow(ctx, `SELECT COALESCE(array_agg(format_type(t, NULLIF(m, -1)) ORDER BY o), '{}')
		FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS u(t, m, o)`, oids, mods).Scan(&names)
	if err != nil {
		return fmt.Errorf("postgres source %q: describe %s: %w", st.s.name, table, err)
	}
	desc := make([]colDesc, len(rel.cols))
	for i, c := range rel.cols {
		desc[i] = colDesc{Name: c.name, Type: names[i]}
	}
	if old, ok := st.cp.Tables[table]; ok {
		if change := sqltable.DescribeChange(old, desc); change != "" {
			st.s.log.Info("table definition changed; capturing the new columns from this point of the stream", "source", st.s.name,
				"table", table, "change", change, "xid", txXid(st.tx))
			// The key may have changed too.
			if t, err := st.s.inspectTable(ctx, st.meta, table); err == nil && t != nil {
				tables := make(map[string]*tableInfo, len(st.srv.Tables))
				for k, v := range st.srv.Tables {
					tables[k] = v
				}
				tables[table] = t
				st.srv.Tables = tables
			}
		}
	}
	if old, ok := st.cp.Tables[table]; !ok || sqltable.DescribeChange(old, desc) != "" {
		st.cp.Tables = sqltable.MergeColumns(st.cp.Tables, map[string][]colDesc{table: desc})
	}
	if t := st.srv.Tables[table]; t != nil {
		for _, k := range t.Key {
			for i, c := range rel.cols {
				if c.name == k {
					rel.key = append(rel.key, i)
				}
			}
		}
		if len(rel.key) != len(t.Key) {
			rel.key = nil
		}
		if rel.partitioned {
			for _, j := range rel.key {
				if !slices.Contains(t.PartCols, rel.cols[j].name) {
					rel.stable = append(rel.stable, j)
				}
			}
		}
	}
	return nil
}

func txXid(tx *txState) uint32 {
	if tx == nil {
		return 0
	}
	return tx.xid
}
