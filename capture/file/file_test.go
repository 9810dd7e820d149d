package file

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/configs"
)

// recSink records the batches it is given. hook, when set, runs first and
// may fail the batch.
type recSink struct {
	mu      sync.Mutex
	batches []capture.Batch
	hook    func(n int, b capture.Batch) error
}

func (s *recSink) Apply(ctx context.Context, b capture.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hook != nil {
		if err := s.hook(len(s.batches), b); err != nil {
			return err
		}
	}
	m := *b.Snapshot // the source must not change a mark once handed over
	b.Snapshot = &m
	s.batches = append(s.batches, b)
	return nil
}

func (s *recSink) take() []capture.Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.batches
	s.batches = nil
	return out
}

// run is one snapshot run as the engine would see it.
type run struct {
	id         string
	initial    bool
	reconcile  bool
	records    []string
	changes    []capture.Change
	sizes      []int
	checkpoint []byte
	complete   bool // ended with End
}

// runs groups batches into runs, failing the test on any framing error.
func runs(t *testing.T, batches []capture.Batch) []run {
	t.Helper()
	var out []run
	for i, b := range batches {
		m := b.Snapshot
		if m == nil {
			t.Fatalf("batch %d has no SnapshotMark", i)
		}
		if m.Begin {
			if len(out) > 0 && !out[len(out)-1].complete {
				// An unfinished run is discarded by the engine at the next Begin.
				out = out[:len(out)-1]
			}
			out = append(out, run{id: m.ID, initial: m.Initial, reconcile: m.Reconcile, records: m.Records})
		}
		if len(out) == 0 || out[len(out)-1].complete {
			t.Fatalf("batch %d continues no open run: %+v", i, m)
		}
		r := &out[len(out)-1]
		if m.ID != r.id || m.Initial != r.initial || m.Reconcile != r.reconcile || !slices.Equal(m.Records, r.records) || b.TransactionID != r.id {
			t.Fatalf("batch %d: mark %+v (transaction %q) differs from its run's first batch %+v", i, m, b.TransactionID, r)
		}
		if (b.Checkpoint != nil) != m.End {
			t.Fatalf("batch %d: checkpoint %q with End=%v; only the last batch carries one", i, b.Checkpoint, m.End)
		}
		r.changes = append(r.changes, b.Changes...)
		r.sizes = append(r.sizes, len(b.Changes))
		r.checkpoint = b.Checkpoint
		r.complete = m.End
	}
	return out
}

func completed(t *testing.T, batches []capture.Batch) []run {
	t.Helper()
	var out []run
	for _, r := range runs(t, batches) {
		if r.complete {
			out = append(out, r)
		}
	}
	return out
}

func newSource(t *testing.T, conf string, opts capture.Options) *Source {
	t.Helper()
	s, err := build(conf, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func build(conf string, opts capture.Options) (*Source, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(conf), &doc); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = "org"
	}
	return New(doc.Content[0], opts)
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func values(r run) []string {
	var out []string
	for _, c := range r.changes {
		out = append(out, fmt.Sprintf("%s %v", c.Record, c.Values["id"]))
	}
	return out
}

func TestSingleFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "org.jsonl")
	writeFiles(t, dir, map[string]string{"org.jsonl": `{"id":"1","name":"Æble"}` + "\n" + `{"id":"2"}` + "\n"})
	mtime := time.Date(2026, 1, 5, 10, 0, 0, 123456789, time.UTC)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	s := newSource(t, fmt.Sprintf("{type: file, path: %q, records: {users: {}}, interval: 0}", path), capture.Options{})
	ctx := context.Background()
	sink := &recSink{}

	if err := s.Run(ctx, nil, sink); err != nil {
		t.Fatal(err)
	}
	rs := runs(t, sink.take())
	if len(rs) != 1 || !rs[0].complete || !rs[0].initial || rs[0].reconcile {
		t.Fatalf("first start: want one complete initial run, got %+v", rs)
	}
	c := rs[0].changes[0]
	want := capture.Change{Record: "users", Op: capture.OpSnapshot, Values: map[string]any{"id": "1", "name": "Æble"},
		ChangedAt: mtime.Truncate(time.Microsecond), Position: "org.jsonl:1"}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("change:\n got %+v\nwant %+v", c, want)
	}
	if !strings.HasPrefix(rs[0].id, "org.jsonl@") || !slices.Equal(rs[0].records, []string{"users"}) {
		t.Errorf("mark: id %q records %v", rs[0].id, rs[0].records)
	}
	cp := rs[0].checkpoint

	// Unchanged: nothing; touched with the same content: nothing.
	if err := s.Run(ctx, cp, sink); err != nil {
		t.Fatal(err)
	}
	later := mtime.Add(time.Hour)
	os.Chtimes(path, later, later)
	if err := s.Run(ctx, cp, sink); err != nil {
		t.Fatal(err)
	}
	if b := sink.take(); len(b) != 0 {
		t.Fatalf("unchanged file delivered %d batches", len(b))
	}

	// Changed: a reconcile run with a new id.
	writeFiles(t, dir, map[string]string{"org.jsonl": `{"id":"1","name":"Æble"}` + "\n"})
	if err := s.Run(ctx, cp, sink); err != nil {
		t.Fatal(err)
	}
	rs2 := runs(t, sink.take())
	if len(rs2) != 1 || rs2[0].initial || rs2[0].reconcile || rs2[0].id == rs[0].id || len(rs2[0].changes) != 1 {
		t.Fatalf("changed file: got %+v", rs2)
	}
}

