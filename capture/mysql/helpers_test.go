package mysql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/testenv"
)

// maria is the server the package's tests share; each test has its own
// database. Tests that restart it or reset its binlog leave it running.
var maria *testenv.MariaDB

func TestMain(m *testing.M) {
	s, err := testenv.StartMariaDB(testenv.MariaDBOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	maria = s
	code := m.Run()
	s.Close()
	os.Exit(code)
}

// env is one test's database.
type env struct {
	t    testing.TB
	m    *testenv.MariaDB
	db   string
	name string // source name
	conn *client.Conn
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

func newEnv(t testing.TB, setup ...string) *env {
	t.Helper()
	name := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	db := "db_" + name
	if err := maria.Exec("DROP DATABASE IF EXISTS "+db, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	c, err := maria.Conn(db)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, m: maria, db: db, name: name, conn: c}
	t.Cleanup(func() { c.Close() })
	e.exec(setup...)
	return e
}

func (e *env) exec(sqls ...string) {
	e.t.Helper()
	for _, s := range sqls {
		if _, err := e.conn.Execute(s); err != nil {
			e.t.Fatalf("%s: %v", s, err)
		}
	}
}

// source builds a source from YAML lines (host, port and user root added
// unless given).
func (e *env) source(lines ...string) (*Source, *memLog) {
	e.t.Helper()
	y := strings.Join(lines, "\n")
	if !strings.Contains(y, "host:") && !strings.Contains(y, "dsn:") && !strings.Contains(y, "socket:") {
		y = fmt.Sprintf("host: 127.0.0.1\nport: %d\n", e.m.Port) + y
	}
	if !strings.Contains(y, "user:") && !strings.Contains(y, "dsn:") {
		y = "user: root\n" + y
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(y), &doc); err != nil {
		e.t.Fatal(err)
	}
	log := &memLog{}
	src, err := New(doc.Content[0], capture.Options{Name: e.name, File: "test.yaml", Log: log})
	if err != nil {
		e.t.Fatal(err)
	}
	return src, log
}

func (e *env) table(t string) string { return e.db + "." + t }

// memLog keeps log lines for assertions.
type memLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *memLog) add(level, msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := level + " " + msg
	for i := 0; i+1 < len(args); i += 2 {
		line += fmt.Sprintf(" %v=%v", args[i], args[i+1])
	}
	l.lines = append(l.lines, line)
	if os.Getenv("MYTEST_LOG") != "" {
		fmt.Fprintln(os.Stderr, line)
	}
}
func (l *memLog) Info(msg string, args ...any)  { l.add("INFO", msg, args...) }
func (l *memLog) Warn(msg string, args ...any)  { l.add("WARN", msg, args...) }
func (l *memLog) Error(msg string, args ...any) { l.add("ERROR", msg, args...) }
func (l *memLog) Debug(msg string, args ...any) {}

func (l *memLog) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// memSink is the engine as far as the source can tell: it stages snapshot
// runs until End, keeps the current rows and the last durable checkpoint.
type memSink struct {
	mu       sync.Mutex
	keys     map[string][]string // record → key columns
	rows     map[string]map[string]map[string]any
	staged   map[string]map[string]map[string]any
	stageID  string
	batches  []capture.Batch
	cp       []byte
	seen     map[string]int // ChangeKey → deliveries
	onApply  func(capture.Batch) error
	problems []string
}

func newSink(keys map[string][]string) *memSink {
	return &memSink{keys: keys, rows: map[string]map[string]map[string]any{}, seen: map[string]int{}}
}

func (s *memSink) keyOf(record string, row map[string]any) string {
	var parts []string
	for _, k := range s.keys[record] {
		parts = append(parts, fmt.Sprint(row[k]))
	}
	return strings.Join(parts, "|")
}

func (s *memSink) Apply(ctx context.Context, b capture.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
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
			if s.staged[c.Record] == nil {
				s.staged[c.Record] = map[string]map[string]any{}
			}
			k := s.keyOf(c.Record, c.Values)
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

func (s *memSink) applyChange(c capture.Change) {
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
		delete(tab, s.keyOf(c.Record, c.Values))
	case capture.OpInsert, capture.OpUpdate:
		if c.OldKey != nil {
			delete(tab, s.keyOf(c.Record, c.OldKey))
		}
		tab[s.keyOf(c.Record, c.Values)] = c.Values
	}
}

func (s *memSink) snapshotOf(record string) map[string]map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]any{}
	for k, v := range s.rows[record] {
		out[k] = v
	}
	return out
}

