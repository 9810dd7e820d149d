package ldap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/testenv"
)

type adFixture struct {
	srv  *testenv.Samba
	d    dirOps
	base string // this test's own OU
}

var adSeq atomic.Int64

// newADFixture gives a test its own OU in the shared Samba DC (DirSync
// sees the whole domain, so tests never run in parallel).
func newADFixture(t *testing.T) *adFixture {
	t.Helper()
	srv := sharedSamba(t)
	c, err := srv.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f := &adFixture{srv: srv, d: dirOps{t, c}}
	f.base = fmt.Sprintf("OU=T%d-%d,%s", adSeq.Add(1), time.Now().UnixNano()%100000, srv.BaseDN)
	f.unit(f.base)
	return f
}

func (f *adFixture) config(extra string) string { return f.configRecords(extra, "") }

// configRecords adds top-level keys (extra) and more records.
func (f *adFixture) configRecords(extra, records string) string {
	return fmt.Sprintf(`
type: ldap
flavor: active-directory
url: %s
bind_dn: %s
password: %s
tls:
  ca_file: %s
base_dn: %s
reconcile: 0s
%s
records:
  units:
    filter: "(objectClass=organizationalUnit)"
    attributes: [ou, description]
  users:
    filter: "(&(objectClass=user)(!(objectClass=computer)))"
    attributes: [sAMAccountName, cn, sn, givenName, mail, description, userAccountControl, accountExpires, objectSid, proxyAddresses, otherTelephone, thumbnailPhoto]
  groups:
    filter: "(objectClass=group)"
    attributes: [cn, member]
%s`, f.srv.TLSURL, f.srv.AdminUPN, f.srv.AdminPW, f.srv.CAFile, yamlQuote(f.base), extra, records)
}

func (f *adFixture) unit(dn string) {
	f.d.add(dn, map[string][]string{"objectClass": {"organizationalUnit"}})
}

func (f *adFixture) user(dn, sam string, extra map[string][]string) {
	a := map[string][]string{"objectClass": {"user"}, "sAMAccountName": {sam}}
	for k, v := range extra {
		a[k] = v
	}
	f.d.add(dn, a)
}

// account creates an ordinary, enabled account (a password set over LDAPS)
// in the test's OU and returns its DN.
func (f *adFixture) account(t *testing.T, sam, pw string) string {
	t.Helper()
	dn := "CN=" + sam + "," + f.base
	f.user(dn, sam, nil)
	enc := make([]byte, 0, 2*(len(pw)+2))
	for _, r := range `"` + pw + `"` {
		enc = append(enc, byte(r), byte(r>>8))
	}
	m := goldap.NewModifyRequest(dn, nil)
	m.Replace("unicodePwd", []string{string(enc)})
	m.Replace("userAccountControl", []string{"512"})
	if err := f.d.c.Modify(m); err != nil {
		t.Fatal(err)
	}
	return dn
}

// asAccount binds cfg as sam instead of Administrator.
func (f *adFixture) asAccount(cfg, sam, pw string) string {
	return strings.NewReplacer("bind_dn: "+f.srv.AdminUPN, "bind_dn: "+sam+"@example.test", "password: "+f.srv.AdminPW, "password: "+pw).Replace(cfg)
}

func (f *adFixture) rawGUID(t *testing.T, dn string) []byte {
	t.Helper()
	res, err := f.d.c.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"objectGUID"}, nil))
	if err != nil {
		t.Fatalf("read objectGUID of %s: %v", dn, err)
	}
	return res.Entries[0].GetRawAttributeValue("objectGUID")
}