func TestFraming(t *testing.T) {
	tests := []struct {
		records, batch int
		sizes          []int
	}{
		{7, 3, []int{3, 3, 1}},
		{6, 3, []int{3, 3, 0}},
		{2, 2000, []int{2}},
		{0, 3, []int{0}}, // an empty snapshot still sends Begin+End
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d records by %d", tt.records, tt.batch), func(t *testing.T) {
			dir := t.TempDir()
			var b strings.Builder
			for i := range tt.records {
				fmt.Fprintf(&b, "{\"id\":%d}\n", i)
			}
			writeFiles(t, dir, map[string]string{"snap/users.jsonl": b.String(), "snap/units.csv": "id\n"})
			s := newSource(t, fmt.Sprintf(`{type: file, path: %q, interval: 0, batch_size: %d, allow_empty: true,
				records: {users: {file: users.jsonl}, units: {file: units.csv}}}`, filepath.Join(dir, "snap"), tt.batch), capture.Options{})
			sink := &recSink{}
			if err := s.Run(context.Background(), nil, sink); err != nil {
				t.Fatal(err)
			}
			batches := sink.take()
			rs := runs(t, batches)
			if len(rs) != 1 || !rs[0].complete {
				t.Fatalf("want one complete run, got %+v", rs)
			}
			if !slices.Equal(rs[0].sizes, tt.sizes) {
				t.Errorf("batch sizes %v, want %v", rs[0].sizes, tt.sizes)
			}
			if !batches[0].Snapshot.Begin || !slices.Equal(rs[0].records, []string{"units", "users"}) {
				t.Errorf("first mark %+v", batches[0].Snapshot)
			}
			for i, c := range rs[0].changes {
				if want := fmt.Sprintf("snap/users.jsonl:%d", i+1); c.Position != want {
					t.Fatalf("change %d position %q, want %q", i, c.Position, want)
				}
			}
		})
	}
}

