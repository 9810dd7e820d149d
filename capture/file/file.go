// Package file is the snapshot source: it reads full exports of a register
// — JSON Lines, CSV and LDIF files — and hands each one to the engine as a
// snapshot run (capture.SnapshotMark, capture.OpSnapshot). The engine
// derives creates, updates and deletes; this package never diffs.
//
// A snapshot is refused whole, before its closing batch, when a file is
// malformed, truncated, empty, missing, or changes while it is read: the
// engine applies nothing of a run without its End batch. Files are streamed
// record by record, so memory does not grow with file size.
//
// The configuration is described by Config and in docs/sources/file.md.
package file

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
)

func init() {
	capture.Register("file", func(node *yaml.Node, opts capture.Options) (capture.Source, error) {
		return New(node, opts)
	})
}

// Source reads snapshots of a register exported as files.
type Source struct {
	name string
	cfg  *settings
	log  capture.Logger
	once bool
	now  func() time.Time
	// state, when it can, gives the stored checkpoint to Snapshot.
	state checkpointReader

	mu     sync.Mutex
	warned map[string]bool // names warned about, so a poll loop warns once
	seen   map[string]bool // entry names listed by earlier polls
}

// New builds a file source from its config entry.
func New(node *yaml.Node, opts capture.Options) (*Source, error) {
	cfg, err := parseConfig(node, opts)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	src := &Source{name: opts.Name, cfg: cfg, log: log, once: opts.Once, now: time.Now, warned: map[string]bool{}, seen: map[string]bool{}}
	src.state, _ = opts.State.(checkpointReader)
	return src, nil
}

// checkpointReader is the part of the engine's state reader Snapshot uses.
type checkpointReader interface {
	Checkpoint(ctx context.Context, source string) ([]byte, error)
}

// checkpoint is the source's resume position: the last applied snapshot.
type checkpoint struct {
	Snapshot string  `json:"snapshot"`
	ID       string  `json:"id"`
	Hash     string  `json:"hash"` // SHA-256 of the snapshot's files
	Files    []stamp `json:"files"`
}

func decodeCheckpoint(b []byte) (*checkpoint, error) {
	if b == nil {
		return nil, nil
	}
	var c checkpoint
	if err := json.Unmarshal(b, &c); err != nil || c.Snapshot == "" {
		return nil, fmt.Errorf("the stored checkpoint %q is not a file source's; was the source's type changed? Remove its state or give the source a new name", clip(b))
	}
	return &c, nil
}

