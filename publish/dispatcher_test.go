package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/state"
)

func newDB(t *testing.T) *state.DB {
	t.Helper()
	db, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// event builds a log event; fields are before/after images.
func event(seq uint64, typ, op string, before, after map[string]any, changed ...string) history.Event {
	return history.Event{
		SchemaVersion: history.SchemaVersion,
		EventID:       fmt.Sprintf("ev-%d", seq),
		Sequence:      seq,
		Emission:      history.EmissionLive,
		Object:        history.ObjectRef{Type: typ, ID: fmt.Sprintf("%s-%d", typ, seq), Version: 1},
		Operation:     op,
		Before:        before,
		After:         after,
		Changed:       changed,
		Classification: history.Classification{
			Dataclassification: "internal",
		},
	}
}

// creates returns n create events of type T from sequence from.
func creates(from, n uint64) []history.Event {
	var out []history.Event
	for s := from; s < from+n; s++ {
		out = append(out, event(s, "T", history.OpCreate, nil, map[string]any{"n": fmt.Sprint(s)}, "n"))
	}
	return out
}

// appendLog writes events into the log as the history engine does.
func appendLog(t *testing.T, db *state.DB, evs ...history.Event) {
	t.Helper()
	err := db.Update(func(tx *state.Tx) error {
		for _, ev := range evs {
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			if err := tx.Put(state.Log, state.U64(ev.Sequence), b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func cursor(t *testing.T, db *state.DB, name string) Cursor {
	t.Helper()
	var c Cursor
	err := db.View(func(tx *state.Tx) error {
		var ok bool
		var err error
		c, ok, err = LoadCursor(tx, name)
		if err == nil && !ok {
			err = fmt.Errorf("receiver %q has no cursor", name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// step is what the fake receiver does on one Deliver call: return err,
// after calling check (if set) while the dispatcher waits.
type step struct {
	err   error
	check func(events []history.Event)
	hang  bool // wait for the delivery's context to end, then fail with it
}

// fakeReceiver records what it was given and what it confirmed.
type fakeReceiver struct {
	mu        sync.Mutex
	calls     [][]uint64      // sequences per Deliver call
	confirmed []history.Event // events confirmed, in order
	script    []step          // consumed one per call; then success
	mutate    bool            // scribble on delivered events (a careless adapter)
	closed    bool
	closeErr  error
	notify    chan struct{}
}

func (r *fakeReceiver) Deliver(ctx context.Context, events []history.Event) error {
	r.mu.Lock()
	var s step
	if len(r.script) > 0 {
		s, r.script = r.script[0], r.script[1:]
	}
	var seqs []uint64
	for _, e := range events {
		seqs = append(seqs, e.Sequence)
	}
	r.calls = append(r.calls, seqs)
	r.mu.Unlock()
	if s.check != nil {
		s.check(events)
	}
	if s.hang {
		<-ctx.Done()
		s.err = ctx.Err()
	}
	n := len(events)
	if s.err != nil {
		n = Confirmed(s.err)
	}
	r.mu.Lock()
	for _, e := range events[:max(0, min(n, len(events)))] {
		// Keep a deep enough copy: the maps must be as delivered.
		e.Before, e.After = maps.Clone(e.Before), maps.Clone(e.After)
		r.confirmed = append(r.confirmed, e)
	}
	r.mu.Unlock()
	if r.mutate {
		for i := range events {
			for _, img := range []map[string]any{events[i].Before, events[i].After} {
				for k := range img {
					img[k] = "scribbled"
				}
			}
		}
	}
	if r.notify != nil {
		select {
		case r.notify <- struct{}{}:
		default:
		}
	}
	return s.err
}

func (r *fakeReceiver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.closeErr
}

func (r *fakeReceiver) seqs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	for _, e := range r.confirmed {
		out = append(out, e.Sequence)
	}
	return out
}

func (r *fakeReceiver) events() []history.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.confirmed)
}

func (r *fakeReceiver) callSeqs() [][]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// syncBuffer is a log sink safe for the dispatcher's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fastRetry keeps failure tests quick.
var fastRetry = Retry{Initial: 2 * time.Millisecond, Max: 10 * time.Millisecond}

// runOnce drains the dispatcher and fails the test if it takes
// long or errs.
func runOnce(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Drain(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Drain did not return before the deadline")
	}
}

func TestDeliverInOrder(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 25)...)
	r := &fakeReceiver{}
	d := NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "out", Start: "beginning", Batch: 10}, r); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	runOnce(t, d)
	if got := r.seqs(); !slices.Equal(got, seqRange(1, 25)) {
		t.Fatalf("delivered %v", got)
	}
	want := [][]uint64{seqRange(1, 10), seqRange(11, 20), seqRange(21, 25)}
	if got := r.callSeqs(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("batches %v, want %v", got, want)
	}
	c := cursor(t, db, "out")
	if c.Delivered != 25 || c.DeadLetters != 0 || c.LastError != "" {
		t.Errorf("cursor %+v", c)
	}
	if c.DeliveredAt == nil || c.DeliveredAt.Before(before) {
		t.Errorf("deliveredAt = %v", c.DeliveredAt)
	}
	// The events arrive as they are in the log.
	got := r.events()[7]
	if got.EventID != "ev-8" || got.After["n"] != "8" || got.Emission != history.EmissionLive || got.Classification.Redacted != nil {
		t.Errorf("event 8 = %+v", got)
	}

	// A second run has nothing to do: the cursor is durable.
	r2 := &fakeReceiver{}
	d2 := NewDispatcher(db, nil, quiet())
	if err := d2.Add(Config{Name: "out", Start: "beginning"}, r2); err != nil {
		t.Fatal(err)
	}
	runOnce(t, d2)
	if calls := r2.callSeqs(); len(calls) != 0 {
		t.Errorf("second run delivered %v", calls)
	}
	appendLog(t, db, creates(26, 2)...)
	runOnce(t, d2)
	if got := r2.seqs(); !slices.Equal(got, []uint64{26, 27}) {
		t.Errorf("after more events, delivered %v", got)
	}
	if err := d2.Close(); err != nil || !r2.closed {
		t.Errorf("Close = %v, closed %v", err, r2.closed)
	}
}

func TestStart(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 5)...)
	now, beginning, dflt := &fakeReceiver{}, &fakeReceiver{}, &fakeReceiver{}
	d := NewDispatcher(db, nil, quiet())
	for name, r := range map[string]*fakeReceiver{"now": now, "beginning": beginning, "": dflt} {
		if err := d.Add(Config{Name: "r-" + name, Start: name}, r); err != nil {
			t.Fatal(err)
		}
	}
	if c := cursor(t, db, "r-now"); c.Delivered != 5 {
		t.Errorf("start: now cursor = %d, want 5", c.Delivered)
	}
	appendLog(t, db, creates(6, 3)...)
	runOnce(t, d)
	if got := now.seqs(); !slices.Equal(got, seqRange(6, 8)) {
		t.Errorf("start: now delivered %v", got)
	}
	if got := beginning.seqs(); !slices.Equal(got, seqRange(1, 8)) {
		t.Errorf("start: beginning delivered %v", got)
	}
	if got := dflt.seqs(); !slices.Equal(got, seqRange(1, 8)) {
		t.Errorf("no start delivered %v", got)
	}

	// An existing receiver keeps its cursor even if its config now says
	// start: now.
	if err := db.Update(func(tx *state.Tx) error { return SaveCursor(tx, "old", Cursor{Delivered: 2}) }); err != nil {
		t.Fatal(err)
	}
	old := &fakeReceiver{}
	d2 := NewDispatcher(db, nil, quiet())
	if err := d2.Add(Config{Name: "old", Start: "now"}, old); err != nil {
		t.Fatal(err)
	}
	runOnce(t, d2)
	if got := old.seqs(); !slices.Equal(got, seqRange(3, 8)) {
		t.Errorf("existing receiver delivered %v, want 3..8", got)
	}

	// start: now on an empty log starts at 0 and gets the first event.
	empty := newDB(t)
	r := &fakeReceiver{}
	d3 := NewDispatcher(empty, nil, quiet())
	if err := d3.Add(Config{Name: "r", Start: "now"}, r); err != nil {
		t.Fatal(err)
	}
	appendLog(t, empty, creates(1, 1)...)
	runOnce(t, d3)
	if got := r.seqs(); !slices.Equal(got, []uint64{1}) {
		t.Errorf("start: now on an empty log delivered %v", got)
	}
}

func TestFilter(t *testing.T) {
	log := []history.Event{
		event(1, "Bruger", history.OpCreate, nil, map[string]any{"a": 1}, "a"),
		event(2, "Enhed", history.OpCreate, nil, map[string]any{"a": 1}, "a"),
		event(3, "Bruger", history.OpUpdate, map[string]any{"a": 1}, map[string]any{"a": 2}, "a"),
		event(4, "Enhed", history.OpDelete, map[string]any{"a": 1}, nil),
		event(5, "Bruger", history.OpDelete, map[string]any{"a": 2}, nil),
		event(6, "Konto", history.OpCreate, nil, map[string]any{"a": 1}, "a"),
	}
	tests := []struct {
		name   string
		filter Filter
		want   []uint64
	}{
		{"none", Filter{}, seqRange(1, 6)},
		{"type", Filter{Types: []string{"Bruger"}}, []uint64{1, 3, 5}},
		{"types", Filter{Types: []string{"Enhed", "Konto"}}, []uint64{2, 4, 6}},
		{"operation", Filter{Operations: []string{history.OpDelete}}, []uint64{4, 5}},
		{"type and operation", Filter{Types: []string{"Bruger"}, Operations: []string{history.OpCreate, history.OpUpdate}}, []uint64{1, 3}},
		{"nothing matches", Filter{Types: []string{"Nope"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDB(t)
			appendLog(t, db, log...)
			r := &fakeReceiver{}
			d := NewDispatcher(db, nil, quiet())
			// A small batch: filtered events must not stall the cursor.
			if err := d.Add(Config{Name: "r", Filter: tt.filter, Batch: 2}, r); err != nil {
				t.Fatal(err)
			}
			runOnce(t, d)
			if got := r.seqs(); !slices.Equal(got, tt.want) {
				t.Errorf("delivered %v, want %v", got, tt.want)
			}
			for _, call := range r.callSeqs() {
				if len(call) == 0 {
					t.Error("Deliver called with no events")
				}
			}
			// Filtered-out events count as looked at.
			if c := cursor(t, db, "r"); c.Delivered != 6 {
				t.Errorf("cursor = %d, want 6", c.Delivered)
			}
		})
	}
}

// redactor is a fake Redactor: types and fields with a classification.
type redactor struct {
	types  map[string]string            // type → label (default internal)
	fields map[string]map[string]string // type → field → label
}

func (r redactor) Level(typ string) string {
	if l, ok := r.types[typ]; ok {
		return l
	}
	return "internal"
}

func (r redactor) Hides(typ, ceiling string) bool {
	for _, l := range r.fields[typ] {
		if history.Level(l) > history.Level(ceiling) {
			return true
		}
	}
	return false
}

func (r redactor) Redact(typ string, image map[string]any, ceiling string) (map[string]any, []string) {
	if image == nil {
		return nil, nil
	}
	var removed []string
	out := map[string]any{}
	for k, v := range image {
		if l, ok := r.fields[typ][k]; ok && history.Level(l) > history.Level(ceiling) {
			removed = append(removed, k)
			continue
		}
		out[k] = v
	}
	if len(removed) == 0 {
		return image, nil // as mapping.Set does: no copy when nothing goes
	}
	slices.Sort(removed)
	return out, removed
}

var hr = redactor{
	types:  map[string]string{"Sag": "confidential"},
	fields: map[string]map[string]string{"Bruger": {"cpr": "confidential", "note": "restricted"}},
}

func TestRedaction(t *testing.T) {
	anne := map[string]any{"navn": "Anne", "cpr": "0101011234"}
	anne2 := map[string]any{"navn": "Anne B", "cpr": "0101011234"}
	anne3 := map[string]any{"navn": "Anne", "cpr": "0101014321"}
	log := []history.Event{
		event(1, "Bruger", history.OpCreate, nil, anne, "cpr", "navn"),
		event(2, "Bruger", history.OpUpdate, anne, anne2, "navn"),
		event(3, "Bruger", history.OpUpdate, anne, anne3, "cpr"), // only the hidden field changed
		event(4, "Sag", history.OpCreate, nil, map[string]any{"titel": "x"}, "titel"),
		event(5, "Bruger", history.OpDelete, anne2, nil),
		event(6, "Enhed", history.OpCreate, nil, map[string]any{"navn": "IT"}, "navn"),
		event(7, "Bruger", history.OpUpdate, anne2, map[string]any{"navn": "Anne C", "cpr": "1"}, "cpr", "navn"),
	}
	type want struct {
		before, after map[string]any
		changed       []string
		redacted      []string
	}
	tests := []struct {
		ceiling string
		want    map[uint64]want // by sequence; absent: not delivered
	}{
		{
			ceiling: "internal",
			want: map[uint64]want{
				1: {nil, map[string]any{"navn": "Anne"}, []string{"navn"}, []string{"/after/cpr"}},
				2: {map[string]any{"navn": "Anne"}, map[string]any{"navn": "Anne B"}, []string{"navn"}, []string{"/before/cpr", "/after/cpr"}},
				5: {map[string]any{"navn": "Anne B"}, nil, nil, []string{"/before/cpr"}},
				6: {nil, map[string]any{"navn": "IT"}, []string{"navn"}, nil},
				7: {map[string]any{"navn": "Anne B"}, map[string]any{"navn": "Anne C"}, []string{"navn"}, []string{"/before/cpr", "/after/cpr"}},
			},
		},
		{
			ceiling: "public",
			want:    map[uint64]want{}, // every type is internal or above
		},
		{
			ceiling: "confidential",
			want: map[uint64]want{
				1: {nil, anne, []string{"cpr", "navn"}, nil},
				2: {anne, anne2, []string{"navn"}, nil},
				3: {anne, anne3, []string{"cpr"}, nil},
				4: {nil, map[string]any{"titel": "x"}, []string{"titel"}, nil},
				5: {anne2, nil, nil, nil},
				6: {nil, map[string]any{"navn": "IT"}, []string{"navn"}, nil},
				7: {anne2, map[string]any{"navn": "Anne C", "cpr": "1"}, []string{"cpr", "navn"}, nil},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.ceiling, func(t *testing.T) {
			db := newDB(t)
			appendLog(t, db, log...)
			r := &fakeReceiver{}
			d := NewDispatcher(db, hr, quiet())
			if err := d.Add(Config{Name: "r", Classification: tt.ceiling}, r); err != nil {
				t.Fatal(err)
			}
			runOnce(t, d)
			got := map[uint64]history.Event{}
			for _, ev := range r.events() {
				got[ev.Sequence] = ev
			}
			for seq := uint64(1); seq <= 7; seq++ {
				w, wanted := tt.want[seq]
				ev, delivered := got[seq]
				if wanted != delivered {
					t.Errorf("event %d: delivered %v, want %v", seq, delivered, wanted)
					continue
				}
				if !delivered {
					continue
				}
				if !mapsEqual(ev.Before, w.before) || !mapsEqual(ev.After, w.after) {
					t.Errorf("event %d: before %v after %v, want %v %v", seq, ev.Before, ev.After, w.before, w.after)
				}
				if !slices.Equal(ev.Changed, w.changed) && (len(ev.Changed) > 0 || len(w.changed) > 0) {
					t.Errorf("event %d: changed %q, want %q", seq, ev.Changed, w.changed)
				}
				if !slices.Equal(ev.Classification.Redacted, w.redacted) {
					t.Errorf("event %d: redacted %q, want %q", seq, ev.Classification.Redacted, w.redacted)
				}
			}
			if c := cursor(t, db, "r"); c.Delivered != 7 {
				t.Errorf("cursor = %d, want 7 (skipped events count as looked at)", c.Delivered)
			}
			// The log itself is never redacted.
			_ = db.View(func(tx *state.Tx) error {
				var ev history.Event
				if err := json.Unmarshal(tx.Get(state.Log, state.U64(1)), &ev); err != nil {
					t.Fatal(err)
				}
				if ev.After["cpr"] != "0101011234" {
					t.Errorf("the log's event lost cpr: %v", ev.After)
				}
				return nil
			})
		})
	}
}

func mapsEqual(a, b map[string]any) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	return maps.Equal(a, b)
}

// jsonReceiver is a fakeReceiver that says it sends events' JSON only.
type jsonReceiver struct{ *fakeReceiver }

func (jsonReceiver) SendsJSON() bool { return true }

// A receiver that sends events' JSON gets them with their images undecoded
// (the logged bytes in Raw), unless redaction removes a field: then the
// images are decoded, redacted, and nothing of the logged JSON is sent.
func TestJSONSenderImages(t *testing.T) {
	for _, handed := range []bool{false, true} {
		t.Run(fmt.Sprintf("handed=%v", handed), func(t *testing.T) { testJSONSenderImages(t, handed) })
	}
}

// testJSONSenderImages reads the event from the log, or, if handed, from
// what the engine handed over as it committed it.
func testJSONSenderImages(t *testing.T, handed bool) {
	db := newDB(t)
	appendLog(t, db, event(1, "Bruger", history.OpCreate, nil, map[string]any{"name": "A", "cpr": "010101-0000"}, "cpr", "name"))
	var logged []byte
	_ = db.View(func(tx *state.Tx) error { logged = bytes.Clone(tx.Get(state.Log, state.U64(1))); return nil })
	hr := redactor{fields: map[string]map[string]string{"Bruger": {"cpr": "confidential"}}}
	open, low := jsonReceiver{&fakeReceiver{}}, jsonReceiver{&fakeReceiver{}}
	d := NewDispatcher(db, hr, quiet())
	if err := d.Add(Config{Name: "open", Classification: "confidential"}, open); err != nil {
		t.Fatal(err)
	}
	if err := d.Add(Config{Name: "low", Classification: "internal"}, low); err != nil {
		t.Fatal(err)
	}
	if handed {
		var ev history.Event
		if err := history.DecodeEventHead(bytes.Clone(logged), &ev); err != nil {
			t.Fatal(err)
		}
		ev.Raw = bytes.Clone(logged)
		d.Committed(1, []history.Event{ev})
		// The log no longer has it: what is delivered came from the cache.
		if err := db.Update(func(tx *state.Tx) error { return tx.Delete(state.Log, state.U64(1)) }); err != nil {
			t.Fatal(err)
		}
	}
	runOnce(t, d)
	o := open.confirmed[0]
	if !bytes.Equal(o.Raw, logged) || o.After != nil {
		t.Errorf("JSON sender without redaction: Raw %q, After %v; want the logged bytes and no decoded images", o.Raw, o.After)
	}
	l := low.confirmed[0]
	out, err := history.AppendJSON(nil, &l)
	if err != nil {
		t.Fatal(err)
	}
	if l.Raw != nil || bytes.Contains(out, []byte("010101")) || !bytes.Contains(out, []byte(`"redacted":["/after/cpr"]`)) {
		t.Errorf("redacted event for a JSON sender: Raw %q, encoded %s", l.Raw, out)
	}
}

func TestRedactNil(t *testing.T) {
	ev := event(1, "Bruger", history.OpCreate, nil, map[string]any{"cpr": "1"}, "cpr")
	got, ok, err := Redact(nil, "public", ev)
	if err != nil || !ok || got.After["cpr"] != "1" || got.Classification.Redacted != nil {
		t.Errorf("Redact(nil redactor) = %+v, %v", got, ok)
	}
	// An unknown type (Level "") is not refused by an empty label.
	if _, ok, _ := Redact(redactor{types: map[string]string{"X": ""}}, "public", event(1, "X", history.OpCreate, nil, nil)); !ok {
		t.Error("type without a label refused")
	}
}

// Two receivers with different ceilings read the same stretch of the
// log; one's redaction must never show in the other's events, however
// the events are shared or cached internally, and however carelessly an
// adapter treats the events it is given.
func TestReceiversIsolated(t *testing.T) {
	for _, mutate := range []bool{false, true} {
		t.Run(fmt.Sprintf("mutate=%v", mutate), func(t *testing.T) {
			db := newDB(t)
			var log []history.Event
			for s := uint64(1); s <= 60; s++ {
				log = append(log, event(s, "Bruger", history.OpCreate, nil, map[string]any{"navn": "N", "cpr": fmt.Sprint(s)}, "cpr", "navn"))
			}
			appendLog(t, db, log...)
			low := &fakeReceiver{mutate: mutate}
			high := &fakeReceiver{mutate: mutate}
			all := &fakeReceiver{mutate: mutate}
			d := NewDispatcher(db, hr, quiet())
			for _, a := range []struct {
				cfg Config
				r   *fakeReceiver
			}{
				{Config{Name: "low", Classification: "internal", Batch: 7}, low},
				{Config{Name: "high", Classification: "confidential", Batch: 5}, high},
				{Config{Name: "all", Classification: "confidential", Batch: 3}, all},
			} {
				if err := d.Add(a.cfg, a.r); err != nil {
					t.Fatal(err)
				}
			}
			runOnce(t, d)
			for _, ev := range low.events() {
				if _, ok := ev.After["cpr"]; ok || ev.After["navn"] != "N" || !slices.Equal(ev.Changed, []string{"navn"}) {
					t.Fatalf("internal receiver got %d: %v changed %v", ev.Sequence, ev.After, ev.Changed)
				}
			}
			for name, r := range map[string]*fakeReceiver{"high": high, "all": all} {
				evs := r.events()
				if len(evs) != 60 {
					t.Fatalf("%s got %d events", name, len(evs))
				}
				for _, ev := range evs {
					if ev.After["cpr"] != fmt.Sprint(ev.Sequence) || ev.After["navn"] != "N" ||
						!slices.Equal(ev.Changed, []string{"cpr", "navn"}) || ev.Classification.Redacted != nil {
						t.Fatalf("%s got %d: %v changed %v redacted %v", name, ev.Sequence, ev.After, ev.Changed, ev.Classification.Redacted)
					}
				}
			}
		})
	}
}

func TestTransientErrorRetried(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 5)...)
	down := errors.New("connection refused")
	var lastError string
	r := &fakeReceiver{script: []step{
		{err: down},
		{err: fmt.Errorf("send: %w", down), check: func([]history.Event) {
			// While failing, the cursor says why and has not moved.
			c := cursor(t, db, "r")
			lastError = c.LastError
			if c.Delivered != 0 {
				t.Errorf("cursor moved to %d on a failure", c.Delivered)
			}
		}},
	}}
	logs := &syncBuffer{}
	d := NewDispatcher(db, nil, slog.New(slog.NewTextHandler(logs, nil)))
	if err := d.Add(Config{Name: "r", Retry: fastRetry}, r); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	runOnce(t, d)
	if time.Since(start) > 2*time.Second {
		t.Errorf("two retries with a 2ms backoff took %v", time.Since(start))
	}
	want := [][]uint64{seqRange(1, 5), seqRange(1, 5), seqRange(1, 5)}
	if got := r.callSeqs(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("calls %v, want the same batch three times", got)
	}
	if got := r.seqs(); !slices.Equal(got, seqRange(1, 5)) {
		t.Errorf("confirmed %v", got)
	}
	if !strings.Contains(lastError, "connection refused") {
		t.Errorf("cursor LastError during failure = %q", lastError)
	}
	c := cursor(t, db, "r")
	if c.Delivered != 5 || c.LastError != "" {
		t.Errorf("cursor after recovery %+v", c)
	}
	if !strings.Contains(logs.String(), "delivery failed; retrying") {
		t.Errorf("no retry warning logged: %s", logs)
	}
}

// TestTimeout: a receiver that never confirms is cut off after the
// timeout, and the batch is retried.
func TestTimeout(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 3)...)
	var lastError string
	r := &fakeReceiver{script: []step{{hang: true}, {check: func([]history.Event) { lastError = cursor(t, db, "r").LastError }}}}
	d := NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "r", Retry: fastRetry, Timeout: 50 * time.Millisecond}, r); err != nil {
		t.Fatal(err)
	}
	runOnce(t, d)
	if got := r.seqs(); !slices.Equal(got, seqRange(1, 3)) {
		t.Errorf("confirmed %v", got)
	}
	if !strings.Contains(lastError, "no confirmation within 50ms") {
		t.Errorf("cursor LastError after the timeout = %q", lastError)
	}
}

