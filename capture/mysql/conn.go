package mysql

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
	"github.com/os2sandbox/connector/configs/tlsconf"
)

// tlsMode is the effective TLS mode: the configured one, else verify-full,
// except to a loopback address or a Unix socket without a CA file, where
// the traffic does not leave the machine (disable) — as the postgres
// source does for a DSN without sslmode.
func (s *Source) tlsMode() string {
	t := s.cfg.TLS
	if t != nil && t.Mode != "" {
		return t.Mode
	}
	if t != nil && t.CAFile != "" {
		return "verify-full"
	}
	if s.net == "unix" || isLoopback(s.cfg.Host) {
		return "disable"
	}
	return "verify-full"
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsConfig builds the client TLS configuration; nil when TLS is off.
// Files are read now, so a missing or wrong file fails with its name.
func (s *Source) tlsConfig() (*tls.Config, error) {
	mode := s.tlsMode()
	if mode == "disable" {
		return nil, nil
	}
	where := fmt.Sprintf("mysql source %q", s.name)
	t := s.cfg.TLS
	if t == nil {
		t = &TLS{}
	}
	c, err := tlsconf.Build(where, "the server's", &tlsconf.Config{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName})
	if err != nil {
		return nil, err
	}
	if c.ServerName == "" {
		c.ServerName = s.cfg.Host
	}
	switch mode {
	case "require":
		c.InsecureSkipVerify = true //nolint:gosec // the user asked for encryption without verification
	case "verify-ca":
		// Verify the chain, not the host name.
		roots := c.RootCAs
		c.InsecureSkipVerify = true //nolint:gosec // verified below
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("x509: the server sent no certificate")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				cert, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs[i] = cert
			}
			inter := x509.NewCertPool()
			for _, ic := range certs[1:] {
				inter.AddCert(ic)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
	}
	return c, nil
}

// dial opens a TCP or Unix connection to the server.
func (s *Source) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return d.DialContext(ctx, s.net, s.addr)
}

// connect opens a regular connection in UTC, with utf8mb4 for statements
// and results.
func (s *Source) connect(ctx context.Context) (*client.Conn, error) {
	tc, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := client.ConnectWithDialer(cctx, s.net, s.addr, s.cfg.User, s.cfg.Password, "", s.dial, func(c *client.Conn) error {
		c.SetTLSConfig(tc)
		c.SetAttributes(map[string]string{"program_name": "connector/" + s.name})
		return nil
	})
	if err != nil {
		return nil, s.explainConnect(err)
	}
	if _, err := c.Execute("SET NAMES utf8mb4, time_zone = '+00:00'"); err != nil {
		c.Close()
		return nil, capture.Transient(fmt.Errorf("mysql source %q: set session: %w", s.name, err))
	}
	return c, nil
}

// isTransient says whether Run retries after err with backoff (the server
// is restarting, the network failed); everything else stops Run.
func isTransient(err error) bool {
	if transient, marked := capture.Marked(err); marked {
		return transient
	}
	var myErr *gomysql.MyError
	if errors.As(err, &myErr) {
		switch myErr.Code {
		case gomysql.ER_CON_COUNT_ERROR, gomysql.ER_SERVER_SHUTDOWN, gomysql.ER_QUERY_INTERRUPTED,
			gomysql.ER_LOCK_WAIT_TIMEOUT, gomysql.ER_LOCK_DEADLOCK, 1927 /* ER_CONNECTION_KILLED */, gomysql.ER_NORMAL_SHUTDOWN:
			return true
		}
		return false
	}
	if capture.NetworkFailure(err) || errors.Is(err, gomysql.ErrBadConn) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "connection was bad") || strings.Contains(msg, "EOF") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset")
}

// explainConnect turns a connection failure into a message with the fix.
func (s *Source) explainConnect(err error) error {
	where := fmt.Sprintf("mysql source %q", s.name)
	addr := s.addr
	var myErr *gomysql.MyError
	if errors.As(err, &myErr) {
		switch myErr.Code {
		case gomysql.ER_ACCESS_DENIED_ERROR:
			return fmt.Errorf("%s: access denied for user %q at %s; check user and password (or the secret it is substituted from), and that the account exists for the agent's address (CREATE USER '%s'@'<agent address>' IDENTIFIED BY '…'): %w",
				where, s.cfg.User, addr, s.cfg.User, err)
		case gomysql.ER_HOST_NOT_PRIVILEGED:
			return fmt.Errorf("%s: the server at %s does not let this host connect; create the account for the agent's address (CREATE USER '%s'@'<agent address>' …): %w", where, addr, s.cfg.User, err)
		case gomysql.ER_CON_COUNT_ERROR:
			return capture.Transient(fmt.Errorf("%s: too many connections at %s; raise max_connections or free connections: %w", where, addr, err))
		case 3159: // ER_SECURE_TRANSPORT_REQUIRED (MySQL)
			return capture.Permanent(fmt.Errorf("%s: the server at %s requires TLS; set tls: {mode: verify-full, ca_file: /path/to/ca.pem}: %w", where, addr, err))
		}
		return fmt.Errorf("%s: connect to %s: %w", where, addr, err)
	}
	var certErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invErr x509.CertificateInvalidError
	if errors.As(err, &certErr) || errors.As(err, &hostErr) || errors.As(err, &invErr) || strings.Contains(err.Error(), "x509:") {
		return capture.Permanent(fmt.Errorf("%s: TLS verification of %s failed (%s); give the server's CA with tls.ca_file (verify-full checks the host name too, verify-ca only the chain); tls.mode: disable only on a trusted network: %w",
			where, addr, capture.TLSReason(err), err))
	}
	if strings.Contains(err.Error(), "TLS") && strings.Contains(err.Error(), "not support") {
		return capture.Permanent(fmt.Errorf("%s: the server at %s does not offer TLS; configure ssl_cert/ssl_key on the server, or set tls: {mode: disable} if the network is trusted: %w", where, addr, err))
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		return capture.Transient(fmt.Errorf("%s: cannot reach MySQL/MariaDB at %s: %s; check host and port (or socket), that the server runs and listens there (bind_address, port, skip_networking), and that no firewall blocks it: %w",
			where, addr, capture.NetReason(err), err))
	}
	if isTransient(err) {
		return capture.Transient(fmt.Errorf("%s: connect to %s: %w", where, addr, err))
	}
	return fmt.Errorf("%s: connect to %s: %w", where, addr, err)
}

// quoteIdent quotes an identifier with backticks.
func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// quoteTable quotes "db.table".
func quoteTable(t string) string {
	db, table, _ := sqltable.Split(t)
	return quoteIdent(db) + "." + quoteIdent(table)
}

func quoteLiteral(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

// slogHandler hands go-mysql's warnings and errors to the source's log at
// debug level: its errors are lost connections, which Run reports itself
// (with the retry), and its info lines are set-up chatter.
type slogHandler struct {
	s     *Source
	attrs []slog.Attr
}

func (h slogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h slogHandler) Handle(_ context.Context, r slog.Record) error {
	args := []any{"source", h.s.name, "component", "go-mysql"}
	for _, a := range h.attrs {
		args = append(args, a.Key, a.Value.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		args = append(args, a.Key, a.Value.String())
		return true
	})
	h.s.log.Debug(r.Message, args...)
	return nil
}

func (h slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return slogHandler{s: h.s, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h slogHandler) WithGroup(string) slog.Handler { return h }
