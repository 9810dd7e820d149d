package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/os2sandbox/connector/testenv"
)

// The organisation presets (configs/ldap-organisation.yaml and
// configs/ad-organisation.yaml) run unchanged through the real binary
// against a real slapd and a real Samba AD DC; only the state and output
// paths under /var/lib/connector are moved into the test's directory.

// runEnv is run with extra environment variables (NAME=value).
func runEnv(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// presetDir copies a preset into a temp dir as org.yaml, with
// /var/lib/connector pointing into that dir.
func presetDir(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := readString(t, filepath.Join(repoRoot(t), "configs", name))
	if !strings.Contains(cfg, "/var/lib/connector/") {
		t.Fatalf("%s keeps nothing under /var/lib/connector", name)
	}
	writeFile(t, filepath.Join(dir, "org.yaml"), strings.ReplaceAll(cfg, "/var/lib/connector/", dir+"/"))
	return dir
}

// uncommentMarkers turns on the preset's commented markers example.
func uncommentMarkers(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, "org.yaml")
	cfg := readString(t, p)
	on := strings.NewReplacer("    # markers:\n", "    markers:\n", "    #   fictive:", "      fictive:", "    #   blocked:", "      blocked:").Replace(cfg)
	if strings.Count(on, "\n    markers:\n      fictive:") != 1 || !strings.Contains(on, "\n      blocked:") {
		t.Fatal("the preset has no commented markers example to turn on")
	}
	writeFile(t, p, on)
}

// orgEvent is the part of an event these tests look at.
type orgEvent struct {
	raw        string
	Emission   string `json:"emission"`
	Operation  string `json:"operation"`
	Reason     string `json:"reason"`
	ChangeKind string `json:"changeKind"`
	Object     struct {
		Type string            `json:"type"`
		ID   string            `json:"id"`
		Keys map[string]string `json:"keys"`
	} `json:"object"`
	Bitemporal struct {
		VirkningFra   string `json:"virkningFra"`
		VirkningKilde string `json:"virkningKilde"`
	} `json:"bitemporal"`
	SourceChangedAt string         `json:"sourceChangedAt"`
	Before          map[string]any `json:"before"`
	After           map[string]any `json:"after"`
	Changed         []string       `json:"changed"`
	Classification  struct {
		Redacted []string `json:"redacted"`
	} `json:"classification"`
}

func (e orgEvent) String() string {
	return fmt.Sprintf("%s %s/%s %s %v", e.Operation, e.Object.Type, e.Object.ID, e.Reason, e.Changed)
}

// orgOutput reads the receiver's file: every event must match the schema.
type orgOutput struct {
	path   string
	schema *jsonschema.Schema
	seen   int
}

