package mysql

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
)

// server is what the checks learned about the server.
type server struct {
	Flavor   string // mariadb or mysql
	Version  string
	ServerID uint32
	Domain   uint32 // MariaDB gtid_domain_id
	UUID     string // MySQL server_uuid
	Hostname string
	Port     int
	User     string // CURRENT_USER(), user@host
	Tables   map[string]*tableInfo
	// Charsets maps collation ids to character set names.
	Charsets map[uint64]string
}

// identity names the server a GTID position belongs to.
func (srv *server) identity() string {
	if srv.Flavor == "mysql" {
		return "mysql:" + srv.UUID
	}
	return fmt.Sprintf("mariadb:server_id=%d,domain=%d", srv.ServerID, srv.Domain)
}

type tableInfo struct {
	Name    string // db.table
	Engine  string
	PK      []string
	Key     []string // configured, else the primary key
	Columns []colInfo
	Select  bool
}

type colInfo struct {
	Name       string
	DataType   string // information_schema DATA_TYPE
	ColumnType string // COLUMN_TYPE, e.g. "int(10) unsigned"
	Charset    string
	Fsp        int
	JSON       bool // MySQL's JSON, or MariaDB's LONGTEXT with a json_valid check
	Virtual    bool // a VIRTUAL generated column (not in the binlog's row images on MySQL)
	typ        colType
}