func TestBackoffGrows(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 1)...)
	var at []time.Time
	var mu sync.Mutex
	stamp := func([]history.Event) { mu.Lock(); at = append(at, time.Now()); mu.Unlock() }
	fail := errors.New("503")
	r := &fakeReceiver{script: []step{{err: fail, check: stamp}, {err: fail, check: stamp}, {err: fail, check: stamp}, {err: fail, check: stamp}, {check: stamp}}}
	d := NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "r", Retry: Retry{Initial: 20 * time.Millisecond, Max: 40 * time.Millisecond}}, r); err != nil {
		t.Fatal(err)
	}
	runOnce(t, d)
	if len(at) != 5 {
		t.Fatalf("%d calls", len(at))
	}
	// Waits are jittered in [b/2, 3b/2) for b = 20, 40, 40, 40 ms.
	for i, b := range []time.Duration{20, 40, 40, 40} {
		b *= time.Millisecond
		if gap := at[i+1].Sub(at[i]); gap < b/2 || gap > 3*b/2+200*time.Millisecond {
			t.Errorf("wait %d = %v, want about %v", i+1, gap, b)
		}
	}
}

func TestPartialError(t *testing.T) {
	t.Run("prefix confirmed", func(t *testing.T) {
		db := newDB(t)
		appendLog(t, db, creates(1, 10)...)
		r := &fakeReceiver{script: []step{
			{err: &PartialError{Confirmed: 4, Err: errors.New("broker went away")}},
			{check: func(evs []history.Event) {
				if c := cursor(t, db, "r"); c.Delivered != 4 || !strings.Contains(c.LastError, "broker went away") {
					t.Errorf("cursor after a partial delivery %+v", c)
				}
			}},
		}}
		d := NewDispatcher(db, nil, quiet())
		if err := d.Add(Config{Name: "r", Retry: fastRetry}, r); err != nil {
			t.Fatal(err)
		}
		runOnce(t, d)
		want := [][]uint64{seqRange(1, 10), seqRange(5, 10)}
		if got := r.callSeqs(); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("calls %v, want %v", got, want)
		}
		if got := r.seqs(); !slices.Equal(got, seqRange(1, 10)) {
			t.Errorf("confirmed %v (duplicates or gaps)", got)
		}
	})
	t.Run("prefix with filtered events between", func(t *testing.T) {
		db := newDB(t)
		var log []history.Event
		for s := uint64(1); s <= 10; s++ {
			typ := "A"
			if s%2 == 0 {
				typ = "B"
			}
			log = append(log, event(s, typ, history.OpCreate, nil, map[string]any{"x": 1}, "x"))
		}
		appendLog(t, db, log...)
		r := &fakeReceiver{script: []step{
			{err: &PartialError{Confirmed: 2, Err: errors.New("timeout")}},
			{check: func([]history.Event) {
				// Confirmed 2 of [1 3 5 7 9]: through 3, not 4 or beyond.
				if c := cursor(t, db, "r"); c.Delivered != 3 {
					t.Errorf("cursor %d, want 3", c.Delivered)
				}
			}},
		}}
		d := NewDispatcher(db, nil, quiet())
		if err := d.Add(Config{Name: "r", Retry: fastRetry, Filter: Filter{Types: []string{"A"}}}, r); err != nil {
			t.Fatal(err)
		}
		runOnce(t, d)
		want := [][]uint64{{1, 3, 5, 7, 9}, {5, 7, 9}}
		if got := r.callSeqs(); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("calls %v, want %v", got, want)
		}
		if c := cursor(t, db, "r"); c.Delivered != 10 {
			t.Errorf("final cursor %d", c.Delivered)
		}
	})
	t.Run("nothing confirmed", func(t *testing.T) {
		db := newDB(t)
		appendLog(t, db, creates(1, 3)...)
		r := &fakeReceiver{script: []step{{err: &PartialError{Confirmed: 0, Err: errors.New("x")}}}}
		d := NewDispatcher(db, nil, quiet())
		if err := d.Add(Config{Name: "r", Retry: fastRetry}, r); err != nil {
			t.Fatal(err)
		}
		runOnce(t, d)
		want := [][]uint64{seqRange(1, 3), seqRange(1, 3)}
		if got := r.callSeqs(); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("calls %v, want %v", got, want)
		}
	})
}

