// Package capture defines the contract between a register's change feed and
// the engine: a Source turns its native feed (a WAL, a binlog, a directory's
// change tracking, a file export) into batches of Changes.
//
// The engine, not the source, owns ordering, batching into transactions,
// durability and acknowledgement: a source hands over a Batch and is told,
// through Batch.Checkpoint and Source.Committed, what has been made durable.
// Adapters live in sub-packages and register themselves with Register.
package capture

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Op is what the feed says happened to a record.
type Op uint8

const (
	// OpSnapshot is a record read by a full snapshot: the engine derives
	// create/update/unchanged by comparing with its current image.
	OpSnapshot Op = iota
	// OpInsert, OpUpdate and OpDelete come from a log source.
	OpInsert
	OpUpdate
	OpDelete
	// OpUpsert is a record known to exist now, from an incremental feed that
	// does not say whether it is new (DirSync, modifyTimestamp polling).
	OpUpsert
	// OpTruncate deletes every object the engine holds for Record.
	OpTruncate
)

func (o Op) String() string {
	switch o {
	case OpSnapshot:
		return "snapshot"
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpUpsert:
		return "upsert"
	case OpTruncate:
		return "truncate"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Change is one record-level change, in the source's own vocabulary.
type Change struct {
	// Record names what the mapping selects on: a table ("public.person"),
	// a file's record type, an LDAP object class set's configured name.
	Record string
	Op     Op
	// Values holds the record's column or attribute values as JSON-friendly
	// Go values: nil, bool, string, json.Number, []any, map[string]any.
	// For OpDelete it holds at least the key columns.
	Values map[string]any
	// Unchanged names columns whose values the feed did not send (Postgres
	// unchanged TOAST); the engine fills them from its stored row.
	Unchanged []string
	// OldKey holds the previous key columns when an update changed the key.
	OldKey map[string]any
	// Reason overrides the delete reason (e.g. "tombstone", "truncated",
	// "moved-out-of-scope") and, on OpUpsert, the reason used when the
	// engine makes it a create or undelete ("moved-into-scope",
	// "restored"); empty means the default.
	Reason string
	// ChangedAt is when the source committed the change (zero if unknown).
	ChangedAt time.Time
	// ChangeKey identifies this change stably within the source epoch, e.g.
	// "0/16B3748:12" (commit LSN and index). It feeds the deterministic event
	// id; empty for snapshot records (the engine derives one from content).
	ChangeKey string
	// Position is opaque, for diagnostics (shown in source.position).
	Position string
	// TransactionID, when set, overrides Batch.TransactionID for this
	// change, so one batch (one commit) can carry many small source
	// transactions.
	TransactionID string
}

// Batch is a unit the engine commits in one write transaction together with
// Checkpoint. Sources should make batches large (hundreds to thousands of
// changes) and may split a source transaction across batches.
type Batch struct {
	Changes []Change
	// TransactionID is shared by all changes of one source transaction.
	TransactionID string
	// Checkpoint is the source's resume position once this batch is durable.
	// Nil keeps the previous checkpoint.
	Checkpoint []byte
	// Snapshot marks the batch as part of a full snapshot (see SnapshotMark).
	Snapshot *SnapshotMark
	// EpochBreak, when not empty, says why continuity with the stored
	// checkpoint broke (slot lost, cookie expired, DC restored). The engine
	// bumps the source epoch before applying the batch and logs the reason;
	// the source must follow with a full snapshot (a reconcile).
	EpochBreak string
}

// SnapshotMark frames a full snapshot. Between the batch with Begin and the
// batch with End, every live record of the listed Records is delivered as
// OpSnapshot; at End the engine treats objects of those records that were
// not delivered as deleted (subject to the deletion guard).
type SnapshotMark struct {
	// ID identifies the snapshot run; all its batches carry the same ID.
	ID      string
	Begin   bool
	End     bool
	Records []string
	// Initial says this is the source's first load (emission backfill,
	// operation snapshot).
	Initial bool
	// Reconcile says the run repairs drift (on demand, periodically, after
	// an epoch break) rather than being the source's regular feed (a new
	// dated export): events are emitted as `reconcile` and deletions get
	// reason reconciliation-missing. Runs delivered through
	// Snapshotter.Snapshot and runs after an EpochBreak are always
	// reconciles.
	Reconcile bool
}

// ErrNoRun is what Sink.Apply returns (wrapped) for a snapshot batch
// without Begin when no run of that id is staged (a crash or the deletion
// guard dropped it): the source should start the run again.
var ErrNoRun = errors.New("no staged snapshot run")

// Sink receives batches from a source. Apply returns once the batch is
// durable (or failed); the source may then acknowledge the checkpoint to its
// server. Apply is called from one goroutine at a time.
type Sink interface {
	Apply(ctx context.Context, b Batch) error
}

// Source is a running change feed.
type Source interface {
	// Run delivers batches to sink, resuming after checkpoint (nil: first
	// start), until ctx is done or, with Options.Once, until the source has
	// delivered what it has now. It returns nil on a clean stop.
	Run(ctx context.Context, checkpoint []byte, sink Sink) error
}

// Snapshotter is a source that can take a full snapshot on demand
// (connector snapshot). The batches must be framed by a SnapshotMark.
type Snapshotter interface {
	Snapshot(ctx context.Context, sink Sink) error
}

// RowKeeper is a source whose changes may omit columns (Change.Unchanged,
// key-only deletes): the engine then keeps each record's raw row to
// complete them.
type RowKeeper interface {
	KeepsRows() bool
}

// ChangeTimer is a source that names where Change.ChangedAt comes from
// ("commit-time", "whenChanged", "modifyTimestamp"); it becomes the
// events' virkningKilde when a mapping has no valid-time field. The
// default is "commit-time".
type ChangeTimer interface {
	ChangeTime() string
}

// Checker is a source that can test its connection and server settings
// (connector check). The error says what is wrong and how to fix it.
type Checker interface {
	Check(ctx context.Context) error
}

// Identity is a source that knows a stable URI of its register (source.id in
// events, e.g. postgres://<system identifier>/<db>).
type Identity interface {
	ID() string
}

// Options are what the engine tells a source when it is built.
type Options struct {
	// Name is the source's name in the config.
	Name string
	// File is the config file's path, for error messages.
	File string
	// Records lists the record names the mappings select from this source.
	Records []string
	// Once asks Run to stop after delivering what the source has now.
	Once bool
	// State reads the engine's stored rows (never writes).
	State StateReader
	// Log is the source's logger.
	Log Logger
}

// Logger is the part of *slog.Logger a source uses.
type Logger interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
	Error(msg string, args ...any)
	Debug(msg string, args ...any)
}

// StateReader gives a source read access to what the engine holds, e.g. to
// recompute descendants after a directory move.
type StateReader interface {
	// Row returns the stored raw record for a record name and key values,
	// or nil.
	Row(ctx context.Context, source, record string, key map[string]any) (map[string]any, error)
}

// CommonKeys are the source keys the engine owns; an adapter's strict
// decoding ignores them.
var CommonKeys = []string{"name", "type", "deletion_guard", "batch_size"}

// Factory builds a source from its YAML config node (the whole source entry,
// decoded strictly by the adapter).
type Factory func(node *yaml.Node, opts Options) (Source, error)

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes a source type available; adapters call it from init.
func Register(typ string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[typ]; dup {
		panic("capture: source type registered twice: " + typ)
	}
	factories[typ] = f
}

// Lookup returns the factory for a source type.
func Lookup(typ string) (Factory, bool) {
	mu.RLock()
	defer mu.RUnlock()
	f, ok := factories[typ]
	return f, ok
}

// Types lists the registered source types, sorted.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(factories))
	for t := range factories {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
