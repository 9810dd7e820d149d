package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
)

// Run streams changes into sink from checkpoint (nil: first start, which
// takes the initial snapshot). Lost connections are retried with backoff
// from the last durable checkpoint; configuration and server problems, and
// errors from the sink, end Run.
func (s *Source) Run(ctx context.Context, checkpoint []byte, sink capture.Sink) error {
	cp, err := decodeCheckpoint(checkpoint)
	if err != nil {
		return fmt.Errorf("postgres source %q: %w", s.name, err)
	}
	reqs, stop, ok := s.runs.Start()
	if !ok {
		return fmt.Errorf("postgres source %q: Run is already running", s.name)
	}
	defer stop()

	var backoff capture.Backoff
	var req *capture.SnapshotRequest
	for {
		if !backoff.Wait(ctx) {
			return nil
		}
		started := time.Now()
		next, pending, err := s.session(ctx, cp, sink, reqs, req)
		progressed := next.LSN != cp.LSN || next.Snapshot != cp.Snapshot
		cp, req = next, pending
		switch {
		case ctx.Err() != nil:
			if req != nil {
				req.Done <- ctx.Err()
			}
			return nil
		case err == nil || errors.Is(err, errStop):
			return nil // Once: caught up
		case errors.Is(err, errPause):
			backoff.Reset()
			continue
		case !isTransient(err) || s.opts.Once:
			if req != nil {
				req.Done <- err
			}
			return err
		}
		delay := backoff.Failed(started, progressed)
		s.log.Warn("replication interrupted; reconnecting", "source", s.name, "error", err, "retry_in", delay.Round(time.Millisecond).String(),
			"resume_lsn", cp.LSN)
	}
}

