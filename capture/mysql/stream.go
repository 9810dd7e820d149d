package mysql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/capture/sqltable"
)

var (
	// errStop: the stream reached its stop position (Once).
	errStop = errors.New("stop position reached")
	// errPause: a snapshot was requested; streaming stopped between
	// transactions.
	errPause = errors.New("paused for a snapshot")
)

// errBroken says the server cannot continue from the checkpoint (its
// binlogs no longer hold the position).
type errBroken struct{ reason string }

func (e errBroken) Error() string { return e.reason }

// flushEvery is the longest a committed change waits in a batch.
const flushEvery = 100 * time.Millisecond

// streamer is one binlog session: one goroutine reads events (go-mysql's
// syncer buffers them meanwhile), cuts batches and applies them.
type streamer struct {
	s    *Source
	srv  *server
	meta *client.Conn
	sink capture.Sink
	reqs <-chan *capture.SnapshotRequest
	req  *capture.SnapshotRequest

	cp      checkpoint // as of the last applied batch
	cur     pos        // after the last transaction seen
	file    string
	logPos  uint32
	tx      *txState
	batch   []capture.Change
	decs    map[uint64]*tableDec
	fences  map[string]pos
	stopAt  pos
	due     bool // a batch is waiting for the next commit
	applied time.Time
	changes int64
}

type txState struct {
	g         gtid
	id        string
	at        time.Time
	idx       int
	skipBelow int
	alone     bool // a standalone event group (DDL): no COMMIT follows
}

// tableDec decodes the rows of one TABLE_MAP.
type tableDec struct {
	tm       *replication.TableMapEvent
	table    string
	captured bool
	names    []string
	types    []colType
	key      []int
}

// stream runs one binlog session from cp. It returns the last durable
// checkpoint and why it ended: errStop, errPause (with the request),
// errBroken, or another error.
func (s *Source) stream(ctx context.Context, meta *client.Conn, srv *server, cp checkpoint, sink capture.Sink,
	stopAt pos, reqs <-chan *capture.SnapshotRequest) (checkpoint, *capture.SnapshotRequest, error) {
	tc, err := s.tlsConfig()
	if err != nil {
		return cp, nil, err
	}
	host, port := s.cfg.Host, uint16(s.cfg.Port)
	if s.net == "unix" {
		host, port = s.addr, 0
	}
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: s.cfg.ServerID, Flavor: gomysql.MariaDBFlavor,
		Host: host, Port: port, User: s.cfg.User, Password: s.cfg.Password, TLSConfig: tc,
		Localhost:               "connector/" + s.name,
		TimestampStringLocation: time.UTC,
		HeartbeatPeriod:         s.cfg.HeartbeatInterval,
		ReadTimeout:             3*s.cfg.HeartbeatInterval + 5*time.Second,
		DisableRetrySync:        true, // Run reconnects, from the durable checkpoint
		VerifyChecksum:          true,
		EventCacheCount:         1024,
		Logger:                  slog.New(slogHandler{s: s}),
		Dialer:                  s.dial,
	})
	defer syncer.Close()
	start, err := gomysql.ParseMariadbGTIDSet(cp.GTID)
	if err != nil {
		return cp, nil, fmt.Errorf("%s: checkpoint GTID %q: %w", s.where(), cp.GTID, err)
	}
	bs, err := syncer.StartSyncGTID(start)
	if err != nil {
		return cp, nil, s.streamErr(err, cp)
	}
	s.log.Info("streaming", "source", s.name, "gtid", cp.GTID, "server_id", s.cfg.ServerID)
	st := &streamer{s: s, srv: srv, meta: meta, sink: sink, reqs: reqs, cp: cp, cur: mustPos(cp.GTID), file: cp.File, logPos: cp.Pos,
		decs: map[uint64]*tableDec{}, fences: map[string]pos{}, stopAt: stopAt, applied: time.Now()}
	for _, f := range cp.Fences {
		st.fences[f.Table] = mustPos(f.At)
	}
	err = st.run(ctx, bs)
	if ctx.Err() != nil {
		return st.cp, nil, nil
	}
	var ae applyError
	if errors.As(err, &ae) {
		return st.cp, nil, fmt.Errorf("%s: %w", s.where(), ae.error)
	}
	return st.cp, st.req, err
}

