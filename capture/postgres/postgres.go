// Package postgres captures a PostgreSQL database through logical
// replication (the built-in pgoutput plugin, read with pglogrepl).
//
// The source keeps these invariants (tests in this folder pin each one):
//
//   - The initial load is read in the snapshot exported by the slot (or by
//     a temporary slot), so the load and the stream meet without loss or
//     double at the slot's consistent point.
//   - The server is told flush = apply = the end of the last transaction
//     whose batches Sink.Apply has made durable, never more; write = what
//     was received. Everything after the acknowledged point is sent again
//     after a crash, and the checkpoint (LSN plus the index reached inside
//     a half-applied transaction) skips what is already durable.
//   - A break in continuity (slot dropped, advanced behind our back, another
//     server) is never skipped: the next batch carries EpochBreak and a
//     reconcile snapshot follows.
//   - Memory is bounded by the batch size and the queue of batches, not by
//     transaction or table size.
package postgres

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
	"github.com/os2sandbox/connector/configs"
)

func init() {
	capture.Register("postgres", func(node *yaml.Node, opts capture.Options) (capture.Source, error) {
		return New(node, opts)
	})
}

// Config is a postgres source's configuration.
type Config struct {
	// DSN is a libpq connection string or URL. Without sslmode, TLS is
	// required and verified (verify-full) unless the host is a loopback
	// address or a Unix socket and no sslrootcert is given.
	DSN string `yaml:"dsn"`
	// Tables are the schema-qualified tables to capture ("public.person"),
	// plain or partitioned (captured through the root). Empty means the
	// tables the mappings read.
	Tables []string `yaml:"tables"`
	// Publication and Slot default to connector_<source name>.
	Publication string `yaml:"publication"`
	Slot        string `yaml:"slot"`
	// CreatePublication lets the agent create the publication and add
	// missing tables to it (default true); CreateSlot lets it create the
	// replication slot (default true).
	CreatePublication *bool `yaml:"create_publication"`
	CreateSlot        *bool `yaml:"create_slot"`
	// Keys names the key columns of tables without a primary key.
	Keys map[string][]string `yaml:"keys"`
	// HeartbeatInterval: after this long without progress, the agent writes
	// a logical message so that the slot's position advances on an idle
	// database (default 10s; 0 disables).
	HeartbeatInterval *time.Duration `yaml:"heartbeat_interval"`
	// SnapshotChunkSize is how many rows one snapshot query reads (default
	// 5000); progress is checkpointed after each chunk.
	SnapshotChunkSize int `yaml:"snapshot_chunk_size"`
	// StatusInterval is how often the agent reports its position to the
	// server at the latest (default 10s).
	StatusInterval time.Duration `yaml:"status_interval"`
	// BatchSize is the most changes in one batch (default 2000). It is a
	// common key; the engine reads it too.
	BatchSize int `yaml:"batch_size"`
}

// Source is a postgres logical replication source.
type Source struct {
	name string
	cfg  Config
	opts capture.Options
	log  capture.Logger
	// tables lists the configured tables in order; keys holds configured
	// key overrides by table.
	tables []string

	runs capture.Runs // lets Snapshot hand its request to an active Run

	id    capture.CachedID
	types *typeCache
}

var (
	_ capture.Source      = (*Source)(nil)
	_ capture.Snapshotter = (*Source)(nil)
	_ capture.Checker     = (*Source)(nil)
	_ capture.Identity    = (*Source)(nil)
	_ capture.RowKeeper   = (*Source)(nil)
)

var identRe = regexp.MustCompile(`[^a-z0-9_]+`)

// New builds a source from its YAML node.
func New(node *yaml.Node, opts capture.Options) (*Source, error) {
	var cfg Config
	if err := configs.Decode(opts.File, node, &cfg, capture.CommonKeys...); err != nil {
		return nil, err
	}
	s := &Source{name: opts.Name, cfg: cfg, opts: opts, log: opts.Log}
	if s.log == nil {
		s.log = nopLogger{}
	}
	at := func(key string) *yaml.Node { return configs.Key(node, key) }
	where := fmt.Sprintf("postgres source %q", opts.Name)
	if strings.TrimSpace(cfg.DSN) == "" {
		return nil, configs.Errorf(opts.File, node, `e.g. dsn: "postgres://connector@db.example.org:5432/hr?sslmode=verify-full&sslrootcert=/etc/connector/ca.pem"`,
			"%s: dsn is missing", where)
	}
	def := identRe.ReplaceAllString(strings.ToLower("connector_"+opts.Name), "_")
	if len(def) > 50 {
		def = def[:50]
	}
	if s.cfg.Publication == "" {
		s.cfg.Publication = def
	}
	if s.cfg.Slot == "" {
		s.cfg.Slot = def
	} else if !regexp.MustCompile(`^[a-z0-9_]{1,50}$`).MatchString(s.cfg.Slot) {
		return nil, configs.Errorf(opts.File, at("slot"), "use lower-case letters, digits and _ (PostgreSQL's rule for slot names; at most 50 here, to leave room for temporary slots)",
			"%s: slot name %q is not valid", where, s.cfg.Slot)
	}
	if s.cfg.CreatePublication == nil {
		t := true
		s.cfg.CreatePublication = &t
	}
	if s.cfg.CreateSlot == nil {
		t := true
		s.cfg.CreateSlot = &t
	}
	if s.cfg.HeartbeatInterval == nil {
		d := 10 * time.Second
		s.cfg.HeartbeatInterval = &d
	}
	if s.cfg.SnapshotChunkSize <= 0 {
		s.cfg.SnapshotChunkSize = 5000
	}
	if s.cfg.StatusInterval <= 0 {
		s.cfg.StatusInterval = 10 * time.Second
	}
	if s.cfg.BatchSize <= 0 {
		s.cfg.BatchSize = 2000
	}
	naming := sqltable.Naming{Qualifier: "schema", Examples: [2]string{"public.person", "public.unit"}}
	tables, err := naming.List(sqltable.Setting{File: opts.File, Node: node, At: at, Where: where,
		Tables: cfg.Tables, Records: opts.Records, Keys: cfg.Keys})
	if err != nil {
		return nil, err
	}
	s.tables = tables
	s.types = newTypeCache()
	return s, nil
}

// KeepsRows tells the engine to keep raw rows: updates may omit unchanged
// TOAST columns and deletes may carry only the key.
func (s *Source) KeepsRows() bool { return true }

type nopLogger struct{}

func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}
func (nopLogger) Error(string, ...any) {}
func (nopLogger) Debug(string, ...any) {}
