package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/mapping"
	"github.com/os2sandbox/connector/state"
)

// ErrDeletionGuard is returned when a snapshot would delete more live
// objects than the source's guard allows; nothing of it was applied.
var ErrDeletionGuard = errors.New("deletion guard tripped")

// Guard limits how many live objects one snapshot may delete: it trips
// when deletions > max(MaxShare × live, MinCount), unless Override.
type Guard struct {
	MaxShare float64 `yaml:"max_share"`
	MinCount int     `yaml:"min_count"`
	// Window, when positive, guards a change feed too: the deletions its
	// batches make within this long count together against the limit,
	// so that a subtree moved out of scope between two polls cannot
	// delete the organisation downstream either. Zero guards snapshot
	// runs only.
	Window   time.Duration `yaml:"window"`
	Override bool          `yaml:"-"`
}

// DefaultGuard is 10% and at least 100.
var DefaultGuard = Guard{MaxShare: 0.10, MinCount: 100}

// Limit is the most deletions the guard allows out of live objects.
func (g Guard) Limit(live int) int {
	share := int(g.MaxShare * float64(live))
	return max(share, g.MinCount)
}

// SourceInfo describes a source to the engine.
type SourceInfo struct {
	Name string
	Type string
	// ID is the register's stable URI (source.id in events).
	ID string
	// ChangeTime names the source of valid time when a mapping has no
	// valid-time field: "commit-time", "whenChanged", ...
	ChangeTime string
	Guard      Guard
	KeepRows   bool
}

// Image is the current image of one object.
type Image struct {
	Source  string            `json:"source"`
	Record  string            `json:"record"`
	Version uint64            `json:"version"`
	Deleted bool              `json:"deleted,omitempty"`
	Hash    string            `json:"hash"`
	Fields  map[string]any    `json:"fields"`
	Keys    map[string]string `json:"keys,omitempty"`
	Row     map[string]any    `json:"row,omitempty"`
	RegFra  Time              `json:"registreringFra"`
	VirkFra Time              `json:"virkningFra"`
	EventID string            `json:"eventId"`
	// Open lists the versions not yet closed (RegTil nil), so a new
	// registration never has to read the object's whole history.
	Open []uint64 `json:"open"`

	// The canonical JSON of Fields, Keys and Row: what is stored, and all
	// the engine reads on its hot path (see codec.go).
	fieldsJSON, keysJSON, rowJSON []byte
	// head is the newest version, kept in the image record (see
	// image.go); nil where it is in the versions bucket.
	head *Version
}

// SourceState is what the engine keeps per source.
type SourceState struct {
	Epoch       uint64 `json:"epoch"`
	EpochReason string `json:"epochReason,omitempty"`
	Checkpoint  []byte `json:"checkpoint,omitempty"`
	Position    string `json:"position,omitempty"`
	LastChange  *Time  `json:"lastChange,omitempty"`
	LastApplied *Time  `json:"lastApplied,omitempty"`
	MappingHash string `json:"mappingHash,omitempty"`
	Events      uint64 `json:"events"`
	Quarantined uint64 `json:"quarantined"`
	// PendingReconcile is set when continuity broke and a reconcile has
	// not completed yet.
	PendingReconcile bool `json:"pendingReconcile,omitempty"`
	// Live counts the source's live objects (nil: not counted yet, in a
	// state written before the count existed).
	Live *int64 `json:"live,omitempty"`
	// Deletes are the change feed's recent deletions, for Guard.Window.
	Deletes []DeleteCount `json:"deletes,omitempty"`
}

// DeleteCount is how many objects a source's change feed deleted in the
// minute starting At.
type DeleteCount struct {
	At Time `json:"at"`
	N  int  `json:"n"`
}

// Options configure an Engine.
type Options struct {
	// Clock gives registration time; default time.Now.
	Clock func() time.Time
	Log   *slog.Logger
	// Committed is called after each commit that appended events, with
	// the last sequence and the committed events themselves, in sequence
	// order, as far as the engine kept them (up to KeepLogged of each
	// commit): the dispatcher delivers the log's tail from them instead
	// of reading it back. The callee owns the events; it must not change
	// them, nor block.
	Committed func(last uint64, logged []Event)
	// KeepLogged is how many events of a commit are kept for Committed
	// (default 4096; negative keeps none).
	KeepLogged int
	// ChunkSize is how many staged objects one apply transaction takes.
	ChunkSize int
}

