package ldap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/testenv"
)

type ldapFixture struct {
	srv  *testenv.Slapd
	d    dirOps
	base string
}

func newLDAPFixture(t *testing.T, opts testenv.SlapdOptions) *ldapFixture {
	t.Helper()
	srv := testenv.NewSlapd(t, opts)
	c, err := srv.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f := &ldapFixture{srv: srv, d: dirOps{t, c}, base: "ou=org," + srv.Suffix}
	f.d.add(f.base, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"org"}})
	f.d.add("ou=outside,"+srv.Suffix, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"outside"}})
	return f
}

func (f *ldapFixture) config(extra string) string {
	return fmt.Sprintf(`
type: ldap
flavor: ldap
url: %s
bind_dn: %s
password: %s
base_dn: %s
reconcile: 0s
records:
  units:
    filter: "(objectClass=organizationalUnit)"
    attributes: [ou, description]
  people:
    filter: "(objectClass=inetOrgPerson)"
    attributes: [uid, cn, sn, mail, telephoneNumber, jpegPhoto, description]
%s`, f.srv.URL, f.srv.RootDN, f.srv.RootPW, f.base, extra)
}

func (f *ldapFixture) person(dn, uid string, extra map[string][]string) {
	a := map[string][]string{"objectClass": {"inetOrgPerson"}, "uid": {uid}, "cn": {uid}, "sn": {uid}}
	for k, v := range extra {
		a[k] = v
	}
	f.d.add(dn, a)
}

func (f *ldapFixture) unit(dn, ou string) {
	f.d.add(dn, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {ou}})
}

