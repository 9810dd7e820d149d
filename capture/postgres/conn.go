package postgres

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
)

// sessionParams make the text form of values the same on every connection
// (the snapshot's and the walsender's), whatever the server's defaults.
var sessionParams = map[string]string{
	"DateStyle":     "ISO, YMD",
	"TimeZone":      "UTC",
	"IntervalStyle": "iso_8601",
	"bytea_output":  "hex",
}

var (
	sslmodeKV     = regexp.MustCompile(`(^|\s)sslmode\s*=`)
	sslrootcertKV = regexp.MustCompile(`(^|\s)sslrootcert\s*=`)
)

// pgConfig parses the DSN. Without an sslmode (in the DSN or PGSSLMODE),
// TLS is required and verified (verify-full), except to a loopback address
// or a Unix socket, where the traffic does not leave the machine; a CA
// given with sslrootcert asks for verify-full there too.
func (s *Source) pgConfig() (*pgconn.Config, error) {
	dsn := s.cfg.DSN
	explicit := os.Getenv("PGSSLMODE") != ""
	withCA := os.Getenv("PGSSLROOTCERT") != ""
	isURL := strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
	if isURL {
		if u, err := url.Parse(dsn); err == nil {
			explicit = explicit || u.Query().Has("sslmode")
			withCA = withCA || u.Query().Get("sslrootcert") != ""
		}
	} else {
		explicit = explicit || sslmodeKV.MatchString(dsn)
		withCA = withCA || sslrootcertKV.MatchString(dsn)
	}
	withMode := func(mode string) string {
		if explicit {
			return dsn
		}
		if isURL {
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			return dsn + sep + "sslmode=" + mode
		}
		return dsn + " sslmode=" + mode
	}
	parse := func(dsn string) (*pgconn.Config, error) {
		cfg, err := pgconn.ParseConfig(dsn)
		if err == nil {
			return cfg, nil
		}
		if m := regexp.MustCompile(`unable to read CA file: (.*?)\)?$`).FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("postgres source %q: the CA file in dsn (sslrootcert) cannot be read: %s; give the path of the PEM file with the server's CA", s.name, m[1])
		}
		return nil, fmt.Errorf("postgres source %q: dsn cannot be parsed: %s (see https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING)", s.name, redact(err))
	}
	mode := "disable"
	if withCA {
		mode = "verify-full"
	}
	cfg, err := parse(withMode(mode))
	if err != nil {
		return nil, err
	}
	if !explicit && mode == "disable" && !isLocal(cfg.Host) {
		if cfg, err = parse(withMode("verify-full")); err != nil {
			return nil, err
		}
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "connector/" + s.name
	}
	return cfg, nil
}

func isLocal(host string) bool {
	if strings.HasPrefix(host, "/") || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redact removes a password that a parse error may echo.
func redact(err error) string {
	msg := err.Error()
	return regexp.MustCompile(`(password=)\S+|(://[^:/@]*:)[^@]*@`).ReplaceAllString(msg, "$1$2***@")
}

// connect opens a regular connection.
func (s *Source) connect(ctx context.Context) (*pgx.Conn, error) {
	pc, err := s.pgConfig()
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cfg.Config = *pc
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, s.explainConnect(err, pc)
	}
	return c, nil
}

// connectReplication opens a logical replication connection.
func (s *Source) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	pc, err := s.pgConfig()
	if err != nil {
		return nil, err
	}
	pc.RuntimeParams["replication"] = "database"
	c, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, s.explainConnect(err, pc)
	}
	return c, nil
}

// isTransient says whether Run retries after err with backoff (the server
// is restarting, the network failed); everything else stops Run.
func isTransient(err error) bool {
	if transient, marked := capture.Marked(err); marked {
		return transient
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", // admin/crash shutdown, cannot connect now
			"53300", // too many connections
			"55006", // slot still active: the old walsender has not noticed yet
			"08000", "08003", "08006", "08001", "08004":
			return true
		}
		return false
	}
	if capture.NetworkFailure(err) {
		return true
	}
	return pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed") ||
		strings.Contains(err.Error(), "unexpected EOF")
}

