// Package ldap captures Active Directory and other LDAP directories
// (OpenLDAP, 389 DS, …): full snapshots by paged search, and incremental
// change tracking by DirSync or uSNChanged on AD, RFC 4533 syncrepl or
// modifyTimestamp polling elsewhere. Keys are stable through renames and
// moves: the AD objectGUID in .NET string form, lower case, or the
// entryUUID. See docs/sources/ldap.md.
package ldap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/configs"
)

func init() {
	capture.Register("ldap", func(node *yaml.Node, opts capture.Options) (capture.Source, error) {
		return New(node, opts)
	})
}

// Source is an LDAP or Active Directory source.
type Source struct {
	cfg   *config
	opts  capture.Options
	log   capture.Logger
	now   func() time.Time
	sess  *session
	retry time.Duration // first retry delay; doubles up to a minute
	chunk int           // changed objects re-read per round trip
	marks *marks        // the unit markers of the current cycle
}

var (
	_ capture.Source      = (*Source)(nil)
	_ capture.Snapshotter = (*Source)(nil)
	_ capture.Checker     = (*Source)(nil)
	_ capture.Identity    = (*Source)(nil)
)

// New builds a source from its config node (decoded strictly).
func New(node *yaml.Node, opts capture.Options) (*Source, error) {
	file := opts.File
	if file == "" {
		file = "config"
	}
	cfg, err := decodeConfig(file, node)
	if err != nil {
		return nil, err
	}
	if opts.Name != "" {
		cfg.Name = opts.Name
	}
	if opts.Log != nil && !cfg.TLS.StartTLS {
		for _, u := range cfg.urls {
			switch {
			case !strings.HasPrefix(strings.ToLower(u), "ldap://"):
			case cfg.SASL.Mechanism != "":
				// No password on the wire, but no SASL security layer
				// either (go-ldap has none): the data is not protected.
				opts.Log.Warn("Kerberos bind without TLS: the directory's data travels unencrypted and unsigned; use ldaps:// or tls.start_tls: true", "source", cfg.Name, "url", u)
			case cfg.BindDN != "":
				opts.Log.Warn("the bind password travels unencrypted; use ldaps:// or tls.start_tls: true", "source", cfg.Name, "url", u)
			}
		}
	}
	if cfg.Name == "" {
		cfg.Name = "ldap"
	}
	for _, want := range opts.Records {
		if !slices.Contains(cfg.recordNames(), want) {
			return nil, configs.Errorf(file, node, "define it under records, or fix the mapping's record name",
				"ldap source %q: a mapping selects record %q, which the source does not define (records: %s)",
				cfg.Name, want, strings.Join(cfg.recordNames(), ", "))
		}
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.TLS.InsecureSkipVerify {
		log.Warn("TLS certificate verification is OFF (tls.insecure_skip_verify); configure tls.ca_file instead", "source", cfg.Name)
	}
	return &Source{cfg: cfg, opts: opts, log: log, now: time.Now, retry: time.Second, chunk: defaultChunk}, nil
}

// ID is the register's stable URI, ldap://<domain>/<base DN>.
func (s *Source) ID() string { return s.cfg.id() }

// session holds the two connections of a cycle: stream carries the long
// searches (snapshot pages, DirSync, syncrepl) and has no per-request
// timeout, so go-ldap never drops a response while the consumer is busy
// applying a batch; lookup carries short reads (ranges, parents, re-reads)
// with a timeout.
type session struct {
	stream, lookup *conn
}

func (ss *session) close() {
	ss.stream.Close()
	ss.lookup.Close()
}

func (s *Source) connect(ctx context.Context) (*session, error) {
	if s.sess != nil && !s.sess.stream.IsClosing() && !s.sess.lookup.IsClosing() {
		return s.sess, nil
	}
	// A server closes idle connections (AD after 15 minutes): dial anew
	// rather than fail the next cycle.
	s.disconnect()
	st, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	tc, err := s.tlsConfig()
	if err != nil {
		st.Close()
		return nil, err
	}
	lk, err := s.dialOne(ctx, st.url, tc)
	if err != nil {
		st.Close()
		return nil, err
	}
	st.SetTimeout(0)
	s.sess = &session{stream: st, lookup: lk}
	return s.sess, nil
}

func (s *Source) disconnect() {
	if s.sess != nil {
		s.sess.close()
		s.sess = nil
	}
}

// Run delivers changes until ctx is done (or, with Options.Once, until it
// has delivered what the directory holds now). The first run takes an
// initial snapshot; later runs resume from checkpoint.
func (s *Source) Run(ctx context.Context, stored []byte, sink capture.Sink) error {
	defer s.disconnect()
	cp, err := decodeCheckpoint(stored)
	brk := ""
	if err != nil {
		// Without a readable position continuity is lost: say so and
		// reconcile, rather than refuse to start.
		s.log.Warn("stored position unusable; starting a new epoch with a full reconcile", "source", s.cfg.Name, "err", err)
		brk, cp = err.Error(), &checkpoint{Mode: "invalid"}
	}
	delay := s.retry
	failures := 0
	for {
		next, err := s.cycle(ctx, cp, brk, sink)
		if err == nil {
			cp, brk, delay, failures = next, "", s.retry, 0
			if s.opts.Once {
				return nil
			}
			if !capture.Sleep(ctx, s.cfg.PollInterval) {
				return nil
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		s.disconnect()
		if !transient(err) {
			return err
		}
		failures++
		if s.opts.Once && failures > 3 {
			return err
		}
		s.log.Warn("ldap cycle failed; retrying on a new connection", "source", s.cfg.Name, "err", err, "retry_in", delay)
		if !capture.Sleep(ctx, delay) {
			return nil
		}
		delay = min(2*delay, time.Minute)
	}
}

// errEpoch says continuity with the stored position broke.
type errEpoch struct{ reason string }

func (e *errEpoch) Error() string { return "continuity lost: " + e.reason }

// errReconcile says the feed cannot tell deletions this time (an RFC 4533
// present phase): a reconcile snapshot must follow. pos is the position to
// store with it.
type errReconcile struct {
	reason string
	pos    *checkpoint
}

func (e *errReconcile) Error() string { return "reconcile needed: " + e.reason }

// cycle runs one step: the initial snapshot, or an incremental read
// (followed by a reconcile when one is due or the feed asks for it). It
// returns the checkpoint now durable.
func (s *Source) cycle(ctx context.Context, cp *checkpoint, brk string, sink capture.Sink) (*checkpoint, error) {
	ss, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	if cp == nil {
		s.log.Info("initial snapshot", "source", s.cfg.Name)
		return s.fullSnapshot(ctx, ss, sink, true, "", nil)
	}
	if brk == "" {
		brk = s.continuity(ss, cp)
	}
	if brk != "" {
		s.log.Warn("new epoch: full reconcile", "source", s.cfg.Name, "reason", brk)
		return s.fullSnapshot(ctx, ss, sink, false, brk, nil)
	}
	if s.marks, err = s.readMarks(ctx, ss.lookup, s.newReader(ss.lookup)); err != nil {
		return nil, err
	}
	if s.marks.changed(cp.Marks) {
		// A unit marked or unmarked changes what lies in scope below it:
		// a reconcile applies that, under the engine's deletion guard.
		s.log.Info("unit markers changed: reconcile", "source", s.cfg.Name)
		return s.fullSnapshot(ctx, ss, sink, false, "", nil)
	}
	next, err := s.incremental(ctx, ss, cp, sink)
	var ee *errEpoch
	var er *errReconcile
	switch {
	case errors.As(err, &ee):
		s.log.Warn("new epoch: full reconcile", "source", s.cfg.Name, "reason", ee.reason)
		return s.fullSnapshot(ctx, ss, sink, false, ee.reason, nil)
	case errors.As(err, &er):
		s.log.Info("reconcile", "source", s.cfg.Name, "reason", er.reason)
		return s.fullSnapshot(ctx, ss, sink, false, "", er.pos)
	case err != nil:
		return nil, err
	}
	if s.cfg.reconcile > 0 && s.now().Sub(next.LastReconcile) >= s.cfg.reconcile {
		s.log.Info("scheduled reconcile", "source", s.cfg.Name, "last", next.LastReconcile)
		return s.fullSnapshot(ctx, ss, sink, false, "", nil)
	}
	return next, nil
}

// continuity compares the stored position with the server; a non-empty
// result is the reason for a new epoch.
func (s *Source) continuity(ss *session, cp *checkpoint) string {
	c := ss.stream
	switch {
	case cp.Mode != s.cfg.ChangeTracking:
		return fmt.Sprintf("change tracking changed from %q to %q", cp.Mode, s.cfg.ChangeTracking)
	case cp.Config != s.cfg.hashRecords():
		return "the records' filters, bases or attributes changed; the stored position does not cover them"
	}
	if s.cfg.Flavor == FlavorAD {
		if cp.InvocationID != "" && cp.InvocationID != c.invocationID {
			if cp.Mode == TrackUSN && cp.DSService != c.dsService {
				return fmt.Sprintf("another domain controller answers (%s, was %s); uSNChanged positions are per DC", c.dsService, cp.DSService)
			}
			if cp.Mode == TrackUSN || cp.DSService == c.dsService {
				return fmt.Sprintf("the domain controller's invocationId changed from %s to %s (restored from backup?)", cp.InvocationID, c.invocationID)
			}
			// DirSync cookies carry across DCs (duplicates converge).
		}
		return ""
	}
	if len(cp.ContextCSN) > 0 {
		now, err := c.readContextCSN()
		if err == nil && behind(now, cp.ContextCSN) {
			return fmt.Sprintf("the directory's contextCSN %v is behind the stored %v (restored from backup?)", now, cp.ContextCSN)
		}
	}
	return ""
}

// behind reports whether every CSN of now is older than the newest stored
// one: the server lost changes we have seen.
func behind(now, stored []string) bool {
	if len(now) == 0 {
		return false
	}
	maxStored := ""
	for _, c := range stored {
		maxStored = max(maxStored, c)
	}
	for _, c := range now {
		if c >= maxStored {
			return false
		}
	}
	return true
}

func (s *Source) incremental(ctx context.Context, ss *session, cp *checkpoint, sink capture.Sink) (*checkpoint, error) {
	switch s.cfg.ChangeTracking {
	case TrackDirSync:
		return s.pollDirSync(ctx, ss, cp, sink)
	case TrackUSN:
		return s.pollUSN(ctx, ss, cp, sink)
	case TrackSyncrepl:
		return s.pollSyncrepl(ctx, ss, cp, sink)
	default:
		return s.pollTimestamp(ctx, ss, cp, sink)
	}
}

// Snapshot takes a full snapshot now (connector snapshot): a reconcile
// that also stores a fresh position, taken before the read.
func (s *Source) Snapshot(ctx context.Context, sink capture.Sink) error {
	defer s.disconnect()
	for attempt := 1; ; attempt++ {
		ss, err := s.connect(ctx)
		if err == nil {
			_, err = s.fullSnapshot(ctx, ss, sink, false, "", nil)
		}
		if err == nil || !transient(err) || attempt == 3 || ctx.Err() != nil {
			return err
		}
		s.disconnect()
		s.log.Warn("snapshot failed; retrying", "source", s.cfg.Name, "err", err)
		if !capture.Sleep(ctx, time.Duration(attempt)*s.retry) {
			return ctx.Err()
		}
	}
}

// fullSnapshot reads every record by paged search, framed as one snapshot
// run. The position is taken first (pos, or a fresh one), so changes made
// during the read are read again incrementally, never lost.
func (s *Source) fullSnapshot(ctx context.Context, ss *session, sink capture.Sink, initial bool, epochBreak string, pos *checkpoint) (*checkpoint, error) {
	if pos == nil {
		var err error
		if pos, err = s.position(ctx, ss); err != nil {
			return nil, err
		}
	}
	pos.LastReconcile = s.now().UTC()
	id := fmt.Sprintf("%s-%d", s.cfg.Name, s.now().UnixNano())
	em := newEmitter(sink, s.cfg.BatchSize, "snapshot:"+id)
	// Every run but the first load repairs drift: its events are emitted
	// as reconcile, and its deletions say reconciliation-missing.
	em.snap = &capture.SnapshotMark{ID: id, Records: s.cfg.recordNames(), Initial: initial, Reconcile: !initial}
	em.epoch = epochBreak
	m, err := s.readMarks(ctx, ss.lookup, s.newReader(ss.lookup))
	if err != nil {
		return nil, err
	}
	s.marks, pos.Marks = m, nil
	if m != nil {
		pos.Marks = m.state
	}
	rd := s.newReader(ss.lookup)
	noKey := 0
	for _, r := range s.cfg.records {
		n := 0
		err := s.paged(ctx, ss.stream, r.baseDN, goldap.ScopeWholeSubtree, r.filter, rd.attrsFor(r), nil, func(e *goldap.Entry) error {
			ent, err := rd.convert(r, e)
			if err != nil {
				return err
			}
			if ent.deleted || ent.excluded || (s.cfg.DisabledAs == "delete" && ent.disabled) {
				return nil // not live: the engine deletes it as missing
			}
			if ent.noKey {
				noKey++
			}
			n++
			return em.add(ctx, capture.Change{Record: r.name, Op: capture.OpSnapshot, Values: ent.values,
				ChangedAt: ent.changedAt, Position: s.positionOf(ent)})
		})
		if err != nil {
			return nil, s.searchError(r, err)
		}
		s.log.Info("snapshot record read", "source", s.cfg.Name, "record", r.name, "entries", n)
	}
	s.warnNoKey(noKey)
	if err := em.flush(ctx, pos.encode(), true); err != nil {
		return nil, err
	}
	return pos, nil
}

// incrementalEmitter batches a feed's changes in the order receivers can
// follow (see order). A change's depth is its DN's; a deletion carries no
// DN, so the one the engine stored for the object is used.
func (s *Source) incrementalEmitter(ctx context.Context, sink capture.Sink, txID string) *emitter {
	em := newEmitter(sink, s.cfg.BatchSize, txID)
	em.depth = func(ch *capture.Change) int {
		if dn, ok := ch.Values[FieldDN].(string); ok {
			return rdnCount(dn)
		}
		if s.opts.State == nil {
			return 0
		}
		row, err := s.opts.State.Row(ctx, s.cfg.Name, ch.Record, ch.Values)
		if err != nil || row == nil {
			return 0 // unknown to the engine: its deletion makes no event
		}
		dn, _ := row[FieldDN].(string)
		return rdnCount(dn)
	}
	return em
}

// positionOf names where a change came from. An entry without its key is
// named by its DN, so the quarantine entry says which one it was.
func (s *Source) positionOf(e *entry) string {
	if e.noKey {
		return "dn=" + e.dn
	}
	if e.usn != 0 {
		return fmt.Sprintf("usn=%d", e.usn)
	}
	if e.csn != "" {
		return "csn=" + e.csn
	}
	return ""
}

// warnNoKey says why entries without their key attribute will show up as
// quarantined changes (the engine cannot give them an id).
func (s *Source) warnNoKey(n int) {
	if n == 0 {
		return
	}
	attr := "entryUUID"
	if s.cfg.Flavor == FlavorAD {
		attr = "objectGUID"
	}
	s.log.Warn("entries without their key attribute were handed on and will be quarantined; give the bind account read access to "+attr,
		"source", s.cfg.Name, "count", n)
}

// searchError explains a failed record search.
func (s *Source) searchError(r *record, err error) error {
	switch {
	case goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject):
		return &permanentError{s.cfg.errorf("check the spelling; a renamed or moved root unit must be changed in the configuration too",
			"record %q: base DN %q does not exist on the server", r.name, r.baseDN)}
	case goldap.IsErrorAnyOf(err, goldap.LDAPResultFilterError, goldap.LDAPResultProtocolError, goldap.ErrorFilterCompile):
		return &permanentError{s.cfg.errorf("fix the filter (RFC 4515)", "record %q: the server refused filter %q: %v", r.name, r.filter, err)}
	case goldap.IsErrorWithCode(err, goldap.LDAPResultInsufficientAccessRights):
		return &permanentError{s.cfg.errorf("grant the bind account read access to the base DN", "record %q: access denied: %v", r.name, err)}
	case goldap.IsErrorWithCode(err, goldap.LDAPResultSizeLimitExceeded):
		return &permanentError{s.cfg.errorf("allow the bind account unlimited paged results (OpenLDAP: limits dn.exact=\"<bind_dn>\" size.prtotal=unlimited)",
			"record %q: the server's size limit cut the search short", r.name)}
	}
	return fmt.Errorf("ldap source %q: record %q: %w", s.cfg.Name, r.name, err)
}

// position takes the current change-tracking position, before a snapshot.
func (s *Source) position(ctx context.Context, ss *session) (*checkpoint, error) {
	c := ss.stream
	cp := &checkpoint{Mode: s.cfg.ChangeTracking, Config: s.cfg.hashRecords()}
	switch s.cfg.ChangeTracking {
	case TrackDirSync:
		cp.InvocationID, cp.DSService = c.invocationID, c.dsService
		cookie, err := s.dirSyncStart(ctx, ss)
		if err != nil {
			return nil, err
		}
		cp.Cookie = cookie
		s.checkTombstones(c)
	case TrackUSN:
		cp.InvocationID, cp.DSService = c.invocationID, c.dsService
		usn, err := c.readHighestUSN()
		if err != nil {
			return nil, err
		}
		cp.USN = usn
	case TrackSyncrepl:
		csn, err := c.readContextCSN()
		if err != nil {
			return nil, err
		}
		cp.ContextCSN = csn
		cp.Watermark = csnTime(csn)
		cp.Cookies = map[string][]byte{}
		for _, r := range s.cfg.records {
			cookie, err := s.syncreplStart(ctx, ss, r)
			if err != nil {
				return nil, err
			}
			cp.Cookies[r.name] = cookie
		}
	case TrackPoll:
		// modifyTimestamp has one-second resolution and clocks drift: start
		// a little early; re-reading a change is harmless.
		cp.Since = s.now().UTC().Add(-pollSkew).Format("20060102150405Z")
		if s.cfg.Flavor == FlavorAD {
			cp.InvocationID, cp.DSService = c.invocationID, c.dsService
		}
	}
	return cp, nil
}

const pollSkew = 2 * time.Minute

// Check tests the connection, the bind, the base DN, every record's filter
// and the change tracking (connector check).
func (s *Source) Check(ctx context.Context) error {
	defer s.disconnect()
	ss, err := s.connect(ctx)
	if err != nil {
		return err
	}
	c := ss.lookup
	for _, r := range s.cfg.records {
		_, err := c.Search(goldap.NewSearchRequest(r.baseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 1, 0, false,
			r.filter, []string{"1.1"}, nil))
		if err != nil && !goldap.IsErrorWithCode(err, goldap.LDAPResultSizeLimitExceeded) {
			return s.searchError(r, err)
		}
	}
	if _, err := s.readMarks(ctx, c, s.newReader(c)); err != nil {
		return err
	}
	switch s.cfg.ChangeTracking {
	case TrackDirSync:
		if _, err := s.dirSyncStart(ctx, ss); err != nil {
			return err
		}
	case TrackSyncrepl:
		if !c.controls[goldap.ControlTypeSyncRequest] {
			return &permanentError{s.cfg.errorf("enable the syncprov overlay on the server, or set change_tracking: poll",
				"%s does not offer RFC 4533 content synchronisation", c.url)}
		}
	}
	return nil
}

// KeepsRows tells the engine to keep each entry's raw attributes: rename
// detection compares the stored dn (State.Row), and a container's change
// then need not re-read its whole subtree.
func (s *Source) KeepsRows() bool { return true }

// ChangeTime names the attribute change times come from.
func (s *Source) ChangeTime() string {
	if s.cfg.Flavor == FlavorLDAP {
		return "modifyTimestamp"
	}
	return "whenChanged"
}
