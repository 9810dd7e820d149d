package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
)

// server is what the checks learned about the server.
type server struct {
	Version  int // server_version_num
	SystemID string
	Database string
	User     string
	Tables   map[string]*tableInfo
	Pub      *pubInfo
	Slot     *slotInfo
}

type tableInfo struct {
	Name     string // schema.table
	OID      uint32
	Kind     string // pg_class.relkind
	Ident    string // pg_class.relreplident: d, n, f, i
	PK       []string
	IdentCol []string // columns of the replica identity
	Key      []string // the key the agent uses: configured, else the primary key
	Columns  []colInfo
	Select   bool
	// Ancestors are the partitioned tables a partition belongs to, nearest
	// first (none for a table that is not a partition).
	Ancestors []string
	// Leaves are a partitioned table's leaf partitions: their changes are
	// logged with their own replica identity.
	Leaves []leafInfo
	// PartCols are the columns that choose a row's partition, at any level
	// of a partitioned table (changing one moves the row).
	PartCols []string
}

type leafInfo struct {
	Name     string
	Kind     string // r, or f for a foreign table (not logged)
	Ident    string
	IdentCol []string
}

type colInfo struct {
	Name      string
	Type      uint32
	TypeName  string // format_type(atttypid, atttypmod)
	Collation string // qualified collation name, "" for non-collatable
}

type pubInfo struct {
	Insert, Update, Delete, Truncate, AllTables bool
	// ViaRoot: publish_via_partition_root (PostgreSQL 13+): changes to
	// partitions are published as changes to the partitioned table.
	ViaRoot bool
	Tables  map[string]pubTable
}

type pubTable struct{ Filtered bool } // row filter or column list (PostgreSQL 15+)

type slotInfo struct {
	Plugin, Type, Database string
	Active                 bool
	ActivePID              int32
	ConfirmedFlush         string
	Temporary              bool
	// Lost: the server invalidated the slot (max_slot_wal_keep_size).
	Lost bool
}

// Check tests the connection, the server settings, the role, the tables,
// the publication and the slot; the error lists every problem with its fix.
func (s *Source) Check(ctx context.Context) error {
	c, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, problems, err := s.inspect(ctx, c)
	if err != nil {
		return err
	}
	if repl, err := s.connectReplication(ctx); err != nil {
		problems = append(problems, err)
	} else {
		repl.Close(context.Background())
	}
	return errors.Join(problems...)
}