// applyError is an error from the sink: it ends Run.
type applyError struct{ error }

func (e applyError) Unwrap() error { return e.error }

// streamErr explains an error from the binlog connection.
func (s *Source) streamErr(err error, cp checkpoint) error {
	var myErr *gomysql.MyError
	if errors.As(err, &myErr) {
		switch myErr.Code {
		case gomysql.ER_MASTER_FATAL_ERROR_READING_BINLOG:
			return errBroken{fmt.Sprintf("the server cannot stream from GTID position %s: %s", cp.GTID, myErr.Message)}
		case gomysql.ER_SPECIFIC_ACCESS_DENIED_ERROR, gomysql.ER_ACCESS_DENIED_ERROR:
			return fmt.Errorf("%s: the server refused to stream the binlog to user %q: %s; run GRANT REPLICATION SLAVE ON *.* TO the agent's user: %w", s.where(), s.cfg.User, myErr.Message, err)
		}
	}
	if e := s.explainConnect(err); !strings.Contains(e.Error(), "connect to") || isTransient(err) {
		if isTransient(err) {
			return capture.Transient(fmt.Errorf("%s: binlog stream: %w", s.where(), err))
		}
		return e
	}
	return fmt.Errorf("%s: binlog stream: %w", s.where(), err)
}

func (st *streamer) run(ctx context.Context, bs *replication.BinlogStreamer) error {
	var wctx context.Context
	cancel := context.CancelFunc(func() {})
	tick := func() {
		cancel()
		wctx, cancel = context.WithTimeout(ctx, flushEvery)
	}
	defer func() { cancel() }()
	tick()
	for {
		if st.tx == nil {
			if err := st.boundary(ctx); err != nil {
				return err
			}
		}
		ev, err := bs.GetEvent(wctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				tick()
				st.due = len(st.batch) > 0 || st.cur.String() != st.cp.GTID
				continue
			}
			return st.s.streamErr(err, st.cp)
		}
		if err := st.handle(ctx, ev); err != nil {
			return err
		}
	}
}

// boundary runs between transactions: snapshot requests, the stop
// position, and batches that have waited long enough.
func (st *streamer) boundary(ctx context.Context) error {
	if st.req == nil && st.reqs != nil {
		select {
		case st.req = <-st.reqs:
		default:
		}
	}
	if st.req != nil {
		if err := st.flush(ctx); err != nil {
			return err
		}
		return errPause
	}
	if st.stopAt != nil && st.cur.covers(st.stopAt) {
		if err := st.flush(ctx); err != nil {
			return err
		}
		return errStop
	}
	if st.due || len(st.batch) >= st.s.cfg.BatchSize {
		st.due = false
		if len(st.batch) > 0 || time.Since(st.applied) >= time.Second {
			return st.flush(ctx)
		}
	}
	return nil
}

// flush applies the batch (possibly empty: then it only moves the
// checkpoint) with the position after the last whole transaction.
func (st *streamer) flush(ctx context.Context) error {
	cp := st.cp
	cp.GTID, cp.File, cp.Pos, cp.Tx = st.cur.String(), st.file, st.logPos, nil
	if len(cp.Fences) > 0 && st.fencesPassed() {
		cp.Fences = nil
		st.fences = map[string]pos{}
		st.s.log.Info("stream passed the snapshot's position", "source", st.s.name, "gtid", cp.GTID)
	}
	if len(st.batch) == 0 && cp.GTID == st.cp.GTID && len(cp.Fences) == len(st.cp.Fences) {
		return nil
	}
	return st.apply(ctx, cp)
}

func (st *streamer) fencesPassed() bool {
	for _, p := range st.fences {
		if !st.cur.covers(p) {
			return false
		}
	}
	return true
}

func (st *streamer) apply(ctx context.Context, cp checkpoint) error {
	b := capture.Batch{Changes: st.batch, Checkpoint: cp.encode()}
	if n := len(st.batch); n > 0 {
		b.TransactionID = st.batch[n-1].TransactionID
	}
	if err := st.sink.Apply(ctx, b); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return applyError{err}
	}
	st.changes += int64(len(st.batch))
	st.cp = cp
	st.batch = make([]capture.Change, 0, min(st.s.cfg.BatchSize, 2*len(b.Changes)+16))
	st.applied = time.Now()
	return nil
}

