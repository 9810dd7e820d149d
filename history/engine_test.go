package history_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/mapping"
	"github.com/os2sandbox/connector/state"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func personMapping(t *testing.T, keepValid bool) *mapping.Set {
	t.Helper()
	c := mapping.Config{
		Type: "Person", Source: "src", Record: "people",
		ID: mapping.Field{From: "id"},
		Fields: map[string]mapping.Field{
			"name": {From: "name"},
			"unit": {From: "unit"},
			"cpr":  {From: "cpr", Classification: "confidential"},
		},
		Where: `status != "inactive"`,
	}
	if keepValid {
		c.ValidFrom = &mapping.Field{From: "from"}
	}
	s, _, err := mapping.NewSet([]mapping.Config{c}, map[string]bool{"src": true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type fixture struct {
	t      *testing.T
	db     *state.DB
	engine *history.Engine
	sink   *history.Sink
	clock  time.Time
	// logged are the events handed to Options.Committed, lasts the
	// sequences it was given.
	logged []history.Event
	lasts  []uint64
}

func newFixture(t *testing.T, maps *mapping.Set, info history.SourceInfo) *fixture {
	t.Helper()
	return openFixture(t, filepath.Join(t.TempDir(), "state.db"), maps, info)
}

func openFixture(t *testing.T, path string, maps *mapping.Set, info history.SourceInfo) *fixture {
	t.Helper()
	db, err := state.Open(path, state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{t: t, db: db, clock: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	f.engine, err = history.New(db, maps, history.Options{Log: quiet, ChunkSize: 3, Clock: func() time.Time {
		f.clock = f.clock.Add(time.Second)
		return f.clock
	}, Committed: func(last uint64, logged []history.Event) {
		f.lasts = append(f.lasts, last)
		f.logged = append(f.logged, logged...)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if info.Name == "" {
		info = history.SourceInfo{Name: "src", Type: "test", ID: "test://src"}
	}
	f.sink = f.engine.Sink(info)
	return f
}

func (f *fixture) apply(b capture.Batch) {
	f.t.Helper()
	if err := f.sink.Apply(context.Background(), b); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) events() []history.Event {
	f.t.Helper()
	var out []history.Event
	err := f.db.View(func(tx *state.Tx) error {
		return tx.Scan(state.Log, nil, func(_, v []byte) error {
			var ev history.Event
			if err := history.DecodeEvent(v, &ev); err != nil {
				return err
			}
			out = append(out, ev)
			return nil
		})
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

func person(op capture.Op, id, name string, extra ...string) capture.Change {
	v := map[string]any{"id": id, "name": name, "unit": "u1", "cpr": "010101-0000", "status": "active"}
	for i := 0; i+1 < len(extra); i += 2 {
		v[extra[i]] = extra[i+1]
	}
	return capture.Change{Record: "people", Op: op, Values: v, ChangeKey: fmt.Sprintf("k-%s-%s-%v", id, name, extra),
		ChangedAt: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}
}

func TestEngineLogChanges(t *testing.T) {
	f := newFixture(t, personMapping(t, false), history.SourceInfo{})
	f.apply(capture.Batch{TransactionID: "tx1", Changes: []capture.Change{
		person(capture.OpInsert, "1", "Anna"),
		person(capture.OpUpdate, "1", "Anna"),                     // no mapped difference: no event
		person(capture.OpUpdate, "1", "Anna B."),                  // update
		person(capture.OpDelete, "1", ""),                         // delete
		person(capture.OpUpsert, "1", "Anna B."),                  // undelete
		person(capture.OpDelete, "2", "ghost"),                    // unknown: nothing
		person(capture.OpInsert, "3", "Bo", "status", "inactive"), // outside where: nothing
	}, Checkpoint: []byte("cp1")})
	evs := f.events()
	want := []struct {
		op, reason string
		version    uint64
		changed    int
	}{
		{history.OpCreate, "", 1, 3}, {history.OpUpdate, "", 2, 1}, {history.OpDelete, history.ReasonDeletedInSource, 3, 3},
		{history.OpUndelete, history.ReasonRestored, 4, 3},
	}
	if len(evs) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(evs), len(want), evs)
	}
	for i, w := range want {
		ev := evs[i]
		if ev.Operation != w.op || ev.Reason != w.reason || ev.Object.Version != w.version || len(ev.Changed) != w.changed {
			t.Errorf("event %d: got %s/%s v%d changed %v, want %+v", i, ev.Operation, ev.Reason, ev.Object.Version, ev.Changed, w)
		}
		if ev.Sequence != uint64(i+1) {
			t.Errorf("event %d: sequence %d", i, ev.Sequence)
		}
		if ev.Trace.TransactionID != "tx1" || ev.Source.ID != "test://src" {
			t.Errorf("event %d: trace/source %+v %+v", i, ev.Trace, ev.Source)
		}
		if i > 0 && !ev.Bitemporal.RegistreringFra.After(evs[i-1].Bitemporal.RegistreringFra.Time) {
			t.Errorf("registration time not increasing at %d", i)
		}
		if i > 0 && ev.Integrity.PrevContentHash != evs[i-1].Integrity.ContentHash {
			t.Errorf("event %d: hash chain broken", i)
		}
	}
	if evs[1].Before["name"] != "Anna" || evs[1].After["name"] != "Anna B." || evs[1].Changed[0] != "name" {
		t.Errorf("update images: %+v", evs[1])
	}
	if evs[2].After != nil || evs[2].Before["name"] != "Anna B." {
		t.Errorf("delete must carry the full before image and a null after: %+v", evs[2])
	}
	if evs[0].Bitemporal.VirkningKilde != "commit-time" || !evs[0].Bitemporal.VirkningFra.Equal(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("valid time from the change time expected: %+v", evs[0].Bitemporal)
	}
	// The checkpoint is stored with the batch.
	_ = f.db.View(func(tx *state.Tx) error {
		ss, err := history.LoadSource(tx, "src")
		if err != nil || string(ss.Checkpoint) != "cp1" || ss.Events != 4 {
			t.Errorf("source state %+v %v", ss, err)
		}
		return nil
	})
}

func TestEngineWhereExitIsMovedOutOfScope(t *testing.T) {
	f := newFixture(t, personMapping(t, false), history.SourceInfo{})
	f.apply(capture.Batch{Changes: []capture.Change{person(capture.OpInsert, "1", "Anna")}})
	f.apply(capture.Batch{Changes: []capture.Change{person(capture.OpUpdate, "1", "Anna", "status", "inactive")}})
	evs := f.events()
	if len(evs) != 2 || evs[1].Operation != history.OpDelete || evs[1].Reason != history.ReasonMovedOutOfScope {
		t.Fatalf("want create + delete(moved-out-of-scope), got %+v", evs)
	}
}

func TestEngineCorrection(t *testing.T) {
	f := newFixture(t, personMapping(t, true), history.SourceInfo{})
	f.apply(capture.Batch{Changes: []capture.Change{person(capture.OpInsert, "1", "Anna", "from", "2024-01-01")}})
	f.apply(capture.Batch{Changes: []capture.Change{person(capture.OpUpdate, "1", "Anne", "from", "2024-01-01")}}) // same period: korrektion
	f.apply(capture.Batch{Changes: []capture.Change{person(capture.OpUpdate, "1", "Anne", "from", "2025-01-01")}}) // new period, same data: aendring
	f.apply(capture.Batch{Changes: []capture.Change{person(capture.OpUpdate, "1", "Anne", "from", "2023-01-01")}}) // back-dated: korrektion of all
	evs := f.events()
	kinds := []string{history.KindAendring, history.KindKorrektion, history.KindAendring, history.KindKorrektion}
	if len(evs) != len(kinds) {
		t.Fatalf("got %d events", len(evs))
	}
	for i, k := range kinds {
		if evs[i].ChangeKind != k {
			t.Errorf("event %d: kind %s, want %s", i, evs[i].ChangeKind, k)
		}
	}
	if len(evs[1].Supersedes) != 1 || evs[1].Supersedes[0].EventID != evs[0].EventID {
		t.Errorf("korrektion must supersede the first registration: %+v", evs[1].Supersedes)
	}
	if len(evs[3].Supersedes) != 2 {
		t.Errorf("back-dated korrektion must supersede both open registrations: %+v", evs[3].Supersedes)
	}
	if evs[1].Bitemporal.VirkningKilde != "column:from" {
		t.Errorf("virkningKilde %q", evs[1].Bitemporal.VirkningKilde)
	}
	// The first registration is closed, never rewritten.
	_ = f.db.View(func(tx *state.Tx) error {
		vs, err := history.Versions(tx, "Person", "1")
		if err != nil {
			t.Fatal(err)
		}
		if vs[0].RegTil == nil || !vs[0].RegTil.Equal(vs[1].RegFra.Time) || vs[0].Fields["name"] != "Anna" {
			t.Errorf("version 1 should be closed at version 2's registration, data kept: %+v", vs[0])
		}
		// As of before the correction, valid mid-2024: Anna.
		if got := history.AsOf(vs, vs[0].RegFra.Time, time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)); got == nil || got.Fields["name"] != "Anna" {
			t.Errorf("as-of before the correction: %+v", got)
		}
		// Now, valid mid-2024: Anne (version 4, back-dated to 2023).
		if got := history.AsOf(vs, vs[3].RegFra.Time, time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)); got == nil || got.Version != 4 {
			t.Errorf("as-of now: %+v", got)
		}
		return nil
	})
}

func TestEngineUnchangedColumnsFromStoredRow(t *testing.T) {
	f := newFixture(t, personMapping(t, false), history.SourceInfo{Name: "src", Type: "postgres", KeepRows: true})
	f.apply(capture.Batch{Changes: []capture.Change{person(capture.OpInsert, "1", "Anna")}})
	// An update whose cpr (say, TOASTed) was not sent.
	ch := person(capture.OpUpdate, "1", "Anna B.")
	delete(ch.Values, "cpr")
	ch.Unchanged = []string{"cpr"}
	f.apply(capture.Batch{Changes: []capture.Change{ch}})
	evs := f.events()
	if len(evs) != 2 || evs[1].After["cpr"] != "010101-0000" || len(evs[1].Changed) != 1 {
		t.Fatalf("the unchanged column must be filled from the stored row: %+v", evs[len(evs)-1])
	}
	// Key-only delete: the before image comes from state.
	f.apply(capture.Batch{Changes: []capture.Change{{Record: "people", Op: capture.OpDelete, Values: map[string]any{"id": "1"}, ChangeKey: "d"}}})
	evs = f.events()
	if evs[2].Operation != history.OpDelete || evs[2].Before["cpr"] != "010101-0000" || evs[2].Before["name"] != "Anna B." {
		t.Fatalf("delete before image: %+v", evs[2])
	}
}

func TestEngineTruncateAndQuarantine(t *testing.T) {
	f := newFixture(t, personMapping(t, true), history.SourceInfo{})
	f.apply(capture.Batch{Changes: []capture.Change{
		person(capture.OpInsert, "1", "A"), person(capture.OpInsert, "2", "B"),
		person(capture.OpInsert, "3", "C", "from", "not a date"), // quarantined
	}})
	f.apply(capture.Batch{Changes: []capture.Change{{Record: "people", Op: capture.OpTruncate, ChangeKey: "t"}}})
	evs := f.events()
	if len(evs) != 4 || evs[2].Reason != history.ReasonTruncated || evs[3].Reason != history.ReasonTruncated {
		t.Fatalf("truncate: %+v", evs)
	}
	_ = f.db.View(func(tx *state.Tx) error {
		ss, _ := history.LoadSource(tx, "src")
		if ss.Quarantined != 1 {
			t.Errorf("quarantined = %d, want 1", ss.Quarantined)
		}
		n := 0
		_ = tx.Scan(state.Quarantine, nil, func(_, v []byte) error { n++; return nil })
		if n != 1 {
			t.Errorf("quarantine bucket holds %d", n)
		}
		return nil
	})
}

// snapshot delivers records as one framed run.
func snapshot(id string, initial bool, recs ...capture.Change) []capture.Batch {
	var out []capture.Batch
	for i := 0; i < len(recs) || i == 0; i += 2 {
		b := capture.Batch{Snapshot: &capture.SnapshotMark{ID: id, Records: []string{"people"}, Initial: initial, Begin: i == 0}}
		b.Changes = recs[i:min(i+2, len(recs))]
		for j := range b.Changes {
			b.Changes[j].Op = capture.OpSnapshot
			b.Changes[j].ChangeKey = ""
			b.Changes[j].Position = fmt.Sprintf("line %d", i+j+1)
		}
		out = append(out, b)
	}
	out[len(out)-1].Snapshot.End = true
	out[len(out)-1].Checkpoint = []byte(id)
	return out
}

func people(n int, rename map[int]string) []capture.Change {
	var out []capture.Change
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("P%d", i)
		if r, ok := rename[i]; ok {
			name = r
		}
		out = append(out, person(capture.OpSnapshot, fmt.Sprint(i), name))
	}
	return out
}

func TestSnapshotDiff(t *testing.T) {
	f := newFixture(t, personMapping(t, false), history.SourceInfo{})
	for _, b := range snapshot("s1", true, people(10, nil)...) {
		f.apply(b)
	}
	evs := f.events()
	if len(evs) != 10 || evs[0].Operation != history.OpSnapshot || evs[0].Emission != history.EmissionBackfill || evs[0].ChangeKind != history.KindUoplyst {
		t.Fatalf("initial snapshot: %d events, first %+v", len(evs), evs[0])
	}
	// The same snapshot again: no events at all.
	for _, b := range snapshot("s2", false, people(10, nil)...) {
		f.apply(b)
	}
	if n := len(f.events()); n != 10 {
		t.Fatalf("an unchanged snapshot produced %d events", n-10)
	}
	// Drift: one renamed, one missing (10), one new (11).
	recs := people(9, map[int]string{3: "P3 renamed"})
	recs = append(recs, person(capture.OpSnapshot, "11", "P11"))
	for _, b := range snapshot("s3", false, recs...) {
		f.apply(b)
	}
	evs = f.events()[10:]
	got := map[string]string{}
	for _, ev := range evs {
		got[ev.Object.ID] = ev.Operation + "/" + ev.Reason
		if ev.Emission != history.EmissionLive {
			t.Errorf("a regular snapshot feed is live, got %s", ev.Emission)
		}
	}
	want := map[string]string{"3": "update/", "10": "delete/deleted-in-source", "11": "create/"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("drift events %v, want %v", got, want)
	}
	// A reconcile through ForReconcile: emission reconcile, reason reconciliation-missing.
	rs := f.sink.ForReconcile()
	for _, b := range snapshot("s4", false, people(8, nil)...) {
		if err := rs.Apply(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	last := f.events()
	tail := last[len(last)-1]
	if tail.Emission != history.EmissionReconcile || tail.Operation != history.OpDelete || tail.Reason != history.ReasonReconciliationMissing {
		t.Fatalf("reconcile delete: %+v", tail)
	}
}

func TestSnapshotDeletionGuard(t *testing.T) {
	f := newFixture(t, personMapping(t, false), history.SourceInfo{Name: "src", Guard: history.Guard{MaxShare: 0.1, MinCount: 2}})
	for _, b := range snapshot("s1", true, people(20, nil)...) {
		f.apply(b)
	}
	// 50% gone: refused, nothing applied (not even the rename in it).
	var err error
	for _, b := range snapshot("s2", false, people(10, map[int]string{1: "renamed"})...) {
		if err = f.sink.Apply(context.Background(), b); err != nil {
			break
		}
	}
	if !errors.Is(err, history.ErrDeletionGuard) {
		t.Fatalf("want the deletion guard, got %v", err)
	}
	if n := len(f.events()); n != 20 {
		t.Fatalf("a refused snapshot applied %d events", n-20)
	}
	_ = f.db.View(func(tx *state.Tx) error {
		if st, _ := tx.Staging("src", false); st != nil {
			t.Error("the refused run is still staged")
		}
		return nil
	})
	// Override applies it.
	g := history.Guard{MaxShare: 0.1, MinCount: 2, Override: true}
	over := f.engine.Sink(history.SourceInfo{Name: "src", Guard: g})
	for _, b := range snapshot("s3", false, people(10, map[int]string{1: "renamed"})...) {
		if err := over.Apply(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.events()); n != 31 {
		t.Fatalf("override: %d new events, want 11", n-20)
	}
}

func TestSnapshotDuplicateKeyRefused(t *testing.T) {
	f := newFixture(t, personMapping(t, false), history.SourceInfo{})
	recs := append(people(3, nil), person(capture.OpSnapshot, "2", "again"))
	var err error
	for _, b := range snapshot("s1", true, recs...) {
		if err = f.sink.Apply(context.Background(), b); err != nil {
			break
		}
	}
	if err == nil || !contains(err.Error(), "appears twice") || !contains(err.Error(), "line 4") {
		t.Fatalf("want a duplicate-key error naming the line, got %v", err)
	}
}

// A crash while a staged run is being applied: the next start finishes it,
// with exactly the events an uninterrupted run has.
func TestSnapshotRecoverAfterCrash(t *testing.T) {
	dir := t.TempDir()
	maps := personMapping(t, false)
	path := filepath.Join(dir, "state.db")
	f := openFixture(t, path, maps, history.SourceInfo{})
	for _, b := range snapshot("s1", true, people(10, nil)...) {
		f.apply(b)
	}
	f.db.Close()
	// Copy the state: one copy runs uninterrupted, the other crashes.
	copyFile(t, path, filepath.Join(dir, "b.db"))
	drift := people(7, map[int]string{1: "x", 2: "y", 4: "z"})

	a := openFixture(t, path, maps, history.SourceInfo{})
	for _, b := range snapshot("s2", false, drift...) {
		a.apply(b)
	}

	b := openFixture(t, filepath.Join(dir, "b.db"), maps, history.SourceInfo{})
	batches := snapshot("s2", false, drift...)
	for _, x := range batches[:len(batches)-1] {
		b.apply(x)
	}
	// The End batch commits staging and moves to "applying"; cancel the
	// application after the first chunk, as a crash would stop it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.sink.Apply(ctx, batches[len(batches)-1]); !errors.Is(err, context.Canceled) {
		t.Fatalf("want the application interrupted, got %v", err)
	}
	if got := len(b.events()); got != 10 {
		t.Fatalf("interrupted: %d events already applied beyond the first load", got-10)
	}
	if err := b.sink.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	ea, eb := a.events(), b.events()
	if len(ea) != len(eb) {
		t.Fatalf("recovered run has %d events, uninterrupted %d", len(eb), len(ea))
	}
	for i := range ea {
		if ea[i].EventID != eb[i].EventID || ea[i].Sequence != eb[i].Sequence || ea[i].Operation != eb[i].Operation {
			t.Fatalf("event %d differs: %s/%d/%s vs %s/%d/%s", i, ea[i].EventID, ea[i].Sequence, ea[i].Operation, eb[i].EventID, eb[i].Sequence, eb[i].Operation)
		}
	}
}

func TestSnapshotSourceFailureAppliesNothing(t *testing.T) {
	f := newFixture(t, personMapping(t, false), history.SourceInfo{})
	for _, b := range snapshot("s1", true, people(4, nil)...) {
		f.apply(b)
	}
	batches := snapshot("s2", false, people(2, map[int]string{1: "changed"})...)
	batches[0].Snapshot.End = false
	f.apply(batches[0]) // staged; the source then fails and never sends End
	if n := len(f.events()); n != 4 {
		t.Fatalf("a run without End applied %d events", n-4)
	}
	// A new run with a new id discards it.
	for _, b := range snapshot("s3", false, people(4, nil)...) {
		f.apply(b)
	}
	if n := len(f.events()); n != 4 {
		t.Fatalf("the discarded run leaked %d events", n-4)
	}
}

func TestEventIDsDeterministic(t *testing.T) {
	dir := t.TempDir()
	maps := personMapping(t, false)
	path := filepath.Join(dir, "a.db")
	f := openFixture(t, path, maps, history.SourceInfo{})
	f.apply(capture.Batch{Changes: []capture.Change{person(capture.OpInsert, "1", "A")}})
	f.db.Close()
	copyFile(t, path, filepath.Join(dir, "b.db"))
	var ids [2][]string
	for i, p := range []string{path, filepath.Join(dir, "b.db")} {
		g := openFixture(t, p, maps, history.SourceInfo{})
		g.apply(capture.Batch{Changes: []capture.Change{person(capture.OpUpdate, "1", "B"), person(capture.OpInsert, "2", "C")}})
		for _, b := range snapshot("s", false, person(capture.OpSnapshot, "1", "B2")) {
			g.apply(b)
		}
		for _, ev := range g.events() {
			ids[i] = append(ids[i], ev.EventID)
		}
	}
	if fmt.Sprint(ids[0]) != fmt.Sprint(ids[1]) {
		t.Fatalf("re-deriving the same changes gave other ids:\n%v\n%v", ids[0], ids[1])
	}
	if len(ids[0]) != 5 {
		t.Fatalf("got %d events", len(ids[0]))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestTypeOrder(t *testing.T) {
	cfg := func(typ string, rel ...string) mapping.Config {
		c := mapping.Config{Type: typ, Source: "src", Record: typ, ID: mapping.Field{From: "id"}, Fields: map[string]mapping.Field{"x": {From: "x"}}}
		for i, r := range rel {
			c.Fields[fmt.Sprintf("r%d", i)] = mapping.Field{From: "p", Relation: r}
		}
		return c
	}
	// Bruger → Enhed → Kommune, Enhed → Enhed (self), Rolle → Bruger.
	set, _, err := mapping.NewSet([]mapping.Config{
		cfg("Rolle", "Bruger"), cfg("Bruger", "Enhed"), cfg("Enhed", "Enhed", "Kommune"), cfg("Kommune"),
	}, map[string]bool{"src": true})
	if err != nil {
		t.Fatal(err)
	}
	got := history.TypeOrder(set, []string{"Rolle", "Bruger", "Enhed", "Kommune"})
	if fmt.Sprint(got) != "[Kommune Enhed Bruger Rolle]" {
		t.Fatalf("relation order: %v", got)
	}
}

// Numbers keep every digit through staging, the log and the image: a
// snapshot of an exact number, then the same number again (snapshot and
// stream), gives one event, whose value is the number as given.
func TestExactNumbers(t *testing.T) {
	f := newFixture(t, personMapping(t, false), history.SourceInfo{})
	big := json.Number("12345678901234567890.50")
	rec := person(capture.OpSnapshot, "1", "Anna")
	rec.Values["unit"] = big
	for _, b := range snapshot("s1", true, rec) {
		f.apply(b)
	}
	again := person(capture.OpSnapshot, "1", "Anna")
	again.Values["unit"] = json.Number("12345678901234567890.50")
	for _, b := range snapshot("s2", false, again) {
		f.apply(b)
	}
	upd := person(capture.OpUpdate, "1", "Anna")
	upd.Values["unit"] = json.Number("12345678901234567890.50")
	f.apply(capture.Batch{Changes: []capture.Change{upd}})
	evs := f.events()
	if len(evs) != 1 {
		t.Fatalf("got %d events, want the snapshot's one: %+v", len(evs), evs)
	}
	if got := evs[0].After["unit"]; got != big {
		t.Fatalf("after.unit = %#v, want %#v", got, big)
	}
}

// A unit tree is applied parents first, whatever order the snapshot and
// the keys have; a relation cycle still applies every object.
func TestSnapshotAppliesParentsFirst(t *testing.T) {
	c := mapping.Config{
		Type: "Unit", Source: "src", Record: "units",
		ID:     mapping.Field{From: "id"},
		Fields: map[string]mapping.Field{"name": {From: "name"}, "parent": {From: "parent", Relation: "Unit"}},
	}
	maps, _, err := mapping.NewSet([]mapping.Config{c}, map[string]bool{"src": true})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, maps, history.SourceInfo{})
	unit := func(id, parent string) capture.Change {
		v := map[string]any{"id": id, "name": "unit " + id, "parent": nil}
		if parent != "" {
			v["parent"] = parent
		}
		return capture.Change{Record: "units", Op: capture.OpSnapshot, Values: v}
	}
	// Keys sort children first: a4 < b3 < c2 < d1 (root), and a cycle x↔y.
	recs := []capture.Change{unit("a4", "b3"), unit("b3", "c2"), unit("c2", "d1"), unit("d1", ""), unit("e5", "d1"),
		unit("x", "y"), unit("y", "x"), unit("p1", ""), unit("q2", "p1"), unit("r3", "q2")}
	var batches []capture.Batch
	for i, r := range recs {
		b := capture.Batch{Snapshot: &capture.SnapshotMark{ID: "s1", Records: []string{"units"}, Initial: true, Begin: i == 0, End: i == len(recs)-1},
			Changes: []capture.Change{r}}
		batches = append(batches, b)
	}
	for _, b := range batches {
		f.apply(b)
	}
	pos := map[string]int{}
	for i, ev := range f.events() {
		pos[ev.Object.ID] = i
	}
	if len(pos) != len(recs) {
		t.Fatalf("%d objects got events, want %d: %v", len(pos), len(recs), pos)
	}
	for _, pair := range [][2]string{{"d1", "c2"}, {"c2", "b3"}, {"b3", "a4"}, {"d1", "e5"}} {
		if pos[pair[0]] > pos[pair[1]] {
			t.Errorf("%s (parent) came after %s: order %v", pair[0], pair[1], pos)
		}
	}

	// A reconcile without the trees d1…a4 and p1…r3 deletes children
	// first, whatever order their keys have.
	before := len(f.events())
	keep := []capture.Change{unit("x", "y"), unit("y", "x"), unit("e5", "")}
	for i, r := range keep {
		f.apply(capture.Batch{Snapshot: &capture.SnapshotMark{ID: "s2", Records: []string{"units"}, Begin: i == 0, End: i == len(keep)-1},
			Changes: []capture.Change{r}})
	}
	deleted := map[string]int{}
	for i, ev := range f.events()[before:] {
		if ev.Operation == history.OpDelete {
			deleted[ev.Object.ID] = i
		}
	}
	if len(deleted) != 7 {
		t.Fatalf("deleted %v, want the 7 objects of two trees", deleted)
	}
	for _, pair := range [][2]string{{"a4", "b3"}, {"b3", "c2"}, {"c2", "d1"}, {"r3", "q2"}, {"q2", "p1"}} {
		if deleted[pair[0]] > deleted[pair[1]] {
			t.Errorf("%s (child) deleted after %s: %v", pair[0], pair[1], deleted)
		}
	}
}

// TestFeedDeletionGuard: with a window, a change feed's deletions count
// together; the batch that goes over the limit is refused whole (nothing
// applied, the checkpoint kept), and applied with the override.
func TestFeedDeletionGuard(t *testing.T) {
	maps := personMapping(t, false)
	info := history.SourceInfo{Name: "src", Type: "test", ID: "test://src",
		Guard: history.Guard{MaxShare: 0.1, MinCount: 3, Window: time.Hour}}
	f := newFixture(t, maps, info)
	var all []capture.Change
	for i := range 20 {
		all = append(all, person(capture.OpInsert, fmt.Sprint(i), "P"))
	}
	f.apply(capture.Batch{Changes: all, Checkpoint: []byte("cp0")})
	del := func(ids ...int) capture.Batch {
		var b capture.Batch
		for _, id := range ids {
			b.Changes = append(b.Changes, person(capture.OpDelete, fmt.Sprint(id), ""))
		}
		b.Checkpoint = []byte(fmt.Sprint("cp-del-", ids))
		return b
	}
	f.apply(del(0, 1)) // 2 of 20: under max(2, 3)
	before := len(f.events())
	err := f.sink.Apply(context.Background(), del(2, 3)) // 4 within the hour: over
	if !errors.Is(err, history.ErrDeletionGuard) || !strings.Contains(err.Error(), "would delete 4 of 20 live objects within 1h0m0s") || !strings.Contains(err.Error(), "This batch deletes Person/2, Person/3 (deleted-in-source: 2)") {
		t.Fatalf("want the feed guard to refuse, got %v", err)
	}
	if n := len(f.events()); n != before {
		t.Fatalf("a refused batch wrote %d events", n-before)
	}
	var ss history.SourceState
	f.db.View(func(tx *state.Tx) error { ss, _ = history.LoadSource(tx, "src"); return nil })
	if string(ss.Checkpoint) != "cp-del-[0 1]" || ss.Live == nil || *ss.Live != 18 {
		t.Fatalf("after the refusal: checkpoint %q, live %v", ss.Checkpoint, ss.Live)
	}
	// An hour later the window has passed.
	f.clock = f.clock.Add(2 * time.Hour)
	f.apply(del(2, 3))
	// The override lets a larger batch through.
	big := del(4, 5, 6, 7, 8)
	if err := f.sink.Apply(context.Background(), big); !errors.Is(err, history.ErrDeletionGuard) {
		t.Fatalf("5 deletions: %v", err)
	}
	over := f.engine.Sink(history.SourceInfo{Name: "src", Type: "test", ID: "test://src",
		Guard: history.Guard{MaxShare: 0.1, MinCount: 3, Window: time.Hour, Override: true}})
	if err := over.Apply(context.Background(), big); err != nil {
		t.Fatal(err)
	}
	f.db.View(func(tx *state.Tx) error { ss, _ = history.LoadSource(tx, "src"); return nil })
	if *ss.Live != 11 {
		t.Fatalf("live %d, want 11", *ss.Live)
	}
}
