package ldap

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
)

// Names of the fields the source adds to every record's Values.
const (
	FieldDN         = "dn"
	FieldGUID       = "objectGUID"      // AD key
	FieldParentGUID = "parentGUID"      // AD parent's objectGUID
	FieldUUID       = "entryUUID"       // LDAP key
	FieldParentUUID = "parentEntryUUID" // LDAP parent's entryUUID
	// FieldIsBase is true for the entry at the record's base DN (the top
	// unit), whose parent lies outside what is synced: a mapping gives it
	// no parent without comparing DNs as text.
	FieldIsBase = "isBase"
)

// Attributes read for the source's own bookkeeping; they enter Values only
// where a record configures them.
var metaAttrs = map[string]bool{
	"objectguid": true, "parentguid": true, "entryuuid": true, "entrycsn": true,
	"hassubordinates": true, "isdeleted": true, "createtimestamp": true,
	"whencreated": true, "usnchanged": true, "usncreated": true, "whenchanged": true,
	"modifytimestamp": true, "instancetype": true, "lastknownparent": true,
}

// entry is one directory entry converted for the engine.
type entry struct {
	key       string
	rawKey    []byte
	dn        string
	values    map[string]any
	changedAt time.Time
	createdAt time.Time
	usn       int64
	usnCreate int64
	csn       string
	deleted   bool
	disabled  bool
	children  bool // hasSubordinates (OpenLDAP)
	restored  bool // live, but carries lastKnownParent (came back from the deleted objects)
	// noKey: the key attribute was not returned (no read access to it, a
	// referral, a server without entryUUID). The entry is still handed to
	// the engine, whose mapping cannot give it an id and quarantines it,
	// so it is counted and visible instead of skipped.
	noKey bool
	// excluded: a marker leaves it out (blocked, or a fictive unit).
	excluded bool
}

// reader reads and converts entries over the lookup connection.
type reader struct {
	s       *Source
	c       *conn // for lookups: ranges, parents, re-reads
	conv    *converter
	ad      bool
	marks   *marks // the cycle's unit markers; nil when none
	parents map[string]parentRef
	// rawParents caches by the parent DN as the server spells it.
	rawParents map[string]any
}

type parentRef struct {
	key   any // string or nil
	found bool
}

func (s *Source) newReader(c *conn) *reader {
	return &reader{
		s:       s,
		c:       c,
		conv:    &converter{schema: c.schema, encoding: s.cfg.Binary.Encoding, hash: s.cfg.hash},
		ad:      s.cfg.Flavor == FlavorAD,
		marks:   s.marks,
		parents: map[string]parentRef{},

		rawParents: map[string]any{},
	}
}

func (rd *reader) keyAttr() string {
	if rd.ad {
		return FieldGUID
	}
	return FieldUUID
}

// attrsFor lists what to request for r: its attributes (all user
// attributes when none are configured), the key and the bookkeeping
// attributes. Multi-valued DN attributes on AD are asked for by range, so
// range retrieval works the same on AD (which caps values per attribute at
// MaxValRange) and on Samba (which returns everything unless asked).
func (rd *reader) attrsFor(r *record) []string {
	var out []string
	if r.attrs == nil {
		out = append(out, "*")
	}
	for _, a := range r.attrs {
		info := rd.c.schema.info(a)
		if rd.ad && !info.single && info.dn {
			out = append(out, fmt.Sprintf("%s;range=0-%d", a, rd.s.cfg.RangeSize-1))
			continue
		}
		out = append(out, a)
	}
	if rd.ad {
		return append(out, "objectGUID", "parentGUID", "whenChanged", "whenCreated", "uSNChanged", "uSNCreated", "isDeleted", "lastKnownParent")
	}
	return append(out, "entryUUID", "entryCSN", "modifyTimestamp", "createTimestamp", "hasSubordinates")
}