// TestLDAPSyncreplLifecycle walks the directory cases against OpenLDAP
// with syncrepl: create, rename, move, unit rename with descendants, scope
// exits and entries, delete, re-create, multi-valued order, clearing,
// binary values and escaping.
func TestLDAPSyncreplLifecycle(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{})
	d, b := f.d, f.base
	f.unit("ou=a,"+b, "a")
	f.unit("ou=b,"+b, "b")
	f.person("uid=anne,ou=a,"+b, "anne", map[string][]string{"mail": {"a2@x", "a1@x"}, "jpegPhoto": {"\xff\xd8\xff\xe0photo"}})

	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	runOnce(t, src, sink)

	// Initial snapshot: one run, Begin..End, Initial.
	first, last := sink.batches[0], sink.batches[len(sink.batches)-1]
	if first.Snapshot == nil || !first.Snapshot.Begin || !first.Snapshot.Initial || !last.Snapshot.End || last.Checkpoint == nil {
		t.Fatalf("initial snapshot framing wrong: first %+v last %+v", first.Snapshot, last.Snapshot)
	}
	ev := sink.take()
	if len(ev) != 4 { // org, a, b units + anne
		t.Fatalf("initial events %v", ev)
	}
	anne := sink.byDN("people", "uid=anne,ou=a,"+b)
	unitA := sink.byDN("units", "ou=a,"+b)
	unitB := sink.byDN("units", "ou=b,"+b)
	v := sink.get("people", anne)
	if v[FieldIsBase] != false || sink.get("units", unitA)[FieldIsBase] != false || sink.get("units", sink.byDN("units", b))[FieldIsBase] != true {
		t.Errorf("isBase must be true for the unit at base_dn only")
	}
	if v[FieldParentUUID] != unitA {
		t.Errorf("parentEntryUUID = %v, want unit a %s", v[FieldParentUUID], unitA)
	}
	if got := fmt.Sprint(v["mail"]); got != "[a1@x a2@x]" {
		t.Errorf("mail = %s, want sorted set", got)
	}
	// jpegPhoto is multi-valued in the OpenLDAP schema
	if p, _ := v["jpegPhoto"].([]any); len(p) != 1 || !strings.HasPrefix(p[0].(string), "sha256:") {
		t.Errorf("jpegPhoto = %v, want a sha256 hash", v["jpegPhoto"])
	}
	if v["telephoneNumber"] != nil || v["description"] != nil {
		t.Errorf("absent attributes should be nil: %v", v)
	}

	// create
	f.person("uid=bob,ou=a,"+b, "bob", nil)
	runOnce(t, src, sink)
	bob := sink.byDN("people", "uid=bob,ou=a,"+b)
	wantEvents(t, sink.take(), event{Op: "create", Record: "people", Key: bob})

	// rename: same key, update
	d.rename("uid=bob,ou=a,"+b, "uid=robert", "")
	d.replace("uid=robert,ou=a,"+b, "cn", "Robert")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "people", Key: bob, Changed: []string{"cn", "uid"}})

	// move between units: the parent relation changes
	d.rename("uid=robert,ou=a,"+b, "uid=robert", "ou=b,"+b)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "people", Key: bob, Changed: []string{FieldParentUUID}})
	if got := sink.get("people", bob)[FieldParentUUID]; got != unitB {
		t.Fatalf("after move parent = %v, want %s", got, unitB)
	}

	// multi-valued reorder: a real modify, no event
	d.replace("uid=anne,ou=a,"+b, "mail", "a1@x", "a2@x")
	runOnce(t, src, sink)
	wantEvents(t, sink.take())

	// attribute cleared
	d.replace("uid=anne,ou=a,"+b, "description", "temp")
	runOnce(t, src, sink)
	sink.take()
	d.clear("uid=anne,ou=a,"+b, "description")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "people", Key: anne, Changed: []string{"description"}})

	// delete, then re-create with the same name: a new entryUUID
	d.del("uid=robert,ou=b," + b)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "delete", Record: "people", Key: bob, Reason: "deleted-in-source"})
	f.person("uid=robert,ou=b,"+b, "robert", map[string][]string{"cn": {"Robert"}})
	runOnce(t, src, sink)
	bob2 := sink.byDN("people", "uid=robert,ou=b,"+b)
	if bob2 == "" || bob2 == bob {
		t.Fatalf("re-created entry has key %q, old %q", bob2, bob)
	}
	wantEvents(t, sink.take(), event{Op: "create", Record: "people", Key: bob2})

	// move out of scope and back in (createTimestamp has whole seconds:
	// the move must come a second after the creation to be told apart)
	time.Sleep(1100 * time.Millisecond)
	d.rename("uid=anne,ou=a,"+b, "uid=anne", "ou=outside,"+f.srv.Suffix)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "delete", Record: "people", Key: anne, Reason: "moved-out-of-scope"})
	d.rename("uid=anne,ou=outside,"+f.srv.Suffix, "uid=anne", "ou=a,"+b)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "undelete", Record: "people", Key: anne, Reason: "moved-into-scope"})
}

// TestLDAPUnitRename: renaming a unit with 100 entries below re-reads them
// so their stored DNs follow, with no event beyond the unit's own.
func TestLDAPUnitRename(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{})
	b := f.base
	f.unit("ou=sub,"+b, "sub")
	f.unit("ou=deep,ou=sub,"+b, "deep")
	for i := range 100 {
		parent := "ou=sub," + b
		if i%2 == 1 {
			parent = "ou=deep,ou=sub," + b
		}
		f.person(fmt.Sprintf("uid=p%03d,%s", i, parent), fmt.Sprintf("p%03d", i), nil)
	}
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	runOnce(t, src, sink)
	sink.take()
	sub := sink.byDN("units", "ou=sub,"+b)
	f.d.rename("ou=sub,"+b, "ou=renamed", "")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "units", Key: sub, Changed: []string{"ou"}})
	// every descendant's stored DN followed
	p := sink.byDN("people", "uid=p001,ou=deep,ou=renamed,"+b)
	if p == "" {
		t.Fatal("descendant p001 not found under its new DN")
	}
	if n := sink.count("people"); n != 100 {
		t.Fatalf("people = %d, want 100", n)
	}
	stale := 0
	for _, v := range sink.live["people"] {
		if !strings.Contains(v[FieldDN].(string), "ou=renamed") {
			stale++
		}
	}
	if stale > 0 {
		t.Fatalf("%d descendants kept a stale DN", stale)
	}

	// moving the unit out of scope takes its subtree along
	f.d.rename("ou=renamed,"+b, "ou=renamed", "ou=outside,"+f.srv.Suffix)
	runOnce(t, src, sink)
	ev := sink.take()
	dels := 0
	for _, e := range ev {
		if e.Op != "delete" || e.Reason != "moved-out-of-scope" {
			t.Fatalf("unexpected event %v", e)
		}
		dels++
	}
	if dels != 102 { // sub, deep, 100 people
		t.Fatalf("scope exit deleted %d, want 102", dels)
	}
}

