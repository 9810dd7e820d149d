package mysql

import (
	"context"
	"strings"
	"testing"
)

// Every bad setting is reported with the setting and its fix.
func TestCheckFailures(t *testing.T) {
	e := newEnv(t, "CREATE TABLE nopk (a int, b int)", "CREATE TABLE ok (id int PRIMARY KEY)",
		"CREATE TABLE my (id int PRIMARY KEY) ENGINE=MyISAM")
	e.exec("CREATE USER IF NOT EXISTS 'weak'@'127.0.0.1' IDENTIFIED BY 'pw'",
		"GRANT SELECT ON "+e.db+".ok TO 'weak'@'127.0.0.1'",
		"CREATE USER IF NOT EXISTS 'good'@'127.0.0.1' IDENTIFIED BY 'pw'",
		"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'good'@'127.0.0.1'",
		"GRANT SELECT ON "+e.db+".* TO 'good'@'127.0.0.1'")
	ctx := context.Background()
	cases := []struct {
		name  string
		lines []string
		setup []string // SET GLOBAL before, undone after
		want  []string
	}{
		{"wrong password", []string{"user: good", "password: wrong", "tables: [" + e.table("ok") + "]"}, nil,
			[]string{"access denied for user \"good\" at 127.0.0.1:", "check user and password"}},
		{"unreachable", []string{"host: 127.0.0.1", "port: 1", "tables: [" + e.table("ok") + "]"}, nil,
			[]string{"cannot reach MySQL/MariaDB at 127.0.0.1:1: connection refused"}},
		{"no replication privilege", []string{"user: weak", "password: pw", "tables: [" + e.table("ok") + "]"}, nil,
			[]string{"lacks REPLICATION SLAVE", "GRANT REPLICATION SLAVE ON *.* TO 'weak'@'127.0.0.1'", "GRANT BINLOG MONITOR ON *.* TO 'weak'@'127.0.0.1'"}},
		{"no primary key", []string{"tables: [" + e.table("nopk") + "]"}, nil,
			[]string{"has no primary key and no configured key", "keys: {" + e.table("nopk") + ": [col, ...]}"}},
		{"MyISAM", []string{"tables: [" + e.table("my") + "]"}, nil, []string{"ALTER TABLE `" + e.db + "`.`my` ENGINE = InnoDB"}},
		{"missing table", []string{"tables: [" + e.table("nope") + "]"}, nil, []string{"table " + e.table("nope") + " does not exist"}},
		{"no select", []string{"user: weak", "password: pw", "tables: [" + e.db + ".nopk]", "keys: {" + e.db + ".nopk: [a]}"}, nil,
			[]string{"does not exist (or user weak@127.0.0.1 may not see it)", "GRANT SELECT ON `" + e.db + "`.* TO 'weak'@'127.0.0.1'"}},
		{"statement format", []string{"tables: [" + e.table("ok") + "]"}, []string{"binlog_format = 'STATEMENT'", "binlog_format = 'ROW'"},
			[]string{"binlog_format is STATEMENT", "set binlog_format = ROW in the server's my.cnf"}},
		{"minimal row image", []string{"tables: [" + e.table("ok") + "]"}, []string{"binlog_row_image = 'MINIMAL'", "binlog_row_image = 'FULL'"},
			[]string{"binlog_row_image is MINIMAL", "SET GLOBAL binlog_row_image = 'FULL'"}},
		{"minimal metadata", []string{"tables: [" + e.table("ok") + "]"}, []string{"binlog_row_metadata = 'MINIMAL'", "binlog_row_metadata = 'FULL'"},
			[]string{"binlog_row_metadata is MINIMAL", "SET GLOBAL binlog_row_metadata = 'FULL'"}},
		{"good user", []string{"user: good", "password: pw", "tables: [" + e.table("ok") + "]"}, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				e.exec("SET GLOBAL " + c.setup[0])
				defer e.exec("SET GLOBAL " + c.setup[1])
			}
			src, _ := e.source(c.lines...)
			err := src.Check(ctx)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check passed")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// Configuration mistakes name the key and the fix.
func TestConfigErrors(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ y, want string }{
		{"user: root", "host is missing"},
		{"host: h\nuser: root\ntables: [person]", `table "person" is not database-qualified`},
		{"host: h\nuser: root", "no tables"},
		{"host: h\nuser: root\ntables: [a.b]\ntls: {mode: sometimes}", `tls.mode "sometimes" is not known`},
		{"host: h\nuser: root\ntables: [a.b]\nkeys: {a.c: [x]}", `keys names table "a.c", which is not captured`},
		{"dsn: http://x\ntables: [a.b]", "dsn is not a mysql:// URL"},
	} {
		var doc yamlNode
		doc.parse(t, c.y)
		_, err := New(doc.n, optsFor(e))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.y, err, c.want)
		}
	}
	if a, b := serverIDFor("hr"), serverIDFor("hr"); a != b || a < 1<<30 || a >= 1<<31 {
		t.Errorf("serverIDFor(hr) = %d, %d", a, b)
	}
}