// Engine derives events from changes and commits them with images,
// versions and checkpoints, one write transaction per batch.
type Engine struct {
	db   *state.DB
	maps *mapping.Set
	ns   uuid.UUID
	opt  Options

	mu      sync.Mutex // serialises registration time and commits
	lastReg time.Time
	// counts is type → operation → events committed by this process.
	counts map[string]map[string]int
}

// Counts returns the events registered since the engine was built, per
// object type and operation.
func (e *Engine) Counts() map[string]map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]map[string]int, len(e.counts))
	for t, ops := range e.counts {
		out[t] = maps.Clone(ops)
	}
	return out
}

// New returns an engine over db.
func New(db *state.DB, maps *mapping.Set, opt Options) (*Engine, error) {
	ns, err := uuid.Parse(db.Installation())
	if err != nil {
		return nil, fmt.Errorf("state installation id: %w", err)
	}
	if opt.Clock == nil {
		opt.Clock = time.Now
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.ChunkSize == 0 {
		opt.ChunkSize = 2000
	}
	if opt.KeepLogged == 0 {
		opt.KeepLogged = 4096
	}
	return &Engine{db: db, maps: maps, ns: ns, opt: opt}, nil
}

// DB returns the engine's state.
func (e *Engine) DB() *state.DB { return e.db }

// Mappings returns the engine's mappings.
func (e *Engine) Mappings() *mapping.Set { return e.maps }

// now returns a registration time that never goes backwards, even if the
// wall clock does (per object it is also kept strictly increasing).
func (e *Engine) now() time.Time {
	t := e.opt.Clock().UTC().Truncate(time.Microsecond)
	if !t.After(e.lastReg) {
		t = e.lastReg.Add(time.Microsecond)
	}
	e.lastReg = t
	return t
}

// eventID is the deterministic id of a change to an object.
func (e *Engine) eventID(source string, epoch uint64, changeKey, typ, id string) string {
	name := source + "\x00" + strconv.FormatUint(epoch, 10) + "\x00" + changeKey + "\x00" + typ + "\x00" + id
	return uuid.NewSHA1(e.ns, []byte(name)).String()
}

// MappingHash fingerprints the mappings of a source's records, so a change
// of mapping is detected at start.
func MappingHash(maps *mapping.Set, source string) string {
	var cfgs []mapping.Config
	for _, r := range maps.Records(source) {
		for _, m := range maps.ForRecord(source, r) {
			cfgs = append(cfgs, m.Config)
		}
	}
	b, _ := json.Marshal(cfgs)
	return ContentHash(map[string]any{"m": string(b)})
}

// LoadSource returns a source's stored state (zero if none).
func LoadSource(tx *state.Tx, name string) (SourceState, error) {
	var s SourceState
	if v := tx.Get(state.Checkpoints, []byte(name)); v != nil {
		if err := json.Unmarshal(v, &s); err != nil {
			return s, fmt.Errorf("%w: source %q checkpoint: %v", state.ErrCorrupt, name, err)
		}
	}
	return s, nil
}

// SaveSource writes a source's stored state.
func SaveSource(tx *state.Tx, name string, s SourceState) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return tx.Put(state.Checkpoints, []byte(name), b)
}

func imageKey(typ, id string) []byte { return state.Key(typ, id) }

func putJSON(tx *state.Tx, b state.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(b, key, data)
}

// batchCtx carries what one transaction needs.
type batchCtx struct {
	// eventSize is the buffer size to encode the next event into: a bit
	// more than the largest so far, so most events need one allocation.
	eventSize int
	tx        *state.Tx
	src       *SourceInfo
	ss        *SourceState
	seq       uint64
	txid      string
	emission  string
	reconcile bool
	initial   bool
	events    int
	deleted   int            // objects deleted by this batch
	deletedIn []string       // the first of them, type/id, for the guard's message
	whyDelete map[string]int // reason → deletions of this batch
	// quarantined counts this batch's quarantined changes; only the first
	// few are logged one by one.
	quarantined int
	// counts is type → operation → events of this batch.
	counts map[string]map[string]int
	// logged are the first keep events of the batch, for Committed.
	logged []Event
	keep   int
}

