package ldap

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	goldap "github.com/go-ldap/ldap/v3"

	"github.com/os2sandbox/connector/capture"
)

// DirSync flags: INCREMENTAL_VALUES keeps responses small for large groups
// (the source re-reads every changed object in full anyway), and
// ANCESTORS_FIRST_ORDER delivers parents before children where the DC
// supports it (Windows; Samba ignores it, and the source orders each
// poll's changes itself, see order).
const dirSyncFlags = goldap.DirSyncIncrementalValues | goldap.DirSyncAncestorsFirstOrder

// dirSyncFlags adds OBJECT_SECURITY when configured: the DC then needs no
// "Replicating Directory Changes" right, and returns only the objects and
// attributes the account may read.
func (s *Source) dirSyncFlags() int64 {
	if s.cfg.DirSyncObjectSecurity {
		return dirSyncFlags | goldap.DirSyncObjectSecurity
	}
	return dirSyncFlags
}

const dirSyncMoreData = 0x1 // response flag: call again with the new cookie

// defaultChunk bounds how many changed objects are re-read per round trip.
const defaultChunk = 200

// touched is an object DirSync or a uSNChanged poll reported as changed,
// with what the delta says about it.
type touched struct {
	guid     []byte
	dn       string
	created  bool // new since the stored position
	moved    bool // renamed or moved: its DN changed
	restored bool // came back from the deleted objects
	deleted  bool // a tombstone
	enabled  bool // userAccountControl changed (DirSync only)
}

