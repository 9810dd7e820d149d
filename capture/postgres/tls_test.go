package postgres

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/testenv"
)

// tlsPG is a cluster with ssl = on and pg_hba.conf lines for these roles
// only (started once, by the first test that needs it):
//
//   - tls_agent: hostssl (database and replication lines);
//   - db_only: a plain host line for its database, none for replication;
//   - repl_only: a replication line only;
//   - no_hba: no line at all.
var tlsPG struct {
	once sync.Once
	p    *testenv.Postgres
	err  error
}

func tlsCluster(t *testing.T) *testenv.Postgres {
	t.Helper()
	tlsPG.once.Do(func() {
		p, err := testenv.StartPostgres(testenv.PostgresOptions{TLS: true, HBA: []string{
			"hostssl all tls_agent 127.0.0.1/32 trust",
			"hostssl replication tls_agent 127.0.0.1/32 trust",
			"host all db_only 127.0.0.1/32 trust",
			"host replication repl_only 127.0.0.1/32 trust",
		}})
		if err != nil {
			tlsPG.err = err
			return
		}
		tlsPG.p = p
		ctx := context.Background()
		for _, r := range []string{"tls_agent", "db_only", "repl_only", "no_hba"} {
			if err := p.Exec(ctx, "postgres", "CREATE ROLE "+r+" LOGIN REPLICATION"); err != nil {
				tlsPG.err = err
				return
			}
		}
	})
	if tlsPG.err != nil {
		t.Fatal(tlsPG.err)
	}
	return tlsPG.p
}

// tlsEnv is a database on the TLS cluster with a table person readable by
// the test roles and a publication for it.
func tlsEnv(t *testing.T) *env {
	t.Helper()
	p := tlsCluster(t)
	e := newEnvOn(t, p, "CREATE TABLE person (id int PRIMARY KEY, name text)",
		"INSERT INTO person VALUES (1, 'Anne')",
		"GRANT SELECT ON person TO tls_agent, db_only, repl_only, no_hba",
		"CREATE PUBLICATION pub FOR TABLE person")
	return e
}

// dsnFor is a URL for user on e's database with extra parameters.
func (e *env) dsnFor(user, host string, params url.Values) string {
	u := url.URL{Scheme: "postgres", User: url.User(user), Host: net.JoinHostPort(host, fmt.Sprint(e.pg.Port)), Path: "/" + e.db,
		RawQuery: params.Encode()}
	return u.String()
}

// streamAs connects as role over sslmode=verify-full with the cluster's
// CA, checks, and waits for the snapshot of the one row and a streamed
// insert.
func streamAs(t *testing.T, e *env, role string) *capturetest.Sink {
	t.Helper()
	dsn := e.dsnFor(role, "127.0.0.1", url.Values{"sslmode": {"verify-full"}, "sslrootcert": {e.pg.CAFile}})
	src, _ := e.source("dsn: "+dsn, "tables: [public.person]", "publication: pub", "create_publication: false")
	if err := src.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	sink := capturetest.NewSink(map[string][]string{"public.person": {"id"}})
	capturetest.Start(t, src, sink, nil)
	capturetest.WaitFor(t, 20*time.Second, "the snapshot", func() bool { return len(sink.Rows("public.person")) == 1 })
	e.exec("INSERT INTO person VALUES (2, 'Bo')")
	capturetest.WaitFor(t, 10*time.Second, "the insert", func() bool { return len(sink.Streamed()) == 1 })
	return sink
}