// handOver returns the events kept for Committed. The dispatcher caches
// them for a while, and each cached event keeps its whole array alive: a
// batch whose changes made few events (a reconcile chunk of 2,000 objects
// with 20 changed) must not keep room for all of them.
func (bc *batchCtx) handOver() []Event {
	if len(bc.logged) < cap(bc.logged)/2 {
		return slices.Clone(bc.logged)
	}
	return bc.logged
}

// committed adds a committed batch's counts; call with e.mu held.
func (e *Engine) committed(counts map[string]map[string]int) {
	if e.counts == nil {
		e.counts = map[string]map[string]int{}
	}
	for t, ops := range counts {
		if e.counts[t] == nil {
			e.counts[t] = map[string]int{}
		}
		for op, n := range ops {
			e.counts[t][op] += n
		}
	}
}

const quarantineLogLimit = 5

// change is a mapped object on its way to becoming an event.
type change struct {
	rec       string
	obj       mapping.Object
	row       map[string]any
	enc       *encoded // obj's and row's JSON, if prepared
	changedAt time.Time
	position  string
	changeKey string
	reason    string
	// img is the object's current image, if loaded (loaded true).
	img    *Image
	loaded bool
}

func (e *Engine) begin(tx *state.Tx, src *SourceInfo, txid string) (*batchCtx, error) {
	ss, err := LoadSource(tx, src.Name)
	if err != nil {
		return nil, err
	}
	bc := &batchCtx{tx: tx, src: src, ss: &ss, seq: LastSequence(tx), txid: txid, emission: EmissionLive}
	if e.opt.Committed != nil {
		bc.keep = max(e.opt.KeepLogged, 0)
	}
	return bc, nil
}

// upsert registers obj as existing now; it emits create, update, undelete
// or nothing.
func (e *Engine) upsert(bc *batchCtx, m *mapping.Mapping, c change) error {
	img := c.img
	if !c.loaded {
		var err error
		if img, err = loadImage(bc.tx, c.obj.Type, c.obj.ID); err != nil {
			return err
		}
	}
	if c.enc == nil {
		c.enc = encode(c.obj, c.row, bc.src.KeepRows)
	}
	fieldsJSON, hash, keys := c.enc.fieldsJSON, c.enc.hash, c.enc.keysJSON
	virkFra, kilde := c.obj.ValidFrom, c.obj.ValidSource
	if virkFra.IsZero() {
		virkFra, kilde = changeTime(img, c.changedAt, bc.src.ChangeTime)
	}
	op, kind, reason := OpCreate, KindAendring, ""
	switch {
	case img == nil:
		if bc.initial {
			op, kind = OpSnapshot, KindUoplyst
		}
	case img.Deleted:
		op, reason = OpUndelete, c.reason
		if reason == "" {
			reason = ReasonRestored
		}
	default:
		sameVirk := c.obj.ValidSource == "" || img.VirkFra.Equal(virkFra.UTC().Truncate(time.Microsecond))
		if img.Hash == hash && sameVirk && bytes.Equal(img.keysJSON, keys) {
			if bc.src.KeepRows && c.row != nil {
				// No event, but the stored row follows the source (columns
				// the mapping does not use, needed to fill in TOAST).
				if row := c.enc.rowJSON; !bytes.Equal(row, img.rowJSON) {
					img.rowJSON = row
					return putImage(bc.tx, c.obj.Type, c.obj.ID, img)
				}
			}
			return nil
		}
		op = OpUpdate
	}
	if op == OpCreate && c.reason != "" {
		reason = c.reason
	}
	return e.register(bc, m, img, c, registration{
		op: op, kind: kind, reason: reason, fieldsJSON: fieldsJSON, keysJSON: keys, hash: hash,
		virkFra: virkFra, virkTil: c.obj.ValidTo, kilde: kilde,
	})
}

// remove registers the object as deleted.
func (e *Engine) remove(bc *batchCtx, m *mapping.Mapping, img *Image, c change) error {
	if img == nil || img.Deleted {
		return nil
	}
	reason := c.reason
	if reason == "" {
		reason = ReasonDeletedInSource
		if bc.reconcile {
			reason = ReasonReconciliationMissing
		}
	}
	virkFra, kilde := changeTime(img, c.changedAt, bc.src.ChangeTime)
	return e.register(bc, m, img, c, registration{
		op: OpDelete, kind: KindAendring, reason: reason, hash: img.Hash,
		virkFra: virkFra, kilde: kilde, deleted: true,
	})
}