// session connects, checks, restores continuity (snapshot if needed) and
// streams until an error, a stop, or a snapshot request. It returns the
// last durable checkpoint.
func (s *Source) session(ctx context.Context, cp checkpoint, sink capture.Sink, reqs <-chan *capture.SnapshotRequest, req *capture.SnapshotRequest) (checkpoint, *capture.SnapshotRequest, error) {
	meta, err := s.connect(ctx)
	if err != nil {
		return cp, req, err
	}
	defer meta.Close(context.Background())
	srv, problems, err := s.inspect(ctx, meta)
	if err != nil {
		return cp, req, capture.Transient(err)
	}
	if len(problems) > 0 {
		err := errors.Join(problems...)
		if len(problems) == 1 && isTransient(problems[0]) {
			err = problems[0]
		}
		return cp, req, err
	}
	if err := s.ensurePublication(ctx, meta, srv); err != nil {
		return cp, req, err
	}
	s.setID(srv)

	repl, err := s.connectReplication(ctx)
	if err != nil {
		return cp, req, err
	}
	ident, err := pglogrepl.IdentifySystem(ctx, repl)
	if err != nil {
		repl.Close(context.Background())
		return cp, req, capture.Transient(fmt.Errorf("postgres source %q: IDENTIFY_SYSTEM: %w", s.name, err))
	}

	// Continuity with the stored checkpoint.
	var (
		breakReason string
		run         *snapshotRun
		exp         *exported
	)
	fresh := cp.LSN == ""
	switch {
	case fresh:
	case cp.SystemID != ident.SystemID:
		breakReason = fmt.Sprintf("the server's system identifier is %s, the checkpoint's %s: this is another cluster (restored or replaced)", ident.SystemID, cp.SystemID)
	case cp.Database != srv.Database:
		breakReason = fmt.Sprintf("the database is %q, the checkpoint's %q", srv.Database, cp.Database)
	case cp.Slot != s.cfg.Slot:
		breakReason = fmt.Sprintf("the slot is %q, the checkpoint's %q", s.cfg.Slot, cp.Slot)
	case srv.Slot == nil:
		breakReason = fmt.Sprintf("replication slot %q no longer exists (dropped while the agent was stopped?); changes since %s are lost to the stream", s.cfg.Slot, cp.LSN)
	case srv.Slot.Lost:
		breakReason = fmt.Sprintf("replication slot %q was invalidated by the server (it retained more WAL than max_slot_wal_keep_size); changes since %s are lost to the stream", s.cfg.Slot, cp.LSN)
	case mustLSN(srv.Slot.ConfirmedFlush) > cp.lsn():
		breakReason = fmt.Sprintf("replication slot %q was advanced to %s behind the agent's back (its checkpoint is %s); the changes in between were skipped", s.cfg.Slot, srv.Slot.ConfirmedFlush, cp.LSN)
	}
	if !fresh && breakReason == "" && cp.Timeline != ident.Timeline {
		s.log.Warn("server timeline changed (a failover or a restore?); the slot is intact, streaming continues", "source", s.name,
			"from", cp.Timeline, "to", ident.Timeline)
	}
	if srv.Slot != nil && srv.Slot.Lost {
		if !*s.cfg.CreateSlot {
			repl.Close(context.Background())
			return cp, req, fmt.Errorf("postgres source %q: replication slot %q was invalidated by the server (max_slot_wal_keep_size); drop it (SELECT pg_drop_replication_slot(%s)) and start again: the agent recreates it only with create_slot: true",
				s.name, s.cfg.Slot, quoteLiteral(s.cfg.Slot))
		}
		if err := pglogrepl.DropReplicationSlot(ctx, repl, s.cfg.Slot, pglogrepl.DropReplicationSlotOptions{}); err != nil {
			repl.Close(context.Background())
			return cp, req, s.slotError("drop the invalidated slot "+s.cfg.Slot, err)
		}
		srv.Slot = nil
	}
	base := cp
	base.SystemID, base.Timeline, base.Database, base.Slot = ident.SystemID, ident.Timeline, srv.Database, s.cfg.Slot

	needExport := func() error {
		if srv.Slot == nil {
			e, err := s.createSlot(ctx, repl)
			if err != nil {
				return err
			}
			exp = e
			base.LSN = e.LSN.String()
			return nil
		}
		repl.Close(context.Background())
		e, err := s.tempExport(ctx)
		if err != nil {
			return err
		}
		exp = e
		if base.LSN == "" || breakReason != "" {
			base.LSN = srv.Slot.ConfirmedFlush
		}
		return nil
	}
	newRun := func(initial bool, tables []string) *snapshotRun {
		return &snapshotRun{sp: &snapProgress{ID: capture.NewRunID(), Initial: initial, Tables: tables}, begin: true, base: base}
	}
	switch {
	case fresh || breakReason != "":
		initial := fresh || (cp.Snapshot != nil && cp.Snapshot.Initial) || len(cp.Captured) == 0
		base.Tx, base.Fences, base.Snapshot = nil, nil, nil
		if breakReason != "" {
			s.log.Warn("continuity with the checkpoint is broken: the source epoch is bumped and a reconcile snapshot follows",
				"source", s.name, "reason", breakReason)
			base.Captured = nil
		}
		if err := needExport(); err != nil {
			return cp, req, err
		}
		run = newRun(initial, s.tables)
		run.base = base
		run.epochBreak = breakReason
	case cp.Snapshot != nil:
		// The exported snapshot died with the previous process: the run
		// goes on from its last chunk in a new one (a new segment).
		if err := needExport(); err != nil {
			return cp, req, err
		}
		sp := *cp.Snapshot
		base.Snapshot = nil
		run = &snapshotRun{sp: &sp, base: base, begin: sp.Pending}
	default:
		if added := sqltable.Missing(s.tables, cp.Captured); len(added) > 0 {
			s.log.Info("tables added to the configuration: loading them", "source", s.name, "tables", added)
			if err := needExport(); err != nil {
				return cp, req, err
			}
			run = newRun(true, added)
		} else if req != nil {
			// An on-demand snapshot: catch the stream up to the
			// snapshot's consistent point first, so that nothing live
			// turns into drift.
			repl.Close(context.Background())
			e, err := s.tempExport(ctx)
			if err != nil {
				return cp, req, err
			}
			exp = e
			// Import it now: the catch-up below runs other commands.
			return s.onDemand(ctx, meta, srv, base, e, req, sink)
		} else {
			repl.Close(context.Background())
		}
	}
	if run != nil {
		done, err := s.readSnapshot(ctx, sink, exp, *run)
		if errors.Is(err, errRunLost) {
			s.log.Warn("the engine no longer holds the interrupted snapshot run; starting it over", "source", s.name, "run", run.sp.ID)
			cp.Snapshot = &snapProgress{ID: capture.NewRunID(), Initial: run.sp.Initial, Tables: run.sp.Tables, Pending: true}
			return cp, req, capture.Transient(err)
		}
		if err != nil {
			return cp, req, err
		}
		cp = done
	} else {
		cp = base // the identity as the server gives it now (timeline)
	}
	if err := ctx.Err(); err != nil {
		return cp, req, err
	}

	var stopAt pglogrepl.LSN
	if s.opts.Once {
		// The insert position: with synchronous_commit = off a commit can
		// be past the write position for a moment.
		var cur string
		if err := meta.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&cur); err != nil {
			return cp, req, capture.Transient(fmt.Errorf("postgres source %q: read the current WAL position: %w", s.name, err))
		}
		stopAt = mustLSN(cur)
	}
	next, pending, err := s.stream(ctx, meta, srv, cp, sink, stopAt, reqs)
	return next, pending, err
}

