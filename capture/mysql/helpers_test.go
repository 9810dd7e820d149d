package mysql

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/client"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/capturetest"
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
func (e *env) source(lines ...string) (*Source, *capturetest.Log) {
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
	log := newLog()
	src, err := New(doc.Content[0], capture.Options{Name: e.name, File: "test.yaml", Log: log})
	if err != nil {
		e.t.Fatal(err)
	}
	return src, log
}

func (e *env) table(t string) string { return e.db + "." + t }

// newLog is a log for assertions; MYTEST_LOG=1 prints it too.
func newLog() *capturetest.Log { return &capturetest.Log{Echo: os.Getenv("MYTEST_LOG") != ""} }

// start runs src in the background; with MYTEST_LOG=1 it prints Run's error.
func start(t testing.TB, src *Source, sink capture.Sink, cp []byte) *capturetest.Running {
	return capturetest.Start(t, echoRun{src}, sink, cp)
}

type echoRun struct{ *Source }

func (s echoRun) Run(ctx context.Context, cp []byte, sink capture.Sink) error {
	err := s.Source.Run(ctx, cp, sink)
	if err != nil && os.Getenv("MYTEST_LOG") != "" {
		fmt.Fprintln(os.Stderr, "Run:", err)
	}
	return err
}

// tableRows reads a table as the snapshot would, keyed like capturetest.Sink.
func (e *env) tableRows(src *Source, sink *capturetest.Sink, table string) map[string]map[string]any {
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
			out[sink.KeyOf(table, r.Values)] = r.Values
		}
		if len(rows) < src.cfg.SnapshotChunkSize {
			return out
		}
		after = last
	}
}

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
	return capture.Options{Name: e.name, File: "test.yaml", Log: newLog()}
}