// changeTime is the valid time of a change that has no valid-time field:
// the source's change time, kept strictly after the object's previous
// valid time. Sources stamp whole seconds (whenChanged, modifyTimestamp), so
// two changes in one second would otherwise make the second a correction
// of the first, which it is not.
func changeTime(img *Image, changedAt time.Time, kilde string) (time.Time, string) {
	if changedAt.IsZero() {
		return time.Time{}, "observed" // register uses the registration time
	}
	if img != nil && !changedAt.After(img.VirkFra.Time) {
		changedAt = img.VirkFra.Add(time.Microsecond)
	}
	return changedAt, kilde
}

type registration struct {
	op, kind, reason string
	// fieldsJSON and keysJSON are the new image's canonical JSON.
	fieldsJSON, keysJSON []byte
	hash                 string
	virkFra              time.Time
	virkTil              *time.Time
	kilde                string
	deleted              bool
}

// register appends a version and its event, closing the registrations it
// hides. It is the only place that writes versions and log events.
func (e *Engine) register(bc *batchCtx, m *mapping.Mapping, img *Image, c change, r registration) error {
	tx := bc.tx
	typ, id := c.obj.Type, c.obj.ID
	now := e.now()
	if img != nil && !now.After(img.RegFra.Time) {
		now = img.RegFra.Add(time.Microsecond)
	}
	var prevVersion uint64
	var prevHash string
	var before []byte
	if img != nil {
		prevVersion, prevHash = img.Version, img.Hash
		if !img.Deleted {
			before = img.fieldsJSON
		}
	}
	if r.virkFra.IsZero() {
		r.virkFra = now
	}
	changeKey := c.changeKey
	if changeKey == "" {
		// A snapshot-derived change: content and predecessor identify it,
		// so re-deriving it after a crash gives the same id.
		changeKey = "snapshot:" + r.op + ":" + r.hash + ":" + strconv.FormatUint(prevVersion, 10)
	}
	bc.seq++
	v := &Version{
		Version:   prevVersion + 1,
		EventID:   e.eventID(bc.src.Name, bc.ss.Epoch, changeKey, typ, id),
		Sequence:  bc.seq,
		Operation: r.op,
		RegFra:    At(now),
		VirkFra:   At(r.virkFra),
		VirkKilde: r.kilde,
		Deleted:   r.deleted,
		Hash:      r.hash,
	}
	if !r.deleted {
		v.fieldsJSON = r.fieldsJSON
	}
	if r.virkTil != nil {
		v.VirkTil = Ptr(*r.virkTil)
	}
	var open []*Version
	if img != nil {
		for _, n := range img.Open {
			ov := img.head
			if ov == nil || ov.Version != n {
				var err error
				if ov, err = loadVersion(tx, typ, id, n); err != nil {
					return err
				}
			}
			open = append(open, ov)
		}
	}
	kind, hidden := Classify(open, v)
	if r.kind == KindUoplyst {
		kind = KindUoplyst
	}
	v.ChangeKind = kind
	var supersedes []Superseded
	closed := map[uint64]bool{}
	for _, h := range hidden {
		h.RegTil = Ptr(now)
		closed[h.Version] = true
		v.Supersedes = append(v.Supersedes, h.Version)
		if kind != KindAendring {
			supersedes = append(supersedes, Superseded{EventID: h.EventID, RegistreringFra: h.RegFra, VirkningFra: h.VirkFra, VirkningTil: h.VirkTil})
		}
		if h != img.head {
			if err := putVersion(tx, typ, id, h); err != nil {
				return err
			}
		}
	}
	if img != nil && img.head != nil {
		// No longer the newest: to the versions bucket, closed or not.
		if err := putVersion(tx, typ, id, img.head); err != nil {
			return err
		}
	}
	ni := &Image{Source: bc.src.Name, Record: c.rec, Version: v.Version, Deleted: r.deleted, Hash: r.hash,
		RegFra: v.RegFra, VirkFra: v.VirkFra, EventID: v.EventID, head: v}
	if img != nil {
		ni.Open = slices.DeleteFunc(slices.Clone(img.Open), func(n uint64) bool { return closed[n] })
		ni.keysJSON, ni.fieldsJSON, ni.rowJSON = img.keysJSON, img.fieldsJSON, img.rowJSON
	}
	ni.Open = append(ni.Open, v.Version)
	if !r.deleted {
		ni.fieldsJSON, ni.keysJSON = r.fieldsJSON, r.keysJSON
		if c.enc.rowJSON != nil { // upsert encoded it where the source keeps rows
			ni.rowJSON = c.enc.rowJSON
		}
	} else {
		ni.rowJSON = nil
	}
	if err := putImage(tx, typ, id, ni); err != nil {
		return err
	}
	objKeys := c.obj.Keys
	if r.deleted && img != nil {
		// A delete names the object by the keys it had.
		if err := decodeKeys(img.keysJSON, &objKeys); err != nil {
			return fmt.Errorf("%w: image of %s/%s: keys: %v", state.ErrCorrupt, typ, id, err)
		}
	}
	after := v.fieldsJSON
	changed, err := changedJSON(before, after)
	if err != nil {
		return fmt.Errorf("%w: image of %s/%s: %v", state.ErrCorrupt, typ, id, err)
	}
	ev := Event{
		SchemaVersion: SchemaVersion,
		EventID:       v.EventID,
		Sequence:      v.Sequence,
		Emission:      bc.emission,
		Source:        SourceRef{Name: bc.src.Name, Type: bc.src.Type, ID: bc.src.ID, Epoch: bc.ss.Epoch, Position: c.position},
		Object:        ObjectRef{Type: typ, ID: id, Keys: objKeys, Version: v.Version},
		Operation:     r.op,
		Reason:        r.reason,
		ChangeKind:    kind,
		Supersedes:    supersedes,
		Bitemporal: Bitemporal{
			RegistreringFra:     v.RegFra,
			Registreringsaktoer: "connector/" + bc.src.Name,
			VirkningFra:         v.VirkFra,
			VirkningTil:         v.VirkTil,
			Virkningsaktoer:     bc.src.Name,
			VirkningKilde:       r.kilde,
		},
		beforeJSON: before,
		afterJSON:  after,
		Changed:    changed,
		Trace:      Trace{TransactionID: bc.txid},
		ObservedAt: At(now),
		Integrity:  Integrity{ContentHash: r.hash, PrevContentHash: prevHash},
	}
	if r.deleted {
		ev.Bitemporal.Status = "slettet"
	}
	if !c.changedAt.IsZero() {
		ev.SourceChangedAt = Ptr(c.changedAt)
	}
	if m != nil {
		ev.Classification = Classification{
			Dataclassification:       m.Classification,
			Datacategory:             m.Category,
			Dataregulation:           m.Regulation,
			Sikkerhedsklassificering: m.Sikkerhed,
		}
	}
	// The log holds the canonical JSON that receivers send as it is.
	data, err := AppendJSON(make([]byte, 0, bc.eventSize), &ev)
	if err != nil {
		return fmt.Errorf("event %s for %s/%s: %w", ev.EventID, typ, id, err)
	}
	bc.eventSize = max(bc.eventSize, len(data)+len(data)/8)
	if err := tx.Put(state.Log, state.U64(v.Sequence), data); err != nil {
		return err
	}
	if len(bc.logged) < bc.keep {
		ev.Raw = data
		bc.logged = append(bc.logged, ev)
	}
	bc.events++
	bc.ss.Events++
	if bc.counts == nil {
		bc.counts = map[string]map[string]int{}
	}
	if bc.counts[typ] == nil {
		bc.counts[typ] = map[string]int{}
	}
	bc.counts[typ][r.op]++
	if bc.ss.Live != nil {
		switch {
		case r.deleted:
			*bc.ss.Live--
		case img == nil || img.Deleted:
			*bc.ss.Live++
		}
	}
	if r.deleted {
		bc.deleted++
		if len(bc.deletedIn) < 10 {
			bc.deletedIn = append(bc.deletedIn, typ+"/"+id)
		}
		if bc.whyDelete == nil {
			bc.whyDelete = map[string]int{}
		}
		bc.whyDelete[r.reason]++
	}
	if !c.changedAt.IsZero() {
		bc.ss.LastChange = Ptr(c.changedAt)
	}
	return nil
}