// Check tests the connection, the server settings, the privileges and the
// tables; the error lists every problem with its fix.
func (s *Source) Check(ctx context.Context) error {
	c, _, err := s.open(ctx)
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

// open connects and checks the server; what the checks find is an error
// listing every problem with its fix.
func (s *Source) open(ctx context.Context) (*client.Conn, *server, error) {
	c, err := s.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	srv, problems, err := s.inspect(ctx, c)
	if err == nil {
		err = errors.Join(problems...)
	}
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	s.setID(srv)
	return c, srv, nil
}

func (s *Source) where() string { return fmt.Sprintf("mysql source %q", s.name) }

// query runs a statement and returns its rows as strings (NULL as nil).
func query(c *client.Conn, q string, args ...any) ([][]*string, error) {
	r, err := c.Execute(q, args...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Resultset == nil {
		return nil, nil
	}
	out := make([][]*string, len(r.Values))
	for i, row := range r.Values {
		out[i] = make([]*string, len(row))
		for j := range row {
			if row[j].Type == gomysql.FieldValueTypeNull {
				continue
			}
			var v string
			if row[j].Type == gomysql.FieldValueTypeString {
				v = string(row[j].AsString())
			} else {
				v = row[j].String()
			}
			out[i][j] = &v
		}
	}
	return out, nil
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// inspect reads the server's state and returns the problems that stop
// capture, each naming the setting and the fix. err is for failures to ask.
func (s *Source) inspect(ctx context.Context, c *client.Conn) (*server, []error, error) {
	where := s.where()
	srv := &server{Tables: map[string]*tableInfo{}, Charsets: map[uint64]string{}}
	rows, err := query(c, "SELECT VERSION(), @@GLOBAL.server_id, @@hostname, @@port, CURRENT_USER()")
	if err != nil || len(rows) != 1 {
		return nil, nil, capture.Transient(fmt.Errorf("%s: read server settings: %w", where, err))
	}
	r := rows[0]
	srv.Version, srv.Hostname, srv.User = str(r[0]), str(r[2]), str(r[4])
	id, _ := strconv.ParseUint(str(r[1]), 10, 32)
	srv.ServerID = uint32(id)
	srv.Port, _ = strconv.Atoi(str(r[3]))
	srv.Flavor = "mysql"
	if strings.Contains(strings.ToLower(srv.Version), "mariadb") {
		srv.Flavor = "mariadb"
	}
	var problems []error
	add := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf(where+": "+format, args...))
	}
	if srv.Flavor == "mysql" {
		add("the server at %s is MySQL %s; this agent version captures MariaDB 10.5 or newer only (its consistent snapshot needs MariaDB's binlog_snapshot_gtid_pos)", s.addr, srv.Version)
		return srv, problems, nil
	}
	major, minor := versionOf(srv.Version)
	if major < 10 || (major == 10 && minor < 5) {
		add("MariaDB %s is too old: the agent needs 10.5 or newer (binlog_row_metadata, BINLOG MONITOR); upgrade the server", srv.Version)
		return srv, problems, nil
	}
	rows, err = query(c, `SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format, @@GLOBAL.binlog_row_image,
		@@GLOBAL.binlog_row_metadata, @@GLOBAL.gtid_domain_id`)
	if err != nil || len(rows) != 1 {
		return nil, nil, capture.Transient(fmt.Errorf("%s: read binlog settings: %w", where, err))
	}
	r = rows[0]
	dom, _ := strconv.ParseUint(str(r[4]), 10, 32)
	srv.Domain = uint32(dom)
	if v := str(r[0]); v != "1" && !strings.EqualFold(v, "ON") {
		add("the binary log is off (log_bin); add log_bin = mariadb-bin (and server_id = <unique number>) under [mariadbd] in the server's my.cnf and restart it")
	}
	if v := str(r[1]); !strings.EqualFold(v, "ROW") {
		add("binlog_format is %s; the agent reads row events: set binlog_format = ROW in the server's my.cnf and run SET GLOBAL binlog_format = 'ROW' (sessions keep their format until they reconnect)", v)
	}
	if v := str(r[2]); !strings.EqualFold(v, "FULL") {
		add("binlog_row_image is %s; the agent needs whole rows before and after each change: set binlog_row_image = FULL in the server's my.cnf and run SET GLOBAL binlog_row_image = 'FULL'", v)
	}
	if v := str(r[3]); !strings.EqualFold(v, "FULL") {
		add("binlog_row_metadata is %s; the agent needs column names and types in the binlog: set binlog_row_metadata = FULL in the server's my.cnf and run SET GLOBAL binlog_row_metadata = 'FULL'", v)
	}
	if srv.ServerID == s.cfg.ServerID {
		add("the agent's replica server_id %d is the server's own server_id; set server_id: to another number in the source's configuration", s.cfg.ServerID)
	}

	// Privileges.
	grants, err := s.privileges(c)
	if err != nil {
		return nil, nil, capture.Transient(fmt.Errorf("%s: read privileges of %s: %w", where, srv.User, err))
	}
	account := quoteAccount(srv.User)
	has := func(p string) bool { return grants["ALL PRIVILEGES"] || grants["SUPER"] || grants[p] }
	if !has("REPLICATION SLAVE") {
		add("user %s lacks REPLICATION SLAVE (needed to read the binlog); run GRANT REPLICATION SLAVE ON *.* TO %s", srv.User, account)
	}
	if !has("BINLOG MONITOR") && !has("REPLICATION CLIENT") {
		add("user %s lacks BINLOG MONITOR (needed to list the binlog files and check that they still hold the agent's position); run GRANT BINLOG MONITOR ON *.* TO %s", srv.User, account)
	}

	// Collations, for the binlog's character set ids.
	rows, err = query(c, "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")
	if err != nil {
		return nil, nil, capture.Transient(fmt.Errorf("%s: read collations: %w", where, err))
	}
	for _, r := range rows {
		id, _ := strconv.ParseUint(str(r[0]), 10, 64)
		srv.Charsets[id] = str(r[1])
	}

	// Tables.
	for _, name := range s.tables {
		t, err := s.inspectTable(c, name)
		if err != nil {
			return nil, nil, err
		}
		if t == nil {
			db, _, _ := sqltable.Split(name)
			add("table %s does not exist (or user %s may not see it); check tables:, or run GRANT SELECT ON %s.* TO %s",
				name, srv.User, quoteIdent(db), account)
			continue
		}
		srv.Tables[name] = t
		problems = append(problems, s.tableProblems(t, srv.User)...)
	}
	return srv, problems, nil
}

// privileges lists the current user's global privileges.
func (s *Source) privileges(c *client.Conn) (map[string]bool, error) {
	rows, err := query(c, "SHOW GRANTS")
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, r := range rows {
		g := str(r[0])
		// GRANT p1, p2 ON *.* TO ...
		up := strings.ToUpper(g)
		if !strings.HasPrefix(up, "GRANT ") {
			continue
		}
		on := strings.Index(up, " ON ")
		if on < 0 || !strings.HasPrefix(strings.TrimSpace(up[on+4:]), "*.*") {
			continue
		}
		for _, p := range strings.Split(up[len("GRANT "):on], ",") {
			out[strings.TrimSpace(p)] = true
		}
	}
	return out, nil
}

// quoteAccount turns CURRENT_USER()'s user@host into 'user'@'host'.
func quoteAccount(u string) string {
	i := strings.LastIndex(u, "@")
	if i < 0 {
		return quoteLiteral(u)
	}
	return quoteLiteral(u[:i]) + "@" + quoteLiteral(u[i+1:])
}

func versionOf(v string) (major, minor int) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) >= 2 {
		major, _ = strconv.Atoi(parts[0])
		minor, _ = strconv.Atoi(parts[1])
	}
	return
}