// TestLDAPEscaping: DNs and filters with æøå , + ( ) \ are parsed and
// escaped per RFC 4514/4515, never by string surgery.
func TestLDAPEscaping(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{})
	name := `Børn (0-6 år), +x\y`
	unitDN := "ou=" + goldap.EscapeDN(name) + "," + f.base
	f.d.add(unitDN, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {name}})
	f.person("uid=ærø,"+unitDN, "ærø", map[string][]string{"description": {name}})
	cfg := fmt.Sprintf(`
type: ldap
flavor: ldap
url: %s
bind_dn: %s
password: %s
base_dn: %s
records:
  people:
    filter: '(&(objectClass=inetOrgPerson)(description=%s))'
    attributes: [uid, description]
`, f.srv.URL, f.srv.RootDN, f.srv.RootPW, yamlQuote(unitDN), goldap.EscapeFilter(name))
	sink := newFakeSink()
	src := newTestSource(t, cfg, capture.Options{})
	runOnce(t, src, sink)
	if n := sink.count("people"); n != 1 {
		t.Fatalf("people = %d, want 1", n)
	}
	for _, v := range sink.live["people"] {
		// uid and description are multi-valued in the OpenLDAP schema
		if fmt.Sprint(v["uid"]) != "[ærø]" || fmt.Sprint(v["description"]) != "["+name+"]" {
			t.Fatalf("values %v", v)
		}
		if v[FieldParentUUID] == nil {
			t.Fatalf("parent of an entry below an escaped DN not resolved: %v", v)
		}
	}
	if !strings.Contains(src.ID(), "ldap://example.org/") {
		t.Fatalf("ID %q", src.ID())
	}
}

func yamlQuote(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}

// TestLDAPPagingAndPresentPhase: more entries than a page, then more
// deletions than the server's session log holds: the server answers with
// a present phase and the source reconciles (deletions found).
func TestLDAPPagingAndPresentPhase(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{SessionLog: 5})
	c := f.d.c
	for i := range 1200 {
		r := goldap.NewAddRequest(fmt.Sprintf("uid=u%04d,%s", i, f.base), nil)
		r.Attribute("objectClass", []string{"inetOrgPerson"})
		r.Attribute("uid", []string{fmt.Sprintf("u%04d", i)})
		r.Attribute("cn", []string{"U"})
		r.Attribute("sn", []string{"U"})
		if err := c.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config("page_size: 100\nbatch_size: 250\n"), capture.Options{})
	runOnce(t, src, sink)
	if n := sink.count("people"); n != 1200 {
		t.Fatalf("people after snapshot = %d", n)
	}
	if len(sink.batches) < 5 {
		t.Fatalf("want several batches, got %d", len(sink.batches))
	}
	sink.take()
	for i := range 20 {
		f.d.del(fmt.Sprintf("uid=u%04d,%s", i, f.base))
	}
	f.d.replace(fmt.Sprintf("uid=u%04d,%s", 500, f.base), "cn", "changed")
	runOnce(t, src, sink)
	ev := sink.take()
	dels, upd := 0, 0
	for _, e := range ev {
		switch {
		case e.Op == "delete" && e.Reason == "reconciliation-missing":
			dels++
		case e.Op == "update":
			upd++
		default:
			t.Fatalf("unexpected %v", e)
		}
	}
	if dels != 20 || upd != 1 {
		t.Fatalf("present-phase reconcile: %d deletes, %d updates; want 20, 1", dels, upd)
	}
	last := sink.batches[len(sink.batches)-1]
	if last.Snapshot == nil || last.Snapshot.Initial || !last.Snapshot.End {
		t.Fatalf("want a reconcile snapshot, got %+v", last.Snapshot)
	}
	// and the next cycle is incremental again
	f.d.replace(fmt.Sprintf("uid=u%04d,%s", 600, f.base), "cn", "changed")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "people", Key: sink.byDN("people", fmt.Sprintf("uid=u%04d,%s", 600, f.base)), Changed: []string{"cn"}})
}