// quarantine records a change that could not be mapped, so it is visible
// in status and never silently lost while the position moves on.
func (e *Engine) quarantine(bc *batchCtx, ch capture.Change, cause error) error {
	bc.ss.Quarantined++
	bc.quarantined++
	switch {
	case bc.quarantined <= quarantineLogLimit:
		e.opt.Log.Warn("change quarantined: it could not be mapped", "source", bc.src.Name, "record", ch.Record,
			"position", ch.Position, "error", cause)
	case bc.quarantined == quarantineLogLimit+1:
		e.opt.Log.Warn("more changes quarantined in this batch; `connector status` counts them", "source", bc.src.Name)
	}
	key := state.Key(bc.src.Name, fmt.Sprintf("%020d", bc.ss.Quarantined))
	return putJSON(bc.tx, state.Quarantine, key, map[string]any{
		"record": ch.Record, "op": ch.Op.String(), "position": ch.Position, "values": ch.Values,
		"error": cause.Error(), "at": At(e.opt.Clock()),
	})
}

// Sink returns the capture.Sink of a source.
func (e *Engine) Sink(src SourceInfo) *Sink {
	if src.Guard == (Guard{}) {
		src.Guard = DefaultGuard
	}
	if src.ChangeTime == "" {
		src.ChangeTime = "commit-time"
	}
	return &Sink{e: e, src: src}
}