func (f *adFixture) guid(t *testing.T, dn string) string {
	g, err := GUIDString(f.rawGUID(t, dn))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestADSnapshotValues: keys, parent GUIDs, SIDs, FILETIMEs, account
// flags, multi-valued and binary attributes as they come out of Samba.
func TestADSnapshotValues(t *testing.T) {
	f := newADFixture(t)
	b := f.base
	f.unit("OU=Afd," + b)
	photo := bytes.Repeat([]byte{0xff, 0xd8, 0x00, 0x01}, 500)
	f.user("CN=Anne,OU=Afd,"+b, "anne"+b[3:8], map[string][]string{
		"proxyAddresses": {"smtp:b@x", "SMTP:a@x"}, "thumbnailPhoto": {string(photo)}, "sn": {"A"},
	})
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	runOnce(t, src, sink)
	if first := sink.batches[0]; first.Snapshot == nil || !first.Snapshot.Initial || !first.Snapshot.Begin {
		t.Fatalf("first batch %+v", first.Snapshot)
	}
	anne := f.guid(t, "CN=Anne,OU=Afd,"+b)
	v := sink.get("users", anne)
	if v == nil {
		t.Fatalf("user %s not delivered; users: %v", anne, sink.live["users"])
	}
	// The DC's own string form of the GUID (extended DN, flag 1: string
	// form, value SEQUENCE { INTEGER 1 }) must match ours.
	extDN := goldap.NewControlString(goldap.ControlTypeMicrosoftExtendedDN, false, "\x30\x03\x02\x01\x01")
	res, err := f.d.c.Search(goldap.NewSearchRequest("CN=Anne,OU=Afd,"+b, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"objectGUID"}, []goldap.Control{extDN}))
	if err != nil {
		t.Fatal(err)
	}
	if ext := res.Entries[0].DN; !strings.HasPrefix(strings.ToLower(ext), "<guid="+anne+">") {
		t.Errorf("extended DN %s does not start with our GUID form %s", ext, anne)
	}
	if v[FieldGUID] != anne || v[FieldParentGUID] != f.guid(t, "OU=Afd,"+b) {
		t.Errorf("key/parent: %v / %v", v[FieldGUID], v[FieldParentGUID])
	}
	if sid, _ := v["objectSid"].(string); !strings.HasPrefix(sid, "S-1-5-21-") || strings.Count(sid, "-") != 7 {
		t.Errorf("objectSid = %v", v["objectSid"])
	}
	if v["accountExpires"] != nil {
		t.Errorf("accountExpires never = %v, want nil", v["accountExpires"])
	}
	// users added over LDAP start disabled (546)
	if v["disabled"] != true || fmt.Sprint(v["userAccountControl"]) != "546" {
		t.Errorf("disabled = %v uac = %v", v["disabled"], v["userAccountControl"])
	}
	if got := fmt.Sprint(v["proxyAddresses"]); got != "[SMTP:a@x smtp:b@x]" {
		t.Errorf("proxyAddresses = %s", got)
	}
	if p, _ := v["thumbnailPhoto"].(string); !strings.HasPrefix(p, "sha256:") {
		t.Errorf("thumbnailPhoto = %v", v["thumbnailPhoto"])
	}
	if v["otherTelephone"] != nil || v["mail"] != nil {
		t.Errorf("absent attributes must be nil: %v", v)
	}
	if src.ID() != "ldap://example.test/"+strings.ToLower(b) {
		t.Errorf("ID = %s", src.ID())
	}
}