// TestLDAPCookieRejected: a directory restored from an older backup is
// behind the stored cookie; the source starts a new epoch and reconciles.
func TestLDAPCookieRejected(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{})
	f.person("uid=anne,"+f.base, "anne", nil)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	runOnce(t, src, sink)
	sink.take()

	// Simulate the restore: the stored cookie is ahead of the server.
	cp, err := decodeCheckpoint(sink.checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	for k := range cp.Cookies {
		cp.Cookies[k] = []byte("rid=000,csn=20991231000000.000000Z#000000#000#000000")
	}
	sink.checkpoint = cp.encode()
	f.d.del("uid=anne," + f.base)
	runOnce(t, src, sink)
	var brk string
	for _, b := range sink.batches {
		if b.EpochBreak != "" {
			brk = b.EpochBreak
		}
	}
	if !strings.Contains(brk, "behind the stored cookie") {
		t.Fatalf("EpochBreak = %q", brk)
	}
	anne := ""
	for _, e := range sink.take() {
		if e.Op == "delete" {
			anne = e.Key
			if e.Reason != "reconciliation-missing" {
				t.Fatalf("delete reason %q", e.Reason)
			}
		}
	}
	if anne == "" {
		t.Fatal("the reconcile did not find the deletion")
	}

	// contextCSN behind the stored one also breaks continuity
	cp, _ = decodeCheckpoint(sink.checkpoint)
	cp.ContextCSN = []string{"20991231000000.000000Z#000000#000#000000"}
	sink.checkpoint = cp.encode()
	runOnce(t, src, sink)
	if b := sink.batches[len(sink.batches)-1]; b.Snapshot == nil || !strings.Contains(sink.batches[len(sink.batches)-2].EpochBreak+b.EpochBreak+firstBreak(sink.batches), "contextCSN") {
		t.Fatalf("no epoch break for a contextCSN behind the stored one")
	}
}

func firstBreak(bs []capture.Batch) string {
	var s string
	for _, b := range bs {
		s += b.EpochBreak
	}
	return s
}

// TestLDAPRedeliveryAfterCrash: the agent dies after the changes were
// published but before the cookie was committed; the next run delivers the
// same changes with the same change keys (so the same event ids).
func TestLDAPRedeliveryAfterCrash(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{})
	f.person("uid=anne,"+f.base, "anne", nil)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	runOnce(t, src, sink)
	f.d.replace("uid=anne,"+f.base, "mail", "anne@x")
	f.person("uid=bob,"+f.base, "bob", nil)
	f.d.del("uid=anne," + f.base)

	crash := errors.New("killed")
	var firstKeys []string
	sink.fail = func(b capture.Batch) error {
		for _, ch := range b.Changes {
			firstKeys = append(firstKeys, ch.Record+"|"+keyOf(ch.Values)+"|"+ch.ChangeKey)
		}
		if b.Checkpoint != nil {
			return crash // the cookie never becomes durable
		}
		return nil
	}
	src2 := newTestSource(t, f.config(""), capture.Options{})
	if err := src2.Run(context.Background(), sink.checkpoint, sink); !errors.Is(err, crash) {
		t.Fatalf("Run = %v, want the sink's error", err)
	}
	var again []string
	sink.fail = func(b capture.Batch) error {
		for _, ch := range b.Changes {
			again = append(again, ch.Record+"|"+keyOf(ch.Values)+"|"+ch.ChangeKey)
		}
		return nil
	}
	runOnce(t, src2, sink)
	if len(firstKeys) == 0 || strings.Join(firstKeys, ",") != strings.Join(again, ",") {
		t.Fatalf("redelivery differs:\n first %v\n again %v", firstKeys, again)
	}
}

