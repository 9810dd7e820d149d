package postgres

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/configs"
	"github.com/os2sandbox/connector/testenv"
)

// Each failing check names the setting and the exact fix.
func TestCheckFailures(t *testing.T) {
	ctx := context.Background()
	base := []string{
		"CREATE TABLE person (id int PRIMARY KEY, name text)",
		"CREATE TABLE nopk (a int, b text)",
		"CREATE TABLE secret (id int PRIMARY KEY)",
		"GRANT SELECT ON person TO norepl",
	}
	for _, r := range []string{"norepl LOGIN", "repl_noselect LOGIN REPLICATION"} {
		if err := pg.Exec(ctx, "postgres", "DO $$ BEGIN CREATE ROLE "+r+"; EXCEPTION WHEN duplicate_object THEN NULL; END $$"); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup []string
		yaml  []string
		want  []string
	}{
		{name: "ok", yaml: []string{"tables: [public.person]"}},
		{name: "wrong password",
			yaml: []string{"dsn: postgres://connector_pw:wrong@127.0.0.1:%PORT%/%DB%?sslmode=disable", "tables: [public.person]"},
			want: []string{`password authentication failed for user "connector_pw"`, "check the password in dsn"}},
		{name: "unreachable",
			yaml: []string{"dsn: postgres://postgres@127.0.0.1:%DEADPORT%/%DB%?sslmode=disable&connect_timeout=2", "tables: [public.person]"},
			want: []string{"cannot reach PostgreSQL at 127.0.0.1:", "connection refused", "check host and port in dsn"}},
		{name: "no replication attribute",
			yaml: []string{"dsn: postgres://norepl@127.0.0.1:%PORT%/%DB%?sslmode=disable", "tables: [public.person]"},
			want: []string{`role "norepl" lacks the REPLICATION attribute; run ALTER ROLE norepl WITH REPLICATION`}},
		{name: "no select privilege",
			yaml:  []string{"dsn: postgres://repl_noselect@127.0.0.1:%PORT%/%DB%?sslmode=disable", "tables: [public.secret]", "create_publication: false"},
			setup: []string{"CREATE PUBLICATION connector_no_select_privilege FOR TABLE secret"},
			want:  []string{"GRANT SELECT ON public.secret TO repl_noselect"}},
		{name: "missing table", yaml: []string{"tables: [public.nothere]"},
			want: []string{"table public.nothere does not exist"}},
		{name: "no primary key", yaml: []string{"tables: [public.nopk]"},
			want: []string{"table public.nopk has no primary key", "ALTER TABLE public.nopk ADD PRIMARY KEY", "keys: {public.nopk: [col, ...]}", "REPLICA IDENTITY FULL"}},
		{name: "configured key without replica identity", yaml: []string{"tables: [public.nopk]", "keys: {public.nopk: [a]}"},
			want: []string{"REPLICA IDENTITY DEFAULT, and there is no primary key", `key column "a"`, "ALTER TABLE public.nopk REPLICA IDENTITY FULL"}},
		{name: "configured key with full identity", setup: []string{"ALTER TABLE nopk REPLICA IDENTITY FULL"},
			yaml: []string{"tables: [public.nopk]", "keys: {public.nopk: [a]}"}},
		{name: "configured key column missing", setup: []string{"ALTER TABLE nopk REPLICA IDENTITY FULL"},
			yaml: []string{"tables: [public.nopk]", "keys: {public.nopk: [zz]}"},
			want: []string{`key column "zz" of public.nopk`}},
		{name: "publication missing", yaml: []string{"tables: [public.person]", "publication: pmiss", "create_publication: false"},
			want: []string{`publication "pmiss" does not exist`, "CREATE PUBLICATION pmiss FOR TABLE public.person"}},
		{name: "publication missing a table", setup: []string{"CREATE TABLE other (id int PRIMARY KEY)", "CREATE PUBLICATION p1 FOR TABLE other"},
			yaml: []string{"tables: [public.person, public.other]", "publication: p1", "create_publication: false"},
			want: []string{`publication "p1" does not include public.person; run ALTER PUBLICATION p1 ADD TABLE public.person`}},
		{name: "publication without deletes", setup: []string{"CREATE PUBLICATION p2 FOR TABLE person WITH (publish = 'insert, update')"},
			yaml: []string{"tables: [public.person]", "publication: p2", "create_publication: false"},
			want: []string{"ALTER PUBLICATION p2 SET (publish = 'insert, update, delete, truncate')"}},
		{name: "publication with row filter", setup: []string{"CREATE PUBLICATION p3 FOR TABLE person WHERE (id > 10)"},
			yaml: []string{"tables: [public.person]", "publication: p3", "create_publication: false"},
			want: []string{"row filter or column list on public.person", "ALTER PUBLICATION p3 DROP TABLE public.person; ALTER PUBLICATION p3 ADD TABLE public.person"}},
		{name: "slot missing, creation off", yaml: []string{"tables: [public.person]", "slot: smiss", "create_slot: false"},
			want: []string{`replication slot "smiss" does not exist`, "SELECT pg_create_logical_replication_slot('smiss', 'pgoutput')"}},
		{name: "slot of another plugin", setup: []string{"SELECT pg_create_logical_replication_slot('otherplug', 'test_decoding')"},
			yaml: []string{"tables: [public.person]", "slot: otherplug"},
			want: []string{`plugin "test_decoding"`, "SELECT pg_drop_replication_slot('otherplug')"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, append(base, tt.setup...)...)
			dead, _ := net.Listen("tcp", "127.0.0.1:0")
			deadPort := dead.Addr().(*net.TCPAddr).Port
			dead.Close()
			lines := make([]string, len(tt.yaml))
			for i, l := range tt.yaml {
				l = strings.ReplaceAll(l, "%PORT%", fmt.Sprint(e.pg.Port))
				l = strings.ReplaceAll(l, "%DEADPORT%", fmt.Sprint(deadPort))
				lines[i] = strings.ReplaceAll(l, "%DB%", e.db)
			}
			src, _ := e.source(lines...)
			err := src.Check(ctx)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check passed, want an error with %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), ":wrong@") {
				t.Errorf("error shows a password: %v", err)
			}
			// Run refuses the same way (except for retryable network errors).
			if !isTransient(err) {
				if rerr := src.Run(ctx, nil, capturetest.NewSink(nil)); rerr == nil || !strings.Contains(rerr.Error(), tt.want[0]) {
					t.Errorf("Run: %v, want %q", rerr, tt.want[0])
				}
			}
		})
	}
}

