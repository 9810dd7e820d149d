package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
)

// MariaDB is a throwaway MariaDB server for binlog capture tests: a data
// dir made by mariadb-install-db in a temp dir, listening on a free
// loopback port and on a Unix socket in that dir, with a ROW binlog, full
// row images and full row metadata, GTID strict mode, and no durability
// (sync_binlog=0, innodb_flush_log_at_trx_commit=2).
//
// root has no password and may connect from 127.0.0.1 and the socket.
type MariaDB struct {
	Host   string // 127.0.0.1
	Port   int
	Socket string
	Dir    string // holds data/, binlog/, mariadbd.err

	args []string
	run  *syscall.Credential // nil when not root
	cmd  *exec.Cmd
	done chan error
}

// MariaDBOptions tunes the server for a test.
type MariaDBOptions struct {
	// Args are extra mariadbd options, e.g. "--binlog-format=STATEMENT";
	// they come after the defaults and so override them.
	Args []string
}

// NewMariaDB starts a server for tb and removes it when tb ends.
func NewMariaDB(tb testing.TB, opts MariaDBOptions) *MariaDB {
	tb.Helper()
	m, err := StartMariaDB(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	return m
}

// StartMariaDB starts a server (for TestMain, where there is no
// testing.TB). The caller must call Close.
func StartMariaDB(opts MariaDBOptions) (*MariaDB, error) {
	for _, b := range []string{"mariadbd", "mariadb-install-db"} {
		if _, err := lookBin(b); err != nil {
			return nil, fmt.Errorf("testenv: %s not found in PATH or /usr/sbin; install the Debian package mariadb-server (testenv/install-deps.sh does): %w", b, err)
		}
	}
	dir, err := os.MkdirTemp("", "testenv-mariadb-")
	if err != nil {
		return nil, fmt.Errorf("testenv: mariadb temp dir: %w", err)
	}
	m := &MariaDB{Host: "127.0.0.1", Dir: dir, Socket: filepath.Join(dir, "mariadbd.sock"), args: opts.Args}
	fail := func(err error) (*MariaDB, error) {
		m.Close()
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(dir, "binlog"), 0o755); err != nil {
		return fail(err)
	}
	if os.Geteuid() == 0 {
		// mariadbd refuses to run as root without --user.
		cred, err := pgCredential("mysql")
		if err != nil {
			return fail(fmt.Errorf("testenv: %w (the Debian package mariadb-server creates the user mysql)", err))
		}
		m.run = cred
		for _, p := range []string{dir, filepath.Join(dir, "binlog")} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return fail(fmt.Errorf("testenv: chown %s: %w", p, err))
			}
		}
	}
	install, _ := lookBin("mariadb-install-db")
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"),
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"}
	if m.run != nil {
		args = append(args, "--user=mysql")
	}
	cmd := exec.Command(install, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("testenv: mariadb-install-db: %w: %s", err, out))
	}
	for attempt := 0; ; attempt++ {
		if m.Port, err = freePort(); err != nil {
			return fail(err)
		}
		if err = m.Start(); err == nil {
			break
		}
		if attempt == 2 {
			return fail(err)
		}
	}
	if err := m.Exec("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'", "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION"); err != nil {
		return fail(err)
	}
	return m, nil
}

func lookBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// Start starts the server (again, after Stop) and waits until it accepts
// connections.
func (m *MariaDB) Start() error {
	if m.cmd != nil {
		return errors.New("testenv: mariadbd already running")
	}
	bin, err := lookBin("mariadbd")
	if err != nil {
		return err
	}
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(m.Dir, "data"),
		"--port=" + strconv.Itoa(m.Port), "--bind-address=127.0.0.1", "--socket=" + m.Socket,
		"--pid-file=" + filepath.Join(m.Dir, "mariadbd.pid"), "--log-error=" + filepath.Join(m.Dir, "mariadbd.err"),
		"--server-id=1", "--log-bin=" + filepath.Join(m.Dir, "binlog", "mariadb-bin"),
		"--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--binlog-checksum=CRC32",
		"--gtid-strict-mode=1", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
		"--innodb-log-file-size=48M", "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0",
		"--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci", "--max-connections=200",
		"--performance-schema=OFF"}
	if m.run != nil {
		args = append(args, "--user=mysql")
	}
	args = append(args, m.args...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = m.Dir
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// Pdeathsig: a crashed test binary must not leave a server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: start mariadbd: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	m.cmd, m.done = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			m.cmd = nil
			return fmt.Errorf("testenv: mariadbd exited (%v): %s %s", err, stderr.String(), m.LogTail())
		default:
		}
		if c, err := client.ConnectWithTimeout(m.Socket, "root", "", "", time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	m.Stop()
	return fmt.Errorf("testenv: mariadbd did not accept connections on port %d within 60s: %s", m.Port, m.LogTail())
}

// Stop shuts the server down cleanly and keeps its data for Start.
func (m *MariaDB) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(60 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// Restart stops and starts the server on the same port.
func (m *MariaDB) Restart() error {
	m.Stop()
	return m.Start()
}

// Close stops the server and removes its directory.
func (m *MariaDB) Close() {
	m.Stop()
	if m.Dir != "" {
		os.RemoveAll(m.Dir)
	}
}

// Addr is host:port.
func (m *MariaDB) Addr() string { return fmt.Sprintf("%s:%d", m.Host, m.Port) }

// Exec runs SQL statements as root.
func (m *MariaDB) Exec(sqls ...string) error {
	c, err := client.ConnectWithTimeout(m.Socket, "root", "", "", 10*time.Second)
	if err != nil {
		return fmt.Errorf("testenv: connect to mariadb: %w", err)
	}
	defer c.Close()
	for _, sql := range sqls {
		if _, err := c.Execute(sql); err != nil {
			return fmt.Errorf("testenv: %s: %w", sql, err)
		}
	}
	return nil
}

// Conn opens a connection as root over the socket, in database db ("" for
// none).
func (m *MariaDB) Conn(db string) (*client.Conn, error) {
	return client.ConnectWithTimeout(m.Socket, "root", "", db, 10*time.Second)
}

// LogTail returns the end of the error log, for failure messages.
func (m *MariaDB) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(m.Dir, "mariadbd.err"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}
