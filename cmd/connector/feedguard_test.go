package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/os2sandbox/connector/testenv"
)

// TestLDAPFeedDeletionGuard: a unit moved out of scope between two polls
// would delete half the organisation through the change feed; the agent
// refuses the batch (nothing applied, position kept) until it is run with
// --allow-deletions.
func TestLDAPFeedDeletionGuard(t *testing.T) {
	srv := testenv.NewSlapd(t, testenv.SlapdOptions{})
	c, err := srv.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := dir{t, c}
	base := "ou=Kommune," + srv.Suffix
	outside := "ou=Andet," + srv.Suffix
	for _, dn := range []string{base, "ou=A," + base, "ou=B," + base, outside} {
		d.add(dn, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {strings.TrimPrefix(strings.Split(dn, ",")[0], "ou=")}})
	}
	for i := range 10 {
		unit := "ou=A," + base
		if i >= 5 {
			unit = "ou=B," + base
		}
		uid := fmt.Sprintf("u%d", i)
		d.add("uid="+uid+","+unit, map[string][]string{"objectClass": {"inetOrgPerson"}, "uid": {uid}, "cn": {uid}, "sn": {uid}})
	}
	wd := presetDir(t, "ldap-organisation.yaml")
	cfg := readString(t, wd+"/org.yaml")
	if !strings.Contains(cfg, "deletion_guard: {max_share: 0.10, min_count: 100}") {
		t.Fatal("the preset's deletion_guard line changed")
	}
	cfg = strings.Replace(cfg, "deletion_guard: {max_share: 0.10, min_count: 100}", "deletion_guard: {max_share: 0.1, min_count: 3}", 1)
	writeFile(t, wd+"/org.yaml", cfg)
	ca := wd + "/ca.pem"
	writeCA(t, ca)
	env := []string{"CONNECTOR_LDAP_URL=" + srv.URL, "CONNECTOR_LDAP_BIND_DN=" + srv.RootDN, "CONNECTOR_LDAP_PASSWORD=" + srv.RootPW,
		"CONNECTOR_LDAP_BASE_DN=" + base, "CONNECTOR_LDAP_CA_FILE=" + ca}
	out := newOrgOutput(t, wd)
	if r := runEnv(t, wd, env, "run", "--once", "-c", "org.yaml"); r.code != 0 {
		t.Fatalf("initial load: exit %d\n%s", r.code, r.stderr)
	}
	if evs := out.next(t); len(evs) != 13 {
		t.Fatalf("initial load: %d events, want 3 units and 10 users", len(evs))
	}

	d.move("ou=A,"+base, "ou=A", outside) // unit A and its 5 users leave the synced subtree
	r := runEnv(t, wd, env, "run", "--once", "-c", "org.yaml")
	if r.code != 1 || !strings.Contains(r.stderr, "deletion guard") || !strings.Contains(r.stderr, "change feed would delete 6 of 13 live objects") ||
		!strings.Contains(r.stderr, "--allow-deletions") || !strings.Contains(r.stderr, "(moved-out-of-scope: 6)") {
		t.Fatalf("want the feed guard to refuse (exit 1), got %d:\n%s", r.code, r.stderr)
	}
	if evs := out.next(t); len(evs) != 0 {
		t.Fatalf("a refused batch reached the receiver: %v", evs)
	}
	// Still refused on the next run: the position did not move.
	if r := runEnv(t, wd, env, "run", "--once", "-c", "org.yaml"); r.code != 1 {
		t.Fatalf("second run: exit %d, want the guard again\n%s", r.code, r.stderr)
	}
	if r := runEnv(t, wd, env, "run", "--once", "-c", "org.yaml", "--allow-deletions"); r.code != 0 {
		t.Fatalf("run --allow-deletions: exit %d\n%s", r.code, r.stderr)
	}
	evs := out.next(t)
	if len(evs) != 6 {
		t.Fatalf("after the override: %v, want 6 deletes", evs)
	}
	st := runEnv(t, wd, env, "status", "-c", "org.yaml", "--json")
	var rep Report
	if err := json.Unmarshal([]byte(st.stdout), &rep); err != nil || len(rep.Sources) != 1 || rep.Sources[0].Live == nil || *rep.Sources[0].Live != 7 {
		t.Fatalf("status should count 7 live objects: %v\n%s", err, st.stdout)
	}
	for _, e := range evs {
		if e.Operation != "delete" || e.Reason != "moved-out-of-scope" {
			t.Errorf("after the override: %v", e)
		}
	}
}