func (st *streamer) handle(ctx context.Context, ev *replication.BinlogEvent) error {
	h := ev.Header
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		st.file, st.logPos = string(e.NextLogName), uint32(e.Position)
		return nil
	case *replication.MariadbGTIDEvent:
		g := gtid{Domain: e.GTID.DomainID, Server: e.GTID.ServerID, Seq: e.GTID.SequenceNumber}
		st.tx = &txState{g: g, id: g.String(), at: time.Unix(int64(h.Timestamp), 0).UTC(),
			alone: e.Flags&replication.BINLOG_MARIADB_FL_STANDALONE != 0}
		if t := st.cp.Tx; t != nil && t.GTID == st.tx.id {
			st.tx.skipBelow = t.Next
		}
	case *replication.RowsEvent:
		if st.tx == nil {
			return fmt.Errorf("%s: row event at %s:%d outside a transaction", st.s.where(), st.file, h.LogPos)
		}
		if err := st.rows(ctx, ev.Header, e); err != nil {
			return err
		}
	case *replication.XIDEvent:
		return st.commit(h)
	case *replication.QueryEvent:
		q := string(e.Query)
		switch {
		case q == "BEGIN":
			return nil
		case q == "COMMIT":
			return st.commit(h)
		}
		if err := st.query(ctx, e, q); err != nil {
			return err
		}
		if st.tx != nil && st.tx.alone {
			return st.commit(h)
		}
	}
	if h.LogPos != 0 && st.tx == nil {
		st.logPos = h.LogPos
	}
	return nil
}

func (st *streamer) commit(h *replication.EventHeader) error {
	if st.tx == nil {
		return nil
	}
	st.cur[st.tx.g.Domain] = st.tx.g
	st.tx = nil
	if h.LogPos != 0 {
		st.logPos = h.LogPos
	}
	return nil
}

// add numbers a change within its transaction, skips what a resumed
// transaction already delivered, and cuts a batch inside a large
// transaction (its checkpoint records how far into it the batch reaches).
func (st *streamer) add(ctx context.Context, c capture.Change) error {
	tx := st.tx
	idx := tx.idx
	tx.idx++
	if idx < tx.skipBelow {
		return nil
	}
	if f, ok := st.fences[c.Record]; ok && f.contains(tx.g) {
		return nil // the snapshot read the table after this transaction
	}
	c.ChangedAt = tx.at
	c.ChangeKey = tx.id + ":" + strconv.Itoa(idx)
	c.Position = fmt.Sprintf("%s:%d %s", st.file, st.logPos, c.ChangeKey)
	c.TransactionID = tx.id
	st.batch = append(st.batch, c)
	if len(st.batch) >= st.s.cfg.BatchSize {
		cp := st.cp
		cp.GTID, cp.File, cp.Pos = st.cur.String(), st.file, st.logPos
		cp.Tx = &txProgress{GTID: tx.id, Next: tx.idx}
		return st.apply(ctx, cp)
	}
	return nil
}