// An adapter that reports more (or less) than it was given must not
// crash the agent or move the cursor beyond the batch.
func TestConfirmedOutOfRange(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		cursor uint64 // after the failed call
	}{
		{"partial beyond the batch", &PartialError{Confirmed: 9, Err: errors.New("x")}, 3},
		{"rejected beyond the batch", &RejectedError{Index: 9, Err: errors.New("x")}, 3},
		{"negative", &PartialError{Confirmed: -1, Err: errors.New("x")}, 0},
		{"rejected negative", &RejectedError{Index: -1, Err: errors.New("x")}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDB(t)
			appendLog(t, db, creates(1, 5)...)
			r := &fakeReceiver{script: []step{{err: tt.err}, {check: func([]history.Event) {
				if c := cursor(t, db, "r"); c.Delivered != tt.cursor {
					t.Errorf("cursor after the failed call = %d, want %d", c.Delivered, tt.cursor)
				}
			}}}}
			d := NewDispatcher(db, nil, quiet())
			if err := d.Add(Config{Name: "r", Batch: 3, Retry: fastRetry}, r); err != nil {
				t.Fatal(err)
			}
			runOnce(t, d)
			if c := cursor(t, db, "r"); c.Delivered != 5 || c.DeadLetters != 0 {
				t.Errorf("cursor %+v", c)
			}
		})
	}
}