// TestADChanges: create, rename, move between units, reorder (no event),
// attribute cleared, disable/enable, delete (tombstone) and re-create with
// the same name (a new GUID), all through DirSync.
func TestADChanges(t *testing.T) {
	f := newADFixture(t)
	d, b := f.d, f.base
	f.unit("OU=A," + b)
	f.unit("OU=B," + b)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	runOnce(t, src, sink)
	sink.take()
	sam := "u" + b[3:8]

	f.user("CN=Bo,OU=A,"+b, sam, map[string][]string{"sn": {"B"}})
	runOnce(t, src, sink)
	bo := f.guid(t, "CN=Bo,OU=A,"+b)
	wantEvents(t, sink.take(), event{Op: "create", Record: "users", Key: bo})

	d.rename("CN=Bo,OU=A,"+b, "CN=Bodil", "")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "users", Key: bo, Changed: []string{"cn"}})

	d.rename("CN=Bodil,OU=A,"+b, "CN=Bodil", "OU=B,"+b)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "users", Key: bo, Changed: []string{FieldParentGUID}})
	if sink.get("users", bo)[FieldParentGUID] != f.guid(t, "OU=B,"+b) {
		t.Fatal("parentGUID did not follow the move")
	}
	dn := "CN=Bodil,OU=B," + b

	d.replace(dn, "otherTelephone", "2", "1")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "users", Key: bo, Changed: []string{"otherTelephone"}})
	d.replace(dn, "otherTelephone", "1", "2") // a real change on Samba, same set
	runOnce(t, src, sink)
	wantEvents(t, sink.take())

	d.clear(dn, "otherTelephone")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "users", Key: bo, Changed: []string{"otherTelephone"}})
	if sink.get("users", bo)["otherTelephone"] != nil {
		t.Fatal("cleared attribute not nil")
	}

	d.replace(dn, "userAccountControl", "512") // enable
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "users", Key: bo, Changed: []string{"disabled", "userAccountControl"}})
	d.replace(dn, "userAccountControl", "514")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "users", Key: bo, Changed: []string{"disabled", "userAccountControl"}})

	d.del(dn)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "delete", Record: "users", Key: bo, Reason: "tombstone"})

	// restore the tombstone (same GUID): undelete
	res, err := d.c.Search(goldap.NewSearchRequest(f.srv.BaseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
		"(&(isDeleted=TRUE)(sAMAccountName="+sam+"))", []string{"objectGUID"}, []goldap.Control{goldap.NewControlMicrosoftShowDeleted()}))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("tombstone: %v %v", err, res)
	}
	m := goldap.NewModifyRequest(res.Entries[0].DN, []goldap.Control{goldap.NewControlMicrosoftShowDeleted()})
	m.Delete("isDeleted", nil)
	m.Replace("distinguishedName", []string{dn})
	if err := d.c.Modify(m); err != nil {
		t.Fatal(err)
	}
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "undelete", Record: "users", Key: bo, Reason: "restored"})
	d.del(dn)
	runOnce(t, src, sink)
	sink.take()

	// re-create with the same name: a new object
	f.user(dn, sam, nil)
	runOnce(t, src, sink)
	bo2 := f.guid(t, dn)
	if bo2 == bo {
		t.Fatal("re-created user kept the GUID")
	}
	wantEvents(t, sink.take(), event{Op: "create", Record: "users", Key: bo2})
}

// TestADUnitRenameAndScope: renaming a unit with 100 users below re-reads
// them (stored DNs follow) without events; moving users and units out of
// and into the synced subtree gives deletes and creates with the scope
// reasons.
func TestADUnitRenameAndScope(t *testing.T) {
	f := newADFixture(t)
	b := f.base
	out := fmt.Sprintf("OU=Outside-%s,%s", b[3:strings.IndexByte(b, ',')], f.srv.BaseDN)
	f.unit(out)
	f.unit("OU=Sub," + b)
	for i := range 100 {
		f.d.add(fmt.Sprintf("CN=p%03d,OU=Sub,%s", i, b), map[string][]string{"objectClass": {"user"}, "sAMAccountName": {fmt.Sprintf("p%03d%s", i, b[3:7])}})
	}
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	src.chunk = 10 // re-read while the DirSync response is still arriving
	runOnce(t, src, sink)
	sink.take()
	sub := f.guid(t, "OU=Sub,"+b)

	// the rename, then 100 changes after it in the same DirSync response
	f.d.rename("OU=Sub,"+b, "OU=Renamed", "")
	for i := range 100 {
		f.d.replace(fmt.Sprintf("CN=p%03d,OU=Renamed,%s", i, b), "description", "x")
	}
	runOnce(t, src, sink)
	ev := sink.take()
	if len(ev) != 101 || len(eventsFor(ev, sub)) != 1 || eventsFor(ev, sub)[0].String() != (event{Op: "update", Record: "units", Key: sub, Changed: []string{"ou"}}).String() {
		t.Fatalf("want 100 description updates and the unit's rename, got %d events: %v", len(ev), eventsFor(ev, sub))
	}
	p := f.guid(t, "CN=p007,OU=Renamed,"+b)
	if got := sink.get("users", p)[FieldDN]; !strings.Contains(got.(string), "OU=Renamed") {
		t.Fatalf("descendant DN not refreshed: %v", got)
	}

	// one user out and back in
	f.d.rename("CN=p007,OU=Renamed,"+b, "CN=p007", out)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "delete", Record: "users", Key: p, Reason: "moved-out-of-scope"})
	f.d.rename("CN=p007,"+out, "CN=p007", "OU=Renamed,"+b)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "undelete", Record: "users", Key: p, Reason: "moved-into-scope"})

	// the unit with its 100 users out, then in again
	f.d.rename("OU=Renamed,"+b, "OU=Renamed", out)
	runOnce(t, src, sink)
	ev = sink.take()
	if n := countEvents(ev, "delete", "moved-out-of-scope"); n != 101 || len(ev) != 101 {
		t.Fatalf("unit out of scope: %d moved-out-of-scope deletes of %d events, want 101", n, len(ev))
	}
	f.d.rename("OU=Renamed,"+out, "OU=Renamed", b)
	runOnce(t, src, sink)
	ev = sink.take()
	if n := countEvents(ev, "undelete", "moved-into-scope"); n != 101 || len(ev) != 101 {
		t.Fatalf("unit into scope: %d moved-into-scope undeletes of %d events, want 101: %v", n, len(ev), ev[:min(3, len(ev))])
	}
}