func TestDated(t *testing.T) {
	dir := t.TempDir()
	day := func(d string, units, users string) map[string]string {
		return map[string]string{d + "/units.csv": units, d + "/users.jsonl": users}
	}
	for _, files := range []map[string]string{
		day("2026-01-05", "id,name\nu1,Skole\n", `{"id":"p1"}`+"\n"),
		day("2026-01-06", "id,name\nu1,Skoler\n", `{"id":"p1"}`+"\n"+`{"id":"p2"}`+"\n"),
		day("2026-01-07T12-30-00Z", "id,name\nu2,Børn\n", `{"id":"p2"}`+"\n"),
		day("_incoming", "broken", "broken"),
		day(".partial", "broken", "broken"),
		{"README.md": "not a snapshot"},
	} {
		writeFiles(t, dir, files)
	}
	conf := fmt.Sprintf(`{type: file, path: %q, layout: dated, interval: 0,
		records: {units: {file: units.csv}, users: {file: users.jsonl}}}`, dir)
	s := newSource(t, conf, capture.Options{})
	ctx := context.Background()
	sink := &recSink{}
	if err := s.Run(ctx, nil, sink); err != nil {
		t.Fatal(err)
	}
	rs := completed(t, sink.take())
	if len(rs) != 3 {
		t.Fatalf("want 3 runs, got %d", len(rs))
	}
	wantAt := []time.Time{
		time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 6, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 7, 12, 30, 0, 0, time.UTC),
	}
	wantValues := [][]string{{"units u1", "users p1"}, {"units u1", "users p1", "users p2"}, {"units u2", "users p2"}}
	for i, r := range rs {
		if r.initial != (i == 0) || r.reconcile {
			t.Errorf("run %d: initial %v reconcile %v; a new export is the regular feed", i, r.initial, r.reconcile)
		}
		if got := r.changes[0].ChangedAt; !got.Equal(wantAt[i]) {
			t.Errorf("run %d: changed at %v, want %v", i, got, wantAt[i])
		}
		if !slices.Equal(values(r), wantValues[i]) {
			t.Errorf("run %d: %v, want %v", i, values(r), wantValues[i])
		}
	}
	if p := rs[1].changes[0].Position; p != "2026-01-06/units.csv:2" {
		t.Errorf("position %q", p)
	}

	// Resume after the second run: only the third is delivered.
	if err := s.Run(ctx, rs[1].checkpoint, sink); err != nil {
		t.Fatal(err)
	}
	again := completed(t, sink.take())
	if len(again) != 1 || again[0].id != rs[2].id || again[0].initial {
		t.Fatalf("resume: got %+v, want only %s", again, rs[2].id)
	}

	// Nothing new: nothing. Then a new day arrives.
	if err := s.Run(ctx, rs[2].checkpoint, sink); err != nil || len(sink.take()) != 0 {
		t.Fatalf("nothing new: %v", err)
	}
	writeFiles(t, dir, day("2026-01-08", "id,name\nu2,Børn\n", `{"id":"p3"}`+"\n"))
	if err := s.Run(ctx, rs[2].checkpoint, sink); err != nil {
		t.Fatal(err)
	}
	if rs := completed(t, sink.take()); len(rs) != 1 || !strings.HasPrefix(rs[0].id, "2026-01-08@") {
		t.Fatalf("new day: got %+v", rs)
	}
}

func TestDatedFiles(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"org-20260105.ldif":       "dn: cn=a,dc=dk\ncn: a\nobjectClass: person\n\ndn: ou=x,dc=dk\nou: x\nobjectClass: organizationalUnit\n",
		"org-20260106T0600Z.ldif": "dn: cn=a,dc=dk\ncn: a\nobjectClass: person\n",
		"notes.txt":               "skipped: unknown format",
	})
	s := newSource(t, fmt.Sprintf(`{type: file, path: %q, layout: dated, interval: 0, allow_empty: true,
		records: {people: {match: {objectclass: PERSON}}, units: {match: {objectClass: organizationalUnit}}}}`, dir), capture.Options{})
	sink := &recSink{}
	if err := s.Run(context.Background(), nil, sink); err != nil {
		t.Fatal(err)
	}
	rs := completed(t, sink.take())
	if len(rs) != 2 {
		t.Fatalf("want 2 runs, got %+v", rs)
	}
	var got []string
	for _, c := range rs[0].changes {
		got = append(got, c.Record+" "+c.Values["dn"].(string)+" "+c.Position)
	}
	want := []string{"people cn=a,dc=dk org-20260105.ldif:1", "units ou=x,dc=dk org-20260105.ldif:5"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if at := rs[1].changes[0].ChangedAt; !at.Equal(time.Date(2026, 1, 6, 6, 0, 0, 0, time.UTC)) {
		t.Errorf("changed at %v", at)
	}
}

