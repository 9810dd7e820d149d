package history

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/mapping"
	"github.com/os2sandbox/connector/state"
)

// A snapshot run is staged before anything of it is applied, so that a
// run that fails half-way, or that the deletion guard refuses, changes
// nothing. The staging bucket of a source holds:
//
//	"meta"               → runMeta
//	"o" type \x00 id     → 'u' position   seen, unchanged at staging time
//	                       'c' stagedObj   seen, new or changed
//
// After End: phase "applying". The staged objects are applied in key
// order, then live objects of the run's records that were not seen are
// deleted; each chunk is one transaction that also advances the cursor in
// meta, so a crash resumes where it stopped (Recover) and re-derives the
// same events (snapshot event ids depend only on content and predecessor).

const (
	phaseStaging  = "staging"
	phaseApplying = "applying"
	phaseDeleting = "deleting"
)

var metaKey = []byte("meta")

type runMeta struct {
	ID         string   `json:"id"`
	Records    []string `json:"records"`
	Initial    bool     `json:"initial"`
	Reconcile  bool     `json:"reconcile"`
	Phase      string   `json:"phase"`
	TxID       string   `json:"txid"`
	Cursor     []byte   `json:"cursor,omitempty"`
	TypeIdx    int      `json:"typeIdx,omitempty"`
	Checkpoint []byte   `json:"checkpoint,omitempty"`
	ChangedAt  *Time    `json:"changedAt,omitempty"`
	Seen       int      `json:"seen"`
	Changed    int      `json:"changed"`
	// A type related to itself (a unit tree) is applied in passes, each
	// applying the objects whose related objects of the run are already
	// applied: parents before children. Deferred and Applied count the
	// current pass; Force applies the rest of a cycle in key order.
	Deferred int  `json:"deferred,omitempty"`
	Applied  int  `json:"applied,omitempty"`
	Force    bool `json:"force,omitempty"`
	// Listed: the deletions are staged ('d' keys), in order.
	Listed bool `json:"listed,omitempty"`
}

// Staged values: 'u' + position (seen, unchanged); 'C' + the ids the
// object relates to within its own type + JSON of a stagedObj (to apply;
// runs staged by earlier versions have 'c' + JSON); 'a' once applied.
const (
	stagedUnchanged = 'u'
	stagedChanged   = 'C'
	stagedLegacy    = 'c'
	stagedApplied   = 'a'
)

func encodeStaged(related []string, data []byte) []byte {
	b := make([]byte, 0, len(data)+16)
	b = append(b, stagedChanged)
	b = binary.AppendUvarint(b, uint64(len(related)))
	for _, id := range related {
		b = appendStr(b, id)
	}
	return append(b, data...)
}

// decodeStaged splits a changed staged value; ok is false for other kinds.
func decodeStaged(v []byte) (related []string, data []byte, ok bool, err error) {
	switch {
	case len(v) > 0 && v[0] == stagedLegacy:
		return nil, v[1:], true, nil
	case len(v) == 0 || v[0] != stagedChanged:
		return nil, nil, false, nil
	}
	r := reader{p: v[1:]}
	n := r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		related = append(related, r.str())
	}
	return related, r.p, r.err == nil, r.err
}

// selfRelated lists the ids obj relates to in its own type (its parent).
func selfRelated(m *mapping.Mapping, obj mapping.Object) []string {
	var out []string
	for field, f := range m.Fields { // not Relations(): no map per staged object
		if f.Relation != m.Type {
			continue
		}
		var id string
		switch v := obj.Fields[field].(type) {
		case string:
			id = v
		case json.Number:
			id = string(v)
		}
		if id != "" && id != obj.ID {
			out = append(out, id)
		}
	}
	return out
}