func countEvents(ev []event, op, reason string) int {
	n := 0
	for _, e := range ev {
		if e.Op == op && e.Reason == reason {
			n++
		}
	}
	return n
}

// TestADLargeGroupAndPaging: 1,510 contacts in a group: the snapshot reads
// more than 1,000 entries by pages, and the group's member attribute by
// range retrieval (member;range=0-1499, then 1500-*), in the snapshot and
// in the DirSync re-read. (Samba adds about 100 objects a second on an
// idle machine; this is the package's slowest test.)
func TestADLargeGroupAndPaging(t *testing.T) {
	f := newADFixture(t)
	b := f.base
	var members []string
	for i := range 1510 {
		dn := fmt.Sprintf("CN=c%04d,%s", i, b)
		f.d.add(dn, map[string][]string{"objectClass": {"contact"}})
		members = append(members, dn)
	}
	f.d.add("CN=Big,"+b, map[string][]string{"objectClass": {"group"}, "member": members[:1505]})
	cfg := f.configRecords("page_size: 300", `  contacts:
    filter: "(objectClass=contact)"
    attributes: [cn]
`)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, cfg, capture.Options{})
	runOnce(t, src, sink)
	if n := sink.count("contacts"); n != 1510 {
		t.Fatalf("contacts = %d, want 1510", n)
	}
	g := f.guid(t, "CN=Big,"+b)
	if m, _ := sink.get("groups", g)["member"].([]any); len(m) != 1505 {
		t.Fatalf("member has %d values, want 1505", len(m))
	}
	sink.take()
	mod := goldap.NewModifyRequest("CN=Big,"+b, nil)
	mod.Add("member", members[1505:])
	if err := f.d.c.Modify(mod); err != nil {
		t.Fatal(err)
	}
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "groups", Key: g, Changed: []string{"member"}})
	if m, _ := sink.get("groups", g)["member"].([]any); len(m) != 1510 {
		t.Fatalf("member has %d values after the change, want 1510", len(m))
	}
}

