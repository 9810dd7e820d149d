package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/testenv"
)

// pg is the cluster the package's tests share; each test has its own
// database and slot. Tests that restart or reconfigure a server start
// their own.
var pg *testenv.Postgres

func TestMain(m *testing.M) {
	p, err := testenv.StartPostgres(testenv.PostgresOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pg = p
	code := m.Run()
	p.Close()
	if tlsPG.p != nil {
		tlsPG.p.Close()
	}
	os.Exit(code)
}

// env is one test's database.
type env struct {
	t    testing.TB
	pg   *testenv.Postgres
	db   string
	name string // source name (slot connector_<name>)
	conn *pgx.Conn
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

func newEnv(t testing.TB, setup ...string) *env {
	return newEnvOn(t, pg, setup...)
}

func newEnvOn(t testing.TB, p *testenv.Postgres, setup ...string) *env {
	t.Helper()
	name := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	ctx := context.Background()
	db := "db_" + name
	if err := p.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+db, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, p.DSN("postgres", db))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, pg: p, db: db, name: name, conn: c}
	t.Cleanup(func() {
		c.Close(context.Background())
		// Slots outlive databases' connections; drop this test's.
		_ = p.Exec(context.Background(), "postgres",
			"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '"+db+"' AND active_pid IS NOT NULL")
		time.Sleep(50 * time.Millisecond)
		_ = p.Exec(context.Background(), "postgres",
			"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '"+db+"' AND NOT active")
	})
	e.exec(setup...)
	return e
}

func (e *env) exec(sqls ...string) {
	e.t.Helper()
	for _, s := range sqls {
		if _, err := e.conn.Exec(context.Background(), s); err != nil {
			e.t.Fatalf("%s: %v", s, err)
		}
	}
}

func (e *env) dsn(user string) string { return e.pg.DSN(user, e.db) }

// source builds a source from YAML lines (dsn added unless given).
func (e *env) source(lines ...string) (*Source, *capturetest.Log) {
	e.t.Helper()
	y := strings.Join(lines, "\n")
	if !strings.Contains(y, "dsn:") {
		y = "dsn: " + e.dsn("postgres") + "\n" + y
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

// newLog is a log for assertions; PGTEST_LOG=1 prints it too.
func newLog() *capturetest.Log { return &capturetest.Log{Echo: os.Getenv("PGTEST_LOG") != ""} }

// tableRows reads a table as the source would deliver it (same text
// decoding), keyed like capturetest.Sink.
func (e *env) tableRows(src *Source, sink *capturetest.Sink, table string) map[string]map[string]any {
	e.t.Helper()
	ctx := context.Background()
	c, err := src.connect(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close(ctx)
	ti, err := src.inspectTable(ctx, c, table)
	if err != nil || ti == nil {
		e.t.Fatalf("inspect %s: %v", table, err)
	}
	out := map[string]map[string]any{}
	var after []*string
	for {
		rows, last, err := src.readChunk(ctx, c, ti, after)
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

// slotState reads the slot's confirmed_flush_lsn and whether it is active.
func (e *env) slot(name string) (confirmed string, active bool, exists bool) {
	err := e.conn.QueryRow(context.Background(),
		"SELECT COALESCE(confirmed_flush_lsn::text, ''), active FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&confirmed, &active)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return confirmed, active, true
}

type yamlDoc struct{ node *yaml.Node }

func (d *yamlDoc) parse(t testing.TB, s string) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(s), &n); err != nil {
		t.Fatal(err)
	}
	d.node = n.Content[0]
}

func optsFor(e *env) capture.Options {
	return capture.Options{Name: e.name, File: "test.yaml", Log: newLog()}
}

// waitInactive waits until no walsender holds the slot (the server notices
// a closed replication connection a moment later).
func (e *env) waitInactive(slot string) {
	e.t.Helper()
	capturetest.WaitFor(e.t, 10*time.Second, "slot "+slot+" inactive", func() bool {
		_, active, _ := e.slot(slot)
		return !active
	})
}