type stagedObj struct {
	Record      string            `json:"r"`
	Fields      map[string]any    `json:"f"`
	Keys        map[string]string `json:"k,omitempty"`
	Row         map[string]any    `json:"row,omitempty"`
	ValidFrom   *Time             `json:"vf,omitempty"`
	ValidTo     *Time             `json:"vt,omitempty"`
	ValidSource string            `json:"vs,omitempty"`
	ChangedAt   *Time             `json:"ca,omitempty"`
	Position    string            `json:"p,omitempty"`
}

// DryRun collects what a snapshot would change.
type DryRun struct {
	// Counts is type → operation → count.
	Counts map[string]map[string]int
	// Examples are the first objects per operation ("create Bruger/123").
	Examples map[string][]string
	Live     int
	Deletes  int
	Limit    int
	Tripped  bool
}

func (d *DryRun) add(op, typ, id string) {
	if d.Counts[typ] == nil {
		d.Counts[typ] = map[string]int{}
	}
	d.Counts[typ][op]++
	if len(d.Examples[op]) < 10 {
		d.Examples[op] = append(d.Examples[op], typ+"/"+id)
	}
}

// DryRunSink returns a sink that stages snapshots under a separate name,
// reports into d at End, and applies nothing.
func (s *Sink) DryRunSink(d *DryRun) *Sink {
	c := *s
	c.reconcile = true
	d.Counts = map[string]map[string]int{}
	d.Examples = map[string][]string{}
	c.dryRun = d
	return &c
}

func (s *Sink) stageName() string {
	if s.dryRun != nil {
		return "dry-run\x00" + s.src.Name
	}
	return s.src.Name
}

func (s *Sink) applySnapshot(ctx context.Context, b capture.Batch) error {
	e := s.e
	mark := b.Snapshot
	e.mu.Lock()
	var meta runMeta
	err := e.db.Update(func(tx *state.Tx) error {
		if mark.Begin {
			if err := tx.DropStaging(s.stageName()); err != nil {
				return err
			}
		}
		st, err := tx.Staging(s.stageName(), mark.Begin)
		if err != nil {
			return err
		}
		if st == nil {
			return fmt.Errorf("%w: snapshot run %q: batch without a Begin (the source must start a run with SnapshotMark.Begin)", capture.ErrNoRun, mark.ID)
		}
		if mark.Begin {
			ss, err := LoadSource(tx, s.src.Name)
			if err != nil {
				return err
			}
			if b.EpochBreak != "" && s.dryRun == nil {
				s.breakEpoch(&ss, b.EpochBreak)
				if err := SaveSource(tx, s.src.Name, ss); err != nil {
					return err
				}
			}
			meta = runMeta{ID: mark.ID, Records: mark.Records, Initial: mark.Initial, Phase: phaseStaging, TxID: b.TransactionID,
				Reconcile: !mark.Initial && (mark.Reconcile || s.reconcile || ss.PendingReconcile)}
			if meta.TxID == "" {
				meta.TxID = "snapshot:" + mark.ID
			}
		} else if err := getJSON(st.Get(metaKey), &meta); err != nil {
			return err
		}
		if meta.ID != mark.ID {
			return fmt.Errorf("snapshot run %q: batch belongs to run %q, which has no Begin", meta.ID, mark.ID)
		}
		var q batchCtx // quarantine bookkeeping for this batch
		for i := range b.Changes {
			if err := e.stage(tx, st, s, &meta, &q, &b.Changes[i]); err != nil {
				return err
			}
		}
		if q.ss != nil {
			if err := SaveSource(tx, s.src.Name, *q.ss); err != nil {
				return err
			}
		}
		if b.Checkpoint != nil {
			meta.Checkpoint = b.Checkpoint
			if !mark.End && s.dryRun == nil {
				// Progress inside a long run is kept with the staged rows,
				// so the source can resume the same run after a crash.
				ss, err := LoadSource(tx, s.src.Name)
				if err != nil {
					return err
				}
				ss.Checkpoint = b.Checkpoint
				if err := SaveSource(tx, s.src.Name, ss); err != nil {
					return err
				}
			}
		}
		if mark.End {
			if err := s.endRun(tx, st, &meta); err != nil {
				return err
			}
		}
		return putJSON2(st, metaKey, &meta)
	})
	e.mu.Unlock()
	if err != nil {
		if errors.Is(err, ErrDeletionGuard) {
			e.mu.Lock()
			_ = e.db.Update(func(tx *state.Tx) error { return tx.DropStaging(s.stageName()) })
			e.mu.Unlock()
		}
		return fmt.Errorf("source %q: %w", s.src.Name, err)
	}
	if !mark.End || s.dryRun != nil {
		if s.dryRun != nil && mark.End {
			e.mu.Lock()
			err := e.db.Update(func(tx *state.Tx) error { return tx.DropStaging(s.stageName()) })
			e.mu.Unlock()
			return err
		}
		return nil
	}
	return s.finish(ctx)
}