// TestADEscaping: an OU named with æøå , + ( ) \ as base DN and in a filter.
func TestADEscaping(t *testing.T) {
	f := newADFixture(t)
	name := `Børn (0-6 år), +x\y`
	unitDN := "OU=" + goldap.EscapeDN(name) + "," + f.base
	f.d.add(unitDN, map[string][]string{"objectClass": {"organizationalUnit"}, "description": {name}})
	f.user("CN=Ærø,"+unitDN, "aero"+f.base[3:8], map[string][]string{"description": {name}})
	cfg := fmt.Sprintf(`
type: ldap
flavor: active-directory
url: %s
bind_dn: %s
password: %s
tls: {ca_file: %s}
base_dn: %s
records:
  users:
    filter: '(&(objectClass=user)(description=%s))'
    attributes: [cn, description]
`, f.srv.TLSURL, f.srv.AdminUPN, f.srv.AdminPW, f.srv.CAFile, yamlQuote(unitDN), goldap.EscapeFilter(name))
	sink := newFakeSink()
	src := newTestSource(t, cfg, capture.Options{})
	runOnce(t, src, sink)
	u := f.guid(t, "CN=Ærø,"+unitDN)
	v := sink.get("users", u)
	// description is multi-valued in the AD schema
	if v == nil || fmt.Sprint(v["description"]) != "["+name+"]" || v["cn"] != "Ærø" || v[FieldParentGUID] != f.guid(t, unitDN) {
		t.Fatalf("values %v", v)
	}
	sink.take()
	// a change below the escaped base arrives through DirSync
	f.d.rename("CN=Ærø,"+unitDN, "CN=Øre", "")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "users", Key: u, Changed: []string{"cn", FieldDN}})
}

// TestADCookieAndInvocationID: a rejected cookie and a changed
// invocationId both start a new epoch with a full reconcile.
func TestADCookieAndInvocationID(t *testing.T) {
	f := newADFixture(t)
	f.user("CN=Anne,"+f.base, "an"+f.base[3:8], nil)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	runOnce(t, src, sink)
	sink.take()

	cp, _ := decodeCheckpoint(sink.checkpoint)
	cp.Cookie = []byte("not a cookie")
	sink.checkpoint = cp.encode()
	f.d.del("CN=Anne," + f.base)
	n := len(sink.batches)
	runOnce(t, src, sink)
	first := sink.batches[n]
	if !strings.Contains(first.EpochBreak, "rejected the DirSync cookie") || first.Snapshot == nil || first.Snapshot.Initial {
		t.Fatalf("want an epoch break on a reconcile snapshot, got %q %+v", first.EpochBreak, first.Snapshot)
	}
	if ev := sink.take(); len(ev) != 1 || ev[0].Op != "delete" || ev[0].Reason != "reconciliation-missing" {
		t.Fatalf("reconcile events %v", ev)
	}

	cp, _ = decodeCheckpoint(sink.checkpoint)
	cp.InvocationID = "00000000-0000-0000-0000-000000000001"
	sink.checkpoint = cp.encode()
	n = len(sink.batches)
	runOnce(t, src, sink)
	if !strings.Contains(sink.batches[n].EpochBreak, "invocationId changed") {
		t.Fatalf("EpochBreak = %q", sink.batches[n].EpochBreak)
	}
}

// TestADDirSyncRightsAndBadInput: the messages a user gets for the usual
// mistakes.
func TestADDirSyncRightsAndBadInput(t *testing.T) {
	f := newADFixture(t)
	ctx := context.Background()
	sam, pw := "svc"+f.base[3:8], "Sync-Passw0rd!"
	f.account(t, sam, pw)
	base := f.config("")
	cases := []struct{ name, cfg, want string }{
		{"dirsync rights", strings.NewReplacer("bind_dn: "+f.srv.AdminUPN, "bind_dn: "+sam+"@example.test",
			"password: "+f.srv.AdminPW, "password: "+pw).Replace(base), `"Replicating Directory Changes" right on the domain root; or set dirsync_object_security: true`},
		{"wrong password", strings.Replace(base, "password: "+f.srv.AdminPW, "password: wrong-secret-xyz", 1), "invalid credentials"},
		{"untrusted certificate", strings.Replace(base, "ca_file: "+f.srv.CAFile, "ca_file: ''", 1), "configure tls.ca_file"},
		{"missing base", strings.Replace(base, "base_dn: "+yamlQuote(f.base), "base_dn: 'OU=Nope,"+f.srv.BaseDN+"'", 1), "does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newTestSource(t, tc.cfg, capture.Options{})
			err := src.Check(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "wrong-secret-xyz") || strings.Contains(err.Error(), pw) {
				t.Fatal("a password leaked into the error")
			}
		})
	}
}