// TestLDAPPollMode: modifyTimestamp polling (no syncprov needed); deletions
// come from the reconcile.
func TestLDAPPollMode(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{})
	f.person("uid=anne,"+f.base, "anne", nil)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config("change_tracking: poll\n"), capture.Options{})
	runOnce(t, src, sink)
	sink.take()
	f.person("uid=bob,"+f.base, "bob", nil)
	f.d.replace("uid=anne,"+f.base, "mail", "anne@x")
	runOnce(t, src, sink)
	ev := sink.take()
	anne := sink.byDN("people", "uid=anne,"+f.base)
	bob := sink.byDN("people", "uid=bob,"+f.base)
	wantEvents(t, ev, event{Op: "create", Record: "people", Key: bob},
		event{Op: "update", Record: "people", Key: anne, Changed: []string{"mail"}})
	// a re-poll within the skew window re-reads, but changes nothing
	runOnce(t, src, sink)
	wantEvents(t, sink.take())
	// a deletion is seen by the reconcile only
	f.d.del("uid=bob," + f.base)
	if err := src.Snapshot(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, sink.take(), event{Op: "delete", Record: "people", Key: bob, Reason: "reconciliation-missing"})
}

// TestLDAPDeletionGuard: a reconcile the engine refuses (deletion guard)
// makes Run fail with that error, and the position does not move.
func TestLDAPDeletionGuard(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{})
	f.person("uid=anne,"+f.base, "anne", nil)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	runOnce(t, src, sink)
	before := string(sink.checkpoint)
	guard := errors.New("deletion guard tripped")
	sink.fail = func(b capture.Batch) error {
		if b.Snapshot != nil && b.Snapshot.End {
			return guard
		}
		return nil
	}
	// a wrong filter in the config: a scope change the guard must stop
	src2 := newTestSource(t, strings.Replace(f.config(""), "(objectClass=inetOrgPerson)", "(objectClass=nothing)", 1), capture.Options{})
	err := src2.Run(context.Background(), sink.checkpoint, sink)
	if !errors.Is(err, guard) {
		t.Fatalf("Run = %v, want the guard error", err)
	}
	if string(sink.checkpoint) != before {
		t.Fatal("checkpoint moved although the reconcile was refused")
	}
}

// TestLDAPBadInput: clear messages for the usual mistakes.
func TestLDAPBadInput(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{})
	ctx := context.Background()
	cases := []struct {
		name, cfg, want string
	}{
		{"wrong password", strings.Replace(f.config(""), "password: "+f.srv.RootPW, "password: wrong-secret-xyz", 1), "invalid credentials"},
		{"missing base", strings.Replace(f.config(""), "base_dn: "+f.base, "base_dn: ou=nope,"+f.srv.Suffix, 1), "does not exist"},
		{"no server", strings.Replace(f.config(""), f.srv.URL, "ldap://127.0.0.1:1", 1), "cannot reach"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newTestSource(t, tc.cfg, capture.Options{})
			err := src.Check(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "wrong-secret-xyz") {
				t.Fatal("the password leaked into the error")
			}
		})
	}
}