func TestRejected(t *testing.T) {
	tests := []struct {
		name  string
		index int
		calls [][]uint64
		dead  uint64
	}{
		{"middle", 2, [][]uint64{seqRange(1, 5), {4, 5}}, 3},
		{"first", 0, [][]uint64{seqRange(1, 5), seqRange(2, 5)}, 1},
		// The last one: nothing left to deliver after it.
		{"last", 4, [][]uint64{seqRange(1, 5)}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDB(t)
			appendLog(t, db, creates(1, 5)...)
			r := &fakeReceiver{script: []step{{err: &RejectedError{Index: tt.index, Err: errors.New("message too large")}}}}
			logs := &syncBuffer{}
			d := NewDispatcher(db, nil, slog.New(slog.NewTextHandler(logs, nil)))
			if err := d.Add(Config{Name: "r", Retry: fastRetry}, r); err != nil {
				t.Fatal(err)
			}
			runOnce(t, d)
			if got := r.callSeqs(); !slices.EqualFunc(got, tt.calls, slices.Equal) {
				t.Errorf("calls %v, want %v", got, tt.calls)
			}
			var want []uint64
			for s := uint64(1); s <= 5; s++ {
				if s != tt.dead {
					want = append(want, s)
				}
			}
			if got := r.seqs(); !slices.Equal(got, want) {
				t.Errorf("confirmed %v, want %v", got, want)
			}
			c := cursor(t, db, "r")
			if c.Delivered != 5 || c.DeadLetters != 1 {
				t.Errorf("cursor %+v", c)
			}
			var letters []string
			_ = db.View(func(tx *state.Tx) error {
				return tx.Scan(state.DeadLetters, state.Key("r", ""), func(k, v []byte) error {
					if seq := state.ParseU64(k[len("r\x00"):]); seq != tt.dead {
						t.Errorf("dead letter for sequence %d, want %d", seq, tt.dead)
					}
					letters = append(letters, string(v))
					return nil
				})
			})
			if len(letters) != 1 {
				t.Fatalf("%d dead letters", len(letters))
			}
			var dl struct {
				EventID string       `json:"eventId"`
				Reason  string       `json:"reason"`
				At      history.Time `json:"at"`
			}
			if err := json.Unmarshal([]byte(letters[0]), &dl); err != nil {
				t.Fatal(err)
			}
			if dl.EventID != fmt.Sprintf("ev-%d", tt.dead) || !strings.Contains(dl.Reason, "message too large") || dl.At.IsZero() {
				t.Errorf("dead letter %+v", dl)
			}
			if !strings.Contains(logs.String(), "dead-lettered") {
				t.Errorf("dead letter not logged: %s", logs)
			}
		})
	}
}