// A slot streaming to another client is reported with its pid.
func TestCheckSlotInUse(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "CREATE TABLE person (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR TABLE person")
	src, _ := e.source("tables: [public.person]", "publication: pub", "slot: busy")
	cfg, _ := pgconn.ParseConfig(e.dsn("postgres") + "&replication=database")
	other, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	if _, err := pglogrepl.CreateReplicationSlot(ctx, other, "busy", "pgoutput", pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication}); err != nil {
		t.Fatal(err)
	}
	if err := pglogrepl.StartReplication(ctx, other, "busy", 0, pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names 'pub'"}}); err != nil {
		t.Fatal(err)
	}
	err = src.Check(ctx)
	if err == nil || !strings.Contains(err.Error(), `replication slot "busy" is in use by another client (pid `) ||
		!strings.Contains(err.Error(), "SELECT pg_terminate_backend(") {
		t.Fatalf("Check: %v", err)
	}
}

// Server settings: wal_level, and no free slot or WAL sender.
func TestCheckServerSettings(t *testing.T) {
	ctx := context.Background()
	p := testenv.NewPostgres(t, testenv.PostgresOptions{Settings: map[string]string{
		"wal_level": "replica", "max_replication_slots": "1", "max_wal_senders": "1"}})
	e := newEnvOn(t, p, "CREATE TABLE person (id int PRIMARY KEY)", "SELECT pg_create_physical_replication_slot('standby1')")
	// Hold the only WAL sender.
	cfg, _ := pgconn.ParseConfig(e.dsn("postgres") + "&replication=database")
	held, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(ctx)
	src, _ := e.source("tables: [public.person]")
	err = src.Check(ctx)
	for _, w := range []string{
		`wal_level is "replica", logical replication needs "logical"; run ALTER SYSTEM SET wal_level = logical and restart the server`,
		"all 1 replication slots (max_replication_slots) are in use; run ALTER SYSTEM SET max_replication_slots = 11 and restart the server",
		"all 1 WAL senders (max_wal_senders) are in use; run ALTER SYSTEM SET max_wal_senders = 11 and restart the server",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Check lacks %q:\n%v", w, err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	e := &env{t: t, db: "x", name: "cfg"}
	tests := []struct {
		yaml string
		want string
	}{
		{"tables: [public.a]", "test.yaml:1: postgres source \"cfg\": dsn is missing"},
		{"dsn: x\ntables: [person]", "test.yaml:2: postgres source \"cfg\": table \"person\" is not schema-qualified"},
		{"dsn: x\ntables: [public.a]\nslto: x", `unknown key "slto" (did you mean "slot"?`},
		{"dsn: x\ntables: [public.a]\nkeys: {public.b: [id]}", `keys names table "public.b", which is not captured`},
		{"dsn: x\ntables: [public.a]\nslot: Bad-Name", `slot name "Bad-Name" is not valid`},
		{"dsn: x", "no tables"},
	}
	for _, tt := range tests {
		var doc yamlDoc
		doc.parse(t, tt.yaml)
		_, err := New(doc.node, optsFor(e))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.yaml, err, tt.want)
		}
		if err != nil && !configs.IsConfigError(err) {
			t.Errorf("%q: not a config error: %v", tt.yaml, err)
		}
	}
}