// stage maps one snapshot record into the staging bucket.
func (e *Engine) stage(tx *state.Tx, st *state.Staged, s *Sink, meta *runMeta, q *batchCtx, ch *capture.Change) error {
	if !meta.ChangedAtSet() && !ch.ChangedAt.IsZero() {
		meta.ChangedAt = Ptr(ch.ChangedAt)
	}
	for _, m := range e.maps.ForRecord(s.src.Name, ch.Record) {
		obj, ok, err := m.Map(ch.Values)
		if err != nil {
			if s.dryRun != nil {
				s.dryRun.add("quarantine", m.Type, ch.Position)
				continue
			}
			if q.ss == nil {
				ss, lerr := LoadSource(tx, s.src.Name)
				if lerr != nil {
					return lerr
				}
				q.tx, q.src, q.ss = tx, &s.src, &ss
			}
			if err := e.quarantine(q, *ch, err); err != nil {
				return err
			}
			continue
		}
		if !ok {
			continue // outside the mapping's where: absent, like a missing row
		}
		key := append([]byte("o"), imageKey(obj.Type, obj.ID)...)
		if prev := st.Get(key); prev != nil {
			return fmt.Errorf("%s: %s/%s appears twice in the snapshot (first at %s); the export has a duplicate key, nothing was applied",
				ch.Position, obj.Type, obj.ID, stagedPosition(prev))
		}
		meta.Seen++
		head, found, err := peekAt(tx, obj.Type, obj.ID)
		if err != nil {
			return err
		}
		if found && !head.Deleted && head.Hash == ContentHash(obj.Fields) && sameValid(head, obj) {
			if err := st.Put(key, append([]byte{stagedUnchanged}, ch.Position...)); err != nil {
				return err
			}
			continue
		}
		meta.Changed++
		so := stagedObj{Record: ch.Record, Fields: obj.Fields, Keys: obj.Keys, ValidSource: obj.ValidSource, Position: ch.Position}
		if s.src.KeepRows {
			so.Row = ch.Values
		}
		if !obj.ValidFrom.IsZero() {
			so.ValidFrom = Ptr(obj.ValidFrom)
		}
		if obj.ValidTo != nil {
			so.ValidTo = Ptr(*obj.ValidTo)
		}
		if !ch.ChangedAt.IsZero() {
			so.ChangedAt = Ptr(ch.ChangedAt)
		}
		if s.dryRun != nil {
			op := OpCreate
			switch {
			case !found && meta.Initial:
				op = OpSnapshot
			case found && head.Deleted:
				op = OpUndelete
			case found:
				op = OpUpdate
			}
			s.dryRun.add(op, obj.Type, obj.ID)
		}
		data, err := json.Marshal(so)
		if err != nil {
			return err
		}
		if err := st.Put(key, encodeStaged(selfRelated(m, obj), data)); err != nil {
			return err
		}
	}
	return nil
}

func (m *runMeta) ChangedAtSet() bool { return m.ChangedAt != nil }