// TestADUSNMode: uSNChanged polling sees creates, changes and tombstones.
func TestADUSNMode(t *testing.T) {
	f := newADFixture(t)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config("change_tracking: usn\n"), capture.Options{})
	runOnce(t, src, sink)
	sink.take()
	f.user("CN=Usn,"+f.base, "usn"+f.base[3:8], nil)
	runOnce(t, src, sink)
	u := f.guid(t, "CN=Usn,"+f.base)
	wantEvents(t, sink.take(), event{Op: "create", Record: "users", Key: u})
	f.d.replace("CN=Usn,"+f.base, "mail", "u@x")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "update", Record: "users", Key: u, Changed: []string{"mail"}})
	f.d.del("CN=Usn," + f.base)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "delete", Record: "users", Key: u, Reason: "tombstone"})
}

// TestADDisabledAsDelete: disabled accounts as deletes with reason
// disabled; enabling brings them back.
func TestADDisabledAsDelete(t *testing.T) {
	f := newADFixture(t)
	dn := "CN=Dis," + f.base
	f.user(dn, "dis"+f.base[3:8], nil)
	f.d.replace(dn, "userAccountControl", "512")
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config("disabled_as: delete\n"), capture.Options{})
	runOnce(t, src, sink)
	sink.take()
	u := f.guid(t, dn)
	f.d.replace(dn, "userAccountControl", "514")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "delete", Record: "users", Key: u, Reason: "disabled"})
	f.d.replace(dn, "userAccountControl", "512")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "undelete", Record: "users", Key: u, Reason: "restored"})
}

// TestADDCGoesAwayMidSnapshot: the connection drops in the middle of a
// snapshot; nothing of that run is ended, the retry takes a complete one.
func TestADDCGoesAwayMidSnapshot(t *testing.T) {
	f := newADFixture(t)
	for i := range 60 {
		f.d.add(fmt.Sprintf("CN=m%02d,%s", i, f.base), map[string][]string{"objectClass": {"contact"}})
	}
	cfg := f.configRecords("page_size: 10\nbatch_size: 10", `  contacts:
    filter: "(objectClass=contact)"
    attributes: [cn]
`)
	sink := newFakeSink(FieldDN)
	dropped := false
	sink.fail = func(b capture.Batch) error {
		if !dropped && b.Snapshot != nil && !b.Snapshot.Begin {
			dropped = true
			f.srv.DropConnections()
		}
		return nil
	}
	src := newTestSource(t, cfg, capture.Options{})
	runOnce(t, src, sink)
	if !dropped {
		t.Fatal("the connection was never dropped")
	}
	ids := map[string]bool{}
	ended := map[string]bool{}
	for _, b := range sink.batches {
		if b.Snapshot != nil {
			ids[b.Snapshot.ID] = true
			if b.Snapshot.End {
				ended[b.Snapshot.ID] = true
			}
		}
	}
	if len(ids) != 2 || len(ended) != 1 {
		t.Fatalf("want one broken and one complete run, got runs %v ended %v", ids, ended)
	}
	if n := sink.count("contacts"); n != 60 {
		t.Fatalf("contacts = %d, want 60", n)
	}
}

// TestADRedeliveryAfterCrash: changes published before the cookie became
// durable come again with the same change keys.
func TestADRedeliveryAfterCrash(t *testing.T) {
	f := newADFixture(t)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{})
	runOnce(t, src, sink)
	f.user("CN=R1,"+f.base, "r1"+f.base[3:8], nil)
	f.user("CN=R2,"+f.base, "r2"+f.base[3:8], nil)
	f.d.del("CN=R2," + f.base)
	crash := errors.New("killed")
	var first, again []string
	record := func(into *[]string, fail bool) func(capture.Batch) error {
		return func(b capture.Batch) error {
			for _, ch := range b.Changes {
				*into = append(*into, ch.Record+"|"+keyOf(ch.Values)+"|"+ch.Op.String()+"|"+ch.ChangeKey)
			}
			if fail && b.Checkpoint != nil {
				return crash // published, but the cookie never became durable
			}
			return nil
		}
	}
	sink.fail = record(&first, true)
	if err := newTestSource(t, f.config(""), capture.Options{}).Run(context.Background(), sink.checkpoint, sink); !errors.Is(err, crash) {
		t.Fatalf("Run = %v", err)
	}
	sink.fail = record(&again, false)
	runOnce(t, newTestSource(t, f.config(""), capture.Options{}), sink)
	if len(first) == 0 || strings.Join(first, ",") != strings.Join(again, ",") {
		t.Fatalf("redelivery differs:\n first %v\n again %v", first, again)
	}
}