// Streaming over sslmode=verify-full with the cluster's CA: the snapshot
// and an insert arrive, and both the query and the replication connection
// are encrypted (the role has hostssl lines only, so plain text would be
// refused anyway).
func TestTLSVerifyFullStreams(t *testing.T) {
	e := tlsEnv(t)
	sink := streamAs(t, e, "tls_agent")
	if got := sink.Streamed()[0].Values["name"]; got != "Bo" {
		t.Fatalf("streamed %v", sink.Streamed()[0].Values)
	}
	var walsenders, encrypted int
	if err := e.conn.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE s.ssl)
		FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid WHERE r.usename = 'tls_agent'`).Scan(&walsenders, &encrypted); err != nil {
		t.Fatal(err)
	}
	if walsenders != 1 || encrypted != 1 {
		t.Fatalf("%d walsenders for tls_agent, %d encrypted; want 1, 1", walsenders, encrypted)
	}
	sink.NoProblems(t)
}

// Each connection failure names its cause and the fix, as the real server
// (and pgx) report it.
func TestConnectErrors(t *testing.T) {
	e := tlsEnv(t)
	plain := newEnv(t, "CREATE TABLE person (id int PRIMARY KEY)")
	missingCA := t.TempDir() + "/nothere.pem"
	tests := []struct {
		name string
		dsn  string
		want []string
	}{
		{"verify-full without the CA",
			e.dsnFor("tls_agent", "127.0.0.1", url.Values{"sslmode": {"verify-full"}}),
			[]string{"TLS verification of 127.0.0.1:", "certificate signed by unknown authority", "sslrootcert=/path/to/ca.pem"}},
		{"verify-full with another CA",
			e.dsnFor("tls_agent", "127.0.0.1", url.Values{"sslmode": {"verify-full"}, "sslrootcert": {e.pg.OtherCAFile}}),
			[]string{"TLS verification of 127.0.0.1:", "certificate signed by unknown authority", "sslrootcert=/path/to/ca.pem"}},
		{"verify-ca with another CA",
			e.dsnFor("tls_agent", "127.0.0.1", url.Values{"sslmode": {"verify-ca"}, "sslrootcert": {e.pg.OtherCAFile}}),
			[]string{"TLS verification of 127.0.0.1:", "certificate signed by unknown authority", "sslrootcert=/path/to/ca.pem"}},
		{"CA file missing",
			e.dsnFor("tls_agent", "127.0.0.1", url.Values{"sslmode": {"verify-full"}, "sslrootcert": {missingCA}}),
			[]string{"the CA file in dsn (sslrootcert) cannot be read", missingCA, "no such file"}},
		{"server without TLS, require",
			plain.dsnFor("postgres", "127.0.0.1", url.Values{"sslmode": {"require"}}),
			[]string{"does not offer TLS", "ssl = on", "sslmode=disable"}},
		{"server without TLS, verify-full",
			plain.dsnFor("postgres", "127.0.0.1", url.Values{"sslmode": {"verify-full"}, "sslrootcert": {e.pg.CAFile}}),
			[]string{"does not offer TLS", "ssl = on"}},
		{"role without pg_hba.conf entry",
			e.dsnFor("no_hba", "127.0.0.1", url.Values{"sslmode": {"verify-full"}, "sslrootcert": {e.pg.CAFile}}),
			[]string{`no pg_hba.conf entry for user "no_hba"`, "hostssl " + e.db + " no_hba <agent address>/32 scram-sha-256", "SELECT pg_reload_conf()"}},
		{"hostssl role connecting without TLS",
			e.dsnFor("tls_agent", "127.0.0.1", url.Values{"sslmode": {"disable"}}),
			[]string{`no pg_hba.conf entry for user "tls_agent"`, "without TLS", "sslmode=verify-full"}},
		{"replication line only",
			e.dsnFor("repl_only", "127.0.0.1", url.Values{"sslmode": {"verify-full"}, "sslrootcert": {e.pg.CAFile}}),
			[]string{`no pg_hba.conf entry for user "repl_only"`, "hostssl " + e.db + " repl_only", "lines with the keyword replication are for physical replication only"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, _ := e.source("dsn: "+tt.dsn, "tables: [public.person]", "publication: pub", "create_publication: false")
			err := src.Check(context.Background())
			if err == nil {
				t.Fatal("Check passed")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if isTransient(err) {
				t.Errorf("a configuration error is retried: %v", err)
			}
			// Run stops with the same error instead of retrying.
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if rerr := src.Run(ctx, nil, capturetest.NewSink(nil)); rerr == nil || !strings.Contains(rerr.Error(), tt.want[0]) {
				t.Errorf("Run: %v, want %q", rerr, tt.want[0])
			}
		})
	}
}

// The pg_hba.conf keyword replication is for physical replication: a
// logical replication connection matches the lines of its database. A role
// with a database line and no replication line streams.
func TestHBADatabaseLineSuffices(t *testing.T) {
	e := tlsEnv(t)
	streamAs(t, e, "db_only")
	var walsenders int
	if err := e.conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_replication WHERE usename = 'db_only'").Scan(&walsenders); err != nil {
		t.Fatal(err)
	}
	if walsenders != 1 {
		t.Fatalf("%d walsenders for db_only, want 1", walsenders)
	}
}

// Without sslmode, the agent verifies TLS to any host that is not a
// loopback address (reached here by a name that the test resolves to
// 127.0.0.1), and does not use TLS on loopback unless a CA is given.
func TestTLSDefaultMode(t *testing.T) {
	e := tlsEnv(t)
	ctx := context.Background()
	connect := func(dsn string) (ssl bool, err error) {
		src, _ := e.source("dsn: "+dsn, "tables: [public.person]")
		cfg, err := src.pgConfig()
		if err != nil {
			return false, err
		}
		cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) {
			if host == testenv.PostgresTLSHost {
				return []string{"127.0.0.1"}, nil
			}
			return net.DefaultResolver.LookupHost(ctx, host)
		}
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return false, src.explainConnect(err, cfg)
		}
		defer c.Close(ctx)
		rr := c.ExecParams(ctx, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()", nil, nil, nil, nil).Read()
		if rr.Err != nil {
			return false, rr.Err
		}
		return string(rr.Rows[0][0]) == "true", nil
	}
	remote := testenv.PostgresTLSHost
	if ssl, err := connect(e.dsnFor("tls_agent", remote, url.Values{"sslrootcert": {e.pg.CAFile}})); err != nil || !ssl {
		t.Errorf("remote host with the CA: ssl %v, %v", ssl, err)
	}
	_, err := connect(e.dsnFor("tls_agent", remote, nil))
	if err == nil || !strings.Contains(err.Error(), "TLS verification of "+remote) || !strings.Contains(err.Error(), "sslrootcert=") {
		t.Errorf("remote host without the CA (system roots): %v", err)
	}
	// Loopback: no TLS by default, so the hostssl-only role is refused ...
	_, err = connect(e.dsnFor("tls_agent", "127.0.0.1", nil))
	if err == nil || !strings.Contains(err.Error(), "no pg_hba.conf entry") {
		t.Errorf("loopback without sslmode: %v", err)
	}
	// ... and a role with a plain line gets in without TLS.
	if ssl, err := connect(e.dsnFor("db_only", "127.0.0.1", nil)); err != nil || ssl {
		t.Errorf("loopback without sslmode: ssl %v, %v", ssl, err)
	}
	// A CA in the DSN asks for verified TLS on loopback too.
	if ssl, err := connect(e.dsnFor("tls_agent", "127.0.0.1", url.Values{"sslrootcert": {e.pg.CAFile}})); err != nil || !ssl {
		t.Errorf("loopback with the CA: ssl %v, %v", ssl, err)
	}
	_, err = connect(e.dsnFor("tls_agent", "localhost", url.Values{"sslrootcert": {e.pg.OtherCAFile}}))
	if err == nil || !strings.Contains(err.Error(), "TLS verification") {
		t.Errorf("loopback with another CA: %v", err)
	}
}