// TestLDAPNoKeyQuarantined: an entry whose entryUUID the bind account may
// not read (an ACL hides it) is handed on without a key, so the engine
// quarantines it (DIRECTORY-CASES #4), in the snapshot, in syncrepl and in
// the re-read below a renamed unit; it is never skipped silently. Once the
// key is readable the entry is created like any other.
func TestLDAPNoKeyQuarantined(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{Access: []string{
		`access to attrs=entryUUID filter=(description=nokey) by * none`,
	}})
	reader := "cn=reader," + f.srv.Suffix
	f.d.add(reader, map[string][]string{"objectClass": {"organizationalRole", "simpleSecurityObject"}, "cn": {"reader"}, "userPassword": {"reader-pw"}})
	f.unit("ou=a,"+f.base, "a")
	f.person("uid=anne,ou=a,"+f.base, "anne", nil)
	f.person("uid=ghost,ou=a,"+f.base, "ghost", map[string][]string{"description": {"nokey"}})
	cfg := strings.NewReplacer("bind_dn: "+f.srv.RootDN, "bind_dn: "+reader, "password: "+f.srv.RootPW, "password: reader-pw").Replace(f.config(""))
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, cfg, capture.Options{})
	runOnce(t, src, sink)
	if n := sink.count("people"); n != 1 {
		t.Fatalf("people = %d, want anne only", n)
	}
	quarantined := func(want int, dn string) {
		t.Helper()
		if len(sink.quarantined) != want {
			t.Fatalf("quarantined %d changes, want %d: %+v", len(sink.quarantined), want, sink.quarantined)
		}
		q := sink.quarantined[want-1]
		if q.Position != "dn="+dn || q.Values[FieldDN] != dn || q.Values["uid"] == nil {
			t.Fatalf("quarantined change %+v, want the whole entry %s", q, dn)
		}
	}
	ghost := "uid=ghost,ou=a," + f.base
	quarantined(1, ghost)
	sink.take()

	// a change to it through syncrepl
	f.d.replace(ghost, "mail", "g@x")
	runOnce(t, src, sink)
	quarantined(2, ghost)
	wantEvents(t, sink.take())

	// the re-read below a renamed unit
	f.d.rename("ou=a,"+f.base, "ou=a2", "")
	ghost = "uid=ghost,ou=a2," + f.base
	runOnce(t, src, sink)
	quarantined(3, ghost)
	if len(sink.take()) != 1 {
		t.Fatal("want only the unit's rename as an event")
	}

	// readable again: an ordinary create
	f.d.clear(ghost, "description")
	runOnce(t, src, sink)
	if ev := sink.take(); len(ev) != 1 || ev[0].Op != "create" || ev[0].Key != sink.byDN("people", ghost) {
		t.Fatalf("events %v, want the ghost's create", ev)
	}
}

