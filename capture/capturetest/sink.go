package capturetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
)

// ErrSimulated is what Sink.Apply returns for a crash before the commit
// (Sink.FailAt, Sink.CrashOnStreamBatch).
var ErrSimulated = errors.New("simulated crash before commit")

// Sink is the engine as far as a source can tell: it stages snapshot runs
// until End, keeps the current rows (filling Unchanged columns from them)
// and the last durable checkpoint. It notes what an engine would reject
// (a snapshot record delivered twice in a run, a change key delivered
// twice, a snapshot batch with another op, unchanged columns of an unknown
// row); NoProblems fails the test on them.
type Sink struct {
	mu      sync.Mutex
	keys    map[string][]string // record → key columns
	rows    map[string]map[string]map[string]any
	staged  map[string]map[string]map[string]any
	stageID string
	batches []capture.Batch
	cp      []byte
	seen    map[string]int // ChangeKey → deliveries
	calls   int
	failAt  int
	delay   atomic.Int64 // nanoseconds per Apply
	// onApply runs before a batch is made durable; an error fails Apply.
	onApply  func(capture.Batch) error
	problems []string
}

// NewSink returns an empty Sink; keys names each record's key columns.
func NewSink(keys map[string][]string) *Sink {
	return &Sink{keys: keys, rows: map[string]map[string]map[string]any{}, seen: map[string]int{}}
}

// KeyOf is row's key as Rows indexes it: the key columns' values joined
// by "|".
func (s *Sink) KeyOf(record string, row map[string]any) string {
	var parts []string
	for _, k := range s.keys[record] {
		parts = append(parts, fmt.Sprint(row[k]))
	}
	return strings.Join(parts, "|")
}

// SetOnApply makes f run before each batch is made durable; an error from
// f fails that Apply (nil removes it).
func (s *Sink) SetOnApply(f func(capture.Batch) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onApply = f
}

// FailAt makes the nth Apply call (counting from the first) fail with
// ErrSimulated.
func (s *Sink) FailAt(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAt = n
}

// SetDelay makes each Apply take d longer (a slow engine).
func (s *Sink) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// CrashOnStreamBatch makes Apply fail with ErrSimulated, as a crash before
// the commit would, on the nth stream batch with changes from now on.
func (s *Sink) CrashOnStreamBatch(n int) {
	withRows := 0
	s.SetOnApply(func(b capture.Batch) error {
		if len(b.Changes) > 0 && b.Snapshot == nil {
			if withRows++; withRows == n {
				return ErrSimulated
			}
		}
		return nil
	})
}

// Apply implements capture.Sink.
func (s *Sink) Apply(ctx context.Context, b capture.Batch) error {
	if d := time.Duration(s.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.failAt > 0 && s.calls == s.failAt {
		return ErrSimulated
	}
	if s.onApply != nil {
		if err := s.onApply(b); err != nil {
			return err
		}
	}
	if m := b.Snapshot; m != nil {
		if m.Begin {
			s.staged, s.stageID = map[string]map[string]map[string]any{}, m.ID
		}
		if s.stageID != m.ID || s.staged == nil {
			return fmt.Errorf("%w: snapshot run %q: batch without a Begin", capture.ErrNoRun, m.ID)
		}
		for _, c := range b.Changes {
			if c.Op != capture.OpSnapshot {
				s.problems = append(s.problems, "snapshot batch with op "+c.Op.String())
			}
			if s.staged[c.Record] == nil {
				s.staged[c.Record] = map[string]map[string]any{}
			}
			k := s.KeyOf(c.Record, c.Values)
			if _, dup := s.staged[c.Record][k]; dup {
				s.problems = append(s.problems, "snapshot delivered "+c.Record+" "+k+" twice")
			}
			s.staged[c.Record][k] = c.Values
		}
		if m.End {
			for _, r := range m.Records {
				s.rows[r] = s.staged[r]
				if s.rows[r] == nil {
					s.rows[r] = map[string]map[string]any{}
				}
			}
			s.staged, s.stageID = nil, ""
		}
	} else {
		for _, c := range b.Changes {
			s.applyChange(c)
		}
	}
	s.batches = append(s.batches, b)
	if b.Checkpoint != nil {
		s.cp = b.Checkpoint
	}
	return nil
}

func (s *Sink) applyChange(c capture.Change) {
	if c.ChangeKey != "" {
		s.seen[c.ChangeKey]++
		if s.seen[c.ChangeKey] > 1 {
			s.problems = append(s.problems, "change "+c.ChangeKey+" delivered twice")
		}
	}
	tab := s.rows[c.Record]
	if tab == nil {
		tab = map[string]map[string]any{}
		s.rows[c.Record] = tab
	}
	switch c.Op {
	case capture.OpTruncate:
		s.rows[c.Record] = map[string]map[string]any{}
	case capture.OpDelete:
		delete(tab, s.KeyOf(c.Record, c.Values))
	case capture.OpInsert, capture.OpUpdate:
		row := map[string]any{}
		for k, v := range c.Values {
			row[k] = v
		}
		if len(c.Unchanged) > 0 {
			old := tab[s.KeyOf(c.Record, row)]
			if old == nil {
				s.problems = append(s.problems, fmt.Sprintf("unchanged columns %v of unknown row %s", c.Unchanged, c.ChangeKey))
			}
			for _, u := range c.Unchanged {
				row[u] = old[u]
			}
		}
		if c.OldKey != nil {
			delete(tab, s.KeyOf(c.Record, c.OldKey))
		}
		tab[s.KeyOf(c.Record, row)] = row
	}
}

// Rows returns a copy of record's current rows by KeyOf.
func (s *Sink) Rows(record string) map[string]map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]any{}
	for k, v := range s.rows[record] {
		out[k] = v
	}
	return out
}

// Checkpoint is the last durable checkpoint (nil before the first).
func (s *Sink) Checkpoint() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cp
}

// Batches returns the batches applied so far, in order.
func (s *Sink) Batches() []capture.Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]capture.Batch(nil), s.batches...)
}

// Streamed returns the changes of the stream batches (not snapshots).
func (s *Sink) Streamed() []capture.Change {
	var out []capture.Change
	for _, b := range s.Batches() {
		if b.Snapshot == nil {
			out = append(out, b.Changes...)
		}
	}
	return out
}

// SnapshotDone says whether a snapshot run has ended.
func (s *Sink) SnapshotDone() bool {
	for _, b := range s.Batches() {
		if b.Snapshot != nil && b.Snapshot.End {
			return true
		}
	}
	return false
}

// NoProblems fails t if the sink noted a problem.
func (s *Sink) NoProblems(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.problems) > 0 {
		t.Fatalf("sink saw problems:\n%s", strings.Join(s.problems, "\n"))
	}
}
