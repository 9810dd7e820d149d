package ldap

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/os2sandbox/connector/capture"
)

// checkpoint is the source's resume position, stored by the engine with
// each durable batch (JSON).
type checkpoint struct {
	V    int    `json:"v"`
	Mode string `json:"mode"`
	// Config is the hash of what the records read; another value means the
	// stored position does not cover the configuration any more.
	Config string `json:"config"`

	// dirsync: the DirSync cookie.
	Cookie []byte `json:"cookie,omitempty"`
	// syncrepl: one cookie per record (each record is its own search).
	Cookies map[string][]byte `json:"cookies,omitempty"`
	// usn: every change with uSNChanged > USN has not been read yet.
	USN int64 `json:"usn,omitempty"`
	// poll: modifyTimestamp watermark (generalized time).
	Since string `json:"since,omitempty"`

	// AD: the DC's invocationId (and its NTDS Settings DN for usn mode);
	// a change means the DC was restored or another DC answers.
	InvocationID string `json:"invocationId,omitempty"`
	DSService    string `json:"dsService,omitempty"`
	// OpenLDAP: contextCSN when the position was taken; the server going
	// behind it means it was restored from a backup.
	ContextCSN []string `json:"contextCSN,omitempty"`
	// Watermark is the server's time at the position (for telling an entry
	// that moved into scope from one that was created).
	Watermark time.Time `json:"watermark,omitzero"`

	LastReconcile time.Time `json:"lastReconcile,omitzero"`

	// Marks are the unit markers when the position was taken (marks.state);
	// when they change, a reconcile applies them.
	Marks map[string]string `json:"marks,omitempty"`
}

const checkpointVersion = 1

func decodeCheckpoint(b []byte) (*checkpoint, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var cp checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("stored checkpoint is not readable: %w", err)
	}
	if cp.V != checkpointVersion {
		return nil, fmt.Errorf("stored checkpoint has version %d, want %d", cp.V, checkpointVersion)
	}
	return &cp, nil
}

func (cp *checkpoint) encode() []byte {
	cp.V = checkpointVersion
	b, err := json.Marshal(cp)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return b
}

func (cp *checkpoint) clone() *checkpoint {
	n := *cp
	if cp.Cookies != nil {
		n.Cookies = make(map[string][]byte, len(cp.Cookies))
		for k, v := range cp.Cookies {
			n.Cookies[k] = v
		}
	}
	return &n
}

func shortHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:6])
}

// emitter collects changes into batches and applies them.
type emitter struct {
	sink    capture.Sink
	size    int
	txID    string
	changes []capture.Change
	snap    *capture.SnapshotMark
	begun   bool
	epoch   string // EpochBreak for the next batch
	applied int

	// depth, when set, orders incremental changes (see order); pending
	// holds them until a window is full or the position is stored.
	depth   func(*capture.Change) int
	pending []capture.Change
}

// orderWindow is how many incremental changes are held to be ordered
// (parents before children): enough for any ordinary poll, and a bound on
// memory for a large catch-up, which is then ordered window by window.
const orderWindow = 10000

func newEmitter(sink capture.Sink, size int, txID string) *emitter {
	return &emitter{sink: sink, size: size, txID: txID}
}

func (e *emitter) add(ctx context.Context, ch capture.Change) error {
	if e.depth != nil {
		e.pending = append(e.pending, ch)
		if len(e.pending) >= orderWindow {
			return e.drain(ctx)
		}
		return nil
	}
	return e.push(ctx, ch)
}

func (e *emitter) push(ctx context.Context, ch capture.Change) error {
	e.changes = append(e.changes, ch)
	if len(e.changes) >= e.size {
		return e.apply(ctx, nil, false)
	}
	return nil
}

// drain orders the pending changes and hands them on.
func (e *emitter) drain(ctx context.Context) error {
	for _, ch := range order(e.pending, e.depth) {
		if err := e.push(ctx, ch); err != nil {
			return err
		}
	}
	e.pending = e.pending[:0]
	return nil
}

// order arranges incremental changes the way a receiver can follow them
// (DIRECTORY-CASES #17, #19): neither DirSync on Samba (which ignores
// ANCESTORS_FIRST_ORDER) nor syncrepl promise parents before children,
// and tombstones of a subtree come in any order. So: upserts first,
// shallow before deep (a unit exists before what points at it), then
// deletions, deep before shallow (children go before their parent).
// The sort is stable: otherwise the source's order stays, so a change
// re-delivered after a crash is re-delivered in the same place, and
// several upserts of one object keep their order (the first one's reason
// counts when the engine creates the object). An object both upserted and
// deleted (read twice while it changed) keeps only its last change, its
// final state, which sorting could otherwise put first.
func order(in []capture.Change, depth func(*capture.Change) int) []capture.Change {
	last := make(map[string]int, len(in))
	mixed := map[string]bool{}
	for i := range in {
		if k := changeID(&in[i]); k != "" {
			if j, seen := last[k]; seen && (in[j].Op == capture.OpDelete) != (in[i].Op == capture.OpDelete) {
				mixed[k] = true
			}
			last[k] = i
		}
	}
	type item struct {
		ch    capture.Change
		del   bool
		depth int
	}
	items := make([]item, 0, len(in))
	for i := range in {
		if k := changeID(&in[i]); mixed[k] && last[k] != i {
			continue
		}
		items = append(items, item{in[i], in[i].Op == capture.OpDelete, depth(&in[i])})
	}
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if a.del != b.del {
			return !a.del
		}
		if a.del {
			return a.depth > b.depth
		}
		return a.depth < b.depth
	})
	out := make([]capture.Change, len(items))
	for i, it := range items {
		out[i] = it.ch
	}
	return out
}

// changeID is record and key of a change; "" without a key (a change the
// engine quarantines, never merged).
func changeID(ch *capture.Change) string {
	k, _ := ch.Values[FieldGUID].(string)
	if k == "" {
		k, _ = ch.Values[FieldUUID].(string)
	}
	if k == "" {
		return ""
	}
	return ch.Record + "\x00" + k
}

// flush applies what is collected. checkpoint nil keeps the stored one;
// end closes a snapshot run.
func (e *emitter) flush(ctx context.Context, checkpoint []byte, end bool) error {
	if err := e.drain(ctx); err != nil {
		return err
	}
	return e.apply(ctx, checkpoint, end)
}

func (e *emitter) apply(ctx context.Context, checkpoint []byte, end bool) error {
	b := capture.Batch{Changes: e.changes, Checkpoint: checkpoint, TransactionID: e.txID, EpochBreak: e.epoch}
	if e.snap != nil {
		m := *e.snap
		m.Begin, m.End = !e.begun, end
		m.Records = append([]string(nil), e.snap.Records...)
		b.Snapshot = &m
	}
	if len(b.Changes) == 0 && b.Checkpoint == nil && b.Snapshot == nil && b.EpochBreak == "" {
		return nil
	}
	if err := e.sink.Apply(ctx, b); err != nil {
		return fmt.Errorf("apply batch: %w", err)
	}
	e.applied += len(b.Changes)
	e.begun, e.epoch = true, ""
	e.changes = nil
	return nil
}