// TestLDAPUnitMarkers: a fictive unit is left out and the entries below it
// attach to its parent; a blocked unit is left out with its subtree;
// marking or unmarking a unit is applied by a reconcile (so the engine's
// deletion guard counts what it removes), and unmarking restores
// (DIRECTORY-CASES #16). Between marker changes, the feed keeps entries
// below a blocked unit out and reattaches new children of a fictive one.
func TestLDAPUnitMarkers(t *testing.T) {
	f := newLDAPFixture(t, testenv.SlapdOptions{})
	b := f.base
	f.unit("ou=a,"+b, "a")
	f.person("uid=pa,ou=a,"+b, "pa", nil)
	f.d.add("ou=f,"+b, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"f"}, "description": {"fiktiv"}})
	f.unit("ou=c,ou=f,"+b, "c")
	f.person("uid=pc,ou=c,ou=f,"+b, "pc", nil)
	f.person("uid=pf,ou=f,"+b, "pf", nil)
	f.d.add("ou=b,"+b, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"b"}, "description": {"spærret"}})
	f.unit("ou=d,ou=b,"+b, "d")
	f.person("uid=pd,ou=d,ou=b,"+b, "pd", nil)
	f.person("uid=pb,ou=b,"+b, "pb", nil)

	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config("markers: {fictive: '(description=fiktiv)', blocked: '(description=spærret)'}\n"), capture.Options{})
	runOnce(t, src, sink)
	if u, p := sink.count("units"), sink.count("people"); u != 3 || p != 3 {
		t.Fatalf("units %d (want org, a, c), people %d (want pa, pc, pf)", u, p)
	}
	org, c := sink.byDN("units", b), sink.byDN("units", "ou=c,ou=f,"+b)
	pf := sink.byDN("people", "uid=pf,ou=f,"+b)
	parent := func(rec, key string) any { return sink.get(rec, key)[FieldParentUUID] }
	if parent("units", c) != org || parent("people", pf) != org || parent("people", sink.byDN("people", "uid=pc,ou=c,ou=f,"+b)) != c {
		t.Fatal("children of the fictive unit must attach to its parent")
	}
	sink.take()
	// reconciled: a snapshot run that is not the initial load
	reconciled := func(from int) {
		t.Helper()
		if len(sink.batches) <= from || sink.batches[from].Snapshot == nil || sink.batches[from].Snapshot.Initial {
			t.Fatal("a marker change must be applied by a reconcile")
		}
	}

	// unblocked: the subtree comes in
	n := len(sink.batches)
	f.d.clear("ou=b,"+b, "description")
	runOnce(t, src, sink)
	reconciled(n)
	ev := sink.take()
	if countEvents(ev, "create", "") != 4 || len(ev) != 4 {
		t.Fatalf("unblocking: want b, d, pb, pd created, got %v", ev)
	}
	// blocked again: the subtree goes, as deletions of a reconcile
	n = len(sink.batches)
	f.d.replace("ou=b,"+b, "description", "spærret")
	runOnce(t, src, sink)
	reconciled(n)
	if ev = sink.take(); countEvents(ev, "delete", "reconciliation-missing") != 4 || len(ev) != 4 {
		t.Fatalf("blocking: want 4 deletions, got %v", ev)
	}

	// no longer fictive: the unit comes in, its children attach to it
	f.d.clear("ou=f,"+b, "description")
	runOnce(t, src, sink)
	fu := sink.byDN("units", "ou=f,"+b)
	wantEvents(t, sink.take(), event{Op: "create", Record: "units", Key: fu},
		event{Op: "update", Record: "units", Key: c, Changed: []string{FieldParentUUID}},
		event{Op: "update", Record: "people", Key: pf, Changed: []string{FieldParentUUID}})
	if parent("units", c) != fu {
		t.Fatal("c did not attach to f")
	}
	// fictive again
	f.d.replace("ou=f,"+b, "description", "fiktiv")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "delete", Record: "units", Key: fu, Reason: "reconciliation-missing"},
		event{Op: "update", Record: "units", Key: c, Changed: []string{FieldParentUUID}},
		event{Op: "update", Record: "people", Key: pf, Changed: []string{FieldParentUUID}})

	// the feed between marker changes: a new unit below the fictive one
	// attaches to its parent, an entry created below the blocked unit
	// stays out, one moved there leaves
	n = len(sink.batches)
	f.unit("ou=g,ou=f,"+b, "g")
	f.person("uid=pn,ou=b,"+b, "pn", nil)
	pa := sink.byDN("people", "uid=pa,ou=a,"+b)
	f.d.rename("uid=pa,ou=a,"+b, "uid=pa", "ou=b,"+b)
	runOnce(t, src, sink)
	for _, bt := range sink.batches[n:] {
		if bt.Snapshot != nil {
			t.Fatal("no marker changed: the feed, not a reconcile, must carry these")
		}
	}
	g := sink.byDN("units", "ou=g,ou=f,"+b)
	wantEvents(t, sink.take(), event{Op: "create", Record: "units", Key: g},
		event{Op: "delete", Record: "people", Key: pa, Reason: "moved-out-of-scope"})
	if parent("units", g) != org {
		t.Fatal("a new child of the fictive unit must attach to its parent")
	}
}