func newOrgOutput(t *testing.T, dir string) *orgOutput {
	t.Helper()
	sch, err := jsonschema.NewCompiler().Compile(filepath.Join(repoRoot(t), "docs", "event.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	return &orgOutput{path: filepath.Join(dir, "out", "organisation.jsonl"), schema: sch}
}

// next returns the events written since the last call.
func (o *orgOutput) next(t *testing.T) []orgEvent {
	t.Helper()
	lines := readLines(t, o.path)
	var out []orgEvent
	for _, l := range lines[o.seen:] {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(l.raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := o.schema.Validate(v); err != nil {
			t.Fatalf("event does not match docs/event.schema.json: %v\n%s", err, l.raw)
		}
		e := orgEvent{raw: l.raw}
		if err := json.Unmarshal([]byte(l.raw), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	o.seen = len(lines)
	return out
}

// byKey indexes events by type and a secondary key.
func byKey(evs []orgEvent, typ, key string) map[string]orgEvent {
	out := map[string]orgEvent{}
	for _, e := range evs {
		if e.Object.Type == typ {
			out[e.Object.Keys[key]] = e
		}
	}
	return out
}

// checkOrgEvents asserts what holds for every event of the presets: no CPR
// for an internal receiver (redacted where present), and valid time from the
// directory's change time.
func checkOrgEvents(t *testing.T, evs []orgEvent, cprs []string) {
	t.Helper()
	for _, e := range evs {
		for _, c := range cprs {
			if strings.Contains(e.raw, c) {
				t.Fatalf("a CPR number reached the internal receiver: %s", e.raw)
			}
		}
		if strings.Contains(e.raw, `"cpr"`) {
			t.Fatalf("the cpr field reached the internal receiver: %s", e.raw)
		}
		if e.Object.Type == "Bruger" && !slices.Contains(e.Classification.Redacted, "/after/cpr") && e.Operation != "delete" {
			t.Errorf("cpr not listed as redacted: %s", e.raw)
		}
		if e.Operation == "delete" {
			continue
		}
		if kilde := e.Bitemporal.VirkningKilde; (kilde != "whenChanged" && kilde != "modifyTimestamp") || !validAtChangeTime(e) {
			t.Errorf("valid time must be the directory's change time: virkningFra %s, virkningKilde %q, sourceChangedAt %s",
				e.Bitemporal.VirkningFra, e.Bitemporal.VirkningKilde, e.SourceChangedAt)
		}
	}
}

// validAtChangeTime: valid time is the directory's change time, nudged by
// microseconds when one object changed twice within the directory's
// one-second stamp (the engine keeps it strictly increasing per object).
func validAtChangeTime(e orgEvent) bool {
	vf, err1 := time.Parse(time.RFC3339Nano, e.Bitemporal.VirkningFra)
	sc, err2 := time.Parse(time.RFC3339Nano, e.SourceChangedAt)
	return err1 == nil && err2 == nil && !vf.Before(sc) && vf.Before(sc.Add(time.Second))
}

// wantOne asserts that evs is exactly one event of the given shape.
// wantOps fails unless evs are n events, all with operation op.
func wantOps(t *testing.T, what string, evs []orgEvent, n int, op string) {
	t.Helper()
	if len(evs) != n {
		t.Fatalf("%s: want %d %s events, got %v", what, n, op, evs)
	}
	for _, e := range evs {
		if e.Operation != op {
			t.Errorf("%s: want %s, got %v", what, op, e)
		}
	}
}

func wantOne(t *testing.T, evs []orgEvent, op, typ, id string, changed ...string) orgEvent {
	t.Helper()
	if len(evs) != 1 {
		t.Fatalf("want exactly one event (%s %s/%s), got %d: %v", op, typ, id, len(evs), evs)
	}
	e := evs[0]
	if e.Operation != op || e.Object.Type != typ || e.Object.ID != id {
		t.Fatalf("want %s %s/%s, got %v", op, typ, id, e)
	}
	for _, c := range changed {
		if !slices.Contains(e.Changed, c) {
			t.Fatalf("changed %v lacks %q", e.Changed, c)
		}
	}
	return e
}

// writeCA writes a throwaway CA certificate (PEM) to path.
func writeCA(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "organisation test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

// dir changes a directory over one connection.
type dir struct {
	t *testing.T
	c *goldap.Conn
}

func (d dir) add(dn string, attrs map[string][]string) {
	d.t.Helper()
	r := goldap.NewAddRequest(dn, nil)
	for k, v := range attrs {
		r.Attribute(k, v)
	}
	if err := d.c.Add(r); err != nil {
		d.t.Fatalf("add %s: %v", dn, err)
	}
}

func (d dir) replace(dn, attr string, vals ...string) {
	d.t.Helper()
	m := goldap.NewModifyRequest(dn, nil)
	m.Replace(attr, vals)
	if err := d.c.Modify(m); err != nil {
		d.t.Fatalf("modify %s: %v", dn, err)
	}
}

func (d dir) move(dn, rdn, superior string) {
	d.t.Helper()
	if err := d.c.ModifyDN(goldap.NewModifyDNRequest(dn, rdn, true, superior)); err != nil {
		d.t.Fatalf("rename %s: %v", dn, err)
	}
}

func (d dir) del(dn string) {
	d.t.Helper()
	if err := d.c.Del(goldap.NewDelRequest(dn, nil)); err != nil {
		d.t.Fatalf("delete %s: %v", dn, err)
	}
}

func (d dir) raw(dn, attr string) []byte {
	d.t.Helper()
	res, err := d.c.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{attr}, nil))
	if err != nil || len(res.Entries) != 1 {
		d.t.Fatalf("read %s of %s: %v", attr, dn, err)
	}
	return res.Entries[0].GetRawAttributeValue(attr)
}

// guid renders an AD objectGUID as .NET does (first three groups
// little-endian), independently of capture/ldap.
func (d dir) guid(dn string) string {
	d.t.Helper()
	b := d.raw(dn, "objectGUID")
	if len(b) != 16 {
		d.t.Fatalf("objectGUID of %s has %d bytes", dn, len(b))
	}
	return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%x-%x", b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8:10], b[10:16])
}

// TestLDAPOrganisationPreset: configs/ldap-organisation.yaml against slapd:
// check, the initial load (units and users with Danish letters and RFC 4514
// escapes), a unit renamed with descendants (one event), a user moved (one
// update of enhed), a CPR-only change (nothing for the internal receiver),
// a user deleted; CPR never reaches the internal receiver.
func TestLDAPOrganisationPreset(t *testing.T) {
	// The connector binds as a service account (ACLs bind it, unlike the
	// root DN), which may not read the entryUUID of entries with
	// l=hemmelig.
	srv := testenv.NewSlapd(t, testenv.SlapdOptions{Access: []string{`access to attrs=entryUUID filter=(l=hemmelig) by * none`}})
	c, err := srv.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := dir{t, c}

	base := "ou=Ærø Kommune," + srv.Suffix
	unit := func(dn, ou string, extra map[string][]string) {
		a := map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {ou}}
		for k, v := range extra {
			a[k] = v
		}
		d.add(dn, a)
	}
	unit(base, "Ærø Kommune", nil)
	oeko := "ou=oeko," + base
	loen := "ou=Løn," + oeko
	boern := "ou=" + goldap.EscapeDN("Børn, 0-6 år") + "," + base
	dagpleje := "ou=Dagpleje," + boern
	unit(oeko, "oeko", map[string][]string{"description": {"Økonomi og Løn"}, "destinationIndicator": {"5798000000001"},
		"businessCategory": {"1003386459"}, "street": {"Torvet 1"}, "postalCode": {"5970"}, "l": {"Ærøskøbing"}})
	unit(loen, "Løn", nil)
	unit(boern, "Børn, 0-6 år", nil)
	unit(dagpleje, "Dagpleje", nil)

	units := []string{oeko, loen, boern, dagpleje}
	unitKeys := []string{"oeko", "Løn", "Børn, 0-6 år", "Dagpleje"}
	var cprs []string
	people := map[string]string{} // uid → DN
	unitOf := map[string]string{} // uid → its unit's kortnavn
	for i := 1; i <= 20; i++ {
		uid := fmt.Sprintf("u%02d", i)
		cn := fmt.Sprintf("Søren Ærøe %02d", i)
		rdn := "uid=" + uid
		if i == 7 {
			cn = "Hansen, Jens + Åse"
			rdn = "cn=" + goldap.EscapeDN(cn)
		}
		dn := rdn + "," + units[i%len(units)]
		cpr := fmt.Sprintf("0101%02d-40%02d", 70+i, i)
		cprs = append(cprs, cpr, strings.ReplaceAll(cpr, "-", ""))
		d.add(dn, map[string][]string{
			"objectClass": {"inetOrgPerson"}, "uid": {uid}, "cn": {cn}, "sn": {"Ærøe"},
			"mail": {uid + "@aeroe.dk"}, "telephoneNumber": {fmt.Sprintf("+45 6252 10%02d", i)},
			"title": {"Sagsbehandler"}, "employeeNumber": {cpr},
		})
		people[uid] = dn
		unitOf[uid] = unitKeys[i%len(units)]
	}

	svc, svcPW := "cn=connector,"+srv.Suffix, "svc-Passw0rd"
	d.add(svc, map[string][]string{"objectClass": {"organizationalRole", "simpleSecurityObject"}, "cn": {"connector"}, "userPassword": {svcPW}})

	wd := presetDir(t, "ldap-organisation.yaml")
	uncommentMarkers(t, wd)
	ca := filepath.Join(wd, "ca.pem")
	writeCA(t, ca)
	env := []string{
		"CONNECTOR_LDAP_URL=" + srv.URL,
		"CONNECTOR_LDAP_BIND_DN=" + svc,
		"CONNECTOR_LDAP_PASSWORD=" + svcPW,
		// Spelled with escapes the server never returns: the top unit is
		// found by parsed DN (isBase), not by comparing text.
		"CONNECTOR_LDAP_BASE_DN=" + `OU=\c3\86r\c3\b8 Kommune,` + srv.Suffix,
		"CONNECTOR_LDAP_CA_FILE=" + ca,
	}
	r := runEnv(t, wd, env, "check", "-c", "org.yaml")
	if r.code != 0 || !strings.Contains(r.stdout, "source   ldap") {
		t.Fatalf("check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, svcPW) {
		t.Fatal("check printed the password")
	}
	once := func() {
		t.Helper()
		if r := runEnv(t, wd, env, "run", "--once", "-c", "org.yaml"); r.code != 0 {
			t.Fatalf("run --once: exit %d\n%s", r.code, r.stderr)
		}
	}
	out := newOrgOutput(t, wd)

	once()
	evs := out.next(t)
	checkOrgEvents(t, evs, cprs)
	if len(evs) != 25 {
		t.Fatalf("initial load: %d events, want 5 units and 20 users", len(evs))
	}
	for _, e := range evs {
		if e.Operation != "snapshot" || e.Emission != "backfill" {
			t.Fatalf("initial load event %v (emission %s)", e, e.Emission)
		}
	}
	if got, want := evs[0].raw, `"id":"ldap://example.org/ou=%C3%86r%C3%B8%20Kommune,dc=example,dc=org"`; !strings.Contains(got, want) {
		t.Errorf("source.id: want %s in %s", want, got)
	}
	ue := byKey(evs, "OrganisationEnhed", "kortnavn")
	be := byKey(evs, "Bruger", "brugernavn")
	if len(ue) != 5 || len(be) != 20 {
		t.Fatalf("units by kortnavn %d, users by brugernavn %d", len(ue), len(be))
	}
	id := func(m map[string]orgEvent, k string) string {
		t.Helper()
		e, ok := m[k]
		if !ok {
			t.Fatalf("no object with key %q", k)
		}
		return e.Object.ID
	}
	if p := ue["Ærø Kommune"].After["overordnet"]; p != nil {
		t.Errorf("the top unit has overordnet %v, want null", p)
	}
	want := map[string]any{"navn": "Økonomi og Løn", "kortnavn": "oeko", "overordnet": id(ue, "Ærø Kommune"),
		"ean": "5798000000001", "pnummer": "1003386459", "adresse": "Torvet 1", "postnummer": "5970", "by": "Ærøskøbing"}
	for k, v := range want {
		if got := ue["oeko"].After[k]; got != v {
			t.Errorf("oeko.%s = %v, want %v", k, got, v)
		}
	}
	if got := ue["Børn, 0-6 år"].After; got["navn"] != "Børn, 0-6 år" || got["overordnet"] != id(ue, "Ærø Kommune") || got["ean"] != nil {
		t.Errorf("unit with an escaped DN: %v", got)
	}
	if got := ue["Dagpleje"].After["overordnet"]; got != id(ue, "Børn, 0-6 år") {
		t.Errorf("Dagpleje.overordnet = %v", got)
	}
	for uid := range people {
		if got := be[uid].After["enhed"]; got != id(ue, unitOf[uid]) {
			t.Errorf("%s: enhed %v, want %s", uid, got, unitOf[uid])
		}
	}
	jha := be["u07"].After
	if jha["navn"] != "Hansen, Jens + Åse" || jha["email"] != "u07@aeroe.dk" ||
		jha["telefon"] != "+45 6252 1007" || jha["stilling"] != "Sagsbehandler" {
		t.Errorf("user with , and + in its DN: %v", jha)
	}
	// The CPR number is in the state, normalised, and shown only on request.
	u03 := id(be, "u03")
	r = runEnv(t, wd, env, "history", "-c", "org.yaml", "Bruger/"+u03, "--json", "--reveal")
	if r.code != 0 || !strings.Contains(r.stdout, `"cpr": "0101734003"`) {
		t.Fatalf("history --reveal: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r = runEnv(t, wd, env, "history", "-c", "org.yaml", "Bruger/"+u03, "--json"); strings.Contains(r.stdout, "0101734003") {
		t.Fatalf("history without --reveal shows the CPR number:\n%s", r.stdout)
	}

	// A unit with units and users below renamed: one update, nothing below.
	// Valid time is modifyTimestamp, in whole seconds: a change in the same
	// second as the creation would be a korrektion of it, so wait a second.
	time.Sleep(1100 * time.Millisecond)
	d.move(boern, "ou="+goldap.EscapeDN("Børn og Unge, 0-6 år"), "")
	boern = "ou=" + goldap.EscapeDN("Børn og Unge, 0-6 år") + "," + base
	dagpleje = "ou=Dagpleje," + boern
	once()
	evs = out.next(t)
	checkOrgEvents(t, evs, cprs)
	e := wantOne(t, evs, "update", "OrganisationEnhed", id(ue, "Børn, 0-6 år"), "navn", "kortnavn")
	if e.Object.Keys["kortnavn"] != "Børn og Unge, 0-6 år" || e.ChangeKind != "aendring" {
		t.Errorf("renamed unit: keys %v, changeKind %s", e.Object.Keys, e.ChangeKind)
	}

	// A user moved to another unit (from Løn to Dagpleje, below the renamed
	// unit): one update of enhed.
	if unitOf["u05"] != "Løn" {
		t.Fatalf("test setup: u05 is in %s", unitOf["u05"])
	}
	d.move(people["u05"], "uid=u05", dagpleje)
	once()
	evs = out.next(t)
	checkOrgEvents(t, evs, cprs)
	e = wantOne(t, evs, "update", "Bruger", id(be, "u05"), "enhed")
	if len(e.Changed) != 1 || e.After["enhed"] != id(ue, "Dagpleje") || e.Before["enhed"] != id(ue, "Løn") {
		t.Errorf("moved user: changed %v, enhed %v → %v", e.Changed, e.Before["enhed"], e.After["enhed"])
	}

	// Only the CPR number changed: the event is in the log, but an internal
	// receiver learns nothing, not even that something secret changed.
	d.replace(people["u09"], "employeeNumber", "0909090909")
	cprs = append(cprs, "0909090909")
	once()
	if evs = out.next(t); len(evs) != 0 {
		t.Fatalf("a CPR-only change reached the internal receiver: %v", evs)
	}
	r = runEnv(t, wd, env, "status", "-c", "org.yaml", "--json")
	var rep Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.LogLength != 28 {
		t.Fatalf("status: log length %d, want 28 (the CPR change is logged): %v %s", rep.LogLength, err, r.stderr)
	}

	// A user deleted (u08 is in oeko, so its DN is still the one stored).
	d.del(people["u08"])
	once()
	evs = out.next(t)
	checkOrgEvents(t, evs, cprs)
	if e := wantOne(t, evs, "delete", "Bruger", id(be, "u08")); e.Reason != "deleted-in-source" || e.After != nil || e.Before["brugernavn"] != "u08" {
		t.Errorf("deleted user: reason %q, before %v, after %v", e.Reason, e.Before, e.After)
	} else if e.Bitemporal.VirkningKilde != "observed" {
		// syncrepl names only the deleted entryUUID, no time: valid time is
		// when the connector saw the deletion.
		t.Errorf("deleted user: virkningKilde %q, want observed", e.Bitemporal.VirkningKilde)
	}

	// The preset's markers (DIRECTORY-CASES #16). Løn marked fictive: the
	// unit is deleted, its users now lie in Økonomi.
	d.replace(loen, "description", "fiktiv")
	once()
	evs = out.next(t)
	checkOrgEvents(t, evs, cprs)
	if len(evs) != 5 {
		t.Fatalf("fictive Løn: want its delete and 4 users moved to oeko, got %v", evs)
	}
	for _, e := range evs {
		switch {
		case e.Object.ID == id(ue, "Løn"):
			if e.Operation != "delete" || e.Emission != "reconcile" {
				t.Errorf("fictive unit: %v (%s)", e, e.Emission)
			}
		case e.Operation != "update" || !slices.Equal(e.Changed, []string{"enhed"}) || e.After["enhed"] != id(ue, "oeko"):
			t.Errorf("user below the fictive unit: %v, enhed %v", e, e.After["enhed"])
		}
	}
	// Dagpleje blocked: it goes with its 6 users; unblocked, they return.
	d.replace(dagpleje, "description", "spærret")
	once()
	wantOps(t, "blocked Dagpleje", out.next(t), 7, "delete")
	d.replace(dagpleje, "description", "Dagplejen")
	once()
	evs = out.next(t)
	checkOrgEvents(t, evs, cprs)
	wantOps(t, "unblocked Dagpleje", evs, 7, "undelete")

	// A unit whose entryUUID the account may not read: no event, but
	// quarantined, and connector status counts it (DIRECTORY-CASES #4).
	d.add("ou=Hemmelig,"+base, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"Hemmelig"}, "l": {"hemmelig"}})
	once()
	if evs = out.next(t); len(evs) != 0 {
		t.Fatalf("a unit without a readable key made events: %v", evs)
	}
	r = runEnv(t, wd, env, "status", "-c", "org.yaml", "--json")
	rep = Report{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Sources) != 1 || rep.Sources[0].Quarantined != 1 {
		t.Fatalf("status: want 1 quarantined change: %+v %v %s", rep.Sources, err, r.stderr)
	}

	// Nothing changed: nothing happens.
	once()
	if evs = out.next(t); len(evs) != 0 {
		t.Fatalf("an idle run made events: %v", evs)
	}
}

// TestADOrganisationPreset: configs/ad-organisation.yaml against a Samba AD
// DC over LDAPS with the test CA: check, the initial load, a unit renamed
// with descendants, a user moved, a user disabled, a user deleted
// (tombstone); CPR never reaches the internal receiver.
func TestADOrganisationPreset(t *testing.T) {
	srv := testenv.NewSamba(t)
	c, err := srv.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := dir{t, c}

	base := "OU=Ærø Kommune," + srv.BaseDN
	ou := func(dn string, extra map[string][]string) {
		a := map[string][]string{"objectClass": {"organizationalUnit"}}
		for k, v := range extra {
			a[k] = v
		}
		d.add(dn, a)
	}
	oeko := "OU=Økonomi," + base
	boern := "OU=" + goldap.EscapeDN("Børn, 0-6 år") + "," + base
	dagpleje := "OU=Dagpleje," + boern
	ou(base, nil)
	ou(oeko, map[string][]string{"adminDisplayName": {"ØKO"}, "destinationIndicator": {"5798000000001"},
		"businessCategory": {"1003386459"}, "street": {"Torvet 1"}, "postalCode": {"5970"}, "l": {"Ærøskøbing"}})
	ou(boern, nil)
	ou(dagpleje, nil)

	cprs := []string{"010170-4001", "0101704001", "020270-4002", "0202704002", "030370-4003", "0303704003", "040470-4004", "0404704004"}
	users := []struct{ name, parent, sam, cpr string }{
		{"Anne Ærø", oeko, "anne", "010170-4001"},
		{"Bo Østergård", oeko, "bo", "020270-4002"},
		{"Hansen, Jens + Åse", dagpleje, "jha", "030370-4003"},
		{"Cecilie Ågård", boern, "cec", "040470-4004"},
	}
	userDN := func(i int) string { return "CN=" + goldap.EscapeDN(users[i].name) + "," + users[i].parent }
	for i, u := range users {
		d.add(userDN(i), map[string][]string{
			"objectClass": {"user"}, "sAMAccountName": {u.sam}, "displayName": {u.name},
			"mail": {u.sam + "@aeroe.dk"}, "telephoneNumber": {"+45 6252 1000"}, "title": {"Pædagog"},
			"msDS-cloudExtensionAttribute1": {u.cpr},
		})
	}
	// Accounts created over LDAP start disabled (546); enable one.
	d.replace(userDN(1), "userAccountControl", "512")

	wd := presetDir(t, "ad-organisation.yaml")
	uncommentMarkers(t, wd)
	env := []string{
		"CONNECTOR_AD_URL=" + srv.TLSURL,
		"CONNECTOR_AD_BIND_DN=" + srv.AdminUPN,
		"CONNECTOR_AD_PASSWORD=" + srv.AdminPW,
		"CONNECTOR_AD_BASE_DN=" + `ou=\c3\86r\c3\b8 kommune,` + srv.BaseDN, // escapes and case AD never returns
		"CONNECTOR_AD_CA_FILE=" + srv.CAFile,
	}
	r := runEnv(t, wd, env, "check", "-c", "org.yaml")
	if r.code != 0 || !strings.Contains(r.stdout, "source   ad") {
		t.Fatalf("check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	once := func() {
		t.Helper()
		if r := runEnv(t, wd, env, "run", "--once", "-c", "org.yaml"); r.code != 0 {
			t.Fatalf("run --once: exit %d\n%s", r.code, r.stderr)
		}
	}
	out := newOrgOutput(t, wd)

	once()
	evs := out.next(t)
	checkOrgEvents(t, evs, cprs)
	if len(evs) != 8 {
		t.Fatalf("initial load: %d events, want 4 units and 4 users: %v", len(evs), evs)
	}
	if got, want := evs[0].raw, `"id":"ldap://example.test/ou=%C3%A6r%C3%B8%20kommune,dc=example,dc=test"`; !strings.Contains(got, want) {
		t.Errorf("source.id: want %s in %s", want, got)
	}
	ue := map[string]orgEvent{}
	for _, e := range evs {
		if e.Object.Type == "OrganisationEnhed" {
			ue[fmt.Sprint(e.After["navn"])] = e
		}
	}
	be := byKey(evs, "Bruger", "brugernavn")
	for dn, name := range map[string]string{base: "Ærø Kommune", oeko: "Økonomi", boern: "Børn, 0-6 år", dagpleje: "Dagpleje"} {
		if ue[name].Object.ID != d.guid(dn) {
			t.Fatalf("unit %s: id %s, want objectGUID %s", name, ue[name].Object.ID, d.guid(dn))
		}
	}
	if p := ue["Ærø Kommune"].After["overordnet"]; p != nil {
		t.Errorf("the top unit has overordnet %v, want null", p)
	}
	want := map[string]any{"navn": "Økonomi", "kortnavn": "ØKO", "overordnet": d.guid(base), "ean": "5798000000001",
		"pnummer": "1003386459", "adresse": "Torvet 1", "postnummer": "5970", "by": "Ærøskøbing"}
	for k, v := range want {
		if got := ue["Økonomi"].After[k]; got != v {
			t.Errorf("Økonomi.%s = %v, want %v", k, got, v)
		}
	}
	// Without adminDisplayName the short key is the GUID, as in OS2sync.
	if k := ue["Dagpleje"].Object.Keys["kortnavn"]; k != d.guid(dagpleje) || ue["Dagpleje"].After["overordnet"] != d.guid(boern) {
		t.Errorf("Dagpleje: kortnavn %s, overordnet %v", k, ue["Dagpleje"].After["overordnet"])
	}
	jha := be["jha"]
	if jha.Object.ID != d.guid(userDN(2)) || jha.After["navn"] != "Hansen, Jens + Åse" || jha.After["enhed"] != d.guid(dagpleje) ||
		jha.After["deaktiveret"] != true || jha.After["stilling"] != "Pædagog" || jha.After["email"] != "jha@aeroe.dk" {
		t.Errorf("user with , and + in its DN: %s %v", jha.Object.ID, jha.After)
	}
	if be["bo"].After["deaktiveret"] != false {
		t.Errorf("enabled user: deaktiveret = %v", be["bo"].After["deaktiveret"])
	}
	r = runEnv(t, wd, env, "history", "-c", "org.yaml", "Bruger/"+be["anne"].Object.ID, "--json", "--reveal")
	if r.code != 0 || !strings.Contains(r.stdout, `"cpr": "0101704001"`) {
		t.Fatalf("history --reveal: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// The unit with a unit and a user below renamed: one update.
	d.move(boern, "OU=Børn og Unge", "")
	boern = "OU=Børn og Unge," + base
	dagpleje = "OU=Dagpleje," + boern
	users[2].parent, users[3].parent = dagpleje, boern
	once()
	evs = out.next(t)
	checkOrgEvents(t, evs, cprs)
	if e := wantOne(t, evs, "update", "OrganisationEnhed", d.guid(boern), "navn"); e.After["navn"] != "Børn og Unge" {
		t.Errorf("renamed unit: %v", e.After)
	}

	// A user moved, another disabled, a third deleted, in one run: three
	// events, one each.
	d.move(userDN(0), "CN=Anne Ærø", dagpleje)
	d.replace(userDN(1), "userAccountControl", "514")
	d.del(userDN(3))
	once()
	evs = out.next(t)
	checkOrgEvents(t, evs, cprs)
	if len(evs) != 3 {
		t.Fatalf("want 3 events (move, disable, delete), got %v", evs)
	}
	for _, e := range evs {
		switch e.Object.ID {
		case be["anne"].Object.ID:
			if e.Operation != "update" || !slices.Equal(e.Changed, []string{"enhed"}) || e.After["enhed"] != d.guid(dagpleje) {
				t.Errorf("moved user: %v enhed %v", e, e.After["enhed"])
			}
		case be["bo"].Object.ID:
			if e.Operation != "update" || !slices.Equal(e.Changed, []string{"deaktiveret"}) || e.After["deaktiveret"] != true {
				t.Errorf("disabled user: %v", e)
			}
		case be["cec"].Object.ID:
			// The tombstone's whenChanged is when the account was deleted.
			if e.Operation != "delete" || e.Reason != "tombstone" || e.Bitemporal.VirkningKilde != "whenChanged" ||
				!validAtChangeTime(e) {
				t.Errorf("deleted user: %v, virkningFra %s (%s), sourceChangedAt %s", e, e.Bitemporal.VirkningFra, e.Bitemporal.VirkningKilde, e.SourceChangedAt)
			}
		default:
			t.Errorf("unexpected event %v", e)
		}
	}

	// The preset's markers on adminDescription. Økonomi made fictive: it
	// is deleted, and bo, the user left in it, now lies in the top unit.
	d.replace(oeko, "adminDescription", "fiktiv")
	once()
	evs = out.next(t)
	checkOrgEvents(t, evs, cprs)
	if len(evs) != 2 {
		t.Fatalf("fictive Økonomi: want its delete and bo's enhed, got %v", evs)
	}
	for _, e := range evs {
		switch e.Object.ID {
		case d.guid(oeko):
			if e.Operation != "delete" {
				t.Errorf("fictive unit: %v", e)
			}
		case be["bo"].Object.ID:
			if e.Operation != "update" || e.After["enhed"] != d.guid(base) {
				t.Errorf("user below the fictive unit: %v, enhed %v", e, e.After["enhed"])
			}
		default:
			t.Errorf("unexpected event %v", e)
		}
	}
	// Børn og Unge blocked: it goes with Dagpleje, anne and jha; back when
	// unblocked.
	d.replace(boern, "adminDescription", "spærret")
	once()
	wantOps(t, "blocked Børn og Unge", out.next(t), 4, "delete")
	d.replace(boern, "adminDescription", "åben")
	once()
	evs = out.next(t)
	checkOrgEvents(t, evs, cprs)
	wantOps(t, "unblocked Børn og Unge", evs, 4, "undelete")
}