func sameValid(h imageHead, obj mapping.Object) bool {
	return obj.ValidSource == "" || h.VirkFra == obj.ValidFrom.UnixMicro()
}

func stagedPosition(v []byte) string {
	if len(v) > 0 && v[0] == stagedUnchanged {
		return string(v[1:])
	}
	var so stagedObj
	if _, data, ok, _ := decodeStaged(v); ok && unmarshalExact(data, &so) == nil {
		return so.Position
	}
	return "?"
}

// endRun counts deletions and applies the guard; on success the run moves
// to the applying phase.
func (s *Sink) endRun(tx *state.Tx, st *state.Staged, meta *runMeta) error {
	types := s.e.maps.TypesOf(s.src.Name, meta.Records)
	live, deletes := 0, 0
	for _, typ := range types {
		err := s.e.scanLive(tx, typ, s.src.Name, meta.Records, func(id string) error {
			live++
			if st.Get(append([]byte("o"), imageKey(typ, id)...)) == nil {
				deletes++
				if s.dryRun != nil {
					s.dryRun.add(OpDelete, typ, id)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	g := s.src.Guard
	limit := g.Limit(live)
	if s.dryRun != nil {
		s.dryRun.Live, s.dryRun.Deletes, s.dryRun.Limit = live, deletes, limit
		s.dryRun.Tripped = deletes > limit && !g.Override
		return nil
	}
	if deletes > limit && !g.Override {
		share := 0.0
		if live > 0 {
			share = 100 * float64(deletes) / float64(live)
		}
		s.e.opt.Log.Error("deletion guard tripped: snapshot not applied", "source", s.src.Name, "deletes", deletes, "live", live, "limit", limit)
		return fmt.Errorf("%w: the snapshot would delete %d of %d live objects (%.1f%%; the limit is %d = max(%.0f%% of live, %d)); nothing was applied. "+
			"List them with `connector snapshot --source %s --dry-run`; if the deletions are intended, apply them with `connector snapshot --source %s --allow-deletions` "+
			"(or raise deletion_guard in the config)",
			ErrDeletionGuard, deletes, live, share, limit, 100*g.MaxShare, g.MinCount, s.src.Name, s.src.Name)
	}
	meta.Phase = phaseApplying
	meta.Cursor = nil
	return nil
}

// scanLive calls fn for each live object of typ that came from the
// source's records.
func (e *Engine) scanLive(tx *state.Tx, typ, source string, records []string, fn func(id string) error) error {
	prefix := state.Key(typ, "")
	return tx.Scan(state.Images, prefix, func(k, v []byte) error {
		h, err := peekImage(v)
		if err != nil {
			return fmt.Errorf("%w: image %q: %v", state.ErrCorrupt, k, err)
		}
		if h.Deleted || h.Source != source || !contains(records, h.Record) {
			return nil
		}
		return fn(string(k[len(prefix):]))
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Recover finishes a snapshot run whose application a crash interrupted.
// Call it before the source runs.
func (s *Sink) Recover(ctx context.Context) error {
	var phase string
	err := s.e.db.View(func(tx *state.Tx) error {
		st, err := tx.Staging(s.src.Name, false)
		if err != nil || st == nil {
			return err
		}
		var meta runMeta
		if err := getJSON(st.Get(metaKey), &meta); err != nil {
			return err
		}
		phase = meta.Phase
		return nil
	})
	if err != nil || (phase != phaseApplying && phase != phaseDeleting) {
		return err
	}
	s.e.opt.Log.Info("resuming an interrupted snapshot application", "source", s.src.Name)
	return s.finish(ctx)
}

// finish applies a run in the applying phase, chunk by chunk.
func (s *Sink) finish(ctx context.Context) error {
	e := s.e
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var done bool
		var last uint64
		var n int
		var counts map[string]map[string]int
		var logged []Event
		e.mu.Lock()
		err := e.db.Update(func(tx *state.Tx) error {
			st, err := tx.Staging(s.src.Name, false)
			if err != nil || st == nil {
				done = true
				return err
			}
			var meta runMeta
			if err := getJSON(st.Get(metaKey), &meta); err != nil {
				return err
			}
			bc, err := e.begin(tx, &s.src, meta.TxID)
			if err != nil {
				return err
			}
			bc.initial, bc.reconcile = meta.Initial, meta.Reconcile
			switch {
			case meta.Initial:
				bc.emission = EmissionBackfill
			case meta.Reconcile:
				bc.emission = EmissionReconcile
			}
			switch meta.Phase {
			case phaseApplying:
				err = s.applyChunk(bc, st, &meta)
			case phaseDeleting:
				err = s.deleteChunk(bc, st, &meta)
			default:
				return fmt.Errorf("snapshot run %q is in phase %q, not ready to apply", meta.ID, meta.Phase)
			}
			if err != nil {
				return err
			}
			last, n, counts, logged = bc.seq, bc.events, bc.counts, bc.handOver()
			if meta.Phase == "" {
				// Finished: the run's checkpoint becomes the source's.
				done = true
				if meta.Checkpoint != nil {
					bc.ss.Checkpoint = meta.Checkpoint
				}
				bc.ss.PendingReconcile = false
				bc.ss.LastApplied = Ptr(e.opt.Clock())
				if err := tx.DropStaging(s.src.Name); err != nil {
					return err
				}
			} else if err := putJSON2(st, metaKey, &meta); err != nil {
				return err
			}
			return SaveSource(tx, s.src.Name, *bc.ss)
		})
		if err == nil {
			e.committed(counts)
		}
		e.mu.Unlock()
		if err != nil {
			return fmt.Errorf("source %q: apply snapshot: %w", s.src.Name, err)
		}
		if n > 0 && e.opt.Committed != nil {
			e.opt.Committed(last, logged)
		}
		if done {
			return nil
		}
	}
}

func (s *Sink) applyChunk(bc *batchCtx, st *state.Staged, meta *runMeta) error {
	e := s.e
	// Types go in relation order (a unit before the users that point at
	// it), so a receiver that checks references on arrival sees the
	// target first. The cursor is the type's index and the next key.
	types := TypeOrder(e.maps, e.maps.TypesOf(s.src.Name, meta.Records))
	n := 0
	for meta.TypeIdx < len(types) {
		typ := types[meta.TypeIdx]
		m := e.maps.Type(typ)
		tree := !meta.Force && hasSelfRelation(m)
		prefix := append([]byte("o"), state.Key(typ, "")...)
		from := prefix
		if meta.Cursor != nil {
			from = meta.Cursor
		}
		var next []byte
		var applied [][]byte
		appliedNow := map[string]bool{}
		err := st.Scan(prefix, from, func(k, v []byte) error {
			if n == e.opt.ChunkSize {
				next = bytes.Clone(k)
				return state.ErrStop
			}
			n++
			related, data, ok, err := decodeStaged(v)
			if err != nil {
				return fmt.Errorf("%w: staged object %q: %v", state.ErrCorrupt, k, err)
			}
			if !ok {
				return nil
			}
			if tree {
				for _, id := range related {
					pk := append(bytes.Clone(prefix), id...)
					if pv := st.Get(pk); len(pv) > 0 && (pv[0] == stagedChanged || pv[0] == stagedLegacy) && !appliedNow[string(pk)] {
						meta.Deferred++ // its parent is not applied yet
						return nil
					}
				}
			}
			var so stagedObj
			if err := unmarshalExact(data, &so); err != nil {
				return fmt.Errorf("%w: staged object %q: %v", state.ErrCorrupt, k, err)
			}
			obj := mapping.Object{Type: typ, ID: string(k[len(prefix):]), Keys: so.Keys, Fields: so.Fields, ValidSource: so.ValidSource}
			if so.ValidFrom != nil {
				obj.ValidFrom = so.ValidFrom.Time
			}
			if so.ValidTo != nil {
				t := so.ValidTo.Time
				obj.ValidTo = &t
			}
			c := change{rec: so.Record, obj: obj, row: so.Row, position: so.Position}
			if so.ChangedAt != nil {
				c.changedAt = so.ChangedAt.Time
			}
			kc := bytes.Clone(k)
			applied = append(applied, kc)
			appliedNow[string(kc)] = true
			meta.Applied++
			return e.upsert(bc, m, c)
		})
		if err != nil {
			return err
		}
		// Marked after the scan: a bucket must not change under its cursor.
		for _, k := range applied {
			if err := st.Put(k, []byte{stagedApplied}); err != nil {
				return err
			}
		}
		if next != nil {
			meta.Cursor = next
			return nil
		}
		meta.Cursor = nil
		if meta.Deferred > 0 {
			// Another pass for the children; a pass that applied nothing
			// means a cycle: the next one takes everything left.
			meta.Force = meta.Applied == 0
			meta.Deferred, meta.Applied = 0, 0
			continue
		}
		meta.TypeIdx++
		meta.Deferred, meta.Applied, meta.Force = 0, 0, false
	}
	meta.Phase, meta.Cursor, meta.TypeIdx = phaseDeleting, nil, 0
	return nil
}

// hasSelfRelation reports whether m has a relation to its own type.
func hasSelfRelation(m *mapping.Mapping) bool {
	for _, f := range m.Fields {
		if f.Relation == m.Type {
			return true
		}
	}
	return false
}

// TypeOrder sorts types so that a type comes after the types its
// relations point to (self-relations aside); a cycle falls back to name
// order for the types in it.
func TypeOrder(maps *mapping.Set, types []string) []string {
	in := map[string]bool{}
	for _, t := range types {
		in[t] = true
	}
	deps := map[string][]string{}
	for _, t := range types {
		if m := maps.Type(t); m != nil {
			for _, target := range m.Relations() {
				if target != t && in[target] {
					deps[t] = append(deps[t], target)
				}
			}
		}
	}
	sorted := append([]string(nil), types...)
	sort.Strings(sorted)
	var out []string
	done := map[string]bool{}
	for len(out) < len(sorted) {
		progress := false
		for _, t := range sorted {
			if done[t] {
				continue
			}
			ready := true
			for _, d := range deps[t] {
				if !done[d] {
					ready = false
				}
			}
			if ready {
				out, done[t], progress = append(out, t), true, true
			}
		}
		if !progress { // a cycle: take the first remaining by name
			for _, t := range sorted {
				if !done[t] {
					out, done[t] = append(out, t), true
					break
				}
			}
		}
	}
	return out
}

// deleteChunk deletes, a chunk at a time, live objects the run did not
// see: children before parents. It first lists them in the staging area
// ('d' keys: reverse relation order of types, then deepest first within a
// type related to itself), then deletes in that order.
func (s *Sink) deleteChunk(bc *batchCtx, st *state.Staged, meta *runMeta) error {
	if !meta.Listed {
		return s.listDeletions(bc, st, meta)
	}
	e := s.e
	var changedAt time.Time
	if meta.ChangedAt != nil {
		changedAt = meta.ChangedAt.Time
	}
	from := []byte("d")
	if meta.Cursor != nil {
		from = meta.Cursor
	}
	type victim struct{ typ, id string }
	var victims []victim
	var next []byte
	err := st.Scan([]byte("d"), from, func(k, _ []byte) error {
		if len(victims) == e.opt.ChunkSize {
			next = bytes.Clone(k)
			return state.ErrStop
		}
		r := reader{p: k[5:]} // 'd', type index, inverted depth
		victims = append(victims, victim{r.str(), r.str()})
		return r.err
	})
	if err != nil {
		return fmt.Errorf("%w: staged deletion: %v", state.ErrCorrupt, err)
	}
	for _, v := range victims {
		img, err := loadImage(bc.tx, v.typ, v.id)
		if err != nil {
			return err
		}
		c := change{obj: mapping.Object{Type: v.typ, ID: v.id}, changedAt: changedAt}
		if img != nil {
			c.rec = img.Record
		}
		if err := e.remove(bc, e.maps.Type(v.typ), img, c); err != nil {
			return err
		}
	}
	if next != nil {
		meta.Cursor = next
		return nil
	}
	meta.Phase, meta.Cursor = "", nil
	return nil
}

// listDeletions finds, a chunk of images at a time, the live objects the
// run did not see and stages their deletion keys.
func (s *Sink) listDeletions(bc *batchCtx, st *state.Staged, meta *runMeta) error {
	e := s.e
	types := TypeOrder(e.maps, e.maps.TypesOf(s.src.Name, meta.Records))
	slices.Reverse(types) // children's types first
	seen := 0
	for ; meta.TypeIdx < len(types); meta.TypeIdx, meta.Cursor = meta.TypeIdx+1, nil {
		typ := types[meta.TypeIdx]
		m := e.maps.Type(typ)
		tree := hasSelfRelation(m)
		prefix := state.Key(typ, "")
		from := prefix
		if meta.Cursor != nil {
			from = meta.Cursor
		}
		var next []byte
		err := bc.tx.ScanFrom(state.Images, prefix, from, func(k, v []byte) error {
			if seen == e.opt.ChunkSize {
				next = bytes.Clone(k)
				return state.ErrStop
			}
			seen++
			h, err := peekImage(v)
			if err != nil {
				return fmt.Errorf("%w: image %q: %v", state.ErrCorrupt, k, err)
			}
			if h.Deleted || h.Source != s.src.Name || !contains(meta.Records, h.Record) || st.Get(append([]byte("o"), k...)) != nil {
				return nil
			}
			id := string(k[len(prefix):])
			depth := 0
			if tree {
				if depth, err = e.depth(bc.tx, m, id); err != nil {
					return err
				}
			}
			key := []byte{'d'}
			key = binary.BigEndian.AppendUint16(key, uint16(meta.TypeIdx))
			key = binary.BigEndian.AppendUint16(key, uint16(maxDepth-depth))
			key = appendStr(appendStr(key, typ), id)
			return st.Put(key, nil)
		})
		if err != nil {
			return err
		}
		if next != nil {
			meta.Cursor = next
			return nil
		}
	}
	meta.Listed, meta.TypeIdx, meta.Cursor = true, 0, nil
	return nil
}

// maxDepth bounds the walk up a relation chain (and breaks cycles).
const maxDepth = 1000

// depth is how many in-type relations lead up from an object to a root.
func (e *Engine) depth(tx *state.Tx, m *mapping.Mapping, id string) (int, error) {
	depth := 0
	for seen := map[string]bool{id: true}; depth < maxDepth; depth++ {
		img, err := loadImage(tx, m.Type, id)
		if err != nil || img == nil {
			return depth, err
		}
		fields, err := decodeObject(img.fieldsJSON)
		if err != nil {
			return 0, fmt.Errorf("%w: image %s/%s: %v", state.ErrCorrupt, m.Type, id, err)
		}
		parents := selfRelated(m, mapping.Object{Type: m.Type, ID: id, Fields: fields})
		if len(parents) == 0 || seen[parents[0]] {
			return depth, nil
		}
		id = parents[0]
		seen[id] = true
	}
	return depth, nil
}

func getJSON(b []byte, v any) error {
	if b == nil {
		return fmt.Errorf("%w: staged snapshot without metadata", state.ErrCorrupt)
	}
	return json.Unmarshal(b, v)
}

func putJSON2(st *state.Staged, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return st.Put(key, b)
}