func (s *memSink) checkpoint() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cp
}

func (s *memSink) all() []capture.Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]capture.Batch(nil), s.batches...)
}

func (s *memSink) streamed() []capture.Change {
	var out []capture.Change
	for _, b := range s.all() {
		if b.Snapshot == nil {
			out = append(out, b.Changes...)
		}
	}
	return out
}

func (s *memSink) snapshotDone() bool {
	for _, b := range s.all() {
		if b.Snapshot != nil && b.Snapshot.End {
			return true
		}
	}
	return false
}

func (s *memSink) noProblems(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.problems) > 0 {
		t.Fatalf("sink saw problems:\n%s", strings.Join(s.problems, "\n"))
	}
}

// running is a Run in the background.
type running struct {
	cancel context.CancelFunc
	errc   chan error
	once   sync.Once
	err    error
}

func start(t testing.TB, src *Source, sink capture.Sink, cp []byte) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, errc: make(chan error, 1)}
	go func() {
		err := src.Run(ctx, cp, sink)
		if err != nil && os.Getenv("MYTEST_LOG") != "" {
			fmt.Fprintln(os.Stderr, "Run:", err)
		}
		r.errc <- err
	}()
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.errc
	})
	return r.err
}

func (r *running) exited(wait time.Duration) (error, bool) {
	select {
	case err := <-r.errc:
		r.once.Do(func() { r.err = err })
		return err, true
	case <-time.After(wait):
		return nil, false
	}
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

// tableRows reads a table as the snapshot would, keyed like memSink.
func (e *env) tableRows(src *Source, sink *memSink, table string) map[string]map[string]any {
	e.t.Helper()
	k, err := src.openConsistent(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	defer k.close()
	ti, err := src.inspectTable(k.c, table)
	if err != nil || ti == nil {
		e.t.Fatalf("inspect %s: %v", table, err)
	}
	out := map[string]map[string]any{}
	var after []any
	for {
		rows, last, err := src.readChunk(k.c, ti, after)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, r := range rows {
			out[sink.keyOf(table, r.Values)] = r.Values
		}
		if len(rows) < src.cfg.SnapshotChunkSize {
			return out
		}
		after = last
	}
}

// sameRows compares two row sets and reports the first differences.
func sameRows(t testing.TB, what string, got, want map[string]map[string]any) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			diffs = append(diffs, "missing "+k)
			continue
		}
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		if string(gj) != string(wj) {
			diffs = append(diffs, fmt.Sprintf("row %s: got %s, want %s", k, gj, wj))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, "extra "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		if len(diffs) > 10 {
			diffs = append(diffs[:10], fmt.Sprintf("... %d more", len(diffs)-10))
		}
		t.Fatalf("%s: %d rows vs %d expected:\n%s", what, len(got), len(want), strings.Join(diffs, "\n"))
	}
}

var errSimulated = errors.New("simulated crash before commit")

type yamlNode struct{ n *yaml.Node }

func (d *yamlNode) parse(t testing.TB, s string) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(s), &n); err != nil {
		t.Fatal(err)
	}
	d.n = n.Content[0]
}

func optsFor(e *env) capture.Options {
	return capture.Options{Name: e.name, File: "test.yaml", Log: &memLog{}}
}
