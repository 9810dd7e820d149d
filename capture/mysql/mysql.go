// Package mysql captures a MariaDB (or MySQL) database from its binary log,
// read as a replica would with go-mysql's BinlogSyncer, positioned by GTID.
//
// The source keeps these invariants (tests in this folder pin each one):
//
//   - The initial load is read in a transaction started WITH CONSISTENT
//     SNAPSHOT, and the stream starts at the GTID position the server
//     reports for exactly that snapshot (binlog_snapshot_gtid_pos), so the
//     load and the stream meet without loss or double and without a lock.
//   - The checkpoint is the GTID position after the last transaction whose
//     batches Sink.Apply has made durable (plus the index reached inside a
//     half-applied transaction); after a crash the stream resumes there and
//     skips what is already durable.
//   - A break in continuity (binlogs purged or reset while the agent was
//     stopped, another server) is never skipped: the next batch carries
//     EpochBreak and a reconcile snapshot follows.
//   - Snapshot values and streamed values of the same row are identical:
//     both go through one conversion from the row's raw column bytes.
//   - Memory is bounded by the batch size, not by transaction or table
//     size.
package mysql

import (
	"fmt"
	"hash/fnv"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
	"github.com/os2sandbox/connector/configs"
)

func init() {
	capture.Register("mysql", func(node *yaml.Node, opts capture.Options) (capture.Source, error) {
		return New(node, opts)
	})
}

// Config is a mysql source's configuration.
type Config struct {
	// DSN is mysql://user:password@host:port/database; the fields below
	// override its parts.
	DSN      string `yaml:"dsn"`
	Host     string `yaml:"host"`
	Port     int    `yaml:"port"`
	Socket   string `yaml:"socket"`
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Database names the register in the source's identity; default: the
	// database of the first table.
	Database string `yaml:"database"`
	// Tables are the captured tables as database.table. Empty means the
	// tables the mappings read.
	Tables []string `yaml:"tables"`
	// Keys names the key columns of tables without a primary key.
	Keys map[string][]string `yaml:"keys"`
	// ServerID is the replica id the agent registers with (default derived
	// from the source name, see serverIDFor).
	ServerID uint32 `yaml:"server_id"`
	TLS      *TLS   `yaml:"tls"`
	// HeartbeatInterval is how often an idle server sends a heartbeat
	// (default 10s); a silent connection is given up after three.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// SnapshotChunkSize is how many rows one snapshot query reads (default
	// 5000).
	SnapshotChunkSize int `yaml:"snapshot_chunk_size"`
	// BatchSize is the most changes in one batch (default 2000). It is a
	// common key; the engine reads it too.
	BatchSize int `yaml:"batch_size"`
}

// TLS configures TLS to the server.
type TLS struct {
	// Mode is verify-full (default: the certificate chain and the host
	// name), verify-ca (the chain only), require (encrypted, unverified) or
	// disable.
	Mode       string `yaml:"mode"`
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// Source is a binlog source.
type Source struct {
	name   string
	cfg    Config
	opts   capture.Options
	log    capture.Logger
	tables []string
	addr   string // host:port or socket path
	net    string // tcp or unix

	runs capture.Runs // lets Snapshot hand its request to an active Run
	id   capture.CachedID
}

var (
	_ capture.Source      = (*Source)(nil)
	_ capture.Snapshotter = (*Source)(nil)
	_ capture.Checker     = (*Source)(nil)
	_ capture.Identity    = (*Source)(nil)
)

// New builds a source from its YAML node.
func New(node *yaml.Node, opts capture.Options) (*Source, error) {
	var cfg Config
	if err := configs.Decode(opts.File, node, &cfg, capture.CommonKeys...); err != nil {
		return nil, err
	}
	s := &Source{name: opts.Name, opts: opts, log: opts.Log}
	if s.log == nil {
		s.log = nopLogger{}
	}
	at := func(key string) *yaml.Node { return configs.Key(node, key) }
	where := fmt.Sprintf("mysql source %q", opts.Name)
	if cfg.DSN != "" {
		u, err := url.Parse(cfg.DSN)
		if err != nil || u.Scheme != "mysql" || u.Host == "" {
			return nil, configs.Errorf(opts.File, at("dsn"), `e.g. dsn: "mysql://connector:${env:HR_DB_PASSWORD}@db.example.org:3306/hr"`,
				"%s: dsn is not a mysql:// URL", where)
		}
		if cfg.Host == "" {
			cfg.Host = u.Hostname()
		}
		if cfg.Port == 0 && u.Port() != "" {
			cfg.Port, _ = strconv.Atoi(u.Port())
		}
		if cfg.User == "" {
			cfg.User = u.User.Username()
		}
		if p, ok := u.User.Password(); ok && cfg.Password == "" {
			cfg.Password = p
		}
		if cfg.Database == "" {
			cfg.Database = strings.TrimPrefix(u.Path, "/")
		}
	}
	if cfg.Host == "" && cfg.Socket == "" {
		return nil, configs.Errorf(opts.File, node, `e.g. host: db.example.org (or dsn: "mysql://connector@db.example.org:3306/hr")`,
			"%s: host is missing", where)
	}
	if cfg.User == "" {
		return nil, configs.Errorf(opts.File, node, `e.g. user: connector`, "%s: user is missing", where)
	}
	if cfg.Port == 0 {
		cfg.Port = 3306
	}
	if cfg.Socket != "" {
		s.addr, s.net = cfg.Socket, "unix"
	} else {
		s.addr, s.net = net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)), "tcp"
	}
	if cfg.TLS != nil {
		switch cfg.TLS.Mode {
		case "", "verify-full", "verify-ca", "require", "disable":
		default:
			return nil, configs.Errorf(opts.File, at("tls"), "use verify-full, verify-ca, require or disable",
				"%s: tls.mode %q is not known", where, cfg.TLS.Mode)
		}
		if (cfg.TLS.CertFile == "") != (cfg.TLS.KeyFile == "") {
			return nil, configs.Errorf(opts.File, at("tls"), "a client certificate needs both cert_file and key_file",
				"%s: tls: only one of cert_file and key_file is set", where)
		}
	}
	if cfg.ServerID == 0 {
		cfg.ServerID = serverIDFor(opts.Name)
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.SnapshotChunkSize <= 0 {
		cfg.SnapshotChunkSize = 5000
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 2000
	}
	naming := sqltable.Naming{Qualifier: "database", Examples: [2]string{"hr.person", "hr.unit"}}
	tables, err := naming.List(sqltable.Setting{File: opts.File, Node: node, At: at, Where: where,
		Tables: cfg.Tables, Records: opts.Records, Keys: cfg.Keys})
	if err != nil {
		return nil, err
	}
	s.tables = tables
	if cfg.Database == "" {
		cfg.Database, _, _ = sqltable.Split(s.tables[0])
	}
	s.cfg = cfg
	return s, nil
}

// serverIDFor derives the replica server id from the source name: FNV-1a
// of the name folded into 1073741824–2147483647, a range replicas set up
// by hand rarely use. It is stable, so a restarted agent replaces its own
// earlier connection on the server.
func serverIDFor(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte("connector/" + name))
	return 1<<30 | h.Sum32()&(1<<30-1)
}

type nopLogger struct{}

func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}
func (nopLogger) Error(string, ...any) {}
func (nopLogger) Debug(string, ...any) {}