// Sink applies one source's batches.
type Sink struct {
	e   *Engine
	src SourceInfo
	// reconcile marks every snapshot through this sink as a reconcile
	// (the sink handed to Snapshotter.Snapshot).
	reconcile bool
	// dryRun stages and reports, and applies nothing.
	dryRun *DryRun
}

// ForReconcile returns a sink whose snapshots are reconciles.
func (s *Sink) ForReconcile() *Sink { c := *s; c.reconcile = true; return &c }

// Info returns the source description.
func (s *Sink) Info() SourceInfo { return s.src }

// Apply commits a batch (capture.Sink).
//
// A batch in hand is committed even if ctx is cancelled meanwhile: a
// graceful stop finishes it, and the source acknowledges it.
func (s *Sink) Apply(ctx context.Context, b capture.Batch) error {
	if b.Snapshot != nil {
		return s.applySnapshot(ctx, b)
	}
	if s.dryRun != nil {
		return nil
	}
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	var last uint64
	var n int
	var counts map[string]map[string]int
	var logged []Event
	preps, stopPrep := e.prepare(&s.src, b.Changes)
	defer stopPrep()
	err := e.db.Update(func(tx *state.Tx) error {
		bc, err := e.begin(tx, &s.src, b.TransactionID)
		if err != nil {
			return err
		}
		if b.EpochBreak != "" {
			s.breakEpoch(bc.ss, b.EpochBreak)
		}
		bc.logged = make([]Event, 0, min(len(b.Changes), bc.keep))
		for i := range b.Changes {
			bc.txid = b.TransactionID
			if t := b.Changes[i].TransactionID; t != "" {
				bc.txid = t
			}
			var p *prepared
			if preps != nil {
				p = &preps[i]
			}
			if err := e.applyChange(bc, &b.Changes[i], p); err != nil {
				return err
			}
		}
		if err := s.guardFeed(bc); err != nil {
			return err // nothing of the batch is committed
		}
		if b.Checkpoint != nil {
			bc.ss.Checkpoint = b.Checkpoint
		}
		if len(b.Changes) > 0 {
			bc.ss.Position = b.Changes[len(b.Changes)-1].Position
		}
		bc.ss.LastApplied = Ptr(e.opt.Clock())
		last, n, counts, logged = bc.seq, bc.events, bc.counts, bc.handOver()
		return SaveSource(tx, s.src.Name, *bc.ss)
	})
	if err != nil {
		return fmt.Errorf("source %q: commit batch: %w", s.src.Name, err)
	}
	e.committed(counts)
	if n > 0 && e.opt.Committed != nil {
		e.opt.Committed(last, logged)
	}
	return nil
}