func TestReplayUntil(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 6)...)
	// What `connector replay --from 2` leaves: delivered up to 1, events
	// up to 4 (the end of the log then) are re-deliveries.
	if err := db.Update(func(tx *state.Tx) error {
		return SaveCursor(tx, "r", Cursor{Delivered: 1, ReplayUntil: 4})
	}); err != nil {
		t.Fatal(err)
	}
	r := &fakeReceiver{}
	d := NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "r", Start: "now"}, r); err != nil {
		t.Fatal(err)
	}
	runOnce(t, d)
	want := map[uint64]string{2: "replay", 3: "replay", 4: "replay", 5: "live", 6: "live"}
	evs := r.events()
	if len(evs) != len(want) {
		t.Fatalf("delivered %v", r.seqs())
	}
	for _, ev := range evs {
		if ev.Emission != want[ev.Sequence] {
			t.Errorf("event %d emission %q, want %q", ev.Sequence, ev.Emission, want[ev.Sequence])
		}
		if ev.EventID != fmt.Sprintf("ev-%d", ev.Sequence) {
			t.Errorf("replayed event %d has id %q: replay must keep ids", ev.Sequence, ev.EventID)
		}
	}
}

func TestNotifyWakesRun(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 2)...)
	r := &fakeReceiver{notify: make(chan struct{}, 1)}
	d := NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "r"}, r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()

	wait := func(want []uint64) time.Duration {
		t.Helper()
		start := time.Now()
		for !slices.Equal(r.seqs(), want) {
			select {
			case <-r.notify:
			case <-time.After(3 * time.Second):
				t.Fatalf("delivered %v, want %v", r.seqs(), want)
			}
		}
		return time.Since(start)
	}
	wait(seqRange(1, 2))
	// Let the loop go idle: it polls every second unless notified.
	time.Sleep(100 * time.Millisecond)
	for i, seq := range []uint64{3, 4, 5} {
		appendLog(t, db, creates(seq, 1)...)
		start := time.Now()
		d.Notify(seq)
		d.Notify(seq) // never blocks, even when a wake-up is pending
		wait(seqRange(1, seq))
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Errorf("notify %d: delivered after %v; Notify did not wake the loop", i, took)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := runReturns(t, done, 2*time.Second, "Run did not return after cancel"); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

// runReturns waits for Run's result on done; it fails the test, saying
// stuck, if none comes within.
func runReturns(t *testing.T, done <-chan error, within time.Duration, stuck string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatal(stuck)
		return nil
	}
}