// dirSyncAttrs are the attributes DirSync watches: an object is returned
// only when one of them changed. They are the records' attributes, the
// attributes their filters test (so an object leaving a filter is seen),
// and name/parentGUID (renames and moves), whenCreated (new objects) and
// isDeleted (deletions and restores).
func (s *Source) dirSyncAttrs() []string {
	seen := map[string]bool{}
	out := []string{"objectGUID", "name", "parentGUID", "whenCreated", "isDeleted", "objectClass"}
	for _, a := range out {
		seen[strings.ToLower(a)] = true
	}
	for _, r := range s.cfg.records {
		if r.attrs == nil {
			return nil // every attribute
		}
		for _, a := range append(append([]string(nil), r.attrs...), filterAttrs(r.filter)...) {
			if l := strings.ToLower(a); !seen[l] && !s.cfg.noise[l] {
				seen[l] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// dirSyncStart returns a cookie for "now" without reading the directory: a
// DirSync whose filter matches nothing still advances the cookie over the
// whole naming context.
func (s *Source) dirSyncStart(ctx context.Context, ss *session) ([]byte, error) {
	var cookie []byte
	for {
		req := goldap.NewSearchRequest(ss.stream.nc, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
			"(&(objectClass=*)(!(objectClass=*)))", []string{"objectGUID"}, nil)
		res, err := ss.lookup.DirSync(req, s.dirSyncFlags(), 0, cookie)
		if err != nil {
			return nil, s.dirSyncError(ss.lookup, err)
		}
		ctl, _ := goldap.FindControl(res.Controls, goldap.ControlTypeDirSync).(*goldap.ControlDirSync)
		if ctl == nil {
			return nil, &permanentError{s.cfg.errorf("use change_tracking: usn", "%s answered a DirSync search without a DirSync control", ss.lookup.url)}
		}
		cookie = ctl.Cookie
		if ctl.Flags&dirSyncMoreData == 0 || ctx.Err() != nil {
			return cookie, ctx.Err()
		}
	}
}

// checkTombstones warns when DirSync with OBJECT_SECURITY cannot report
// deletions: the DC returns a tombstone only to an account that may read
// CN=Deleted Objects, which by default only administrators may.
func (s *Source) checkTombstones(c *conn) {
	if !s.cfg.DirSyncObjectSecurity {
		return
	}
	res, err := c.Search(goldap.NewSearchRequest("CN=Deleted Objects,"+c.nc, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"objectGUID"}, []goldap.Control{goldap.NewControlMicrosoftShowDeleted()}))
	if err == nil && len(res.Entries) == 1 && len(res.Entries[0].GetRawAttributeValue("objectGUID")) == 16 {
		return
	}
	s.log.Warn(`dirsync_object_security: the bind account cannot read CN=Deleted Objects, so DirSync reports no deletions; they are found by the scheduled reconcile only. Grant the account List Contents and Read Property on CN=Deleted Objects (dsacls "CN=Deleted Objects,<domain>" /takeownership, then /G <account>:LCRP), or the "Replicating Directory Changes" right`,
		"source", s.cfg.Name, "reconcile", s.cfg.reconcile)
}

func (s *Source) dirSyncError(c *conn, err error) error {
	switch {
	case goldap.IsErrorWithCode(err, goldap.LDAPResultInsufficientAccessRights) && !s.cfg.DirSyncObjectSecurity:
		return &permanentError{s.cfg.errorf(`grant the bind account the "Replicating Directory Changes" right on the domain root; or set dirsync_object_security: true (DirSync then sees only what the account may read), or use change_tracking: usn`,
			"%s refused DirSync for %q: %v", c.url, s.cfg.BindDN, err)}
	case goldap.IsErrorWithCode(err, goldap.LDAPResultInsufficientAccessRights):
		return &permanentError{s.cfg.errorf(`grant the bind account read access to the domain, or the "Replicating Directory Changes" right on the domain root and remove dirsync_object_security`,
			"%s refused DirSync with OBJECT_SECURITY for %q: %v", c.url, s.cfg.BindDN, err)}
	case goldap.IsErrorWithCode(err, goldap.LDAPResultUnavailableCriticalExtension) && !strings.Contains(err.Error(), "cookie"):
		return &permanentError{s.cfg.errorf("use change_tracking: usn", "%s does not support DirSync: %v", c.url, err)}
	}
	return fmt.Errorf("ldap source %q: DirSync: %w", s.cfg.Name, err)
}

// pollDirSync reads the changes since the stored cookie. DirSync returns
// only the changed attributes, so every changed object is re-read in full
// (in chunks, over the lookup connection) before it is delivered.
func (s *Source) pollDirSync(ctx context.Context, ss *session, cp *checkpoint, sink capture.Sink) (*checkpoint, error) {
	next := cp.clone()
	next.InvocationID, next.DSService = ss.stream.invocationID, ss.stream.dsService
	cookie := cp.Cookie
	em := s.incrementalEmitter(ctx, sink, "dirsync:"+shortHash(cookie))
	p := s.newADProcessor(ss, em)
	attrs := s.dirSyncAttrs()
	for {
		req := goldap.NewSearchRequest(ss.stream.nc, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=*)", attrs, nil)
		rctx, cancel := context.WithCancel(ctx)
		resp := ss.stream.DirSyncAsync(rctx, req, 64, s.dirSyncFlags(), 0, cookie)
		var chunk []touched
		var ctl *goldap.ControlDirSync
		var perr error
		for s.next(ss.stream, resp) {
			if e := resp.Entry(); e != nil {
				chunk = append(chunk, touchedFromDirSync(e))
				if len(chunk) >= s.chunk {
					if perr = p.process(ctx, chunk); perr != nil {
						break
					}
					chunk = chunk[:0]
				}
				continue
			}
			if c, ok := goldap.FindControl(resp.Controls(), goldap.ControlTypeDirSync).(*goldap.ControlDirSync); ok {
				ctl = c
			}
		}
		cancel()
		if perr != nil {
			return nil, perr
		}
		if err := resp.Err(); err != nil {
			if len(cookie) > 0 && goldap.IsErrorAnyOf(err, goldap.LDAPResultUnavailableCriticalExtension,
				goldap.LDAPResultUnwillingToPerform, goldap.LDAPResultProtocolError, goldap.LDAPResultOther) {
				return nil, &errEpoch{fmt.Sprintf("the DC rejected the DirSync cookie (%v)", err)}
			}
			return nil, s.dirSyncError(ss.stream, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := p.process(ctx, chunk); err != nil {
			return nil, err
		}
		if ctl == nil {
			return nil, fmt.Errorf("ldap source %q: %s ended a DirSync search without a cookie", s.cfg.Name, ss.stream.url)
		}
		cookie = ctl.Cookie
		if ctl.Flags&dirSyncMoreData == 0 {
			break
		}
		// Commit the progress of a long catch-up page by page.
		next.Cookie = cookie
		if err := em.flush(ctx, next.encode(), false); err != nil {
			return nil, err
		}
	}
	next.Cookie = cookie
	if err := em.flush(ctx, next.encode(), false); err != nil {
		return nil, err
	}
	if em.applied > 0 {
		s.log.Info("dirsync changes applied", "source", s.cfg.Name, "changes", em.applied)
	}
	return next, nil
}

// touchedFromDirSync reads what a DirSync delta says about an object.
func touchedFromDirSync(e *goldap.Entry) touched {
	t := touched{guid: e.GetRawAttributeValue("objectGUID"), dn: e.DN}
	has := func(name string) bool {
		for _, a := range e.Attributes {
			if strings.EqualFold(a.Name, name) {
				return true
			}
		}
		return false
	}
	t.created = has("whenCreated")
	t.deleted = strings.EqualFold(e.GetAttributeValue("isDeleted"), "TRUE")
	t.restored = !t.deleted && has("isDeleted")
	t.moved = !t.created && !t.deleted && (has("name") || has("parentGUID"))
	t.enabled = has("userAccountControl")
	return t
}

// pollUSN reads the objects whose uSNChanged passed the stored watermark,
// tombstones included, from the same DC (its invocationId is checked
// before every poll).
func (s *Source) pollUSN(ctx context.Context, ss *session, cp *checkpoint, sink capture.Sink) (*checkpoint, error) {
	next := cp.clone()
	hcu, err := ss.stream.readHighestUSN()
	if err != nil {
		return nil, err
	}
	if hcu < cp.USN {
		return nil, &errEpoch{fmt.Sprintf("the DC's highestCommittedUSN %d is below the stored watermark %d (restored from backup?)", hcu, cp.USN)}
	}
	em := s.incrementalEmitter(ctx, sink, fmt.Sprintf("usn:%s:%d", cp.InvocationID, cp.USN))
	p := s.newADProcessor(ss, em)
	var chunk []touched
	filter := fmt.Sprintf("(&(uSNChanged>=%d)(uSNChanged<=%d))", cp.USN+1, hcu)
	err = s.paged(ctx, ss.stream, ss.stream.nc, goldap.ScopeWholeSubtree, filter,
		[]string{"objectGUID", "uSNCreated", "isDeleted", "lastKnownParent"},
		[]goldap.Control{goldap.NewControlMicrosoftShowDeleted()}, func(e *goldap.Entry) error {
			created, _ := strconv.ParseInt(e.GetAttributeValue("uSNCreated"), 10, 64)
			t := touched{guid: e.GetRawAttributeValue("objectGUID"), dn: e.DN, created: created > cp.USN}
			t.deleted = strings.EqualFold(e.GetAttributeValue("isDeleted"), "TRUE")
			t.restored = !t.deleted && e.GetAttributeValue("lastKnownParent") != ""
			// The object alone does not say whether its DN changed: treat
			// every changed existing object as possibly moved (the
			// descendant re-read is one cheap search for a leaf).
			t.moved = !t.created && !t.deleted
			chunk = append(chunk, t)
			if len(chunk) >= s.chunk {
				if err := p.process(ctx, chunk); err != nil {
					return err
				}
				chunk = chunk[:0]
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	if err := p.process(ctx, chunk); err != nil {
		return nil, err
	}
	next.USN = hcu
	next.InvocationID, next.DSService = ss.stream.invocationID, ss.stream.dsService
	if err := em.flush(ctx, next.encode(), false); err != nil {
		return nil, err
	}
	return next, nil
}

// adProcessor turns changed objects into changes: it locates each object
// (tombstones included), re-reads it in full per record, and decides
// between upsert, tombstone and leaving the scope.
type adProcessor struct {
	s  *Source
	ss *session
	em *emitter
	rd *reader
}

func (s *Source) newADProcessor(ss *session, em *emitter) *adProcessor {
	return &adProcessor{s: s, ss: ss, em: em, rd: s.newReader(ss.lookup)}
}

type located struct {
	dn      string
	usn     int64
	deleted bool
	// changedAt is the object's whenChanged: for a tombstone, when it was
	// deleted; the valid time of the delete.
	changedAt time.Time
}

func (p *adProcessor) process(ctx context.Context, chunk []touched) error {
	if len(chunk) == 0 {
		return nil
	}
	s, c := p.s, p.ss.lookup
	// Locate every object, tombstones included.
	var ors strings.Builder
	seen := map[string]bool{}
	var uniq []touched
	for _, t := range chunk {
		if len(t.guid) != 16 {
			s.log.Warn("changed entry without objectGUID skipped", "source", s.cfg.Name, "dn", t.dn)
			continue
		}
		k := string(t.guid)
		if seen[k] {
			// the later delta of the same object wins (DirSync "more data")
			for i := range uniq {
				if string(uniq[i].guid) == k {
					uniq[i].moved = uniq[i].moved || t.moved
					uniq[i].created = uniq[i].created || t.created
					uniq[i].restored = uniq[i].restored || t.restored
					uniq[i].enabled = uniq[i].enabled || t.enabled
				}
			}
			continue
		}
		seen[k] = true
		uniq = append(uniq, t)
		ors.WriteString(guidFilter("objectGUID", t.guid))
	}
	if len(uniq) == 0 {
		return nil
	}
	or := "(|" + ors.String() + ")"
	loc := map[string]located{}
	err := s.paged(ctx, c, c.nc, goldap.ScopeWholeSubtree, or, []string{"objectGUID", "uSNChanged", "isDeleted", "whenChanged"},
		[]goldap.Control{goldap.NewControlMicrosoftShowDeleted()}, func(e *goldap.Entry) error {
			usn, _ := strconv.ParseInt(e.GetAttributeValue("uSNChanged"), 10, 64)
			loc[string(e.GetRawAttributeValue("objectGUID"))] = located{dn: e.DN, usn: usn,
				deleted:   strings.EqualFold(e.GetAttributeValue("isDeleted"), "TRUE"),
				changedAt: parseTime(e.GetRawAttributeValue("whenChanged"))}
			return nil
		})
	if err != nil {
		return fmt.Errorf("ldap source %q: locate changed objects: %w", s.cfg.Name, err)
	}
	// Re-read the live ones in full, per record: the record's base and
	// filter decide the scope on the server.
	matched := map[string]map[string]*entry{} // record → guid → entry
	for _, r := range s.cfg.records {
		matched[r.name] = map[string]*entry{}
		err := s.paged(ctx, c, r.baseDN, goldap.ScopeWholeSubtree, "(&"+r.filter+or+")", p.rd.attrsFor(r), nil, func(e *goldap.Entry) error {
			ent, err := p.rd.convert(r, e)
			if err != nil {
				return err
			}
			if ent.noKey {
				if ent.excluded {
					return nil // out of scope, and nothing to delete it by
				}
				// Matched by objectGUID, yet returned without it: hand it
				// on whole, for the engine to quarantine.
				s.warnNoKey(1)
				return p.em.add(ctx, capture.Change{Record: r.name, Op: capture.OpUpsert, Values: ent.values,
					ChangedAt: ent.changedAt, Position: s.positionOf(ent), ChangeKey: "nokey:" + p.em.txID})
			}
			matched[r.name][string(ent.rawKey)] = ent
			return nil
		})
		if err != nil && !goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject) {
			return s.searchError(r, err)
		}
	}
	inv := p.ss.stream.invocationID
	for _, t := range uniq {
		key, _ := GUIDString(t.guid)
		l, ok := loc[string(t.guid)]
		switch {
		case !ok || l.deleted:
			// a tombstone, or gone altogether (expunged since)
			ck := fmt.Sprintf("usn:%s:%d", inv, l.usn)
			if !ok {
				ck = "gone:" + p.em.txID
			}
			for _, r := range s.cfg.records {
				if err := p.em.add(ctx, capture.Change{Record: r.name, Op: capture.OpDelete, Reason: "tombstone",
					Values: map[string]any{FieldGUID: key}, ChangeKey: ck, Position: fmt.Sprintf("usn=%d", l.usn), ChangedAt: l.changedAt}); err != nil {
					return err
				}
			}
			continue
		}
		ck := fmt.Sprintf("usn:%s:%d", inv, l.usn)
		for _, r := range s.cfg.records {
			ent := matched[r.name][string(t.guid)]
			ch := capture.Change{Record: r.name, ChangeKey: ck, Position: fmt.Sprintf("usn=%d", l.usn)}
			switch {
			case ent == nil:
				ch.Op, ch.Reason, ch.Values, ch.ChangedAt = capture.OpDelete, "moved-out-of-scope", map[string]any{FieldGUID: key}, l.changedAt
			case ent.excluded:
				// Below a blocked unit, or a fictive unit: out of scope.
				ch.Op, ch.Reason, ch.Values, ch.ChangedAt = capture.OpDelete, "moved-out-of-scope", map[string]any{FieldGUID: key}, ent.changedAt
			case s.cfg.DisabledAs == "delete" && ent.disabled:
				ch.Op, ch.Reason, ch.Values, ch.ChangedAt = capture.OpDelete, "disabled", map[string]any{FieldGUID: key}, ent.changedAt
			default:
				ch.Op, ch.Values, ch.ChangedAt = capture.OpUpsert, ent.values, ent.changedAt
				// The reason only counts when the engine makes this a
				// create or an undelete.
				switch {
				case t.restored:
					ch.Reason = "restored"
				case s.cfg.DisabledAs == "delete" && t.enabled:
					ch.Reason = "" // re-enabled: the engine's default, restored
				case !t.created:
					ch.Reason = "moved-into-scope"
				}
			}
			if err := p.em.add(ctx, ch); err != nil {
				return err
			}
		}
		if t.moved && s.cfg.refreshDes {
			if err := s.descendants(ctx, p.ss, p.em, p.rd, l.dn, key, ck); err != nil {
				return err
			}
		}
	}
	return nil
}

// descendants re-reads the entries below a renamed or moved container, so
// the engine's stored DNs follow. Their parent keys did not change, so a
// mapping that models the hierarchy by parent key sees no difference and
// emits nothing; entries that left (or entered) a record's base become
// deletes (or upserts) with the scope reason.
func (s *Source) descendants(ctx context.Context, ss *session, em *emitter, rd *reader, dn, key, changeKey string) error {
	top, err := goldap.ParseDN(dn)
	if err != nil {
		return fmt.Errorf("ldap source %q: %s: %w", s.cfg.Name, dn, err)
	}
	ck := changeKey + ":below"
	for _, r := range s.cfg.records {
		// The lookup connection: the stream one may still be delivering
		// the DirSync response this container came in.
		err := s.paged(ctx, ss.lookup, dn, goldap.ScopeWholeSubtree, r.filter, rd.attrsFor(r), nil, func(e *goldap.Entry) error {
			d, err := goldap.ParseDN(e.DN)
			if err != nil || !top.AncestorOfFold(d) {
				return nil // the container itself
			}
			ent, err := rd.convert(r, e)
			if err != nil {
				return err
			}
			ch := capture.Change{Record: r.name, ChangeKey: ck, Position: "below=" + key, ChangedAt: ent.changedAt}
			out := ent.excluded || (!r.base.EqualFold(d) && !r.base.AncestorOfFold(d))
			switch {
			case ent.noKey && out:
				return nil // nothing to delete it by; the engine never held it by this key
			case ent.noKey:
				// Handed on whole: the engine quarantines it (no id).
				s.warnNoKey(1)
				ch.Op, ch.Values, ch.Position = capture.OpUpsert, ent.values, s.positionOf(ent)
			case out:
				ch.Op, ch.Reason, ch.Values = capture.OpDelete, "moved-out-of-scope", map[string]any{rd.keyAttr(): ent.key}
			case s.cfg.DisabledAs == "delete" && ent.disabled:
				ch.Op, ch.Reason, ch.Values = capture.OpDelete, "disabled", map[string]any{rd.keyAttr(): ent.key}
			default:
				ch.Op, ch.Reason, ch.Values = capture.OpUpsert, "moved-into-scope", ent.values
			}
			return em.add(ctx, ch)
		})
		if err != nil && !goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject) {
			return fmt.Errorf("ldap source %q: re-read below %s: %w", s.cfg.Name, dn, err)
		}
	}
	return nil
}

// filterAttrs lists the attribute names an RFC 4515 filter tests.
func filterAttrs(filter string) []string {
	p, err := goldap.CompileFilter(filter)
	if err != nil {
		return nil
	}
	var out []string
	var walk func(n *ber.Packet)
	walk = func(n *ber.Packet) {
		switch n.Tag {
		case goldap.FilterAnd, goldap.FilterOr, goldap.FilterNot:
			for _, c := range n.Children {
				walk(c)
			}
		case goldap.FilterPresent:
			if s, ok := n.Value.(string); ok {
				out = append(out, s)
			}
		case goldap.FilterExtensibleMatch:
			for _, c := range n.Children {
				if s, ok := c.Value.(string); ok && c.Tag == 2 { // the type
					out = append(out, s)
				}
			}
		default:
			if len(n.Children) > 0 {
				if s, ok := n.Children[0].Value.(string); ok {
					out = append(out, s)
				}
			}
		}
	}
	walk(p)
	return out
}
