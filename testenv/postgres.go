package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
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
// (for authentication-failure tests); PostgresOptions.TLS and HBA change
// that.
type Postgres struct {
	Host string // 127.0.0.1
	Port int
	Dir  string // holds data/, postgres.log, tls/

	// PasswordUser logs in with PasswordSecret only (scram-sha-256); it has
	// the REPLICATION attribute.
	PasswordUser   string
	PasswordSecret string

	// With PostgresOptions.TLS: CAFile is the PEM of the CA that signed the
	// server's certificate (for sslrootcert=); OtherCAFile is a CA that did
	// not (a wrong sslrootcert).
	CAFile      string
	OtherCAFile string

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
	// TLS turns ssl on, with a server certificate for 127.0.0.1, ::1,
	// localhost and PostgresTLSHost from a CA of the cluster's own
	// (Postgres.CAFile). Every role but postgres (which the harness uses,
	// without TLS) and PasswordUser must then connect over TLS: the trust
	// lines of pg_hba.conf are hostssl lines.
	TLS bool
	// HBA, when not nil, replaces the trust lines of pg_hba.conf (those
	// after the lines of postgres and PasswordUser), e.g.
	// {"hostssl all alice 127.0.0.1/32 trust"}. A role that no line names
	// has no pg_hba.conf entry: its connections are refused.
	HBA []string
}

// PostgresTLSHost is a name in the TLS server certificate besides the
// loopback ones. It resolves nowhere (.test is reserved): a test maps it to
// 127.0.0.1 with its own resolver to connect as to a remote host.
const PostgresTLSHost = "postgres.test"

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
	if opts.TLS {
		if err := p.writeTLS(); err != nil {
			return fail(err)
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
	if opts.TLS {
		settings["ssl"] = "on"
		settings["ssl_cert_file"] = pgQuote(filepath.Join(p.Dir, "tls", "server.crt"))
		settings["ssl_key_file"] = pgQuote(filepath.Join(p.Dir, "tls", "server.key"))
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
	// The first matching line wins: the harness's superuser is trusted
	// (without TLS), the password user must authenticate, everyone else on
	// loopback is trusted (throwaway cluster), over TLS if it is on.
	hba := fmt.Sprintf(`host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
host all %[1]s 127.0.0.1/32 scram-sha-256
host replication %[1]s 127.0.0.1/32 scram-sha-256
`, p.PasswordUser)
	lines := opts.HBA
	if lines == nil {
		kind := "host"
		if opts.TLS {
			kind = "hostssl"
		}
		lines = []string{kind + " all all 127.0.0.1/32 trust", kind + " replication all 127.0.0.1/32 trust"}
	}
	hba += strings.Join(lines, "\n") + "\n"
	return os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600)
}

func pgQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// writeTLS writes tls/ca.pem, tls/other-ca.pem and the server's
// tls/server.crt and tls/server.key (readable by the server only, as it
// demands).
func (p *Postgres) writeTLS() error {
	dir := filepath.Join(p.Dir, "tls")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("testenv: postgres tls dir: %w", err)
	}
	ca, caKey, err := newCA("testenv postgres CA")
	if err != nil {
		return err
	}
	other, _, err := newCA("testenv unrelated CA")
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("testenv: server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost", PostgresTLSHost},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("testenv: server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	p.CAFile, p.OtherCAFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other-ca.pem")
	files := []struct {
		name string
		typ  string
		der  []byte
		mode os.FileMode
	}{
		{"ca.pem", "CERTIFICATE", ca.Raw, 0o644},
		{"other-ca.pem", "CERTIFICATE", other.Raw, 0o644},
		{"server.crt", "CERTIFICATE", der, 0o644},
		{"server.key", "PRIVATE KEY", keyDER, 0o600},
	}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			return fmt.Errorf("testenv: write %s: %w", path, err)
		}
		if p.run != nil {
			if err := os.Chown(path, int(p.run.Uid), int(p.run.Gid)); err != nil {
				return fmt.Errorf("testenv: chown %s: %w", path, err)
			}
		}
	}
	return nil
}

// newCA makes a self-signed CA certificate and its key.
func newCA(name string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("testenv: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("testenv: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
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
// (trust authentication, sslmode=disable: with TLS on, only postgres may
// connect so).
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
