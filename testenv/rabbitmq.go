package testenv

import (
	"bytes"
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
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitMQ is a throwaway RabbitMQ node (the Debian package
// rabbitmq-server) for tests: its own temp dir owned by the rabbitmq user
// (mnesia, logs, config, HOME with the Erlang cookie), listening on
// 127.0.0.1 only, on free ports for AMQP, Erlang distribution and its own
// epmd. It starts in about 6 s, so start it once per package (TestMain).
//
// User / Password is an administrator of vhost "/". With
// RabbitMQOptions.TLS there is also a TLS listener (TLSPort) that wants a
// client certificate signed by CAFile and accepts the EXTERNAL mechanism:
// ClientCertFile (CN = CertUser, a user with rights on "/") logs in
// without a password.
type RabbitMQ struct {
	Port     int
	User     string
	Password string
	Dir      string

	TLSPort        int
	CAFile         string // the CA of the server and client certificates
	OtherCAFile    string // a CA that signed neither
	ClientCertFile string
	ClientKeyFile  string
	CertUser       string // CN of the client certificate

	node     string
	distPort int
	epmdPort int
	run      *syscall.Credential
	cmd      *exec.Cmd
	done     chan error
}

// RabbitMQOptions tunes the node.
type RabbitMQOptions struct {
	TLS bool
}

const (
	rabbitBin = "/usr/lib/rabbitmq/bin"
	epmdBin   = "/usr/bin/epmd"
)

// NewRabbitMQ starts a node for tb and removes it when tb ends.
func NewRabbitMQ(tb testing.TB, opts RabbitMQOptions) *RabbitMQ {
	tb.Helper()
	r, err := StartRabbitMQ(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.Close)
	return r
}

// StartRabbitMQ starts a node (for TestMain). The caller must call Close.
func StartRabbitMQ(opts RabbitMQOptions) (*RabbitMQ, error) {
	if _, err := os.Stat(filepath.Join(rabbitBin, "rabbitmq-server")); err != nil {
		return nil, errors.New("testenv: RabbitMQ not found (" + rabbitBin + "/rabbitmq-server); install the Debian package rabbitmq-server (testenv/install-deps.sh does)")
	}
	dir, err := os.MkdirTemp("", "testenv-rabbitmq-")
	if err != nil {
		return nil, fmt.Errorf("testenv: rabbitmq temp dir: %w", err)
	}
	r := &RabbitMQ{Dir: dir, User: "connector", Password: "s3cret-mq", CertUser: "connector-cert",
		node: "testenv-" + filepath.Base(dir)[len("testenv-rabbitmq-"):] + "@localhost"}
	fail := func(err error) (*RabbitMQ, error) {
		r.Close()
		return nil, err
	}
	if os.Geteuid() == 0 {
		// The scripts drop to (or expect) the rabbitmq user, whose files
		// these are.
		if r.run, err = pgCredential("rabbitmq"); err != nil {
			return fail(fmt.Errorf("%w (the Debian package rabbitmq-server creates it)", err))
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	if err := r.chown(dir); err != nil {
		return fail(err)
	}
	for _, p := range []*int{&r.Port, &r.distPort, &r.epmdPort, &r.TLSPort} {
		if *p, err = freePort(); err != nil {
			return fail(err)
		}
	}
	conf := fmt.Sprintf(`listeners.tcp.1 = 127.0.0.1:%d
loopback_users = none
default_user = %s
default_pass = %s
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
log.console = true
log.console.level = warning
log.file = false
`, r.Port, r.User, r.Password)
	plugins := "[]."
	if opts.TLS {
		if err := r.writeTLS(); err != nil {
			return fail(err)
		}
		tls := filepath.Join(dir, "tls")
		conf += fmt.Sprintf(`listeners.ssl.1 = 127.0.0.1:%d
ssl_options.cacertfile = %s/ca.pem
ssl_options.certfile = %s/server.pem
ssl_options.keyfile = %s/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
`, r.TLSPort, tls, tls, tls)
		plugins = "[rabbitmq_auth_mechanism_ssl]."
	} else {
		r.TLSPort = 0
	}
	if err := r.write("rabbitmq.conf", conf); err != nil {
		return fail(err)
	}
	if err := r.write("enabled_plugins", plugins+"\n"); err != nil {
		return fail(err)
	}
	if err := r.Start(); err != nil {
		return fail(err)
	}
	if opts.TLS {
		for _, args := range [][]string{
			{"add_user", r.CertUser, "unused-" + r.Password},
			{"set_permissions", "-p", "/", r.CertUser, ".*", ".*", ".*"},
		} {
			if _, err := r.Ctl(args...); err != nil {
				return fail(err)
			}
		}
	}
	return r, nil
}

// URL is the AMQP URL of vhost "/" with User and Password.
func (r *RabbitMQ) URL() string {
	return fmt.Sprintf("amqp://%s:%s@127.0.0.1:%d/", r.User, r.Password, r.Port)
}

// Addr is the plain AMQP listener's host:port.
func (r *RabbitMQ) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// Admin runs f on a channel of a fresh connection to the node, failing tb
// on an error.
func (r *RabbitMQ) Admin(tb testing.TB, f func(*amqp.Channel) error) {
	tb.Helper()
	c, err := amqp.Dial(r.URL())
	if err != nil {
		tb.Fatalf("admin connection: %v", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		tb.Fatal(err)
	}
	if err := f(ch); err != nil {
		tb.Fatal(err)
	}
}

// Drain takes every message of queue q (get without waiting), in order.
func (r *RabbitMQ) Drain(tb testing.TB, q string) []amqp.Delivery {
	tb.Helper()
	var out []amqp.Delivery
	r.Admin(tb, func(ch *amqp.Channel) error {
		for {
			d, ok, err := ch.Get(q, true)
			if err != nil {
				return fmt.Errorf("get from %s: %w", q, err)
			}
			if !ok {
				return nil
			}
			out = append(out, d)
		}
	})
	return out
}

func (r *RabbitMQ) env() []string {
	return []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + r.Dir,
		"LANG=C.UTF-8",
		"RABBITMQ_NODENAME=" + r.node,
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(r.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(r.Dir, "log"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(r.Dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(r.Dir, "enabled_plugins"),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", r.distPort),
		fmt.Sprintf("ERL_EPMD_PORT=%d", r.epmdPort),
	}
}

func (r *RabbitMQ) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = r.Dir
	cmd.Env = r.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: r.run}
	return cmd
}

// Start starts the node (again, after Stop or Kill) and waits until it
// accepts AMQP logins.
func (r *RabbitMQ) Start() error {
	if r.cmd != nil {
		return errors.New("testenv: rabbitmq already running")
	}
	logf, err := os.OpenFile(filepath.Join(r.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := r.command(filepath.Join(rabbitBin, "rabbitmq-server"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("testenv: start rabbitmq: %w", err)
	}
	r.cmd, r.done = cmd, make(chan error, 1)
	go func() { r.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(90 * time.Second) // a busy 2-core machine
	for time.Now().Before(deadline) {
		select {
		case err := <-r.done:
			r.cmd = nil
			return fmt.Errorf("testenv: rabbitmq exited (%v): %s", err, r.tail())
		case <-time.After(200 * time.Millisecond):
		}
		if c, err := amqp.DialConfig(r.URL(), amqp.Config{Dial: amqp.DefaultDial(time.Second)}); err == nil {
			c.Close()
			return nil
		}
	}
	r.Kill()
	return fmt.Errorf("testenv: rabbitmq did not accept logins on port %d within 90s: %s", r.Port, r.tail())
}

// Stop shuts the node down cleanly (SIGTERM) and waits for it.
func (r *RabbitMQ) Stop() { r.signal(syscall.SIGTERM, 30*time.Second) }

// Kill ends the node at once (SIGKILL), as a crash or power loss would.
func (r *RabbitMQ) Kill() { r.signal(syscall.SIGKILL, 10*time.Second) }

func (r *RabbitMQ) signal(sig syscall.Signal, wait time.Duration) {
	if r.cmd == nil {
		return
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, sig)
	select {
	case <-r.done:
	case <-time.After(wait):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	}
	r.cmd = nil
}

// Close stops the node and its epmd and removes its directory.
func (r *RabbitMQ) Close() {
	r.Stop()
	if r.epmdPort != 0 {
		// The node started an epmd of its own on epmdPort; it outlives
		// the node unless told to go.
		kill := r.command(epmdBin, "-port", fmt.Sprint(r.epmdPort), "-kill")
		_ = kill.Run()
	}
	if r.Dir != "" {
		os.RemoveAll(r.Dir)
	}
}

// Ctl runs rabbitmqctl against the node, e.g. Ctl("add_vhost", "x").
func (r *RabbitMQ) Ctl(args ...string) (string, error) {
	cmd := r.command(filepath.Join(rabbitBin, "rabbitmqctl"), append([]string{"-n", r.node}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("testenv: rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// tail is the end of the node's console output, for error messages.
func (r *RabbitMQ) tail() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "server.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

func (r *RabbitMQ) chown(path string) error {
	if r.run == nil {
		return nil
	}
	if err := os.Chown(path, int(r.run.Uid), int(r.run.Gid)); err != nil {
		return fmt.Errorf("testenv: chown %s: %w", path, err)
	}
	return nil
}

func (r *RabbitMQ) write(name, content string) error {
	path := filepath.Join(r.Dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("testenv: write %s: %w", path, err)
	}
	return r.chown(path)
}

// writeTLS writes tls/ca.pem, tls/other-ca.pem, the server's
// tls/server.pem and .key, and the client's tls/client.pem and .key.
func (r *RabbitMQ) writeTLS() error {
	dir := filepath.Join(r.Dir, "tls")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("testenv: rabbitmq tls dir: %w", err)
	}
	if err := r.chown(dir); err != nil {
		return err
	}
	ca, caKey, err := newCA("testenv rabbitmq CA")
	if err != nil {
		return err
	}
	other, _, err := newCA("testenv unrelated CA")
	if err != nil {
		return err
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, server bool) ([]byte, []byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if server {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		return der, keyDER, err
	}
	srv, srvKey, err := issue(2, "localhost", x509.ExtKeyUsageServerAuth, true)
	if err != nil {
		return fmt.Errorf("testenv: rabbitmq server certificate: %w", err)
	}
	cli, cliKey, err := issue(3, r.CertUser, x509.ExtKeyUsageClientAuth, false)
	if err != nil {
		return fmt.Errorf("testenv: rabbitmq client certificate: %w", err)
	}
	r.CAFile, r.OtherCAFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other-ca.pem")
	r.ClientCertFile, r.ClientKeyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	for _, f := range []struct {
		name, typ string
		der       []byte
	}{
		{"ca.pem", "CERTIFICATE", ca.Raw},
		{"other-ca.pem", "CERTIFICATE", other.Raw},
		{"server.pem", "CERTIFICATE", srv},
		{"server.key", "PRIVATE KEY", srvKey},
		{"client.pem", "CERTIFICATE", cli},
		{"client.key", "PRIVATE KEY", cliKey},
	} {
		if err := r.write(filepath.Join("tls", f.name), string(pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}))); err != nil {
			return err
		}
	}
	return nil
}
