package ldap

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/os2sandbox/connector/capture"
)

// matchNothing selects no entry; a refresh with it only yields a cookie.
const matchNothing = "(&(objectClass=*)(!(objectClass=*)))"

// syncreplStart returns an RFC 4533 cookie for "now" for record r without
// reading its entries.
func (s *Source) syncreplStart(ctx context.Context, ss *session, r *record) ([]byte, error) {
	req := goldap.NewSearchRequest(r.baseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
		matchNothing, []string{"entryUUID"}, nil)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp := ss.lookup.Syncrepl(rctx, req, 16, goldap.SyncRequestModeRefreshOnly, nil, false)
	var cookie []byte
	for resp.Next() {
		if c := syncCookie(resp.Controls()); c != nil {
			cookie = c
		}
	}
	if err := resp.Err(); err != nil {
		return nil, s.syncreplError(ss.lookup, r, err)
	}
	if cookie == nil {
		return nil, &permanentError{s.cfg.errorf("enable the syncprov overlay for the database, or set change_tracking: poll",
			"%s returned no sync cookie for %q", ss.lookup.url, r.baseDN)}
	}
	return cookie, ctx.Err()
}

func (s *Source) syncreplError(c *conn, r *record, err error) error {
	switch {
	case goldap.IsErrorWithCode(err, goldap.LDAPResultUnavailableCriticalExtension):
		return &permanentError{s.cfg.errorf("enable the syncprov overlay on the server, or set change_tracking: poll",
			"%s does not offer RFC 4533 content synchronisation: %v", c.url, err)}
	case goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject):
		return s.searchError(r, err)
	}
	return fmt.Errorf("ldap source %q: record %q: syncrepl: %w", s.cfg.Name, r.name, err)
}

// syncCookie finds the newest cookie among sync controls.
func syncCookie(ctls []goldap.Control) []byte {
	var cookie []byte
	for _, c := range ctls {
		switch x := c.(type) {
		case *goldap.ControlSyncDone:
			if x.Cookie != nil {
				cookie = x.Cookie
			}
		case *goldap.ControlSyncState:
			if x.Cookie != nil {
				cookie = x.Cookie
			}
		case *goldap.ControlSyncInfo:
			switch {
			case x.NewCookie != nil:
				cookie = x.NewCookie.Cookie
			case x.RefreshDelete != nil && x.RefreshDelete.Cookie != nil:
				cookie = x.RefreshDelete.Cookie
			case x.RefreshPresent != nil && x.RefreshPresent.Cookie != nil:
				cookie = x.RefreshPresent.Cookie
			case x.SyncIdSet != nil && x.SyncIdSet.Cookie != nil:
				cookie = x.SyncIdSet.Cookie
			}
		}
	}
	return cookie
}

// csnTime is the time of the newest CSN (20240101120000.123456Z#…).
func csnTime(csns []string) time.Time {
	var best time.Time
	for _, c := range csns {
		ts, _, _ := strings.Cut(c, "#")
		if t, err := GeneralizedTime(ts); err == nil && t.After(best) {
			best = t
		}
	}
	return best.UTC()
}

// moved is a container whose DN may have changed: the entries below it
// are re-read.
type moved struct {
	dn, key, changeKey string
}