// convert turns a search result entry into the record's Values.
func (rd *reader) convert(r *record, e *goldap.Entry) (*entry, error) {
	values := make(map[string]any, len(r.attrs)+len(e.Attributes)+8)
	values[FieldDN] = e.DN
	values[FieldIsBase] = atBase(r, e.DN)
	ent := &entry{dn: e.DN, values: values}
	attrs := make(map[string]*goldap.EntryAttribute, len(e.Attributes))
	var ranged []*goldap.EntryAttribute
	for _, a := range e.Attributes {
		name := a.Name
		if i := strings.Index(strings.ToLower(name), ";range="); i >= 0 {
			ranged = append(ranged, a)
			name = name[:i]
			if prev := attrs[strings.ToLower(name)]; prev != nil {
				prev.ByteValues = append(prev.ByteValues, a.ByteValues...)
				continue
			}
			a = &goldap.EntryAttribute{Name: name, ByteValues: append([][]byte(nil), a.ByteValues...)}
		}
		attrs[strings.ToLower(name)] = a
	}
	for _, a := range ranged {
		if err := rd.completeRange(e.DN, a, attrs); err != nil {
			return nil, err
		}
	}
	first := func(name string) []byte {
		if a := attrs[name]; a != nil && len(a.ByteValues) > 0 {
			return a.ByteValues[0]
		}
		return nil
	}
	if rd.ad {
		if raw := first("objectguid"); raw == nil {
			ent.noKey = true
		} else {
			key, err := GUIDString(raw)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", e.DN, err)
			}
			ent.key, ent.rawKey = key, raw
			ent.values[FieldGUID] = key
		}
		ent.changedAt = parseTime(first("whenchanged"))
		ent.createdAt = parseTime(first("whencreated"))
		ent.usn, _ = strconv.ParseInt(string(first("usnchanged")), 10, 64)
		ent.usnCreate, _ = strconv.ParseInt(string(first("usncreated")), 10, 64)
		ent.deleted = strings.EqualFold(string(first("isdeleted")), "TRUE")
		ent.restored = !ent.deleted && first("lastknownparent") != nil
	} else {
		if raw := first("entryuuid"); raw == nil {
			ent.noKey = true
		} else {
			ent.key = strings.ToLower(string(raw))
			ent.values[FieldUUID] = ent.key
		}
		ent.changedAt = parseTime(first("modifytimestamp"))
		ent.createdAt = parseTime(first("createtimestamp"))
		ent.csn = string(first("entrycsn"))
		ent.children = strings.EqualFold(string(first("hassubordinates")), "TRUE")
	}

	put := func(name string, a *goldap.EntryAttribute) {
		info := rd.c.schema.info(name)
		var raw [][]byte
		if a != nil {
			raw = a.ByteValues
		}
		v, err := rd.conv.convert(info, raw)
		if err != nil {
			// keep the object: its raw value is better than losing it
			rd.s.log.Warn("attribute value not understood; kept as base64", "source", rd.s.cfg.Name, "dn", e.DN, "err", err)
			rd.conv.encodingFallback(info, raw, &v)
		}
		ent.values[name] = v
	}
	if r.attrs != nil {
		for _, name := range r.attrs {
			put(name, attrs[strings.ToLower(name)])
		}
	} else {
		for l, a := range attrs {
			if metaAttrs[l] || rd.s.cfg.noise[l] {
				continue
			}
			put(rd.c.schema.info(a.Name).name, a)
		}
	}
	if uac := first("useraccountcontrol"); uac != nil {
		if r.attrs == nil || hasAttr(r.attrs, "userAccountControl") {
			if err := decodeUAC(ent.values, string(uac)); err != nil {
				return nil, fmt.Errorf("%s: %w", e.DN, err)
			}
			ent.disabled, _ = ent.values["disabled"].(bool)
		}
	}
	if rd.ad {
		if p := first("parentguid"); p != nil {
			g, err := GUIDString(p)
			if err != nil {
				return nil, fmt.Errorf("%s: parentGUID: %w", e.DN, err)
			}
			ent.values[FieldParentGUID] = g
		} else {
			p, err := rd.parentOf(e.DN)
			if err != nil {
				return nil, err
			}
			ent.values[FieldParentGUID] = p
		}
	} else {
		p, err := rd.parentOf(e.DN)
		if err != nil {
			return nil, err
		}
		ent.values[FieldParentUUID] = p
	}
	if rd.marks != nil {
		parent := FieldParentUUID
		if rd.ad {
			parent = FieldParentGUID
		}
		ent.excluded = rd.marks.apply(ent, parent)
	}
	return ent, nil
}

// atBase reports whether dn is r's base DN. Every entry a record reads lies
// at or below its base, so only one with as many RDNs can be the base; it
// is parsed only then.
func atBase(r *record, dn string) bool {
	if rdnCount(dn) != len(r.base.RDNs) {
		return false
	}
	d, err := goldap.ParseDN(dn)
	return err == nil && d.EqualFold(r.base)
}