// inspect reads the server's state and returns the problems that stop
// capture, each naming the setting and the fix. err is for failures to ask.
func (s *Source) inspect(ctx context.Context, c *pgx.Conn) (*server, []error, error) {
	where := fmt.Sprintf("postgres source %q", s.name)
	srv := &server{Tables: map[string]*tableInfo{}}
	var walLevel string
	var maxSlots, usedSlots, maxSenders, usedSenders int
	var rolRepl, rolSuper bool
	err := c.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('wal_level'),
		current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,
		current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int,
		current_database(), current_user, r.rolreplication, r.rolsuper,
		(SELECT system_identifier::text FROM pg_catalog.pg_control_system())
		FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`).Scan(
		&srv.Version, &walLevel, &maxSlots, &usedSlots, &maxSenders, &usedSenders,
		&srv.Database, &srv.User, &rolRepl, &rolSuper, &srv.SystemID)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: read server settings: %w", where, err)
	}
	var problems []error
	add := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf(where+": "+format, args...))
	}
	if srv.Version < 100000 {
		add("PostgreSQL %d is too old: logical replication with pgoutput needs 10 or newer (14 or newer for logical messages and heartbeats); upgrade the server", srv.Version)
		return srv, problems, nil
	}
	if walLevel != "logical" {
		add("wal_level is %q, logical replication needs \"logical\"; run ALTER SYSTEM SET wal_level = logical and restart the server", walLevel)
	}
	if !rolRepl && !rolSuper {
		add("role %q lacks the REPLICATION attribute; run ALTER ROLE %s WITH REPLICATION", srv.User, quoteIdent(srv.User))
	}

	// Slot.
	slot := &slotInfo{}
	var pid *int32
	var confirmed *string
	var plugin, db *string
	walStatus := "NULL::text"
	if srv.Version >= 130000 {
		walStatus = "wal_status"
	}
	var status *string
	err = c.QueryRow(ctx, `SELECT plugin, slot_type, database, active, active_pid, confirmed_flush_lsn::text, temporary, `+walStatus+`
		FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, s.cfg.Slot).Scan(
		&plugin, &slot.Type, &db, &slot.Active, &pid, &confirmed, &slot.Temporary, &status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		slot = nil
		if !*s.cfg.CreateSlot {
			add("replication slot %q does not exist and create_slot is false; create it with SELECT pg_create_logical_replication_slot(%s, 'pgoutput'), or set create_slot: true",
				s.cfg.Slot, quoteLiteral(s.cfg.Slot))
		} else if usedSlots >= maxSlots {
			add("all %d replication slots (max_replication_slots) are in use; run ALTER SYSTEM SET max_replication_slots = %d and restart the server, or drop an unused slot (SELECT slot_name FROM pg_replication_slots WHERE NOT active; SELECT pg_drop_replication_slot('name'))",
				maxSlots, maxSlots+10)
		}
	case err != nil:
		return nil, nil, fmt.Errorf("%s: read replication slot %q: %w", where, s.cfg.Slot, err)
	default:
		slot.Plugin, slot.Database = deref(plugin), deref(db)
		if pid != nil {
			slot.ActivePID = *pid
		}
		slot.ConfirmedFlush = deref(confirmed)
		slot.Lost = deref(status) == "lost"
		switch {
		case slot.Type != "logical" || slot.Plugin != "pgoutput":
			add("replication slot %q is a %s slot with plugin %q, the agent needs a logical pgoutput slot; set slot: to another name, or drop it with SELECT pg_drop_replication_slot(%s)",
				s.cfg.Slot, slot.Type, slot.Plugin, quoteLiteral(s.cfg.Slot))
		case slot.Database != srv.Database:
			add("replication slot %q belongs to database %q, not %q; set slot: to another name", s.cfg.Slot, slot.Database, srv.Database)
		case slot.Active:
			// Retried by Run: it may be our own previous connection that
			// the server has not seen close yet.
			problems = append(problems, capture.Transient(fmt.Errorf("%s: replication slot %q is in use by another client (pid %d); stop that client (SELECT pg_terminate_backend(%d)) or set slot: to a name of its own",
				where, s.cfg.Slot, slot.ActivePID, slot.ActivePID)))
		}
	}
	srv.Slot = slot
	if usedSenders >= maxSenders {
		add("all %d WAL senders (max_wal_senders) are in use; run ALTER SYSTEM SET max_wal_senders = %d and restart the server, or stop an unused replication client (SELECT * FROM pg_stat_replication)",
			maxSenders, maxSenders+10)
	}

	// Tables.
	for _, name := range s.tables {
		t, err := s.inspectTable(ctx, c, name)
		if err != nil {
			return nil, nil, err
		}
		if t == nil {
			add("table %s does not exist (or role %q cannot see its schema); check tables:, or GRANT USAGE ON SCHEMA %s TO %s",
				name, srv.User, quoteIdent(strings.SplitN(name, ".", 2)[0]), quoteIdent(srv.User))
			continue
		}
		srv.Tables[name] = t
		problems = append(problems, s.tableProblems(t, srv.User, srv.Version)...)
	}
	for _, name := range s.tables {
		t := srv.Tables[name]
		if t == nil {
			continue
		}
		for _, a := range t.Ancestors {
			if srv.Tables[a] != nil {
				add("%s is a partition of %s, which is captured too (through its root, with all its partitions); remove %s from tables", name, a, name)
				break
			}
		}
	}
	partitioned := srv.partitioned()

	// Publication.
	pub := &pubInfo{Tables: map[string]pubTable{}}
	viaRoot := "false"
	if srv.Version >= 130000 {
		viaRoot = "pubviaroot"
	}
	err = c.QueryRow(ctx, `SELECT pubinsert, pubupdate, pubdelete, pubtruncate, puballtables, `+viaRoot+`
		FROM pg_catalog.pg_publication WHERE pubname = $1`, s.cfg.Publication).Scan(
		&pub.Insert, &pub.Update, &pub.Delete, &pub.Truncate, &pub.AllTables, &pub.ViaRoot)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		pub = nil
		if !*s.cfg.CreatePublication {
			add("publication %q does not exist and create_publication is false; create it with CREATE PUBLICATION %s FOR TABLE %s",
				s.cfg.Publication, quoteIdent(s.cfg.Publication), s.tableList(s.tables))
		}
	case err != nil:
		return nil, nil, fmt.Errorf("%s: read publication %q: %w", where, s.cfg.Publication, err)
	default:
		if pub.Tables, err = s.pubTables(ctx, c, srv.Version); err != nil {
			return nil, nil, err
		}
		if !(pub.Insert && pub.Update && pub.Delete && pub.Truncate) && !*s.cfg.CreatePublication {
			add("publication %q does not publish every operation (insert %v, update %v, delete %v, truncate %v), so changes would be missed; run ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')",
				s.cfg.Publication, pub.Insert, pub.Update, pub.Delete, pub.Truncate, quoteIdent(s.cfg.Publication))
		}
		if len(partitioned) > 0 && !pub.ViaRoot && !*s.cfg.CreatePublication {
			add("publication %q does not publish partitioned tables through their root, so changes to %s would arrive as changes to its partitions; run ALTER PUBLICATION %s SET (publish_via_partition_root = true)",
				s.cfg.Publication, strings.Join(partitioned, ", "), quoteIdent(s.cfg.Publication))
		}
		var missing []string
		for _, name := range s.tables {
			pt, ok := pub.Tables[name]
			t := srv.Tables[name]
			switch {
			case ok || t == nil:
			case t.Kind == "p" && !pub.ViaRoot:
				// The publication lists its partitions instead; reported
				// above (or fixed by ensurePublication).
			case len(t.Ancestors) > 0 && pub.ViaRoot && s.pubHasAny(pub, t.Ancestors):
				add("publication %q publishes partitions through their root (publish_via_partition_root), so changes to %s arrive as changes to %s; capture %[3]s instead of %[2]s",
					s.cfg.Publication, name, t.Ancestors[len(t.Ancestors)-1])
			default:
				missing = append(missing, name)
			}
			if pt.Filtered {
				add("publication %q has a row filter or column list on %s, so changes would be missed; run ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %[3]s ADD TABLE %[4]s",
					s.cfg.Publication, name, quoteIdent(s.cfg.Publication), quoteTable(name))
			}
		}
		if len(missing) > 0 && !*s.cfg.CreatePublication {
			add("publication %q does not include %s; run ALTER PUBLICATION %s ADD TABLE %s",
				s.cfg.Publication, strings.Join(missing, ", "), quoteIdent(s.cfg.Publication), s.tableList(missing))
		}
	}
	srv.Pub = pub
	return srv, problems, nil
}