// waitSaved waits until the state holds receiver name's cursor at n.
func waitSaved(t *testing.T, db *state.DB, name string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for cursor(t, db, name).Delivered != n {
		if time.Now().After(deadline) {
			t.Fatalf("idle loop left the saved cursor at %d, want %d", cursor(t, db, name).Delivered, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Closing drain makes a running dispatcher deliver what was committed
// before, even without a Notify, and then return.
func TestRunDrain(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 2)...)
	r := &fakeReceiver{}
	d := NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "r"}, r); err != nil {
		t.Fatal(err)
	}
	drain := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background(), drain) }()
	for len(r.seqs()) < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // idle, waiting for a wake-up
	appendLog(t, db, creates(3, 3)...)
	select {
	case err := <-done:
		t.Fatalf("Run returned %v before drain was closed", err)
	default:
	}
	close(drain)
	if err := runReturns(t, done, 3*time.Second, "Run did not return after drain was closed"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := r.seqs(); !slices.Equal(got, seqRange(1, 5)) {
		t.Errorf("delivered %v, want 1–5: the drain must take what was committed before it", got)
	}
}

// A busy loop saves its cursor at most every cursorSaveEvery; an idle or
// stopping one saves it at once. Status reads the live one meanwhile.
func TestCursorSaving(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 6)...)
	r := &fakeReceiver{}
	d := NewDispatcher(db, nil, quiet())
	d.saveEvery = time.Second // idle: every 200 ms
	if err := d.Add(Config{Name: "r", Batch: 2}, r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	waitSaved(t, db, "r", 6)
	if got := r.callSeqs(); len(got) != 3 {
		t.Fatalf("deliveries %v, want 3 batches of 2", got)
	}
	if c, ok := d.Cursor("r"); !ok || c.Delivered != 6 {
		t.Errorf("live cursor %+v, %v", c, ok)
	}
	// Busy: batches confirmed within saveEvery of the last save stay in
	// memory.
	var during []uint64
	r.mu.Lock()
	r.script = []step{{check: func([]history.Event) { during = append(during, cursor(t, db, "r").Delivered) }},
		{check: func([]history.Event) { during = append(during, cursor(t, db, "r").Delivered) }}}
	r.mu.Unlock()
	appendLog(t, db, creates(7, 4)...)
	d.Notify(10)
	for len(r.seqs()) < 10 {
		time.Sleep(5 * time.Millisecond)
	}
	// Idle again, but the last save was less than a fifth of saveEvery
	// ago: the cursor waits in memory (a commit each time the receiver
	// catches up would double the engine's commits), and is saved once it
	// is due.
	time.Sleep(50 * time.Millisecond)
	if c := cursor(t, db, "r"); c.Delivered != 6 {
		t.Errorf("saved cursor when idle again within saveEvery = %d, want 6", c.Delivered)
	}
	waitSaved(t, db, "r", 10)
	appendLog(t, db, creates(11, 1)...)
	d.Notify(11)
	for len(r.seqs()) < 11 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(during, []uint64{6, 6}) {
		t.Errorf("saved cursor during the busy stretch %v, want [6 6] (no commit per batch)", during)
	}
	if c := cursor(t, db, "r"); c.Delivered != 11 {
		t.Errorf("saved cursor after stop = %d, want 11", c.Delivered)
	}
}