// TestADOrderParentsFirst: Samba returns DirSync results in its index
// order (it ignores ANCESTORS_FIRST_ORDER), and the tombstones of a
// subtree deleted at once in any order. The source hands on new units
// before what lies in them, and deletes children before their parents
// (DIRECTORY-CASES #17, #19).
func TestADOrderParentsFirst(t *testing.T) {
	f := newADFixture(t)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, f.config(""), capture.Options{State: sink})
	runOnce(t, src, sink)
	sink.take()
	dn := f.base
	var top string
	for i := range 6 {
		dn = fmt.Sprintf("OU=L%d,%s", i, dn)
		if top == "" {
			top = dn
		}
		f.unit(dn)
		f.user(fmt.Sprintf("CN=u%d,%s", i, dn), fmt.Sprintf("o%d%s", i, f.base[3:8]), nil)
	}
	// The events follow the order of the changes.
	positions := func(ev []event) map[string]int {
		at := map[string]int{}
		for i, e := range ev {
			at[e.Key] = i
		}
		return at
	}
	runOnce(t, src, sink)
	ev := sink.take()
	if len(ev) != 12 || countEvents(ev, "create", "") != 12 {
		t.Fatalf("want 6 units and 6 users created, got %v", ev)
	}
	at := positions(ev)
	parents := map[string]string{}
	for _, e := range ev {
		p := sink.get(e.Record, e.Key)[FieldParentGUID].(string)
		parents[e.Key] = p
		if i, ok := at[p]; ok && i > at[e.Key] {
			t.Errorf("%s came before its parent %s", e.Key, p)
		}
	}

	del := goldap.NewDelRequest(top, []goldap.Control{goldap.NewControlSubtreeDelete()})
	if err := f.d.c.Del(del); err != nil {
		t.Fatal(err)
	}
	runOnce(t, src, sink)
	ev = sink.take()
	if len(ev) != 12 || countEvents(ev, "delete", "tombstone") != 12 {
		t.Fatalf("want 12 tombstones, got %v", ev)
	}
	at = positions(ev)
	for _, e := range ev {
		if i, ok := at[parents[e.Key]]; ok && i < at[e.Key] {
			t.Errorf("%s was deleted before its child %s", parents[e.Key], e.Key)
		}
	}
}