// rdnCount counts the RDNs of dn: separators not escaped by a backslash
// (RFC 4514 section 2.4; ';' is the older separator).
func rdnCount(dn string) int {
	if dn == "" {
		return 0
	}
	n := 1
	for i := 0; i < len(dn); i++ {
		switch dn[i] {
		case '\\':
			i++
		case ',', ';':
			n++
		}
	}
	return n
}

func hasAttr(list []string, name string) bool {
	for _, a := range list {
		if strings.EqualFold(a, name) {
			return true
		}
	}
	return false
}

func (c *converter) encodingFallback(info attrInfo, raw [][]byte, v *any) {
	b := &converter{encoding: "base64"}
	bin := attrInfo{name: info.name, single: info.single, kind: kBinary}
	*v, _ = b.convert(bin, raw)
}

func parseTime(b []byte) time.Time {
	if b == nil {
		return time.Time{}
	}
	t, err := GeneralizedTime(string(b))
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// completeRange fetches the rest of a ranged attribute ("member;range=0-1499")
// until the server marks the last range with "*".
func (rd *reader) completeRange(dn string, a *goldap.EntryAttribute, attrs map[string]*goldap.EntryAttribute) error {
	name, end, ok := parseRange(a.Name)
	if !ok {
		return fmt.Errorf("%s: cannot parse ranged attribute %q", dn, a.Name)
	}
	into := attrs[strings.ToLower(name)]
	for end >= 0 {
		want := fmt.Sprintf("%s;range=%d-*", name, end+1)
		res, err := rd.c.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=*)", []string{want}, nil))
		if err != nil {
			return fmt.Errorf("%s: range retrieval of %s: %w", dn, want, err)
		}
		if len(res.Entries) == 0 {
			return fmt.Errorf("%s: range retrieval of %s: entry vanished", dn, want)
		}
		next := -2
		for _, ra := range res.Entries[0].Attributes {
			n, e, ok := parseRange(ra.Name)
			if !ok || !strings.EqualFold(n, name) {
				continue
			}
			into.ByteValues = append(into.ByteValues, ra.ByteValues...)
			next = e
		}
		if next == -2 {
			return nil // no more values (the attribute shrank meanwhile)
		}
		if next >= 0 && next <= end {
			return fmt.Errorf("%s: range retrieval of %s did not advance", dn, name)
		}
		end = next
	}
	return nil
}

// parseRange splits "member;range=0-1499" into member and 1499; the last
// range ("1500-*") gives -1.
func parseRange(s string) (name string, end int, ok bool) {
	i := strings.Index(strings.ToLower(s), ";range=")
	if i < 0 {
		return s, -1, false
	}
	name = s[:i]
	_, hi, found := strings.Cut(s[i+len(";range="):], "-")
	if !found {
		return name, 0, false
	}
	if hi == "*" {
		return name, -1, true
	}
	n, err := strconv.Atoi(hi)
	if err != nil {
		return name, 0, false
	}
	return name, n, true
}

// parentOf returns the key of dn's parent entry, nil above the naming
// context or when there is none. Results are cached for one cycle: a
// rename may move a DN to another entry later.
func (rd *reader) parentOf(dn string) (any, error) {
	// Siblings share the server's spelling of their parent's DN: look that
	// up first, so a snapshot parses each parent once, not every entry.
	raw, ok := rawParent(dn)
	if ok {
		if p, hit := rd.rawParents[raw]; hit {
			return p, nil
		}
	}
	p, err := rd.parentOfParsed(dn)
	if err == nil && ok {
		if len(rd.rawParents) > 10000 {
			clear(rd.rawParents)
		}
		rd.rawParents[raw] = p
	}
	return p, err
}

// rawParent returns the text after the first RDN separator of dn: the ','
// that is not escaped by a backslash (RFC 4514 section 2.4). It is only a
// cache key; the parent itself is found with ParseDN.
func rawParent(dn string) (string, bool) {
	for i := 0; i < len(dn); i++ {
		switch dn[i] {
		case '\\':
			i++ // the escaped character (or the first hex digit) is not a separator
		case ',', ';':
			return dn[i+1:], true
		}
	}
	return "", false
}