// A replay while the loop delivers: the batch in flight does not move
// the cursor past the replay's start, and everything is sent again.
func TestMoveCursorWhileRunning(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 4)...)
	var d *Dispatcher
	moved := make(chan error, 1)
	r := &fakeReceiver{script: []step{{}, {check: func([]history.Event) {
		moved <- d.MoveCursor("r", func(_ *state.Tx, c *Cursor) error {
			c.Delivered, c.ReplayUntil = 0, 4
			return nil
		})
	}}}}
	d = NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "r", Batch: 2}, r); err != nil {
		t.Fatal(err)
	}
	runOnce(t, d)
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	want := [][]uint64{{1, 2}, {3, 4}, {1, 2}, {3, 4}}
	if got := r.callSeqs(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("deliveries %v, want %v", got, want)
	}
	for _, ev := range r.confirmed[4:] {
		if ev.Emission != history.EmissionReplay {
			t.Errorf("event %d re-sent with emission %q, want replay", ev.Sequence, ev.Emission)
		}
	}
	if c := cursor(t, db, "r"); c.Delivered != 4 {
		t.Errorf("cursor %d, want 4", c.Delivered)
	}
}

func TestNotifyWithoutRun(t *testing.T) {
	d := NewDispatcher(newDB(t), nil, quiet())
	if err := d.Add(Config{Name: "r"}, &fakeReceiver{}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		d.Notify(uint64(i)) // must not block
	}
}

func TestCancelDuringRetry(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 1)...)
	fail := errors.New("down")
	steps := make([]step, 1000)
	for i := range steps {
		steps[i] = step{err: fail}
	}
	r := &fakeReceiver{script: steps}
	d := NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "r", Retry: Retry{Initial: time.Hour}}, r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Drain(ctx) }()
	for len(r.callSeqs()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := runReturns(t, done, 2*time.Second, "Run stuck in its backoff after cancel"); err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	if c := cursor(t, db, "r"); c.Delivered != 0 || !strings.Contains(c.LastError, "down") {
		t.Errorf("cursor %+v", c)
	}
}