// TestADDirSyncObjectSecurity: an ordinary account, without "Replicating
// Directory Changes", runs DirSync with OBJECT_SECURITY
// (dirsync_object_security: true) and sees what it may read. An OU whose
// objectGUID it may not read (a deny ACE) is quarantined, never skipped
// (DIRECTORY-CASES #4). Samba does not show it tombstones: the source
// warns, and a deletion is found by the reconcile.
func TestADDirSyncObjectSecurity(t *testing.T) {
	f := newADFixture(t)
	sam, pw := "os"+f.base[3:8], "Sync-Passw0rd!"
	svc := f.account(t, sam, pw)
	f.unit("OU=Afd," + f.base)
	hidden := "OU=Hidden," + f.base
	f.unit(hidden)
	gone := "CN=Gone,OU=Afd," + f.base
	f.user(gone, "gone"+f.base[3:8], nil)
	res, err := f.d.c.Search(goldap.NewSearchRequest(svc, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"objectSid"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	sid, err := SIDString(res.Entries[0].GetRawAttributeValue("objectSid"))
	if err != nil {
		t.Fatal(err)
	}
	// deny the account reading objectGUID (schemaIDGUID bf9679e7-…) there
	if _, err := f.srv.Tool("dsacl", "set", "--objectdn="+hidden, "--sddl=(OD;;RP;bf9679e7-0de6-11d0-a285-00aa003049e2;;"+sid+")"); err != nil {
		t.Fatal(err)
	}

	cfg := f.asAccount(f.config(""), sam, pw)
	if err := newTestSource(t, cfg, capture.Options{}).Check(context.Background()); err == nil ||
		!strings.Contains(err.Error(), "dirsync_object_security: true") {
		t.Fatalf("without the option: Check = %v, want the refusal naming the right and the option", err)
	}
	cfg = f.asAccount(f.config("dirsync_object_security: true\n"), sam, pw)
	log := &warnings{testLogger: testLogger{t}}
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, cfg, capture.Options{Log: log})
	runOnce(t, src, sink)
	if n := sink.count("units"); n != 2 {
		t.Fatalf("units = %d, want the test's OU and Afd", n)
	}
	if len(sink.quarantined) != 1 || sink.quarantined[0].Values[FieldDN] != hidden {
		t.Fatalf("want the OU without a readable objectGUID quarantined, got %+v", sink.quarantined)
	}
	if !log.saw("cannot read CN=Deleted Objects") {
		t.Error("no warning that DirSync reports no deletions to this account")
	}
	sink.take()

	f.user("CN=Ny,OU=Afd,"+f.base, "ny"+f.base[3:8], nil)
	f.d.replace("OU=Afd,"+f.base, "description", "x")
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "create", Record: "users", Key: f.guid(t, "CN=Ny,OU=Afd,"+f.base)},
		event{Op: "update", Record: "units", Key: f.guid(t, "OU=Afd,"+f.base), Changed: []string{"description"}})

	g := f.guid(t, gone)
	f.d.del(gone)
	runOnce(t, src, sink)
	wantEvents(t, sink.take())
	if err := src.Snapshot(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, sink.take(), event{Op: "delete", Record: "users", Key: g, Reason: "reconciliation-missing"})
}

// TestADKerberosBind: SASL GSSAPI binds against Samba's KDC, with the
// password and with a keytab; the usual mistakes get a hint, never the
// password.
func TestADKerberosBind(t *testing.T) {
	f := newADFixture(t)
	sam, pw := "kb"+f.base[3:8], "Krb-Passw0rd!"
	f.account(t, sam, pw)
	f.unit("OU=Afd," + f.base)
	keytab := t.TempDir() + "/svc.keytab"
	if err := f.srv.ExportKeytab(sam+"@EXAMPLE.TEST", keytab); err != nil {
		t.Fatal(err)
	}
	sasl := "sasl: {mechanism: gssapi, krb5_conf: " + f.srv.Krb5Conf + ", spn: HOST/dc1.example.test}\n"
	cfg := f.asAccount(f.config(sasl+"dirsync_object_security: true\n"), sam, pw)
	for _, tc := range []struct{ name, cfg string }{
		{"password", cfg},
		{"keytab", strings.Replace(strings.Replace(cfg, "password: "+pw+"\n", "", 1), "sasl: {", "sasl: {keytab_file: "+keytab+", ", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newFakeSink(FieldDN)
			runOnce(t, newTestSource(t, tc.cfg, capture.Options{}), sink)
			if sink.get("units", f.guid(t, "OU=Afd,"+f.base)) == nil {
				t.Fatal("the snapshot over a Kerberos bind lacks OU=Afd")
			}
		})
	}
	for _, tc := range []struct{ name, cfg, want string }{
		{"wrong password", strings.Replace(cfg, "password: "+pw, "password: wrong-secret-xyz", 1), "check the password or keytab"},
		{"unknown spn", strings.Replace(cfg, "spn: HOST/", "spn: ldap/", 1), "set sasl.spn"},
		{"unknown user", strings.Replace(cfg, "bind_dn: "+sam, "bind_dn: nobody"+sam, 1), "check sasl.username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := newTestSource(t, tc.cfg, capture.Options{}).Check(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "wrong-secret-xyz") || strings.Contains(err.Error(), pw) {
				t.Fatal("a password leaked into the error")
			}
		})
	}
}