// explainConnect turns a connection failure into a message with the fix.
func (s *Source) explainConnect(err error, cfg *pgconn.Config) error {
	where := fmt.Sprintf("postgres source %q", s.name)
	addr := net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01":
			return fmt.Errorf("%s: password authentication failed for user %q at %s; check the password in dsn (or the secret it is substituted from): %w",
				where, cfg.User, addr, pgErr)
		case "28000":
			if strings.Contains(pgErr.Message, "pg_hba.conf") {
				// Logical replication connections match pg_hba.conf lines by
				// database name, like ordinary ones (not "replication").
				line := fmt.Sprintf("add e.g. `hostssl %s %s <agent address>/32 scram-sha-256` to pg_hba.conf (it serves the agent's replication connection too: lines with the keyword replication are for physical replication only), then SELECT pg_reload_conf()",
					cfg.Database, cfg.User)
				if cfg.TLSConfig == nil {
					// A hostssl line does not match a plain connection.
					line = "the agent connected without TLS (sslmode=disable, or no sslmode to a loopback address): if pg_hba.conf has a hostssl line for this role, set sslmode=verify-full and sslrootcert=/path/to/ca.pem in dsn; otherwise " + line
				}
				return fmt.Errorf("%s: the server at %s has no pg_hba.conf entry for user %q (%s); %s: %w",
					where, addr, cfg.User, pgErr.Message, line, pgErr)
			}
			return fmt.Errorf("%s: user %q may not log in at %s: %s; run ALTER ROLE %s LOGIN: %w", where, cfg.User, addr, pgErr.Message, quoteIdent(cfg.User), pgErr)
		case "3D000":
			return fmt.Errorf("%s: database %q does not exist at %s; check the database in dsn: %w", where, cfg.Database, addr, pgErr)
		case "42501":
			if strings.Contains(pgErr.Message, "replication") || strings.Contains(pgErr.Message, "walsender") {
				return fmt.Errorf("%s: role %q lacks the REPLICATION attribute; run ALTER ROLE %s WITH REPLICATION: %w", where, cfg.User, quoteIdent(cfg.User), pgErr)
			}
		case "53300":
			if strings.Contains(pgErr.Message, "wal_senders") || strings.Contains(pgErr.Message, "standby") {
				return capture.Transient(fmt.Errorf("%s: all max_wal_senders are in use at %s; raise it (ALTER SYSTEM SET max_wal_senders = 20, then restart the server) or stop an unused replication client: %w", where, addr, pgErr))
			}
			return capture.Transient(fmt.Errorf("%s: too many connections at %s; raise max_connections or free connections: %w", where, addr, pgErr))
		case "57P03":
			return capture.Transient(fmt.Errorf("%s: the server at %s is starting up or shutting down: %w", where, addr, pgErr))
		}
		return fmt.Errorf("%s: connect to %s: %w", where, addr, pgErr)
	}
	var certErr *x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invErr x509.CertificateInvalidError
	if errors.As(err, &certErr) || errors.As(err, &hostErr) || errors.As(err, &invErr) || strings.Contains(err.Error(), "x509:") {
		return capture.Permanent(fmt.Errorf("%s: TLS verification of %s failed (%s); give the server's CA with sslrootcert=/path/to/ca.pem in dsn (sslmode=verify-full checks the host name too); sslmode=disable only on a trusted network: %w",
			where, addr, capture.TLSReason(err), err))
	}
	if strings.Contains(err.Error(), "server refused TLS connection") {
		return capture.Permanent(fmt.Errorf("%s: the server at %s does not offer TLS; enable ssl = on on the server (with a certificate), or set sslmode=disable in dsn if the network is trusted: %w", where, addr, err))
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) {
		return capture.Transient(fmt.Errorf("%s: cannot reach PostgreSQL at %s: %s; check host and port in dsn, that the server runs and listens there (listen_addresses, port), and that no firewall blocks it: %w",
			where, addr, capture.NetReason(err), err))
	}
	return fmt.Errorf("%s: connect to %s: %w", where, addr, err)
}

// quoteIdent quotes an identifier for SQL shown to users (and run): plain
// lower-case names stay readable.
func quoteIdent(s string) string {
	if regexp.MustCompile(`^[a-z_][a-z0-9_]*$`).MatchString(s) && !reserved[s] {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteTable quotes "schema.table".
func quoteTable(t string) string {
	schema, table, _ := sqltable.Split(t)
	return quoteIdent(schema) + "." + quoteIdent(table)
}

var reserved = map[string]bool{"user": true, "order": true, "group": true, "table": true, "select": true,
	"from": true, "where": true, "limit": true, "offset": true, "default": true, "check": true, "column": true,
	"all": true, "and": true, "or": true, "not": true, "primary": true, "references": true, "to": true}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