func TestCorruptLogEvent(t *testing.T) {
	db := newDB(t)
	appendLog(t, db, creates(1, 2)...)
	if err := db.Update(func(tx *state.Tx) error { return tx.Put(state.Log, state.U64(3), []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	r := &fakeReceiver{}
	d := NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "r", Batch: 2}, r); err != nil {
		t.Fatal(err)
	}
	err := d.Drain(context.Background())
	if !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), `receiver "r"`) || !strings.Contains(err.Error(), "log event 3") {
		t.Fatalf("Run = %v, want ErrCorrupt naming the receiver and event 3", err)
	}
	if got := r.seqs(); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("delivered %v before the damage", got)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	db := newDB(t)
	at := history.Ptr(time.Date(2024, 3, 1, 10, 0, 0, 123456789, time.UTC))
	in := Cursor{Delivered: 42, ReplayUntil: 40, DeliveredAt: at, DeadLetters: 2, LastError: "x"}
	if err := db.Update(func(tx *state.Tx) error { return SaveCursor(tx, "r", in) }); err != nil {
		t.Fatal(err)
	}
	got := cursor(t, db, "r")
	if got.Delivered != 42 || got.ReplayUntil != 40 || got.DeadLetters != 2 || got.LastError != "x" ||
		got.DeliveredAt == nil || !got.DeliveredAt.Equal(at.Time) {
		t.Errorf("cursor %+v, want %+v", got, in)
	}
	err := db.Update(func(tx *state.Tx) error {
		if _, ok, err := LoadCursor(tx, "none"); ok || err != nil {
			t.Errorf("missing cursor: ok %v err %v", ok, err)
		}
		if err := tx.Put(state.Cursors, []byte("bad"), []byte("[")); err != nil {
			return err
		}
		if _, _, err := LoadCursor(tx, "bad"); !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), `"bad"`) {
			t.Errorf("corrupt cursor: %v", err)
		}
		if LastSequence(tx) != 0 {
			t.Errorf("LastSequence of an empty log = %d", LastSequence(tx))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	appendLog(t, db, creates(1, 3)...)
	_ = db.View(func(tx *state.Tx) error {
		if LastSequence(tx) != 3 {
			t.Errorf("LastSequence = %d", LastSequence(tx))
		}
		return nil
	})
	// A receiver whose cursor is damaged is refused when added.
	d := NewDispatcher(db, nil, quiet())
	if err := d.Add(Config{Name: "bad"}, &fakeReceiver{}); !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), `receiver "bad"`) {
		t.Errorf("Add with a corrupt cursor = %v", err)
	}
}

func TestConfirmed(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("x"), 0},
		{&PartialError{Confirmed: 3, Err: errors.New("x")}, 3},
		{fmt.Errorf("wrapped: %w", &PartialError{Confirmed: 2}), 2},
		{&RejectedError{Index: 4, Err: errors.New("x")}, 4},
		{fmt.Errorf("wrapped: %w", &RejectedError{Index: 1}), 1},
	}
	for _, tt := range tests {
		if got := Confirmed(tt.err); got != tt.want {
			t.Errorf("Confirmed(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestClose(t *testing.T) {
	d := NewDispatcher(newDB(t), nil, quiet())
	a, b := &fakeReceiver{closeErr: errors.New("flush failed")}, &fakeReceiver{}
	for name, r := range map[string]*fakeReceiver{"a": a, "b": b} {
		if err := d.Add(Config{Name: name}, r); err != nil {
			t.Fatal(err)
		}
	}
	err := d.Close()
	if err == nil || !strings.Contains(err.Error(), `receiver "a": close: flush failed`) {
		t.Errorf("Close = %v", err)
	}
	if !a.closed || !b.closed {
		t.Error("Close stopped at the first error")
	}
}

// Events the engine hands over as it commits them (Committed) are
// delivered from the cache; whatever the cache does not hold (evicted,
// never handed over) comes from the log, in sequence order all the same.
// The handed-over events here carry a mark the logged ones lack, to tell
// which way each came.
func TestCommittedTail(t *testing.T) {
	for _, json := range []bool{true, false} {
		t.Run(fmt.Sprintf("json=%v", json), func(t *testing.T) {
			db := newDB(t)
			n := uint64(eventCacheSize + 100)
			appendLog(t, db, creates(1, n)...)
			var handed []history.Event
			err := db.View(func(tx *state.Tx) error {
				return tx.Scan(state.Log, nil, func(k, v []byte) error {
					var ev history.Event
					if err := history.DecodeEventHead(bytes.Clone(v), &ev); err != nil {
						return err
					}
					if ev.Sequence != 2000 { // never handed over
						ev.Trace.CorrelationID = "handed"
						handed = append(handed, ev)
					}
					return nil
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			// A careless adapter that scribbles on what it is given, and
			// fails the first delivery: its retry gets the cached events
			// again, as they were.
			r := &fakeReceiver{mutate: true, script: []step{{err: errors.New("down")}}}
			var recv Receiver = r
			if json {
				recv = jsonReceiver{r}
			}
			d := NewDispatcher(db, nil, quiet())
			if err := d.Add(Config{Name: "out", Start: "beginning", Batch: 500, Retry: fastRetry}, recv); err != nil {
				t.Fatal(err)
			}
			d.Committed(n, handed)
			runOnce(t, d)
			if got := r.seqs(); !slices.Equal(got, seqRange(1, n)) {
				t.Fatalf("delivered %d events, want 1…%d in order", len(got), n)
			}
			for _, ev := range r.events() {
				// 1…100 were evicted by 4097…4196; 2000 was never handed over.
				fromLog := ev.Sequence <= 100 || ev.Sequence == 2000
				if (ev.Trace.CorrelationID == "handed") == fromLog {
					t.Fatalf("event %d came from the %s", ev.Sequence, map[bool]string{true: "log", false: "cache"}[!fromLog])
				}
				if !json && ev.After["n"] != fmt.Sprint(ev.Sequence) {
					t.Fatalf("event %d: after %v; a receiver that reads images must get them decoded", ev.Sequence, ev.After)
				}
			}
		})
	}
}