// Run delivers every snapshot that is new since checkpoint (layout dated),
// or the snapshot if its content changed (layout single), then polls every
// interval until ctx is done; with Options.Once or interval 0 it returns
// after the first poll.
func (s *Source) Run(ctx context.Context, cp []byte, sink capture.Sink) error {
	last, err := decodeCheckpoint(cp)
	if err != nil {
		return fmt.Errorf("file source %q: %w", s.name, err)
	}
	once := s.once || s.cfg.interval == 0
	for first := true; ; first = false {
		last, err = s.poll(ctx, last, first, sink)
		if ctx.Err() != nil {
			return nil
		}
		var ce *changingError
		switch {
		case err == nil:
		case errors.As(err, &ce) && !once:
			s.log.Warn("file source: snapshot changed while it was read; retrying at the next poll", "source", s.name,
				"error", err.Error(), "interval", s.cfg.interval.String())
		default:
			return err
		}
		if once {
			return nil
		}
		t := time.NewTimer(s.cfg.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// poll delivers what is new since last and returns the new position.
func (s *Source) poll(ctx context.Context, last *checkpoint, first bool, sink capture.Sink) (*checkpoint, error) {
	entries, err := s.entries()
	if err != nil {
		return last, fmt.Errorf("file source %q: %w", s.name, err)
	}
	for _, e := range entries {
		isNew := s.remember(e.name)
		if s.cfg.dated && last != nil && e.name <= last.Snapshot {
			if isNew && !first && e.name < last.Snapshot {
				s.log.Warn("file source: ignoring a snapshot that arrived after a newer one was applied; snapshots apply in name order, so re-export it under a later name to apply it", "source", s.name,
					"snapshot", e.name, "last", last.Snapshot)
			}
			continue
		}
		snap, err := s.open(e)
		if err != nil {
			return last, fmt.Errorf("file source %q: %w", s.name, err)
		}
		if err := s.settled(snap); err != nil {
			s.log.Info("file source: waiting for a snapshot to settle", "source", s.name, "reason", err.Error())
			return last, nil // later snapshots wait too: they apply in order
		}
		if !s.cfg.dated && last != nil && sameStamps(snap.stamps(), last.Files) {
			continue
		}
		sum, err := hashSnapshot(snap)
		if err != nil {
			return last, fmt.Errorf("file source %q: %w", s.name, err)
		}
		if !s.cfg.dated && last != nil && sum == last.Hash {
			// Touched, not changed: remember the new stamps so that the
			// next poll need not hash again.
			c := *last
			c.Files = snap.stamps()
			last = &c
			continue
		}
		next, err := s.deliver(ctx, snap, sum, runKind{initial: last == nil}, sink)
		if err != nil {
			return last, err
		}
		last = next
	}
	return last, nil
}

// Snapshot re-reads the current snapshot and delivers it as a reconcile
// run (SnapshotMark.Reconcile), whether or not it changed. With layout
// dated that is the first snapshot after the stored checkpoint — the one a
// deletion guard stopped, which `snapshot --dry-run` should show and
// `--allow-deletions` apply — or the newest when none is pending. Its
// checkpoint is that snapshot, so a later Run continues after it.
func (s *Source) Snapshot(ctx context.Context, sink capture.Sink) error {
	entries, err := s.entries()
	if err != nil {
		return fmt.Errorf("file source %q: %w", s.name, err)
	}
	if len(entries) == 0 {
		return fmt.Errorf("file source %q: there is no snapshot in %s yet", s.name, s.cfg.path)
	}
	entry, err := s.pending(ctx, entries)
	if err != nil {
		return fmt.Errorf("file source %q: %w", s.name, err)
	}
	snap, err := s.open(entry)
	if err == nil {
		err = s.settled(snap)
	}
	if err != nil {
		return fmt.Errorf("file source %q: %w", s.name, err)
	}
	sum, err := hashSnapshot(snap)
	if err != nil {
		return fmt.Errorf("file source %q: %w", s.name, err)
	}
	_, err = s.deliver(ctx, snap, sum, runKind{reconcile: true}, sink)
	return err
}

// pending picks the snapshot Snapshot reads.
func (s *Source) pending(ctx context.Context, entries []entry) (entry, error) {
	newest := entries[len(entries)-1]
	if !s.cfg.dated || s.state == nil {
		return newest, nil
	}
	b, err := s.state.Checkpoint(ctx, s.name)
	if err != nil {
		return newest, err
	}
	last, err := decodeCheckpoint(b)
	if err != nil || last == nil {
		return newest, err
	}
	for _, e := range entries {
		if e.name > last.Snapshot {
			return e, nil
		}
	}
	return newest, nil
}

// Check tests that the path is readable and that the newest snapshot's
// files exist and parse up to their first record.
func (s *Source) Check(ctx context.Context) error {
	entries, err := s.entries()
	if err != nil {
		return fmt.Errorf("file source %q: %w", s.name, err)
	}
	if len(entries) == 0 {
		return nil // an empty drop directory: nothing to read yet
	}
	snap, err := s.open(entries[len(entries)-1])
	if err != nil {
		return fmt.Errorf("file source %q: %w", s.name, err)
	}
	for _, f := range snap.files {
		if err := s.checkFile(f); err != nil {
			return fmt.Errorf("file source %q: %w", s.name, err)
		}
	}
	return nil
}

func (s *Source) checkFile(f snapFile) error {
	fh, err := os.Open(f.path)
	if err != nil {
		return err
	}
	defer fh.Close()
	rr, err := newRecordReader(fh, f.format, f.gz, f.display, s.readOptions(f))
	if err != nil {
		return err
	}
	if _, _, err := rr.next(); err == io.EOF {
		if s.cfg.allowEmpty {
			return nil
		}
		return s.emptyError(f)
	} else if err != nil {
		return err
	}
	return nil
}

// ID is the register's URI: the snapshot path.
func (s *Source) ID() string {
	p, err := filepath.Abs(s.cfg.path)
	if err != nil {
		p = s.cfg.path
	}
	return "file://" + filepath.ToSlash(p)
}

func (s *Source) readOptions(f snapFile) readOptions {
	o := s.cfg.read
	o.csv.columns = f.spec.records[0].columns
	return o
}

func (s *Source) emptyError(f snapFile) error {
	names := make([]string, len(f.spec.records))
	for i, rs := range f.spec.records {
		names[i] = rs.name
	}
	return fmt.Errorf("%s holds no records; an empty export would delete every %s object, so the snapshot was not applied — re-export it, or set allow_empty: true if the register really is empty",
		f.display, strings.Join(names, "/"))
}

// applyError is a sink's error, passed through unchanged.
type applyError struct{ err error }

func (e *applyError) Error() string { return e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// runKind says how the engine should emit a run: the first load (initial),
// the regular feed (neither: a new or changed export), or a repair of
// drift asked for on demand (reconcile).
type runKind struct{ initial, reconcile bool }

// deliver sends one snapshot run. Errors before the End batch leave the
// engine with nothing applied.
func (s *Source) deliver(ctx context.Context, snap *snapshot, sum string, kind runKind, sink capture.Sink) (*checkpoint, error) {
	start := time.Now()
	id := snap.name + "@" + sum[:16]
	begin := true
	batch := make([]capture.Change, 0, s.cfg.batchSize)
	flush := func(end bool, cp []byte) error {
		b := capture.Batch{
			Changes:       batch,
			TransactionID: id,
			Checkpoint:    cp,
			Snapshot: &capture.SnapshotMark{ID: id, Begin: begin, End: end,
				Records: s.cfg.recordNames, Initial: kind.initial, Reconcile: kind.reconcile},
		}
		if err := sink.Apply(ctx, b); err != nil {
			return &applyError{err}
		}
		begin = false
		batch = make([]capture.Change, 0, s.cfg.batchSize)
		return nil
	}

	h := sha256.New()
	counts := make(map[*recordSpec]int, len(s.cfg.recordNames))
	total := 0
	for _, f := range snap.files {
		n, unmatched, err := s.readFile(ctx, f, h, func(rs *recordSpec, v map[string]any, line int) error {
			counts[rs]++
			batch = append(batch, capture.Change{
				Record:    rs.name,
				Op:        capture.OpSnapshot,
				Values:    v,
				ChangedAt: snap.at,
				Position:  f.display + ":" + strconv.Itoa(line),
			})
			if len(batch) >= s.cfg.batchSize {
				return flush(false, nil)
			}
			return nil
		})
		if err == nil {
			err = s.checkCounts(f, n, unmatched, counts)
		}
		if err != nil {
			return nil, s.runError(ctx, snap, f, err)
		}
		total += n
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum || snap.restat() {
		return nil, &changingError{fmt.Errorf("file source %q: snapshot %s changed while it was read (the exporter may still be writing it); it was not applied", s.name, snap.name)}
	}
	cp := &checkpoint{Snapshot: snap.name, ID: id, Hash: sum, Files: snap.stamps()}
	b, err := json.Marshal(cp)
	if err != nil {
		return nil, err
	}
	if err := flush(true, b); err != nil {
		return nil, s.runError(ctx, snap, snapFile{}, err)
	}
	s.log.Info("file source: snapshot delivered", "source", s.name, "snapshot", snap.name, "id", id,
		"records", total, "initial", kind.initial, "reconcile", kind.reconcile, "duration", time.Since(start).Round(time.Millisecond).String())
	return cp, nil
}

// checkCounts refuses a file, or a record of it, without records: an empty
// export would otherwise delete everything.
func (s *Source) checkCounts(f snapFile, n, unmatched int, counts map[*recordSpec]int) error {
	if unmatched > 0 {
		s.log.Info("file source: lines matching no record were skipped", "source", s.name, "file", f.display, "lines", unmatched)
	}
	if s.cfg.allowEmpty {
		return nil
	}
	if n == 0 {
		return s.emptyError(f)
	}
	for _, rs := range f.spec.records {
		if counts[rs] == 0 {
			return fmt.Errorf("record %q: no record of %s matches %s, so the snapshot was not applied (it would delete every %s object) — fix match or the export, or set allow_empty: true",
				rs.name, f.display, rs.matchString(), rs.name)
		}
	}
	return nil
}

// runError words an error that ended a run before its End batch.
func (s *Source) runError(ctx context.Context, snap *snapshot, f snapFile, err error) error {
	var ae *applyError
	var pe *ParseError
	switch {
	case errors.As(err, &ae):
		return fmt.Errorf("file source %q: snapshot %s: %w", s.name, snap.name, ae.err)
	case ctx.Err() != nil:
		return ctx.Err()
	case snap.restat():
		return &changingError{fmt.Errorf("file source %q: %s changed while it was read (the exporter may still be writing it); the snapshot was not applied: %w", s.name, f.display, err)}
	case errors.As(err, &pe):
		return fmt.Errorf("file source %q: %w; the snapshot was not applied — fix or re-export the file", s.name, err)
	}
	return fmt.Errorf("file source %q: %w", s.name, err)
}

// readFile streams one file of a snapshot through emit, writing its bytes
// to h. It returns the number of records read and of those matching no
// configured record.
func (s *Source) readFile(ctx context.Context, f snapFile, h hash.Hash, emit func(*recordSpec, map[string]any, int) error) (n, unmatched int, err error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return 0, 0, err
	}
	defer fh.Close()
	hashFile(h, f)
	raw := io.TeeReader(fh, h)
	rr, err := newRecordReader(raw, f.format, f.gz, f.display, s.readOptions(f))
	if err != nil {
		return 0, 0, err
	}
	fold := f.format == FormatLDIF
	for {
		if n%1024 == 0 && ctx.Err() != nil {
			return n, unmatched, ctx.Err()
		}
		v, line, err := rr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, unmatched, err
		}
		n++
		matched := false
		for _, rs := range f.spec.records {
			if !rs.matches(v, fold) {
				continue
			}
			w := v
			if matched {
				w = maps.Clone(v) // each change owns its map
			}
			matched = true
			if err := emit(rs, w, line); err != nil {
				return n, unmatched, err
			}
		}
		if !matched {
			unmatched++
		}
	}
	// The reader may stop before the end of the raw bytes (gzip trailer);
	// the hash covers all of them.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return n, unmatched, err
	}
	return n, unmatched, nil
}

// settled refuses a snapshot modified within the settle time.
func (s *Source) settled(snap *snapshot) error {
	if s.cfg.settle <= 0 {
		return nil
	}
	var newest int64
	for _, f := range snap.files {
		newest = max(newest, f.stamp.MTime)
	}
	if age := s.now().Sub(time.Unix(0, newest)); age < s.cfg.settle {
		return fmt.Errorf("snapshot %s was modified %s ago (settle %s): %w", snap.name, age.Round(time.Second), s.cfg.settle, errNotReady)
	}
	return nil
}

func (s *Source) warnOnce(key, msg string, args ...any) {
	s.mu.Lock()
	seen := s.warned[key]
	s.warned[key] = true
	s.mu.Unlock()
	if !seen {
		s.log.Warn(msg, append([]any{"source", s.name}, args...)...)
	}
}

// remember notes an entry name and reports whether it is new to this
// process.
func (s *Source) remember(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[name] {
		return false
	}
	s.seen[name] = true
	return true
}

// matches reports whether a record's values satisfy rs's match terms.
func (rs *recordSpec) matches(v map[string]any, fold bool) bool {
	for _, t := range rs.match {
		got, ok := v[t.field]
		if !ok && fold {
			for k, x := range v {
				if strings.EqualFold(k, t.field) {
					got, ok = x, true
					break
				}
			}
		}
		if !ok || !valueIs(got, t.value, fold) {
			return false
		}
	}
	return true
}

func valueIs(got any, want string, fold bool) bool {
	switch g := got.(type) {
	case string:
		return g == want || fold && strings.EqualFold(g, want)
	case json.Number:
		return string(g) == want
	case bool:
		return strconv.FormatBool(g) == want
	case []any:
		for _, x := range g {
			if valueIs(x, want, fold) {
				return true
			}
		}
	}
	return false
}

func (rs *recordSpec) matchString() string {
	if len(rs.match) == 0 {
		return "(every line)"
	}
	parts := make([]string, len(rs.match))
	for i, t := range rs.match {
		parts[i] = t.field + ": " + t.value
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