// guardFeed applies the deletion guard to a change feed (Guard.Window):
// the deletions of this batch and of the window before it together may
// not exceed the limit of the live objects there were.
func (s *Sink) guardFeed(bc *batchCtx) error {
	g := s.src.Guard
	if g.Window <= 0 {
		return nil
	}
	if bc.ss.Live == nil {
		// A state from before the count: count once (after this batch's
		// deletions, as the kept count is).
		n, err := s.e.countLive(bc.tx, s.src.Name)
		if err != nil {
			return err
		}
		bc.ss.Live = &n
	}
	if bc.deleted == 0 {
		return nil
	}
	now := s.e.opt.Clock()
	minute := At(now.Truncate(time.Minute))
	recent := bc.ss.Deletes[:0:0]
	total := bc.deleted
	for _, d := range bc.ss.Deletes {
		if d.At.After(now.Add(-g.Window)) {
			recent = append(recent, d)
			total += d.N
		}
	}
	live := int(*bc.ss.Live) + total // before the window's deletions
	if limit := g.Limit(live); total > limit && !g.Override {
		s.e.opt.Log.Error("deletion guard tripped: change feed batch not applied", "source", s.src.Name, "deletes", total, "live", live, "limit", limit, "window", g.Window)
		more := ""
		if bc.deleted > len(bc.deletedIn) {
			more = fmt.Sprintf(" and %d more", bc.deleted-len(bc.deletedIn))
		}
		return fmt.Errorf("%w: the change feed would delete %d of %d live objects within %s (the limit is %d = max(%.0f%% of live, %d)); nothing of this batch was applied and the source's position did not move. "+
			"This batch deletes %s%s (%s). If the deletions are intended (a unit really closed), run once with `connector run --allow-deletions`; if a unit was moved or renamed by mistake, undo that in the register",
			ErrDeletionGuard, total, live, g.Window, limit, 100*g.MaxShare, g.MinCount, strings.Join(bc.deletedIn, ", "), more, bc.deleteReasons())
	}
	if n := len(recent); n > 0 && recent[n-1].At.Equal(minute.Time) {
		recent[n-1].N += bc.deleted
	} else {
		recent = append(recent, DeleteCount{At: minute, N: bc.deleted})
	}
	bc.ss.Deletes = recent
	return nil
}

// deleteReasons lists the batch's delete reasons with their counts.
func (bc *batchCtx) deleteReasons() string {
	var out []string
	for _, r := range slices.Sorted(maps.Keys(bc.whyDelete)) {
		out = append(out, fmt.Sprintf("%s: %d", r, bc.whyDelete[r]))
	}
	return strings.Join(out, ", ")
}