func TestMatch(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"org.jsonl": `{"type":"unit","id":"u1"}
{"type":"user","id":"p1","roles":["a","admin"]}
{"type":"other","id":"x"}
{"type":"user","id":"p2","roles":["a"]}
`})
	path := filepath.Join(dir, "org.jsonl")
	tests := []struct {
		name, records string
		want          []string
		err           string
	}{
		{"by type", `{units: {match: {type: unit}}, users: {match: {type: user}}}`, []string{"units u1", "users p1", "users p2"}, ""},
		{"overlapping, multi-valued", `{users: {match: {type: user}}, admins: {match: {type: user, roles: admin}}}`, []string{"admins p1", "users p1", "users p2"}, ""},
		{"a record with no lines", `{units: {match: {type: Unit}}, users: {match: {type: user}}}`, nil, `record "units": no record of org.jsonl matches {type: Unit}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSource(t, fmt.Sprintf("{type: file, path: %q, interval: 0, records: %s}", path, tt.records), capture.Options{})
			sink := &recSink{}
			err := s.Run(context.Background(), nil, sink)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, want %q", err, tt.err)
				}
				if len(completed(t, sink.take())) != 0 {
					t.Fatal("a refused snapshot was completed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rs := completed(t, sink.take())
			if len(rs) != 1 {
				t.Fatalf("got %d runs", len(rs))
			}
			if got := values(rs[0]); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			// Two changes never share a map.
			seen := map[uintptr]bool{}
			for _, c := range rs[0].changes {
				p := reflect.ValueOf(c.Values).Pointer()
				if seen[p] {
					t.Fatal("two changes share a values map")
				}
				seen[p] = true
			}
		})
	}
}

func TestRefused(t *testing.T) {
	good := map[string]string{"units.csv": "id,name\nu1,a\nu2,b\n", "users.jsonl": "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n"}
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"truncated JSON Lines", map[string]string{"users.jsonl": "{\"id\":1}\n{\"id\":2}\n{\"id\":3,\"na"},
			`file source "org": 2026-01-05/users.jsonl:3: invalid JSON: unexpected end of input (the line is cut short); the snapshot was not applied — fix or re-export the file`},
		{"CSV row with too few fields", map[string]string{"units.csv": "id,name\nu1,a\nu2\n"},
			`2026-01-05/units.csv:3: row has 1 fields, the header has 2`},
		{"CSV cut without a final newline", map[string]string{"units.csv": "id,name\nu1,a\nu2,Ander"},
			`2026-01-05/units.csv:3: the file does not end with a line break`},
		{"duplicate CSV header", map[string]string{"units.csv": "id,name,id\n"},
			`2026-01-05/units.csv:1: duplicate header "id"`},
		{"empty JSON Lines file", map[string]string{"users.jsonl": ""},
			`2026-01-05/users.jsonl holds no records; an empty export would delete every users object, so the snapshot was not applied — re-export it, or set allow_empty: true`},
		{"CSV with only a header", map[string]string{"units.csv": "id,name\n"},
			`2026-01-05/units.csv holds no records`},
		{"missing file", map[string]string{"users.jsonl": "-"},
			`users.jsonl is missing from snapshot`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{}
			for name, content := range good {
				files["2026-01-05/"+name] = content
			}
			for name, content := range tt.files {
				files["2026-01-05/"+name] = content
			}
			if files["2026-01-05/users.jsonl"] == "-" {
				delete(files, "2026-01-05/users.jsonl")
			}
			writeFiles(t, dir, files)
			s := newSource(t, fmt.Sprintf(`{type: file, path: %q, layout: dated, interval: 0, batch_size: 1,
				records: {units: {file: units.csv}, users: {file: users.jsonl}}}`, dir), capture.Options{})
			sink := &recSink{}
			err := s.Run(context.Background(), nil, sink)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got  %v\nwant …%s…", err, tt.want)
			}
			for _, b := range sink.take() {
				if b.Snapshot.End || b.Checkpoint != nil {
					t.Fatalf("a refused snapshot sent its End batch: %+v", b.Snapshot)
				}
			}
		})
	}
}

func TestAllowEmpty(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"s/units.csv": "", "s/users.jsonl": "\n"})
	s := newSource(t, fmt.Sprintf(`{type: file, path: %q, interval: 0, allow_empty: true,
		records: {units: {file: units.csv}, users: {file: users.jsonl}}}`, filepath.Join(dir, "s")), capture.Options{})
	sink := &recSink{}
	if err := s.Run(context.Background(), nil, sink); err != nil {
		t.Fatal(err)
	}
	b := sink.take()
	if len(b) != 1 || !b[0].Snapshot.Begin || !b[0].Snapshot.End || len(b[0].Changes) != 0 ||
		!slices.Equal(b[0].Snapshot.Records, []string{"units", "users"}) {
		t.Fatalf("want one empty Begin+End batch for both records, got %+v", b)
	}
}

// A file rewritten while it is read is not applied; in poll mode the next
// poll reads the finished file.
func TestChangedWhileRead(t *testing.T) {
	for _, once := range []bool{true, false} {
		t.Run(fmt.Sprintf("once=%v", once), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "org.jsonl")
			writeFiles(t, dir, map[string]string{"org.jsonl": "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n"})
			s := newSource(t, fmt.Sprintf("{type: file, path: %q, records: {users: {}}, interval: 10ms, batch_size: 1}", path), capture.Options{Once: once})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sink := &recSink{hook: func(n int, b capture.Batch) error {
				if n == 0 {
					f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
					f.WriteString("{\"id\":4}\n")
					f.Close()
				}
				if b.Snapshot.End {
					cancel()
				}
				return nil
			}}
			err := s.Run(ctx, nil, sink)
			rs := completed(t, sink.take())
			if once {
				if err == nil || !strings.Contains(err.Error(), "changed while it was read") || len(rs) != 0 {
					t.Fatalf("got %v and %d complete runs; want the run refused", err, len(rs))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 || len(rs[0].changes) != 4 || !rs[0].initial {
				t.Fatalf("want one initial run of the finished file, got %+v", rs)
			}
		})
	}
}

func TestPoll(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "org.csv")
	writeFiles(t, dir, map[string]string{"org.csv": "id\n1\n"})
	s := newSource(t, fmt.Sprintf("{type: file, path: %q, records: {users: {}}, interval: 10ms}", path), capture.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends := 0
	sink := &recSink{hook: func(n int, b capture.Batch) error {
		if b.Snapshot.End {
			ends++
			if ends == 1 {
				writeFiles(t, dir, map[string]string{"org.csv": "id\n1\n2\n"})
			} else {
				cancel()
			}
		}
		return nil
	}}
	if err := s.Run(ctx, nil, sink); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	rs := completed(t, sink.take())
	if len(rs) != 2 || !rs[0].initial || rs[1].initial || len(rs[1].changes) != 2 {
		t.Fatalf("want an initial run and a reconcile, got %+v", rs)
	}
}

func TestSinkError(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"org.csv": "id\n1\n"})
	s := newSource(t, fmt.Sprintf("{type: file, path: %q, records: {users: {}}, interval: 0}", filepath.Join(dir, "org.csv")), capture.Options{})
	guard := errors.New("deletion guard: 60 of 100 objects")
	err := s.Run(context.Background(), nil, &recSink{hook: func(int, capture.Batch) error { return guard }})
	if !errors.Is(err, guard) || !strings.HasPrefix(err.Error(), `file source "org": snapshot org.csv: deletion guard`) {
		t.Fatalf("got %v", err)
	}
}

func TestSettle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "org.csv")
	writeFiles(t, dir, map[string]string{"org.csv": "id\n1\n"})
	s := newSource(t, fmt.Sprintf("{type: file, path: %q, records: {users: {}}, interval: 0, settle: 1h}", path), capture.Options{})
	sink := &recSink{}
	if err := s.Run(context.Background(), nil, sink); err != nil || len(sink.take()) != 0 {
		t.Fatalf("a fresh file was read: %v", err)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(path, old, old)
	if err := s.Run(context.Background(), nil, sink); err != nil || len(completed(t, sink.take())) != 1 {
		t.Fatalf("a settled file was not read: %v", err)
	}
}

func TestSnapshotter(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"2026-01-05/u.jsonl": "{\"id\":1}\n", "2026-01-06/u.jsonl": "{\"id\":2}\n"})
	s := newSource(t, fmt.Sprintf("{type: file, path: %q, layout: dated, interval: 0, records: {users: {file: u.jsonl}}}", dir), capture.Options{})
	var _ capture.Snapshotter = s
	var _ capture.Checker = s
	var _ capture.Identity = s
	sink := &recSink{}
	for range 2 { // on demand: delivered even though unchanged
		if err := s.Snapshot(context.Background(), sink); err != nil {
			t.Fatal(err)
		}
	}
	rs := completed(t, sink.take())
	if len(rs) != 2 || rs[0].initial || !rs[0].reconcile || !rs[1].reconcile || rs[0].id != rs[1].id || !strings.HasPrefix(rs[0].id, "2026-01-06@") || rs[0].checkpoint == nil {
		t.Fatalf("want two reconcile runs of the newest snapshot, got %+v", rs)
	}
	// Run after it continues after that snapshot.
	if err := s.Run(context.Background(), rs[0].checkpoint, sink); err != nil || len(sink.take()) != 0 {
		t.Fatalf("Run after Snapshot: %v", err)
	}
	if id := s.ID(); id != "file://"+filepath.ToSlash(dir) {
		t.Errorf("ID %q", id)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"good/units.csv": "id\n1\n", "good/users.jsonl": "{\"id\":1}\n",
		"bad/units.csv": "id,id\n", "bad/users.jsonl": "{\"id\":1}\n",
		"empty/units.csv": "id\n", "empty/users.jsonl": "{\"id\":1}\n",
		"part/units.csv": "id\n1\n",
		"drop/.keep":     "",
	})
	recs := "records: {units: {file: units.csv}, users: {file: users.jsonl}}"
	tests := []struct {
		name, conf, want string
	}{
		{"good", fmt.Sprintf("{path: %q, %s}", filepath.Join(dir, "good"), recs), ""},
		{"missing path", fmt.Sprintf("{path: %q, %s}", filepath.Join(dir, "nope"), recs), "nope does not exist; create it or fix path"},
		{"malformed header", fmt.Sprintf("{path: %q, %s}", filepath.Join(dir, "bad"), recs), `bad/units.csv:1: duplicate header "id"`},
		{"empty", fmt.Sprintf("{path: %q, %s}", filepath.Join(dir, "empty"), recs), "empty/units.csv holds no records"},
		{"empty allowed", fmt.Sprintf("{path: %q, allow_empty: true, %s}", filepath.Join(dir, "empty"), recs), ""},
		{"missing file", fmt.Sprintf("{path: %q, %s}", filepath.Join(dir, "part"), recs), "users.jsonl is missing from snapshot"},
		{"empty drop directory", fmt.Sprintf("{path: %q, layout: dated, %s}", filepath.Join(dir, "drop"), recs), ""},
		{"file where a directory is expected", fmt.Sprintf("{path: %q, %s}", filepath.Join(dir, "good", "units.csv"), recs), "is a file, but records name files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSource(t, tt.conf, capture.Options{})
			err := s.Check(context.Background())
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want …%s…", err, tt.want)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, conf string
		records    []string
		line       int
		want       string
	}{
		{"unknown key", "path: x\nrecords: {a: {}}\npoll: 5m", nil, 3, `unknown key "poll"`},
		{"unknown key in a record", "path: x\nrecords:\n  a: {fiel: a.csv}", nil, 3, `unknown key "fiel"`},
		{"no path", "records: {a: {}}", nil, 0, "path is missing"},
		{"no records", "path: x", nil, 0, "records is missing"},
		{"bad layout", "path: x\nlayout: daily\nrecords: {a: {}}", nil, 2, `unknown layout "daily"`},
		{"unknown extension", "path: x\nrecords:\n  a: {file: a.json}", nil, 3, `cannot tell the format of "a.json"`},
		{"unknown format", "path: x\nrecords:\n  a: {file: a, format: xml}", nil, 3, `unknown format "xml"`},
		{"file outside the snapshot", "path: x\nrecords:\n  a: {file: ../a.csv}", nil, 3, "is outside the snapshot"},
		{"some records with file", "path: x\nrecords:\n  a: {file: a.csv}\n  b: {}", nil, 2, "some records name a file and some do not"},
		{"shared file without match", "path: x\nrecords:\n  a: {file: o.jsonl, match: {t: a}}\n  b: {file: o.jsonl}", nil, 4, `record "b" shares o.jsonl with other records and needs match`},
		{"columns with a header", "path: x\nrecords:\n  a: {file: a.csv, columns: [id]}", nil, 3, "columns given but csv.header is true"},
		{"no columns without a header", "path: x\ncsv: {header: false}\nrecords:\n  a: {file: a.csv}", nil, 4, "columns must name the fields"},
		{"bad delimiter", "path: x\ncsv: {delimiter: ab}\nrecords: {a: {}}", nil, 2, `"ab" is more than one character`},
		{"bad interval", "path: x\ninterval: often\nrecords: {a: {}}", nil, 2, `interval "often" is not a duration`},
		{"bad encoding", "path: x\nencoding: ebcdic\nrecords: {a: {}}", nil, 2, `unknown encoding "ebcdic"`},
		{"bad final_newline", "path: x\nfinal_newline: never\nrecords: {a: {}}", nil, 2, `unknown value "never"`},
		{"name without a date", "path: org.jsonl\nchanged_at: name\nrecords: {a: {}}", nil, 2, `changed_at is name, but "org.jsonl" holds no date`},
		{"bad time zone", "path: x\ntime_zone: Mars/Olympus\nrecords: {a: {}}", nil, 2, "time_zone"},
		{"mapping selects an unknown record", "path: x\nrecords: {a: {}}", []string{"a", "b"}, 2, `a mapping selects record "b", which this source does not define (it defines a)`},
		{"wrong type", "path: x\nbatch_size: many\nrecords: {a: {}}", nil, 2, "wrong type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := build("type: file\nname: org\n"+tt.conf, capture.Options{Records: tt.records, File: "agent.yaml"})
			var ce *configs.Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *configs.Error", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "agent.yaml:") {
				t.Errorf("got %q, want agent.yaml:…%s…", err, tt.want)
			}
			want := tt.line + 2 // after the type and name lines
			if tt.line == 0 {
				want = 1 // the entry as a whole
			}
			if ce.Line != want {
				t.Errorf("line %d, want %d (%v)", ce.Line, want, err)
			}
		})
	}
	// Accepted shapes.
	for _, conf := range []string{
		"path: x\ninterval: 0\nrecords: {a: {}}",
		"path: x\ncsv: {header: false, delimiter: tab}\nrecords:\n  a: {file: a.csv, columns: [id, name]}",
		"path: snap-2026-01-05.ldif\nchanged_at: name\ntime_zone: UTC\nrecords: {a: {}}",
		"path: x\ndeletion_guard: {max: 50%}\nbatch_size: 10\nrecords: {a: {}}",
	} {
		if _, err := build("type: file\nname: org\n"+conf, capture.Options{}); err != nil {
			t.Errorf("%q: %v", conf, err)
		}
	}
}

func TestTimeFromName(t *testing.T) {
	cph, err := time.LoadLocation("Europe/Copenhagen")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		loc  *time.Location
		want time.Time
		ok   bool
	}{
		{"2026-01-05", time.UTC, time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), true},
		{"org-2026-01-05.jsonl", time.UTC, time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), true},
		{"2026-01-05", cph, time.Date(2026, 1, 4, 23, 0, 0, 0, time.UTC), true},
		{"2026-01-05T10:00:00Z", cph, time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC), true},
		{"2026-01-05T10-00-00+02:00", time.UTC, time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC), true},
		{"2026-07-05_1030", cph, time.Date(2026, 7, 5, 8, 30, 0, 0, time.UTC), true},
		{"2026-01-05T10:00:00.250Z", time.UTC, time.Date(2026, 1, 5, 10, 0, 0, 250e6, time.UTC), true},
		{"export-20260105.csv", time.UTC, time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), true},
		{"20260105T100000Z", cph, time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC), true},
		{"2026-02-30", time.UTC, time.Time{}, false},
		{"export-123456789", time.UTC, time.Time{}, false},
		{"latest", time.UTC, time.Time{}, false},
	}
	for _, tt := range tests {
		got, ok := timeFromName(tt.name, tt.loc)
		if ok != tt.ok || ok && !got.Equal(tt.want) {
			t.Errorf("%s: got %v %v, want %v %v", tt.name, got.UTC(), ok, tt.want, tt.ok)
		}
	}
}

func TestRegistered(t *testing.T) {
	f, ok := capture.Lookup("file")
	if !ok {
		t.Fatal(`source type "file" is not registered`)
	}
	var doc yaml.Node
	yaml.Unmarshal([]byte("{name: org, type: file, path: x, records: {a: {}}}"), &doc)
	if src, err := f(doc.Content[0], capture.Options{Name: "org"}); err != nil || src == nil {
		t.Fatalf("factory: %v %v", src, err)
	}
	if _, err := f(&yaml.Node{Kind: yaml.MappingNode}, capture.Options{Name: "org"}); err == nil {
		t.Fatal("factory accepted an empty entry")
	}
}

// logRec records log messages.
type logRec struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRec) add(level, msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, fmt.Sprint(level, " ", msg, " ", args))
}
func (l *logRec) Info(msg string, args ...any)  { l.add("INFO", msg, args...) }
func (l *logRec) Warn(msg string, args ...any)  { l.add("WARN", msg, args...) }
func (l *logRec) Error(msg string, args ...any) { l.add("ERROR", msg, args...) }
func (l *logRec) Debug(msg string, args ...any) { l.add("DEBUG", msg, args...) }

func (l *logRec) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// A dated snapshot that shows up after a newer one was applied is not
// applied, and the operator is told once.
func TestDatedLateArrival(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"2026-01-01/u.jsonl": "{\"id\":0}\n", "2026-01-05/u.jsonl": "{\"id\":1}\n"})
	log := &logRec{}
	s := newSource(t, fmt.Sprintf("{type: file, path: %q, layout: dated, interval: 5ms, records: {users: {file: u.jsonl}}}", dir), capture.Options{Log: log})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sink := &recSink{hook: func(n int, b capture.Batch) error {
		if b.Snapshot.End && strings.HasPrefix(b.Snapshot.ID, "2026-01-05@") {
			go func() {
				// Runs between polls: write the late export, wait for the
				// poll loop to see it a few times, then stop.
				writeFiles(t, dir, map[string]string{"2026-01-03/u.jsonl": "{\"id\":3}\n"})
				for log.count("arrived after a newer one") == 0 && ctx.Err() == nil {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(30 * time.Millisecond)
				cancel()
			}()
		}
		return nil
	}}
	if err := s.Run(ctx, nil, sink); err != nil {
		t.Fatal(err)
	}
	rs := completed(t, sink.take())
	if len(rs) != 2 {
		t.Fatalf("want the two snapshots present at the start, got %d runs", len(rs))
	}
	if n := log.count("arrived after a newer one"); n != 1 {
		t.Errorf("warned %d times about the late snapshot, want once: %q", n, log.msgs)
	}
	if n := log.count("snapshot 2026-01-01 last"); n != 0 {
		t.Errorf("warned about a snapshot that was applied: %q", log.msgs)
	}
}

func TestGzipSnapshot(t *testing.T) {
	dir := t.TempDir()
	var buf strings.Builder
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte("{\"id\":1}\n{\"id\":2}\n"))
	zw.Close()
	writeFiles(t, dir, map[string]string{"s/users.jsonl.gz": buf.String(), "s/units.csv": "id\nu1\n"})
	s := newSource(t, fmt.Sprintf("{type: file, path: %q, interval: 0, records: {users: {file: users.jsonl.gz}, units: {file: units.csv}}}",
		filepath.Join(dir, "s")), capture.Options{})
	sink := &recSink{}
	if err := s.Run(context.Background(), nil, sink); err != nil {
		t.Fatal(err)
	}
	rs := completed(t, sink.take())
	if len(rs) != 1 || !slices.Equal(values(rs[0]), []string{"units u1", "users 1", "users 2"}) {
		t.Fatalf("got %+v", rs)
	}
	if p := rs[0].changes[2].Position; p != "s/users.jsonl.gz:2" {
		t.Errorf("position %q", p)
	}
}