// onDemand takes a reconcile snapshot while Run is active: the snapshot is
// exported (consistent point C) and imported, the stream is applied up to
// C, then the tables are read and the stream resumes at C. No live change
// is skipped, so none turns into drift.
func (s *Source) onDemand(ctx context.Context, meta *pgx.Conn, srv *server, base checkpoint, exp *exported, req *capture.SnapshotRequest, sink capture.Sink) (checkpoint, *capture.SnapshotRequest, error) {
	// Catch up to C (the exported snapshot stays valid while its
	// connection idles).
	caught, _, err := s.stream(ctx, meta, srv, base, sink, exp.LSN, nil)
	if err != nil && !errors.Is(err, errStop) {
		exp.release()
		return caught, req, err
	}
	run := snapshotRun{sp: &snapProgress{ID: capture.NewRunID(), Tables: s.tables}, begin: true, base: caught, catchUp: true}
	done, err := s.readSnapshot(req.Ctx, req.Sink, exp, run)
	req.Done <- err
	if err != nil {
		s.log.Warn("on-demand snapshot failed; streaming goes on", "source", s.name, "error", err)
		// The run's batches went to the requester's sink; the stream's
		// checkpoint is unaffected.
		return caught, nil, errPause
	}
	return done, nil, errPause
}

// Snapshot takes a reconcile snapshot on demand. While Run is active, Run
// takes it between transactions (see onDemand); otherwise it is read in a
// fresh exported snapshot and the End checkpoint moves the stream to that
// snapshot's consistent point.
func (s *Source) Snapshot(ctx context.Context, sink capture.Sink) error {
	if handled, err := s.runs.Handoff(ctx, sink); handled {
		return err
	}
	meta, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer meta.Close(context.Background())
	srv, problems, err := s.inspect(ctx, meta)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	if err := s.ensurePublication(ctx, meta, srv); err != nil {
		return err
	}
	s.setID(srv)
	repl, err := s.connectReplication(ctx)
	if err != nil {
		return err
	}
	ident, err := pglogrepl.IdentifySystem(ctx, repl)
	if err != nil {
		repl.Close(context.Background())
		return fmt.Errorf("postgres source %q: IDENTIFY_SYSTEM: %w", s.name, err)
	}
	var exp *exported
	if srv.Slot == nil {
		if exp, err = s.createSlot(ctx, repl); err != nil {
			repl.Close(context.Background())
			return err
		}
	} else {
		repl.Close(context.Background())
		if exp, err = s.tempExport(ctx); err != nil {
			return err
		}
	}
	base := checkpoint{SystemID: ident.SystemID, Timeline: ident.Timeline, Database: srv.Database, Slot: s.cfg.Slot,
		LSN: exp.LSN.String(), Captured: s.tables}
	run := snapshotRun{sp: &snapProgress{ID: capture.NewRunID(), Tables: s.tables}, begin: true, base: base, catchUp: true}
	_, err = s.readSnapshot(ctx, sink, exp, run)
	return err
}

// ID is postgres://<system identifier>/<database>. It connects once if Run
// has not yet; "" if the server cannot be reached.
func (s *Source) ID() string {
	return s.id.Get(s.log, s.name, func(ctx context.Context) (string, error) {
		c, err := s.connect(ctx)
		if err != nil {
			return "", err
		}
		defer c.Close(context.Background())
		var sys, db string
		if err := c.QueryRow(ctx, "SELECT system_identifier::text, current_database() FROM pg_catalog.pg_control_system()").Scan(&sys, &db); err != nil {
			return "", err
		}
		return uri(&server{SystemID: sys, Database: db}), nil
	})
}

func (s *Source) setID(srv *server) { s.id.Set(uri(srv)) }

// uri is the register's URI on srv.
func uri(srv *server) string { return "postgres://" + srv.SystemID + "/" + srv.Database }