func (rd *reader) parentOfParsed(dn string) (any, error) {
	d, err := goldap.ParseDN(dn)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid DN: %w", dn, err)
	}
	if len(d.RDNs) <= 1 {
		return nil, nil
	}
	parent := &goldap.DN{RDNs: d.RDNs[1:]}
	ck := strings.ToLower(parent.String())
	if p, ok := rd.parents[ck]; ok {
		return p.key, nil
	}
	if len(rd.parents) > 10000 {
		clear(rd.parents)
	}
	attr := "entryUUID"
	if rd.ad {
		attr = "objectGUID"
	}
	res, err := rd.c.Search(goldap.NewSearchRequest(parent.String(), goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{attr}, nil))
	if goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject) || (err == nil && len(res.Entries) == 0) {
		rd.parents[ck] = parentRef{}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up parent %s: %w", parent, err)
	}
	raw := res.Entries[0].GetRawAttributeValue(attr)
	var key any
	if rd.ad && len(raw) == 16 {
		key, _ = GUIDString(raw)
	} else if !rd.ad && len(raw) > 0 {
		key = strings.ToLower(string(raw))
	}
	rd.parents[ck] = parentRef{key: key, found: true}
	return key, nil
}

// paged runs a paged search and calls fn for every entry. The next page
// is fetched while fn works through the current one, so at most two pages
// are in memory. A watchdog closes the connection when one page takes
// longer than the configured timeout (the stream connection has no
// per-request timeout, see connect).
func (s *Source) paged(ctx context.Context, c *conn, base string, scope int, filter string, attrs []string,
	controls []goldap.Control, fn func(*goldap.Entry) error) error {
	type page struct {
		res *goldap.SearchResult
		req *goldap.SearchRequest
		err error
	}
	fetch := func(cookie []byte) chan page {
		ch := make(chan page, 1)
		paging := goldap.NewControlPaging(uint32(s.cfg.PageSize))
		paging.SetCookie(cookie)
		ctls := append(append([]goldap.Control(nil), controls...), paging)
		req := goldap.NewSearchRequest(base, scope, goldap.NeverDerefAliases, 0, 0, false, filter, attrs, ctls)
		go func() {
			wd := time.AfterFunc(s.cfg.Timeout, func() { c.Conn.Close() })
			res, err := c.Search(req)
			wd.Stop()
			ch <- page{res, req, err}
		}()
		return ch
	}
	pending := fetch(nil)
	for pending != nil {
		p := <-pending
		pending = nil
		if p.err != nil {
			return p.err
		}
		if err := ctx.Err(); err != nil {
			s.abandonPaging(c, p.req, p.res)
			return err
		}
		if ctl, ok := goldap.FindControl(p.res.Controls, goldap.ControlTypePaging).(*goldap.ControlPaging); ok && len(ctl.Cookie) > 0 {
			pending = fetch(ctl.Cookie)
		}
		for _, e := range p.res.Entries {
			if err := fn(e); err != nil {
				if pending != nil {
					last := <-pending
					s.abandonPaging(c, last.req, last.res)
				}
				return err
			}
		}
	}
	return nil
}

// abandonPaging tells the server to drop a paged search's state: the
// same search with the last cookie and page size 0 (RFC 2696).
func (s *Source) abandonPaging(c *conn, req *goldap.SearchRequest, last *goldap.SearchResult) {
	if req == nil || last == nil {
		return
	}
	ctl, ok := goldap.FindControl(last.Controls, goldap.ControlTypePaging).(*goldap.ControlPaging)
	if !ok || len(ctl.Cookie) == 0 {
		return
	}
	p := goldap.NewControlPaging(0)
	p.SetCookie(ctl.Cookie)
	abandon := *req
	abandon.Controls = nil
	for _, x := range req.Controls {
		if x.GetControlType() != goldap.ControlTypePaging {
			abandon.Controls = append(abandon.Controls, x)
		}
	}
	abandon.Controls = append(abandon.Controls, p)
	go c.Search(&abandon) //nolint:errcheck // best effort; the state also ends with the connection
}

// next waits for the next response of an asynchronous search with a
// watchdog armed: a server silent for longer than the timeout is treated
// as gone. (Only the wait is timed, not the caller's work between calls.)
func (s *Source) next(c *conn, resp goldap.Response) bool {
	wd := time.AfterFunc(s.cfg.Timeout, func() { c.Conn.Close() })
	defer wd.Stop()
	return resp.Next()
}