// countLive counts a source's live objects.
func (e *Engine) countLive(tx *state.Tx, source string) (int64, error) {
	var n int64
	records := e.maps.Records(source)
	for _, typ := range e.maps.TypesOf(source, records) {
		if err := e.scanLive(tx, typ, source, records, func(string) error { n++; return nil }); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (s *Sink) breakEpoch(ss *SourceState, reason string) {
	ss.Epoch++
	ss.EpochReason = reason
	ss.PendingReconcile = true
	s.e.opt.Log.Warn("source continuity broke: new epoch, a reconcile follows", "source", s.src.Name, "epoch", ss.Epoch, "reason", reason)
}

// applyChange maps one log change and registers its effect; p, if not
// nil, is the change's preparation (see prepare).
func (e *Engine) applyChange(bc *batchCtx, ch *capture.Change, p *prepared) error {
	if ch.Op == capture.OpTruncate {
		return e.truncate(bc, ch)
	}
	ms := e.maps.ForRecord(bc.src.Name, ch.Record)
	if len(ms) == 1 {
		return e.applyMapped(bc, ms[0], ch, p.take())
	}
	for _, m := range ms {
		if err := e.applyMapped(bc, m, ch, nil); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) applyMapped(bc *batchCtx, m *mapping.Mapping, ch *capture.Change, p *prepared) error {
	row := ch.Values
	var id string
	var err error
	if p != nil {
		id, err = p.id, p.idErr
	} else {
		id, err = m.ObjectID(row)
	}
	if err != nil {
		return e.quarantine(bc, *ch, err)
	}
	img, err := loadImage(bc.tx, m.Type, id)
	if err != nil {
		return err
	}
	c := change{rec: ch.Record, changedAt: ch.ChangedAt, position: ch.Position, changeKey: ch.ChangeKey, reason: ch.Reason}
	if ch.Op == capture.OpDelete {
		c.obj = mapping.Object{Type: m.Type, ID: id}
		return e.remove(bc, m, img, c)
	}
	if len(ch.Unchanged) > 0 {
		var stored map[string]any
		if img != nil {
			if stored, err = img.row(); err != nil {
				return fmt.Errorf("%w: image %s/%s: %v", state.ErrCorrupt, m.Type, id, err)
			}
		}
		if stored == nil {
			return e.quarantine(bc, *ch, fmt.Errorf("columns %v were not sent and no stored row has them (set REPLICA IDENTITY FULL, or reconcile with `connector snapshot`)", ch.Unchanged))
		}
		row = maps.Clone(row)
		for _, col := range ch.Unchanged {
			row[col] = stored[col]
		}
	}
	if ch.OldKey != nil {
		if oldID, err := m.ObjectID(ch.OldKey); err == nil && oldID != id {
			old, err := loadImage(bc.tx, m.Type, oldID)
			if err != nil {
				return err
			}
			oc := c
			oc.obj = mapping.Object{Type: m.Type, ID: oldID}
			oc.changeKey = ch.ChangeKey + ":oldkey"
			if err := e.remove(bc, m, old, oc); err != nil {
				return err
			}
		}
	}
	var obj mapping.Object
	var ok bool
	if p != nil && p.mapped {
		obj, ok, err, c.enc = p.obj, p.ok, p.mapErr, p.enc
	} else {
		obj, ok, err = m.Map(row)
	}
	if err != nil {
		return e.quarantine(bc, *ch, err)
	}
	if !ok {
		c.obj = mapping.Object{Type: m.Type, ID: id}
		if c.reason == "" {
			c.reason = ReasonMovedOutOfScope
		}
		return e.remove(bc, m, img, c)
	}
	c.obj, c.row, c.img, c.loaded = obj, row, img, obj.ID == id
	return e.upsert(bc, m, c)
}

// truncate deletes every live object of the record.
func (e *Engine) truncate(bc *batchCtx, ch *capture.Change) error {
	for _, m := range e.maps.ForRecord(bc.src.Name, ch.Record) {
		var ids []string
		err := bc.tx.Scan(state.Images, state.Key(m.Type, ""), func(k, v []byte) error {
			h, err := peekImage(v)
			if err != nil {
				return fmt.Errorf("%w: image %q: %v", state.ErrCorrupt, k, err)
			}
			if h.Source == bc.src.Name && h.Record == ch.Record && !h.Deleted {
				ids = append(ids, string(k[len(m.Type)+1:]))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			img, err := loadImage(bc.tx, m.Type, id)
			if err != nil {
				return err
			}
			reason := ch.Reason
			if reason == "" {
				reason = ReasonTruncated
			}
			c := change{rec: ch.Record, obj: mapping.Object{Type: m.Type, ID: id}, changedAt: ch.ChangedAt,
				position: ch.Position, changeKey: ch.ChangeKey + ":" + id, reason: reason}
			if err := e.remove(bc, m, img, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// Checkpoint implements capture.StateReader: the source's stored
// checkpoint.
func (e *Engine) Checkpoint(_ context.Context, source string) ([]byte, error) {
	var out []byte
	err := e.db.View(func(tx *state.Tx) error {
		ss, err := LoadSource(tx, source)
		out = ss.Checkpoint
		return err
	})
	return out, err
}

// Row implements capture.StateReader: the stored raw row of a record.
func (e *Engine) Row(_ context.Context, source, record string, key map[string]any) (map[string]any, error) {
	var out map[string]any
	err := e.db.View(func(tx *state.Tx) error {
		for _, m := range e.maps.ForRecord(source, record) {
			id, err := m.ObjectID(key)
			if err != nil {
				continue
			}
			img, err := readImage(tx, m.Type, id, true)
			if err != nil {
				return err
			}
			if img != nil && !img.Deleted && img.Row != nil {
				out = img.Row
				return nil
			}
		}
		return nil
	})
	return out, err
}
