package mysql

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

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
		return fmt.Errorf("%s: %w", s.where(), err)
	}
	reqs, stop, ok := s.runs.Start()
	if !ok {
		return fmt.Errorf("%s: Run is already running", s.where())
	}
	defer stop()

	var backoff capture.Backoff
	var req *capture.SnapshotRequest
	broken := ""
	for {
		if !backoff.Wait(ctx) {
			return nil
		}
		started := time.Now()
		next, pending, err := s.session(ctx, cp, sink, reqs, req, broken)
		progressed := next.GTID != cp.GTID || (next.Snapshot == nil) != (cp.Snapshot == nil)
		cp, req, broken = next, pending, ""
		var b errBroken
		switch {
		case ctx.Err() != nil:
			if req != nil {
				req.Done <- ctx.Err()
			}
			return nil
		case err == nil || errors.Is(err, errStop):
			return nil
		case errors.Is(err, errPause):
			backoff.Reset()
			continue
		case errors.As(err, &b):
			broken = b.reason
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
			"resume_gtid", cp.GTID)
	}
}

// session connects, checks, restores continuity (snapshot if needed) and
// streams until an error, a stop, or a snapshot request. It returns the
// last durable checkpoint. broken is a continuity break the stream found.
func (s *Source) session(ctx context.Context, cp checkpoint, sink capture.Sink, reqs <-chan *capture.SnapshotRequest, req *capture.SnapshotRequest, broken string) (checkpoint, *capture.SnapshotRequest, error) {
	meta, srv, err := s.open(ctx)
	if err != nil {
		return cp, req, err
	}
	defer meta.Close()

	breakReason := broken
	fresh := cp.GTID == "" && cp.Snapshot == nil
	if !fresh && breakReason == "" && cp.Snapshot == nil {
		if breakReason, err = s.continuity(meta, srv, cp); err != nil {
			return cp, req, err
		}
	}
	base := cp
	base.Server = srv.identity()
	var run *snapshotRun
	switch {
	case fresh || breakReason != "":
		initial := fresh || len(cp.Captured) == 0
		if breakReason != "" {
			s.log.Warn("continuity with the checkpoint is broken: the source epoch is bumped and a reconcile snapshot follows",
				"source", s.name, "reason", breakReason)
		}
		// Until the run ends, a restart takes it again (no position to
		// check continuity against).
		base.GTID, base.File, base.Pos, base.Tx, base.Fences, base.Captured = "", "", 0, nil, nil, nil
		run = &snapshotRun{sp: &snapProgress{ID: capture.NewRunID(), Initial: initial, Tables: s.tables}, base: base, epochBreak: breakReason}
	case cp.Snapshot != nil:
		// The consistent snapshot died with the previous process: the run
		// starts over (a new run replaces the staged rows).
		s.log.Info("snapshot run interrupted; starting it over", "source", s.name, "run", cp.Snapshot.ID)
		sp := *cp.Snapshot
		sp.ID = capture.NewRunID()
		base.Snapshot = nil
		run = &snapshotRun{sp: &sp, base: base, fenced: true}
	default:
		if added := sqltable.Missing(s.tables, cp.Captured); len(added) > 0 {
			s.log.Info("tables added to the configuration: loading them", "source", s.name, "tables", added)
			run = &snapshotRun{sp: &snapProgress{ID: capture.NewRunID(), Initial: true, Tables: added}, base: base, fenced: true}
		} else if req != nil {
			run = &snapshotRun{sp: &snapProgress{ID: capture.NewRunID(), Tables: s.tables}, base: base, fenced: true}
			k, err := s.openConsistent(ctx)
			if err != nil {
				req.Done <- err
				return cp, nil, err
			}
			done, err := s.readSnapshot(req.Ctx, req.Sink, k, *run)
			req.Done <- err
			if err != nil {
				s.log.Warn("on-demand snapshot failed; streaming goes on", "source", s.name, "error", err)
				return cp, nil, errPause
			}
			return done, nil, errPause
		}
	}
	if run != nil {
		k, err := s.openConsistent(ctx)
		if err != nil {
			return cp, req, err
		}
		done, err := s.readSnapshot(ctx, sink, k, *run)
		if err != nil {
			return cp, req, err
		}
		cp = done
	} else {
		cp = base
	}
	if err := ctx.Err(); err != nil {
		return cp, req, err
	}
	var stopAt pos
	if s.opts.Once {
		rows, err := query(meta, "SELECT @@GLOBAL.gtid_binlog_pos")
		if err != nil || len(rows) != 1 {
			return cp, req, capture.Transient(fmt.Errorf("%s: read the current binlog position: %w", s.where(), err))
		}
		if stopAt, err = parsePos(str(rows[0][0])); err != nil {
			return cp, req, fmt.Errorf("%s: gtid_binlog_pos: %w", s.where(), err)
		}
	}
	return s.stream(ctx, meta, srv, cp, sink, stopAt, reqs)
}

