package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL cluster (15 preferred) for logical
// replication tests: initdb'd in a temp dir, listening on a free loopback
// port (TCP only), wal_level=logical, fsync off. Loopback connections are
// trusted for every role except PasswordUser, which must give its password
// (for authentication-failure tests).
type Postgres struct {
	Host string // 127.0.0.1
	Port int
	Dir  string // holds data/, postgres.log

	// PasswordUser logs in with PasswordSecret only (scram-sha-256); it has
	// the REPLICATION attribute.
	PasswordUser   string
	PasswordSecret string

	bin  string
	run  *syscall.Credential // nil when not root
	cmd  *exec.Cmd
	done chan error
	log  *os.File
}

// PostgresOptions tunes the cluster for a test.
type PostgresOptions struct {
	// Settings are extra postgresql.conf lines, e.g. {"wal_level": "replica"};
	// they override the defaults.
	Settings map[string]string
}

// NewPostgres starts a cluster for tb and removes it when tb ends.
func NewPostgres(tb testing.TB, opts PostgresOptions) *Postgres {
	tb.Helper()
	p, err := StartPostgres(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// StartPostgres starts a cluster (for TestMain, where there is no
// testing.TB). The caller must call Close.
func StartPostgres(opts PostgresOptions) (*Postgres, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "testenv-postgres-")
	if err != nil {
		return nil, fmt.Errorf("testenv: postgres temp dir: %w", err)
	}
	p := &Postgres{Host: "127.0.0.1", Dir: dir, bin: bin,
		PasswordUser: "connector_pw", PasswordSecret: "s3cret-pw", done: make(chan error, 1)}
	fail := func(err error) (*Postgres, error) {
		p.Close()
		return nil, err
	}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		cred, err := pgCredential("postgres")
		if err != nil {
			return fail(err)
		}
		p.run = cred
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(fmt.Errorf("testenv: chown %s: %w", dir, err))
		}
	}
	if err := p.initdb(opts); err != nil {
		return fail(err)
	}
	for attempt := 0; ; attempt++ {
		if p.Port, err = freePort(); err != nil {
			return fail(err)
		}
		if err = p.writePort(); err != nil {
			return fail(err)
		}
		if err = p.Start(); err == nil {
			break
		}
		if attempt == 2 {
			return fail(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Exec(ctx, "postgres", fmt.Sprintf(
		"CREATE ROLE %s LOGIN REPLICATION PASSWORD '%s'", p.PasswordUser, p.PasswordSecret)); err != nil {
		return fail(err)
	}
	return p, nil
}

func (p *Postgres) initdb(opts PostgresOptions) error {
	data := filepath.Join(p.Dir, "data")
	cmd := exec.Command(filepath.Join(p.bin, "initdb"), "-D", data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.run}
	cmd.Dir = p.Dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: initdb: %w: %s", err, out)
	}
	settings := map[string]string{
		"listen_addresses":        "'127.0.0.1'",
		"unix_socket_directories": "''",
		"wal_level":               "logical",
		"max_replication_slots":   "16",
		"max_wal_senders":         "16",
		"max_connections":         "100",
		// throwaway cluster: no durability needed
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"shared_buffers":     "128MB",
		"max_wal_size":       "4GB",
		"wal_sender_timeout": "60s",
		"logging_collector":  "off",
		"log_min_messages":   "warning",
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var conf strings.Builder
	conf.WriteString("\n# testenv\ninclude_if_exists = 'port.conf'\n")
	for _, k := range keys {
		fmt.Fprintf(&conf, "%s = %s\n", k, settings[k])
	}
	if err := pgAppend(filepath.Join(data, "postgresql.conf"), conf.String()); err != nil {
		return err
	}
	// The first matching line wins: the password user must authenticate,
	// everyone else on loopback is trusted (throwaway cluster).
	hba := fmt.Sprintf(`host all %[1]s 127.0.0.1/32 scram-sha-256
host replication %[1]s 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
`, p.PasswordUser)
	return os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600)
}

// writePort sets the port in a file included by postgresql.conf, so that a
// retry on another port needs no new initdb.
func (p *Postgres) writePort() error {
	f := filepath.Join(p.Dir, "data", "port.conf")
	if err := os.WriteFile(f, []byte(fmt.Sprintf("port = %d\n", p.Port)), 0o600); err != nil {
		return err
	}
	if p.run != nil {
		return os.Chown(f, int(p.run.Uid), int(p.run.Gid))
	}
	return nil
}

// Start starts the server (again, after Stop) and waits until it accepts
// connections.
func (p *Postgres) Start() error {
	if p.cmd != nil {
		return errors.New("testenv: postgres already running")
	}
	logf, err := os.OpenFile(filepath.Join(p.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), "-D", filepath.Join(p.Dir, "data"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = p.Dir
	// Pdeathsig: a crashed test binary must not leave a server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.run, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("testenv: start postgres: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	p.cmd, p.done, p.log = cmd, done, logf
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			p.cmd = nil
			logf.Close()
			return fmt.Errorf("testenv: postgres exited (%v): %s", err, p.tail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, p.DSN("postgres", "postgres"))
		cancel()
		if err == nil {
			c.Close(context.Background())
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	p.Stop()
	return fmt.Errorf("testenv: postgres did not accept connections on port %d within 30s: %s", p.Port, p.tail())
}

// Stop shuts the server down (fast shutdown: open sessions are ended) and
// keeps its data for Start.
func (p *Postgres) Stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
	p.log.Close()
}

// Restart stops and starts the server on the same port.
func (p *Postgres) Restart() error {
	p.Stop()
	return p.Start()
}

// Close stops the server and removes its directory.
func (p *Postgres) Close() {
	p.Stop()
	if p.Dir != "" {
		os.RemoveAll(p.Dir)
	}
}

// DSN is a connection string for user to database db on this cluster
// (trust authentication; sslmode=disable as the cluster has no TLS).
func (p *Postgres) DSN(user, db string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", user, p.Host, p.Port, db)
}

// Exec runs SQL statements as the superuser in database db.
func (p *Postgres) Exec(ctx context.Context, db string, sqls ...string) error {
	c, err := pgx.Connect(ctx, p.DSN("postgres", db))
	if err != nil {
		return fmt.Errorf("testenv: connect to postgres: %w", err)
	}
	defer c.Close(context.Background())
	for _, sql := range sqls {
		if _, err := c.Exec(ctx, sql); err != nil {
			return fmt.Errorf("testenv: %s: %w", sql, err)
		}
	}
	return nil
}

// CreateDatabase creates a fresh database, for tests that share one
// cluster.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	return p.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// LogTail returns the end of the server log, for failure messages.
func (p *Postgres) LogTail() string { return p.tail() }

func (p *Postgres) tail() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "postgres.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// pgBinDir finds the server binaries: $PG_BINDIR, then the Debian layout
// (newest of 15, 16, 17, ...; 15 first as the tests target it).
func pgBinDir() (string, error) {
	cands := []string{}
	if d := os.Getenv("PG_BINDIR"); d != "" {
		cands = append(cands, d)
	}
	cands = append(cands, "/usr/lib/postgresql/15/bin")
	more, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	cands = append(cands, more...)
	for _, d := range cands {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("testenv: PostgreSQL server binaries not found (looked for initdb in $PG_BINDIR and /usr/lib/postgresql/*/bin); install the Debian package postgresql-15 (testenv/install-deps.sh does)")
}

func pgCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("testenv: system user %q missing (the Debian package postgresql-15 creates it): %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func pgAppend(file, s string) error {
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