// pollSyncrepl runs one refreshOnly content synchronisation per record
// from its stored cookie. Changed entries arrive whole; deleted entries as
// entryUUIDs, which are looked up to tell a deletion from a move out of
// scope. When the server cannot replay deletions (a present phase), the
// cycle turns into a reconcile.
func (s *Source) pollSyncrepl(ctx context.Context, ss *session, cp *checkpoint, sink capture.Sink) (*checkpoint, error) {
	next := cp.clone()
	csn, err := ss.stream.readContextCSN()
	if err != nil {
		return nil, err
	}
	var all []byte
	for _, r := range s.cfg.records {
		all = append(all, cp.Cookies[r.name]...)
	}
	em := s.incrementalEmitter(ctx, sink, "syncrepl:"+shortHash(all))
	rd := s.newReader(ss.lookup)
	var movedList []moved
	presentPhase := false
	for _, r := range s.cfg.records {
		cookie := cp.Cookies[r.name]
		if cookie == nil {
			return nil, &errEpoch{fmt.Sprintf("no stored cookie for record %q", r.name)}
		}
		req := goldap.NewSearchRequest(r.baseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
			r.filter, rd.attrsFor(r), nil)
		rctx, cancel := context.WithCancel(ctx)
		resp := ss.stream.Syncrepl(rctx, req, 64, goldap.SyncRequestModeRefreshOnly, cookie, false)
		var deleted []string
		var perr error
		newCookie := cookie
		for s.next(ss.stream, resp) {
			ctls := resp.Controls()
			if c := syncCookie(ctls); c != nil {
				newCookie = c
			}
			if e := resp.Entry(); e != nil {
				st, _ := goldap.FindControl(ctls, goldap.ControlTypeSyncState).(*goldap.ControlSyncState)
				if st == nil {
					continue
				}
				switch st.State {
				case goldap.SyncStatePresent:
					presentPhase = true
				case goldap.SyncStateDelete:
					deleted = append(deleted, st.EntryUUID.String())
				default:
					if presentPhase {
						continue // a reconcile follows; it reads this entry anyway
					}
					m, err := s.syncEntry(ctx, em, rd, r, e, cp.Watermark)
					if err != nil {
						perr = err
						cancel()
						continue // drain
					}
					if m != nil {
						movedList = append(movedList, *m)
					}
				}
				continue
			}
			for _, c := range ctls {
				switch x := c.(type) {
				case *goldap.ControlSyncInfo:
					switch {
					case x.SyncIdSet != nil && x.SyncIdSet.RefreshDeletes:
						for _, u := range x.SyncIdSet.SyncUUIDs {
							deleted = append(deleted, u.String())
						}
					case x.SyncIdSet != nil, x.RefreshPresent != nil:
						presentPhase = true
					}
				case *goldap.ControlSyncDone:
					if !x.RefreshDeletes {
						presentPhase = true
					}
				}
			}
		}
		cancel()
		if perr != nil {
			return nil, perr
		}
		if err := resp.Err(); err != nil {
			switch {
			case goldap.IsErrorWithCode(err, 4096): // e-syncRefreshRequired
				return nil, &errEpoch{fmt.Sprintf("the server asks for a full reload of record %q (e-syncRefreshRequired)", r.name)}
			case goldap.IsErrorWithCode(err, goldap.LDAPResultUnwillingToPerform) && strings.Contains(err.Error(), "newer"):
				return nil, &errEpoch{fmt.Sprintf("the server is behind the stored cookie of record %q (restored from backup?): %v", r.name, err)}
			}
			return nil, s.syncreplError(ss.stream, r, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		next.Cookies[r.name] = newCookie
		if presentPhase {
			continue
		}
		gone, err := s.verifyDeleted(ctx, ss, em, rd, r, deleted, "del:"+shortHash(cookie))
		if err != nil {
			return nil, err
		}
		movedList = append(movedList, gone...)
	}
	next.ContextCSN = csn
	if presentPhase {
		// Deletions are known only as "not present": read everything.
		next.Watermark = csnTime(csn)
		return nil, &errReconcile{reason: "the server's session log does not reach back to the stored cookie (present phase)", pos: next}
	}
	if s.cfg.refreshDes {
		for _, m := range uniqueMoved(movedList) {
			if err := s.descendants(ctx, ss, em, rd, m.dn, m.key, m.changeKey); err != nil {
				return nil, err
			}
		}
	}
	next.Watermark = csnTime(csn)
	if err := em.flush(ctx, next.encode(), false); err != nil {
		return nil, err
	}
	if em.applied > 0 {
		s.log.Info("syncrepl changes applied", "source", s.cfg.Name, "changes", em.applied)
	}
	return next, nil
}

// syncEntry delivers one changed entry. It returns the entry as a moved
// container when the entries below it must be re-read.
func (s *Source) syncEntry(ctx context.Context, em *emitter, rd *reader, r *record, e *goldap.Entry, watermark time.Time) (*moved, error) {
	ent, err := rd.convert(r, e)
	if err != nil {
		return nil, err
	}
	ck := "csn:" + ent.csn
	if ent.csn == "" {
		ck = "mts:" + ent.changedAt.Format(time.RFC3339) + ":" + contentHash(ent.values)
	}
	ch := capture.Change{Record: r.name, Op: capture.OpUpsert, Values: ent.values, ChangedAt: ent.changedAt,
		ChangeKey: ck, Position: s.positionOf(ent)}
	if ent.noKey {
		if ent.excluded {
			return nil, nil // out of scope, and nothing to delete it by
		}
		// Handed on whole: the engine quarantines it (no id).
		s.warnNoKey(1)
		return nil, em.add(ctx, ch)
	}
	// createTimestamp has whole seconds: an entry created in the watermark's
	// second counts as new.
	existed := !watermark.IsZero() && !ent.createdAt.IsZero() && ent.createdAt.Before(watermark.Truncate(time.Second))
	if existed {
		ch.Reason = "moved-into-scope" // counts only if the engine makes it a create
	}
	switch {
	case ent.excluded:
		// Below a blocked unit, or a fictive unit: out of scope.
		ch.Op, ch.Reason, ch.Values = capture.OpDelete, "moved-out-of-scope", map[string]any{rd.keyAttr(): ent.key}
	case s.cfg.DisabledAs == "delete" && ent.disabled:
		ch.Op, ch.Reason, ch.Values = capture.OpDelete, "disabled", map[string]any{rd.keyAttr(): ent.key}
	}
	if err := em.add(ctx, ch); err != nil {
		return nil, err
	}
	if (ent.children || rd.ad) && s.dnChanged(ctx, r, rd.keyAttr(), ent) {
		return &moved{dn: ent.dn, key: ent.key, changeKey: ck}, nil
	}
	return nil, nil
}

// dnChanged reports whether the engine holds ent under another DN. Without
// a stored row it cannot tell, and says yes.
func (s *Source) dnChanged(ctx context.Context, r *record, keyAttr string, ent *entry) bool {
	if s.opts.State == nil {
		return true
	}
	row, err := s.opts.State.Row(ctx, s.cfg.Name, r.name, map[string]any{keyAttr: ent.key})
	if err != nil || row == nil {
		return true
	}
	old, _ := row[FieldDN].(string)
	a, err1 := goldap.ParseDN(old)
	b, err2 := goldap.ParseDN(ent.dn)
	return err1 != nil || err2 != nil || !a.EqualFold(b)
}

// verifyDeleted looks up entryUUIDs the server reported deleted for record
// r: gone means deleted; still there but outside r means moved out of
// scope (and the entries below it may have left too).
func (s *Source) verifyDeleted(ctx context.Context, ss *session, em *emitter, rd *reader, r *record, uuids []string, changeKey string) ([]moved, error) {
	var out []moved
	for len(uuids) > 0 {
		n := min(len(uuids), s.chunk)
		part := uuids[:n]
		uuids = uuids[n:]
		var ors strings.Builder
		for _, u := range part {
			ors.WriteString("(entryUUID=" + goldap.EscapeFilter(u) + ")")
		}
		or := "(|" + ors.String() + ")"
		exists := map[string]*goldap.Entry{}
		err := s.paged(ctx, ss.lookup, ss.lookup.nc, goldap.ScopeWholeSubtree, or, []string{"entryUUID", "entryCSN"}, nil, func(e *goldap.Entry) error {
			exists[strings.ToLower(e.GetAttributeValue("entryUUID"))] = e
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("ldap source %q: look up deleted entries: %w", s.cfg.Name, err)
		}
		inScope := map[string]bool{}
		if len(exists) > 0 {
			err := s.paged(ctx, ss.lookup, r.baseDN, goldap.ScopeWholeSubtree, "(&"+r.filter+or+")", []string{"entryUUID"}, nil, func(e *goldap.Entry) error {
				inScope[strings.ToLower(e.GetAttributeValue("entryUUID"))] = true
				return nil
			})
			if err != nil {
				return nil, s.searchError(r, err)
			}
		}
		for _, u := range part {
			u = strings.ToLower(u)
			ch := capture.Change{Record: r.name, Op: capture.OpDelete, Values: map[string]any{FieldUUID: u}, ChangeKey: changeKey}
			if inScope[u] {
				continue // reported for another reason (e.g. a rename); still live here
			}
			if e := exists[u]; e != nil {
				ch.Reason, ch.ChangeKey = "moved-out-of-scope", "csn:"+e.GetAttributeValue("entryCSN")
				out = append(out, moved{dn: e.DN, key: u, changeKey: ch.ChangeKey})
			}
			if err := em.add(ctx, ch); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// pollTimestamp reads the entries whose modifyTimestamp (whenChanged on
// AD) reached the watermark. Deletions are found only by reconciles.
func (s *Source) pollTimestamp(ctx context.Context, ss *session, cp *checkpoint, sink capture.Sink) (*checkpoint, error) {
	next := cp.clone()
	start := s.now().UTC()
	since, err := GeneralizedTime(cp.Since)
	if err != nil {
		return nil, &errEpoch{fmt.Sprintf("stored watermark %q unreadable", cp.Since)}
	}
	attr, layout := "modifyTimestamp", "20060102150405Z"
	if s.cfg.Flavor == FlavorAD {
		attr, layout = "whenChanged", "20060102150405.0Z" // AD wants the fraction
	}
	em := s.incrementalEmitter(ctx, sink, "poll:"+cp.Since)
	rd := s.newReader(ss.lookup)
	maxSeen := since
	var movedList []moved
	for _, r := range s.cfg.records {
		filter := fmt.Sprintf("(&%s(%s>=%s))", r.filter, attr, since.Format(layout))
		err := s.paged(ctx, ss.stream, r.baseDN, goldap.ScopeWholeSubtree, filter, rd.attrsFor(r), nil, func(e *goldap.Entry) error {
			m, err := s.syncEntry(ctx, em, rd, r, e, since)
			if err != nil {
				return err
			}
			if t := parseTime([]byte(e.GetAttributeValue(attr))); t.After(maxSeen) {
				maxSeen = t
			}
			if m != nil {
				movedList = append(movedList, *m)
			}
			return nil
		})
		if err != nil {
			return nil, s.searchError(r, err)
		}
	}
	if s.cfg.refreshDes {
		for _, m := range uniqueMoved(movedList) {
			if err := s.descendants(ctx, ss, em, rd, m.dn, m.key, m.changeKey); err != nil {
				return nil, err
			}
		}
	}
	// The watermark never passes "now minus skew": an entry changed while
	// this poll ran may carry an earlier timestamp than one already seen.
	wm := maxSeen
	if limit := start.Add(-pollSkew); wm.After(limit) {
		wm = limit
	}
	if wm.Before(since) {
		wm = since
	}
	next.Since = wm.Format("20060102150405Z")
	next.Watermark = wm
	if err := em.flush(ctx, next.encode(), false); err != nil {
		return nil, err
	}
	return next, nil
}

func contentHash(v map[string]any) string {
	b, _ := json.Marshal(v) // map keys are sorted
	return shortHash(b)
}

// uniqueMoved drops repeats and containers below another moved one (the
// re-read of the upper one covers them).
func uniqueMoved(in []moved) []moved {
	var out []moved
	seen := map[string]bool{}
	dns := make([]*goldap.DN, 0, len(in))
	for _, m := range in {
		if seen[m.key] {
			continue
		}
		seen[m.key] = true
		d, err := goldap.ParseDN(m.dn)
		if err != nil {
			continue
		}
		out = append(out, m)
		dns = append(dns, d)
	}
	var res []moved
	for i, m := range out {
		covered := false
		for j, d := range dns {
			if i != j && d.AncestorOfFold(dns[i]) {
				covered = true
				break
			}
		}
		if !covered {
			res = append(res, m)
		}
	}
	return res
}