func (s *Source) tableList(tables []string) string {
	q := make([]string, len(tables))
	for i, t := range tables {
		q[i] = quoteTable(t)
	}
	return strings.Join(q, ", ")
}

// partitioned lists the configured partitioned tables.
func (srv *server) partitioned() []string {
	var out []string
	for _, t := range srv.Tables {
		if t.Kind == "p" {
			out = append(out, t.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Source) pubHasAny(pub *pubInfo, tables []string) bool {
	for _, t := range tables {
		if _, ok := pub.Tables[t]; ok {
			return true
		}
	}
	return false
}

// pubTables lists the tables the publication publishes (as
// pg_publication_tables shows them: the roots of partitioned tables with
// publish_via_partition_root, else their partitions), and whether a row
// filter or column list limits them.
func (s *Source) pubTables(ctx context.Context, c *pgx.Conn, version int) (map[string]pubTable, error) {
	q := `SELECT schemaname || '.' || tablename, false FROM pg_catalog.pg_publication_tables WHERE pubname = $1`
	if version >= 150000 {
		q = `SELECT schemaname || '.' || tablename, rowfilter IS NOT NULL OR
			attnames <> (SELECT array_agg(attname ORDER BY attnum) FROM pg_catalog.pg_attribute a
				WHERE a.attrelid = format('%I.%I', schemaname, tablename)::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '')
			FROM pg_catalog.pg_publication_tables WHERE pubname = $1`
	}
	rows, err := c.Query(ctx, q, s.cfg.Publication)
	if err != nil {
		return nil, fmt.Errorf("postgres source %q: read publication %q: %w", s.name, s.cfg.Publication, err)
	}
	out := map[string]pubTable{}
	for rows.Next() {
		var name string
		var filtered *bool
		if err := rows.Scan(&name, &filtered); err != nil {
			return nil, err
		}
		out[name] = pubTable{Filtered: filtered != nil && *filtered}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres source %q: read publication %q: %w", s.name, s.cfg.Publication, err)
	}
	return out, nil
}

// tableProblems checks privileges, the key and the replica identity (of
// every partition, for a partitioned table).
func (s *Source) tableProblems(t *tableInfo, user string, version int) []error {
	where := fmt.Sprintf("postgres source %q", s.name)
	var out []error
	add := func(format string, args ...any) { out = append(out, fmt.Errorf(where+": "+format, args...)) }
	qt := quoteTable(t.Name)
	switch {
	case t.Kind == "p" && version < 130000:
		add("%s is a partitioned table, which PostgreSQL %d cannot publish (13 or newer can, through its root); list its partitions in tables instead", t.Name, version)
		return out
	case t.Kind != "r" && t.Kind != "p":
		kind := map[string]string{"v": "a view", "m": "a materialized view", "f": "a foreign table"}[t.Kind]
		if kind == "" {
			kind = "not a table"
		}
		add("%s is %s; logical replication captures tables only", t.Name, kind)
		return out
	}
	if !t.Select {
		add("role %q may not read %s (needed for snapshots); run GRANT SELECT ON %s TO %s", user, t.Name, qt, quoteIdent(user))
	}
	if len(t.Key) == 0 {
		add("table %s has no primary key and no configured key; add one (ALTER TABLE %s ADD PRIMARY KEY (...)), or name its key columns under keys: {%s: [col, ...]} and run ALTER TABLE %s REPLICA IDENTITY FULL",
			t.Name, qt, t.Name, qt)
		return out
	}
	for _, k := range t.Key {
		if !slices.ContainsFunc(t.Columns, func(c colInfo) bool { return c.Name == k }) {
			add("key column %q of %s (keys:) does not exist; check keys:", k, t.Name)
			return out
		}
	}
	// The delete and key-changing update messages carry the replica
	// identity columns: they must include the key. A partitioned table's
	// rows live in its leaf partitions, each with its own identity.
	if t.Kind == "p" {
		var foreign, lacking []string
		missingCol := ""
		for _, l := range t.Leaves {
			if l.Kind == "f" {
				foreign = append(foreign, l.Name)
				continue
			}
			for _, k := range t.Key {
				if !slices.Contains(l.IdentCol, k) {
					lacking = append(lacking, l.Name)
					missingCol = k
					break
				}
			}
		}
		if len(foreign) > 0 {
			add("partitions %s of %s are foreign tables, whose changes are not in this server's WAL; detach them or capture their own server", strings.Join(foreign, ", "), t.Name)
		}
		if len(lacking) > 0 {
			fixes := make([]string, len(lacking))
			for i, l := range lacking {
				fixes[i] = "ALTER TABLE " + quoteTable(l) + " REPLICA IDENTITY FULL"
			}
			add("partitions %s of %s have a replica identity that does not include key column %q (a primary key on %[2]s gives every partition one), so deletes could not be matched; run %[4]s",
				strings.Join(lacking, ", "), t.Name, missingCol, strings.Join(fixes, "; "))
		}
		return out
	}
	for _, k := range t.Key {
		if !slices.Contains(t.IdentCol, k) {
			ident := map[string]string{"d": "DEFAULT (the primary key)", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}[t.Ident]
			if t.Ident == "d" && len(t.PK) == 0 {
				ident = "DEFAULT, and there is no primary key"
			}
			add("table %s has REPLICA IDENTITY %s, which does not include key column %q, so deletes could not be matched; run ALTER TABLE %s REPLICA IDENTITY FULL (or USING INDEX on a unique index over the key)",
				t.Name, ident, k, qt)
			break
		}
	}
	return out
}

// inspectTable reads a table's columns, key and replica identity; nil if it
// does not exist.
func (s *Source) inspectTable(ctx context.Context, c *pgx.Conn, name string) (*tableInfo, error) {
	schema, table, _ := sqltable.Split(name)
	t := &tableInfo{Name: name}
	var isPartition bool
	var version int
	err := c.QueryRow(ctx, `SELECT c.oid, c.relkind::text, c.relreplident::text, has_table_privilege(c.oid, 'SELECT'),
			c.relispartition, current_setting('server_version_num')::int
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, schema, table).Scan(&t.OID, &t.Kind, &t.Ident, &t.Select, &isPartition, &version)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("postgres source %q: read table %s: %w", s.name, name, err)
	}
	rows, err := c.Query(ctx, `SELECT a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod),
			COALESCE((SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname) FROM pg_catalog.pg_collation co
				JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation), ''),
			COALESCE((SELECT i.indisprimary FROM pg_catalog.pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY(i.indkey)), false),
			COALESCE((SELECT true FROM pg_catalog.pg_index i WHERE i.indrelid = a.attrelid AND i.indisreplident AND a.attnum = ANY(i.indkey)), false)
		FROM pg_catalog.pg_attribute a
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, t.OID)
	if err != nil {
		return nil, fmt.Errorf("postgres source %q: read columns of %s: %w", s.name, name, err)
	}
	var identIdx []string
	for rows.Next() {
		var col colInfo
		var pk, ri bool
		if err := rows.Scan(&col.Name, &col.Type, &col.TypeName, &col.Collation, &pk, &ri); err != nil {
			return nil, err
		}
		t.Columns = append(t.Columns, col)
		if pk {
			t.PK = append(t.PK, col.Name)
		}
		if ri {
			identIdx = append(identIdx, col.Name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres source %q: read columns of %s: %w", s.name, name, err)
	}
	// The primary key in index order, not column order.
	if len(t.PK) > 1 {
		rows, err := c.Query(ctx, `SELECT a.attname FROM pg_catalog.pg_index i
			CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
			JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord`, t.OID)
		if err != nil {
			return nil, fmt.Errorf("postgres source %q: read primary key of %s: %w", s.name, name, err)
		}
		pk, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("postgres source %q: read primary key of %s: %w", s.name, name, err)
		}
		t.PK = pk
	}
	switch t.Ident {
	case "d":
		t.IdentCol = t.PK
	case "i":
		t.IdentCol = identIdx
	case "f":
		for _, col := range t.Columns {
			t.IdentCol = append(t.IdentCol, col.Name)
		}
	}
	t.Key = t.PK
	if k := s.cfg.Keys[name]; len(k) > 0 {
		t.Key = k
	}
	if version >= 120000 {
		if err := s.inspectPartitions(ctx, c, t, isPartition); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// inspectPartitions reads a partition's ancestors, or a partitioned
// table's leaf partitions with the columns of their replica identities.
func (s *Source) inspectPartitions(ctx context.Context, c *pgx.Conn, t *tableInfo, isPartition bool) error {
	if isPartition {
		rows, err := c.Query(ctx, `SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_partition_ancestors($1) WITH ORDINALITY AS a(relid, ord)
			JOIN pg_catalog.pg_class c ON c.oid = a.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE a.relid <> $1 ORDER BY a.ord`, t.OID)
		if err == nil {
			t.Ancestors, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			return fmt.Errorf("postgres source %q: read the partition ancestors of %s: %w", s.name, t.Name, err)
		}
	}
	if t.Kind != "p" {
		return nil
	}
	rows, err := c.Query(ctx, `SELECT n.nspname || '.' || c.relname, c.relkind::text, c.relreplident::text,
			COALESCE(CASE c.relreplident
				WHEN 'f' THEN (SELECT array_agg(a.attname::text) FROM pg_catalog.pg_attribute a
					WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
				ELSE (SELECT array_agg(a.attname::text) FROM pg_catalog.pg_index i
					JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
					WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END)
			END, '{}')
		FROM pg_catalog.pg_partition_tree($1) pt JOIN pg_catalog.pg_class c ON c.oid = pt.relid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE pt.isleaf ORDER BY 1`, t.OID)
	if err != nil {
		return fmt.Errorf("postgres source %q: read the partitions of %s: %w", s.name, t.Name, err)
	}
	t.Leaves, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (leafInfo, error) {
		var l leafInfo
		err := r.Scan(&l.Name, &l.Kind, &l.Ident, &l.IdentCol)
		return l, err
	})
	if err == nil {
		rows, err = c.Query(ctx, `SELECT DISTINCT a.attname::text FROM pg_catalog.pg_partition_tree($1) pt
			JOIN pg_catalog.pg_partitioned_table p ON p.partrelid = pt.relid
			JOIN pg_catalog.pg_attribute a ON a.attrelid = pt.relid AND a.attnum = ANY(p.partattrs::int2[])
			ORDER BY 1`, t.OID)
		if err == nil {
			t.PartCols, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
	}
	if err != nil {
		return fmt.Errorf("postgres source %q: read the partitions of %s: %w", s.name, t.Name, err)
	}
	return nil
}

// ensurePublication creates the publication or adds missing tables and
// operations when create_publication allows it.
func (s *Source) ensurePublication(ctx context.Context, c *pgx.Conn, srv *server) error {
	if !*s.cfg.CreatePublication {
		return nil
	}
	where := fmt.Sprintf("postgres source %q", s.name)
	pub := quoteIdent(s.cfg.Publication)
	explain := func(sql string, err error) error {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return fmt.Errorf("%s: %s failed: %s; creating a publication takes the CREATE privilege on the database and ownership of the tables: let the tables' owner run it, then set create_publication: false: %w",
				where, sql, pgErr.Message, err)
		}
		return fmt.Errorf("%s: %s: %w", where, sql, err)
	}
	partitioned := srv.partitioned()
	if srv.Pub == nil {
		with := "publish = 'insert, update, delete, truncate'"
		if len(partitioned) > 0 {
			with += ", publish_via_partition_root = true"
		}
		sql := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (%s)", pub, s.tableList(s.tables), with)
		if _, err := c.Exec(ctx, sql); err != nil {
			return explain(sql, err)
		}
		s.log.Info("created publication", "source", s.name, "publication", s.cfg.Publication, "tables", s.tables)
		return nil
	}
	if !(srv.Pub.Insert && srv.Pub.Update && srv.Pub.Delete && srv.Pub.Truncate) {
		sql := fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')", pub)
		if _, err := c.Exec(ctx, sql); err != nil {
			return explain(sql, err)
		}
	}
	if len(partitioned) > 0 && !srv.Pub.ViaRoot {
		sql := fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true)", pub)
		if _, err := c.Exec(ctx, sql); err != nil {
			return explain(sql, err)
		}
		s.log.Info("the publication now publishes partitioned tables through their root", "source", s.name, "publication", s.cfg.Publication,
			"tables", partitioned)
		tables, err := s.pubTables(ctx, c, srv.Version)
		if err != nil {
			return err
		}
		srv.Pub.ViaRoot, srv.Pub.Tables = true, tables
	}
	if srv.Pub.AllTables {
		return nil
	}
	var missing []string
	for _, t := range s.tables {
		if _, ok := srv.Pub.Tables[t]; !ok {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		sql := fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pub, s.tableList(missing))
		if _, err := c.Exec(ctx, sql); err != nil {
			return explain(sql, err)
		}
		s.log.Info("added tables to the publication", "source", s.name, "publication", s.cfg.Publication, "tables", missing)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