// continuity says why the server cannot continue from cp ("" if it can):
// another server, binlogs purged past the position, or a binlog that no
// longer has the position (RESET MASTER, a restored server).
func (s *Source) continuity(c *client.Conn, srv *server, cp checkpoint) (string, error) {
	if cp.Server != srv.identity() {
		return fmt.Sprintf("the server is %s, the checkpoint's %s: this is another server (replaced, or its server_id or gtid_domain_id changed)", srv.identity(), cp.Server), nil
	}
	at := mustPos(cp.GTID)
	rows, err := query(c, "SELECT @@GLOBAL.gtid_binlog_pos")
	if err != nil || len(rows) != 1 {
		return "", capture.Transient(fmt.Errorf("%s: read gtid_binlog_pos: %w", s.where(), err))
	}
	now, err := parsePos(str(rows[0][0]))
	if err != nil {
		return "", fmt.Errorf("%s: gtid_binlog_pos: %w", s.where(), err)
	}
	if !now.covers(at) {
		return fmt.Sprintf("the server's binlog ends at GTID %q, before the checkpoint's %s (RESET MASTER, or a restored server); the changes in between are unknown", now.String(), cp.GTID), nil
	}
	logs, err := query(c, "SHOW BINARY LOGS")
	if err != nil {
		return "", capture.Transient(fmt.Errorf("%s: SHOW BINARY LOGS: %w", s.where(), err))
	}
	if len(logs) == 0 {
		return "", nil
	}
	first := str(logs[0][0])
	// A binlog file starts with the GTID position before it (its
	// Gtid_list event).
	rows, err = query(c, "SHOW BINLOG EVENTS IN "+quoteLiteral(first)+" LIMIT 4")
	if err != nil {
		return "", capture.Transient(fmt.Errorf("%s: SHOW BINLOG EVENTS IN %s: %w", s.where(), first, err))
	}
	for _, r := range rows {
		if len(r) < 6 || str(r[2]) != "Gtid_list" {
			continue
		}
		list := strings.Trim(str(r[5]), "[]")
		if start, err := parsePos(list); err == nil && !at.covers(start) {
			return fmt.Sprintf("the server purged binlogs the agent had not read: the oldest, %s, starts after GTID %q, the checkpoint is %s", first, start.String(), cp.GTID), nil
		}
	}
	// The checkpoint's own file, if still there, must be at the
	// checkpoint's GTID (a new binlog of the same name is another history).
	if cp.File != "" && cp.Pos > 4 && slices.ContainsFunc(logs, func(r []*string) bool { return str(r[0]) == cp.File }) {
		size := uint64(0)
		for _, r := range logs {
			if str(r[0]) == cp.File {
				size, _ = strconv.ParseUint(str(r[1]), 10, 64)
			}
		}
		if uint64(cp.Pos) > size {
			return fmt.Sprintf("binlog %s is shorter than the checkpoint's position %d: it was reset (RESET MASTER) or the server restored", cp.File, cp.Pos), nil
		}
		rows, err = query(c, "SELECT BINLOG_GTID_POS(?, ?)", cp.File, cp.Pos)
		if err == nil && len(rows) == 1 && rows[0][0] != nil {
			if p, err := parsePos(str(rows[0][0])); err == nil && !(p.covers(at) && at.covers(p)) {
				return fmt.Sprintf("binlog %s at %d is at GTID %q, the checkpoint says %s: the binlog was reset (RESET MASTER) or the server restored", cp.File, cp.Pos, p.String(), cp.GTID), nil
			}
		}
	}
	return "", nil
}

// Snapshot takes a reconcile snapshot on demand. While Run is active, Run
// takes it between transactions, and the stream skips for each table what
// the snapshot contains; otherwise the End checkpoint moves the stream to
// the snapshot's position.
func (s *Source) Snapshot(ctx context.Context, sink capture.Sink) error {
	if handled, err := s.runs.Handoff(ctx, sink); handled {
		return err
	}
	meta, srv, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer meta.Close()
	k, err := s.openConsistent(ctx)
	if err != nil {
		return err
	}
	base := checkpoint{Server: srv.identity(), Captured: s.tables}
	_, err = s.readSnapshot(ctx, sink, k, snapshotRun{sp: &snapProgress{ID: capture.NewRunID(), Tables: s.tables}, base: base})
	return err
}

// ID is mysql://<hostname:port>/<database> (MariaDB has no server UUID).
// It connects once if Run has not yet; "" if the server cannot be reached.
func (s *Source) ID() string {
	return s.id.Get(s.log, s.name, func(ctx context.Context) (string, error) {
		c, err := s.connect(ctx)
		if err != nil {
			return "", err
		}
		defer c.Close()
		rows, err := query(c, "SELECT @@hostname, @@port")
		if err == nil && len(rows) != 1 {
			err = fmt.Errorf("SELECT @@hostname, @@port returned %d rows", len(rows))
		}
		if err != nil {
			return "", err
		}
		port, _ := strconv.Atoi(str(rows[0][1]))
		return s.uri(&server{Hostname: str(rows[0][0]), Port: port}), nil
	})
}

func (s *Source) setID(srv *server) { s.id.Set(s.uri(srv)) }

// uri is the register's URI on srv.
func (s *Source) uri(srv *server) string {
	host := srv.Hostname + ":" + strconv.Itoa(srv.Port)
	if srv.UUID != "" {
		host = srv.UUID
	}
	return "mysql://" + host + "/" + s.cfg.Database
}