func (st *streamer) rows(ctx context.Context, h *replication.EventHeader, e *replication.RowsEvent) error {
	d, err := st.decoder(e.Table, h)
	if err != nil {
		return err
	}
	var op capture.Op
	step := 1
	switch h.EventType {
	case replication.WRITE_ROWS_EVENTv0, replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2, replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:
		op = capture.OpInsert
	case replication.UPDATE_ROWS_EVENTv0, replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2, replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1,
		replication.PARTIAL_UPDATE_ROWS_EVENT:
		op, step = capture.OpUpdate, 2
	case replication.DELETE_ROWS_EVENTv0, replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2, replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
		op = capture.OpDelete
	default:
		return nil
	}
	if !d.captured {
		st.tx.idx += len(e.Rows) / step
		return nil
	}
	if len(e.SkippedColumns) > 0 {
		for _, sk := range e.SkippedColumns {
			if len(sk) > 0 {
				return fmt.Errorf("%s: a row event of %s at %s:%d lacks columns: binlog_row_image is not FULL on the server (or in the writing session); set binlog_row_image = FULL in the server's my.cnf and run SET GLOBAL binlog_row_image = 'FULL'",
					st.s.where(), d.table, st.file, h.LogPos)
			}
		}
	}
	for i := 0; i+step-1 < len(e.Rows); i += step {
		row := e.Rows[i+step-1]
		c := capture.Change{Record: d.table, Op: op, Values: d.values(row)}
		if step == 2 {
			before := e.Rows[i]
			for _, j := range d.key {
				if !sameValue(fromStream(before[j], &d.types[j]), c.Values[d.names[j]]) {
					c.OldKey = d.keyValues(before)
					break
				}
			}
		}
		if err := st.add(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

func sameValue(a, b any) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func (d *tableDec) values(row []any) map[string]any {
	vals := make(map[string]any, len(d.names))
	for j, v := range row {
		if j < len(d.names) {
			vals[d.names[j]] = fromStream(v, &d.types[j])
		}
	}
	return vals
}

func (d *tableDec) keyValues(row []any) map[string]any {
	out := make(map[string]any, len(d.key))
	for _, j := range d.key {
		out[d.names[j]] = fromStream(row[j], &d.types[j])
	}
	return out
}

// decoder returns the row decoder for a TABLE_MAP, reusing the last one
// while the table's shape is unchanged.
func (st *streamer) decoder(tm *replication.TableMapEvent, h *replication.EventHeader) (*tableDec, error) {
	if d, ok := st.decs[tm.TableID]; ok {
		if d.tm == tm || (bytes.Equal(d.tm.ColumnType, tm.ColumnType) && slices.Equal(d.tm.ColumnMeta, tm.ColumnMeta) &&
			string(d.tm.Schema) == string(tm.Schema) && string(d.tm.Table) == string(tm.Table) &&
			slices.EqualFunc(d.tm.ColumnName, tm.ColumnName, bytes.Equal)) {
			d.tm = tm
			return d, nil
		}
	}
	name := string(tm.Schema) + "." + string(tm.Table)
	d := &tableDec{tm: tm, table: name, captured: slices.Contains(st.s.tables, name)}
	st.decs[tm.TableID] = d
	if !d.captured {
		return d, nil
	}
	d.names = tm.ColumnNameString()
	if len(d.names) != int(tm.ColumnCount) {
		return nil, fmt.Errorf("%s: the binlog at %s:%d has no column names for %s: binlog_row_metadata is not FULL; set binlog_row_metadata = FULL in the server's my.cnf and run SET GLOBAL binlog_row_metadata = 'FULL'",
			st.s.where(), st.file, h.LogPos, name)
	}
	unsigned := tm.UnsignedMap()
	colls := tm.CollationMap()
	esColls := tm.EnumSetCollationMap()
	enums := tm.EnumStrValueMap()
	sets := tm.SetStrValueMap()
	t := st.srv.Tables[name]
	isJSON := map[string]bool{}
	if t != nil {
		for _, c := range t.Columns {
			isJSON[c.Name] = c.JSON
		}
	}
	d.types = make([]colType, len(d.names))
	for i := range d.names {
		coll, ok := colls[i]
		if !ok {
			coll = esColls[i]
		}
		names := enums[i]
		if names == nil {
			names = sets[i]
		}
		d.types[i] = streamType(tm.ColumnType[i], tm.ColumnMeta[i], unsigned[i], st.srv.Charsets[coll], names, isJSON[d.names[i]])
	}
	if t != nil {
		for _, k := range t.Key {
			if j := slices.Index(d.names, k); j >= 0 {
				d.key = append(d.key, j)
			}
		}
	}
	return d, nil
}

var (
	identPart = "(?:`(?:[^`]|``)+`|[\\w$]+)"
	tableRef  = identPart + "(?:\\s*\\.\\s*" + identPart + ")?"
	ddlRe     = regexp.MustCompile(`(?is)^\s*(TRUNCATE|ALTER|RENAME|DROP|CREATE)\b(?:\s+(?:OR\s+REPLACE|ONLINE|IGNORE|TEMPORARY))*\s+TABLES?\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(.*)$`)
	truncRe   = regexp.MustCompile(`(?is)^\s*TRUNCATE\s+(` + tableRef + `)`)
	refRe     = regexp.MustCompile(tableRef)
	commentRe = regexp.MustCompile(`(?s)/\*.*?\*/|--[^\n]*\n?|#[^\n]*\n?`)
)

// ddlTables names the tables a DDL statement touches, qualified with
// defaultDB where it omits the database.
func ddlTables(q, defaultDB string) (verb string, tables []string) {
	q = commentRe.ReplaceAllString(q, " ")
	m := ddlRe.FindStringSubmatch(q)
	if m == nil {
		if t := truncRe.FindStringSubmatch(q); t != nil {
			return "TRUNCATE", []string{qualify(t[1], defaultDB)}
		}
		return "", nil
	}
	verb = strings.ToUpper(m[1])
	rest := m[2]
	switch verb {
	case "ALTER", "CREATE", "TRUNCATE":
		if r := refRe.FindString(rest); r != "" {
			tables = append(tables, qualify(r, defaultDB))
		}
		if verb == "ALTER" {
			// ALTER TABLE a RENAME [TO] b
			if i := regexp.MustCompile(`(?i)\bRENAME\s+(?:TO\s+|AS\s+)?(` + tableRef + `)`).FindStringSubmatch(rest); i != nil {
				tables = append(tables, qualify(i[1], defaultDB))
			}
		}
	case "RENAME", "DROP":
		for _, r := range refRe.FindAllString(rest, -1) {
			u := strings.ToUpper(r)
			if u == "TO" || u == "RESTRICT" || u == "CASCADE" || u == "WAIT" || u == "NOWAIT" {
				continue
			}
			if _, err := strconv.Atoi(r); err == nil {
				continue
			}
			tables = append(tables, qualify(r, defaultDB))
		}
	}
	return verb, tables
}

func qualify(ref, db string) string {
	parts := regexp.MustCompile(`\s*\.\s*`).Split(ref, 2)
	unq := func(s string) string {
		if strings.HasPrefix(s, "`") && strings.HasSuffix(s, "`") && len(s) >= 2 {
			return strings.ReplaceAll(s[1:len(s)-1], "``", "`")
		}
		return s
	}
	if len(parts) == 2 {
		return unq(parts[0]) + "." + unq(parts[1])
	}
	return db + "." + unq(parts[0])
}

// query handles a statement event: DDL on a captured table refreshes its
// description; TRUNCATE becomes OpTruncate.
func (st *streamer) query(ctx context.Context, e *replication.QueryEvent, q string) error {
	verb, tables := ddlTables(q, string(e.Schema))
	if verb == "" {
		return nil
	}
	for _, name := range tables {
		if !slices.Contains(st.s.tables, name) {
			continue
		}
		switch verb {
		case "TRUNCATE":
			if st.tx == nil {
				continue
			}
			if err := st.add(ctx, capture.Change{Record: name, Op: capture.OpTruncate, Reason: "truncated"}); err != nil {
				return err
			}
		case "DROP":
			st.s.log.Warn("a captured table was dropped; its objects stay as they are until it exists again and a snapshot reconciles it",
				"source", st.s.name, "table", name, "gtid", txID(st.tx))
		default:
			st.refresh(name)
		}
	}
	return nil
}

func txID(tx *txState) string {
	if tx == nil {
		return ""
	}
	return tx.id
}

// refresh re-reads a table's description after DDL (the row events that
// follow carry their own column names and types; this keeps the key and
// the JSON columns current) and reports the change.
func (st *streamer) refresh(name string) {
	t, err := st.s.inspectTable(st.meta, name)
	if err != nil || t == nil {
		st.s.log.Warn("cannot read a captured table's definition after DDL", "source", st.s.name, "table", name, "error", err)
		return
	}
	tables := make(map[string]*tableInfo, len(st.srv.Tables))
	for k, v := range st.srv.Tables {
		tables[k] = v
	}
	tables[name] = t
	st.srv.Tables = tables
	for id, d := range st.decs {
		if d.table == name {
			delete(st.decs, id)
		}
	}
	desc := describe(t)
	if old, ok := st.cp.Tables[name]; ok {
		if change := sqltable.DescribeChange(old, desc); change != "" {
			st.s.log.Info("table definition changed; capturing the new columns from this point of the stream", "source", st.s.name,
				"table", name, "change", change, "gtid", txID(st.tx))
		}
	}
	if len(t.Key) == 0 {
		st.s.log.Warn("a captured table has no key any more; add a primary key or configure keys:", "source", st.s.name, "table", name)
	}
	st.cp.Tables = sqltable.MergeColumns(st.cp.Tables, map[string][]colDesc{name: desc})
}