func (s *Source) tableProblems(t *tableInfo, user string) []error {
	where := s.where()
	var out []error
	add := func(format string, args ...any) { out = append(out, fmt.Errorf(where+": "+format, args...)) }
	qt := quoteTable(t.Name)
	if !t.Select {
		add("user %s may not read %s (needed for snapshots); run GRANT SELECT ON %s TO %s", user, t.Name, qt, quoteAccount(user))
	}
	if !strings.EqualFold(t.Engine, "InnoDB") {
		add("table %s uses the %s engine, which has no consistent snapshots or transactions; convert it with ALTER TABLE %s ENGINE = InnoDB", t.Name, t.Engine, qt)
	}
	if len(t.Key) == 0 {
		add("table %s has no primary key and no configured key; add one (ALTER TABLE %s ADD PRIMARY KEY (...)), or name its key columns under keys: {%s: [col, ...]}",
			t.Name, qt, t.Name)
		return out
	}
	for _, k := range t.Key {
		if !slices.ContainsFunc(t.Columns, func(c colInfo) bool { return c.Name == k }) {
			add("key column %q of %s (keys:) does not exist; check keys:", k, t.Name)
		}
	}
	return out
}

// inspectTable reads a table's engine, columns and key; nil if it does not
// exist (or is not visible).
func (s *Source) inspectTable(c *client.Conn, name string) (*tableInfo, error) {
	db, table, _ := sqltable.Split(name)
	rows, err := query(c, `SELECT TABLE_TYPE, COALESCE(ENGINE, '') FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, db, table)
	if err != nil {
		return nil, capture.Transient(fmt.Errorf("%s: read table %s: %w", s.where(), name, err))
	}
	if len(rows) == 0 {
		return nil, nil
	}
	t := &tableInfo{Name: name, Engine: str(rows[0][1])}
	if str(rows[0][0]) != "BASE TABLE" {
		return nil, fmt.Errorf("%s: %s is a %s; the binlog captures tables only", s.where(), name, strings.ToLower(str(rows[0][0])))
	}
	rows, err = query(c, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COALESCE(CHARACTER_SET_NAME, ''),
			COALESCE(DATETIME_PRECISION, 0), COLUMN_KEY, COALESCE(EXTRA, ''),
			(SELECT COUNT(*) FROM information_schema.CHECK_CONSTRAINTS cc WHERE cc.CONSTRAINT_SCHEMA = c.TABLE_SCHEMA
				AND cc.TABLE_NAME = c.TABLE_NAME AND cc.CHECK_CLAUSE = CONCAT('json_valid(', CHAR(96 USING utf8mb4), c.COLUMN_NAME, CHAR(96 USING utf8mb4), ')'))
		FROM information_schema.COLUMNS c WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, db, table)
	if err != nil {
		return nil, capture.Transient(fmt.Errorf("%s: read columns of %s: %w", s.where(), name, err))
	}
	for _, r := range rows {
		col := colInfo{Name: str(r[0]), DataType: strings.ToLower(str(r[1])), ColumnType: str(r[2]), Charset: str(r[3])}
		col.Fsp, _ = strconv.Atoi(str(r[4]))
		extra := strings.ToUpper(str(r[6]))
		col.Virtual = strings.Contains(extra, "VIRTUAL")
		col.JSON = col.DataType == "json" || (col.DataType == "longtext" && str(r[7]) != "0")
		col.typ = snapshotType(col)
		t.Columns = append(t.Columns, col)
	}
	rows, err = query(c, `SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`, db, table)
	if err != nil {
		return nil, capture.Transient(fmt.Errorf("%s: read the primary key of %s: %w", s.where(), name, err))
	}
	for _, r := range rows {
		t.PK = append(t.PK, str(r[0]))
	}
	t.Key = t.PK
	if k, ok := s.cfg.Keys[name]; ok {
		t.Key = k
	}
	if _, err := c.Execute("SELECT 1 FROM " + quoteTable(name) + " LIMIT 0"); err == nil {
		t.Select = true
	} else {
		var myErr *gomysql.MyError
		if !errors.As(err, &myErr) || (myErr.Code != gomysql.ER_TABLEACCESS_DENIED_ERROR && myErr.Code != gomysql.ER_COLUMNACCESS_DENIED_ERROR) {
			return nil, capture.Transient(fmt.Errorf("%s: read %s: %w", s.where(), name, err))
		}
	}
	return t, nil
}

// describe is a table's column list for schema-change reports.
func describe(t *tableInfo) []colDesc {
	out := make([]colDesc, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = colDesc{Name: c.Name, Type: c.ColumnType}
	}
	return out
}
