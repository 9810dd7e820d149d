package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDemoMatchesCommitted: the committed demo data is exactly what the
// generator writes, so the README's lists and the files cannot drift apart.
func TestDemoMatchesCommitted(t *testing.T) {
	dir := t.TempDir()
	if err := writeDemo(dir); err != nil {
		t.Fatal(err)
	}
	committed := filepath.Join("..", "..", "configs", "demo")
	want, got := tree(t, dir), tree(t, committed)
	for name, b := range want {
		c, ok := got[name]
		switch {
		case !ok:
			t.Errorf("configs/demo/%s is missing; run: go run ./scripts/gensnapshot -demo configs/demo", name)
		case !bytes.Equal(b, c):
			t.Errorf("configs/demo/%s differs from the generator's output; run: go run ./scripts/gensnapshot -demo configs/demo", name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok && strings.HasPrefix(name, "snapshots/") {
			t.Errorf("configs/demo/%s is not written by the generator; remove it", name)
		}
	}
}

// tree reads every file under dir, keyed by slash path.
func tree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		m[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var (
	uuidRe  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	dateRe  = regexp.MustCompile(`^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$`)
	cprRe   = regexp.MustCompile(`^(0[1-9]|[12][0-9])13[0-9]{2}-[0-9]{4}$`)
	loginRe = regexp.MustCompile(`^[a-z]{3}[0-9]{3}$`)
	phoneRe = regexp.MustCompile(`^\+45 [2-9][0-9]( [0-9]{2}){3}$`)
)

type snapshot struct {
	units map[string]unit
	users map[string]user
	order []string // user ids in file order
}

// load reads and checks one snapshot directory the way a consumer would.
func load(t *testing.T, dir string) snapshot {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "units.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rows[0], ","); got != "id,navn,kortnavn,overordnet_id,ean,gyldig_fra" {
		t.Fatalf("%s: header %q", dir, got)
	}
	s := snapshot{units: map[string]unit{}, users: map[string]user{}}
	kort := map[string]bool{}
	roots := 0
	for _, r := range rows[1:] {
		u := unit{r[0], r[1], r[2], r[3], r[4], r[5]}
		if !uuidRe.MatchString(u.ID) || !dateRe.MatchString(u.GyldigFra) || u.Navn == "" {
			t.Errorf("%s: bad unit row %q", dir, r)
		}
		if u.EAN != "" && (len(u.EAN) != 13 || checkDigit(u.EAN) != u.EAN[12:]) {
			t.Errorf("%s: unit %s: bad EAN %q", dir, u.Kortnavn, u.EAN)
		}
		if _, dup := s.units[u.ID]; dup || kort[u.Kortnavn] {
			t.Errorf("%s: duplicate unit %s %s", dir, u.ID, u.Kortnavn)
		}
		s.units[u.ID], kort[u.Kortnavn] = u, true
		if u.Parent == "" {
			roots++
		}
	}
	if roots != 1 {
		t.Errorf("%s: %d roots, want 1", dir, roots)
	}
	for _, u := range s.units {
		seen := map[string]bool{}
		for p := u.Parent; p != ""; p = s.units[p].Parent {
			if _, ok := s.units[p]; !ok || seen[p] {
				t.Errorf("%s: unit %s: parent chain broken or cyclic at %s", dir, u.Kortnavn, p)
				break
			}
			seen[p] = true
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "users.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	logins := map[string]bool{}
	for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		var u user
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&u); err != nil {
			t.Fatalf("%s/users.jsonl:%d: %v", dir, i+1, err)
		}
		if !uuidRe.MatchString(u.ID) || !loginRe.MatchString(u.Brugernavn) || !cprRe.MatchString(u.CPR) ||
			!phoneRe.MatchString(u.Telefon) || !dateRe.MatchString(u.GyldigFra) ||
			!strings.HasSuffix(u.Email, "@demokommune.dk") || u.Navn == "" || u.Stilling == "" {
			t.Errorf("%s/users.jsonl:%d: bad user %s", dir, i+1, line)
		}
		if _, ok := s.units[u.EnhedID]; !ok {
			t.Errorf("%s/users.jsonl:%d: enhed_id %s is not a unit", dir, i+1, u.EnhedID)
		}
		if _, dup := s.users[u.ID]; dup || logins[u.Brugernavn] {
			t.Errorf("%s/users.jsonl:%d: duplicate id or brugernavn", dir, i+1)
		}
		s.users[u.ID], logins[u.Brugernavn] = u, true
		s.order = append(s.order, u.ID)
	}
	return s
}

type diff struct {
	unitsNew, unitsGone, unitsRenamed, unitsMoved []string
	usersNew, usersGone, usersMoved               []string
	// corrections: changed with gyldig_fra kept or moved earlier.
	corrections, backdated, otherChanges []string
}

func compare(a, b snapshot, from string) diff {
	var d diff
	for id, u := range b.units {
		old, ok := a.units[id]
		switch {
		case !ok:
			d.unitsNew = append(d.unitsNew, id)
		case old.Navn != u.Navn && u.GyldigFra == from:
			d.unitsRenamed = append(d.unitsRenamed, id)
		case old.Parent != u.Parent && u.GyldigFra == from:
			d.unitsMoved = append(d.unitsMoved, id)
		case old != u:
			d.otherChanges = append(d.otherChanges, id)
		}
	}
	for id := range a.units {
		if _, ok := b.units[id]; !ok {
			d.unitsGone = append(d.unitsGone, id)
		}
	}
	for id, u := range b.users {
		old, ok := a.users[id]
		switch {
		case !ok:
			d.usersNew = append(d.usersNew, id)
		case old == u:
		case u.GyldigFra < old.GyldigFra:
			d.backdated = append(d.backdated, id)
		case u.GyldigFra == old.GyldigFra:
			d.corrections = append(d.corrections, id)
		case old.EnhedID != u.EnhedID && u.GyldigFra == from:
			d.usersMoved = append(d.usersMoved, id)
		default:
			d.otherChanges = append(d.otherChanges, id)
		}
	}
	for id := range a.users {
		if _, ok := b.users[id]; !ok {
			d.usersGone = append(d.usersGone, id)
		}
	}
	return d
}

// TestDemoScenario checks the story the README tells, from the files alone.
func TestDemoScenario(t *testing.T) {
	dir := t.TempDir()
	if err := writeDemo(dir); err != nil {
		t.Fatal(err)
	}
	s1 := load(t, filepath.Join(dir, "snapshots", day1))
	s2 := load(t, filepath.Join(dir, "snapshots", day2))
	s3 := load(t, filepath.Join(dir, "snapshots", day3))
	if n := len(s1.units); n < 45 || n > 60 {
		t.Errorf("day 1 has %d units, want about 50", n)
	}
	if n := len(s1.users); n != 500 {
		t.Errorf("day 1 has %d users, want 500", n)
	}
	danish := 0
	for _, u := range s1.units {
		if strings.ContainsAny(u.Navn, "æøåÆØÅ") {
			danish++
		}
	}
	if danish < 5 {
		t.Errorf("only %d unit names have æ, ø or å", danish)
	}

	d2 := compare(s1, s2, from2)
	counts := []struct {
		name      string
		got, want int
	}{
		{"day 2 units renamed", len(d2.unitsRenamed), 5},
		{"day 2 units moved", len(d2.unitsMoved), 2},
		{"day 2 units new", len(d2.unitsNew), 1},
		{"day 2 units deleted", len(d2.unitsGone), 0},
		{"day 2 users moved", len(d2.usersMoved), 20},
		{"day 2 users corrected", len(d2.corrections), 3},
		{"day 2 users backdated", len(d2.backdated), 1},
		{"day 2 users deleted", len(d2.usersGone), 15},
		{"day 2 users new", len(d2.usersNew), 10},
		{"day 2 other changes", len(d2.otherChanges), 0},
	}
	d3 := compare(s2, s3, from3)
	var undeleted, recreated []string
	for _, id := range d3.usersNew {
		if _, ok := s1.users[id]; ok {
			undeleted = append(undeleted, id)
			continue
		}
		for _, gone := range d2.usersGone {
			if s1.users[gone].Brugernavn == s3.users[id].Brugernavn {
				recreated = append(recreated, id)
			}
		}
	}
	counts = append(counts, []struct {
		name      string
		got, want int
	}{
		{"day 3 undeletes (same id)", len(undeleted), 2},
		{"day 3 re-created (new id, same brugernavn)", len(recreated), 1},
		{"day 3 users new", len(d3.usersNew), 2 + 1 + 2},
		{"day 3 users deleted", len(d3.usersGone), 3},
		{"day 3 users moved", len(d3.usersMoved), 4},
		{"day 3 corrections", len(d3.corrections) + len(d3.backdated), 0},
		{"day 3 units renamed", len(d3.unitsRenamed), 1},
	}...)
	for _, c := range counts {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
	// The deletion guard (10%) must not trip on any day.
	if len(d2.usersGone)*10 >= len(s1.users) || len(d3.usersGone)*10 >= len(s2.users) {
		t.Error("a day deletes 10% or more of the users")
	}
	// The featured user: created day 1, corrected day 2, moved day 3.
	f1, f2, f3 := s1.users[featuredID], s2.users[featuredID], s3.users[featuredID]
	if f1.ID == "" || !slices.Contains(d2.corrections, featuredID) || !slices.Contains(d3.usersMoved, featuredID) ||
		f1.Navn == f2.Navn || f1.GyldigFra != f2.GyldigFra || f2.EnhedID == f3.EnhedID {
		t.Errorf("featured user does not follow its story:\n%+v\n%+v\n%+v", f1, f2, f3)
	}
	// Unchanged users keep their lines and relative order.
	var kept []string
	for _, id := range s1.order {
		if _, ok := s2.users[id]; ok {
			kept = append(kept, id)
		}
	}
	if !slices.Equal(kept, s2.order[:len(kept)]) {
		t.Error("day 2 reorders day 1's users")
	}
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range slices.Concat(d2.usersGone, d2.usersMoved, d2.corrections, d3.usersNew, d3.usersMoved, d2.unitsRenamed, d2.unitsMoved) {
		if !bytes.Contains(readme, []byte(id)) {
			t.Errorf("README.md does not list changed object %s", id)
		}
	}
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	users := []user{
		{},
		{ID: "x", Navn: `Åse "Bøgh" Ærbo`, Stilling: `back\slash`, Email: "tab\there", Telefon: "nl\n\x01", CPR: "<&>"},
		{ID: "47968041-31cd-5252-98b1-306154896f31", Brugernavn: "bol415", Navn: "Bo Holm Olsen", GyldigFra: "2013-07-01"},
	}
	for _, u := range users {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(u); err != nil {
			t.Fatal(err)
		}
		got := append(u.appendJSON(nil), '\n')
		// encoding/json writes control characters as \n, \t where it can;
		// both forms decode to the same string, so compare decoded values
		// and require byte equality only where no such character occurs.
		var back user
		if err := json.Unmarshal(got, &back); err != nil || back != u {
			t.Errorf("appendJSON(%+v) = %s, decodes to %+v (err %v)", u, got, back, err)
		}
		if !strings.ContainsAny(u.Email+u.Telefon, "\t\n\x01") && !bytes.Equal(got, want.Bytes()) {
			t.Errorf("appendJSON = %s\nencoding/json = %s", got, want.Bytes())
		}
	}
}

func TestCheckDigit(t *testing.T) {
	for _, c := range []string{"4006381333931", "5790000000012", "5798000000018"} {
		if got := checkDigit(c[:12]); got != c[12:] {
			t.Errorf("checkDigit(%s) = %s, want %s", c[:12], got, c[12:])
		}
	}
}

func TestSyntheticDeterministic(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		if err := writeSynthetic(dir, 40, 3000, 7); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeSynthetic(c, 40, 3000, 8); err != nil {
		t.Fatal(err)
	}
	ta, tb, tc := tree(t, a), tree(t, b), tree(t, c)
	for name := range ta {
		if !bytes.Equal(ta[name], tb[name]) {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
		if bytes.Equal(ta[name], tc[name]) {
			t.Errorf("%s is the same for seeds 7 and 8", name)
		}
	}
	s := loadSynthetic(t, a)
	if len(s.units) != 40 || len(s.users) != 3000 {
		t.Errorf("got %d units, %d users; want 40, 3000", len(s.units), len(s.users))
	}
}

// loadSynthetic reads a synthetic snapshot, checking ids, user names and
// references (the demo's stricter formats do not apply: user names grow).
func loadSynthetic(t *testing.T, dir string) snapshot {
	t.Helper()
	units, err := readUnits(filepath.Join(dir, "units.csv"))
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{units: map[string]unit{}, users: map[string]user{}}
	for _, u := range units {
		s.units[u.ID] = u
	}
	logins := map[string]bool{}
	err = eachLine(filepath.Join(dir, "users.jsonl"), func(line []byte) error {
		var u user
		if err := json.Unmarshal(line, &u); err != nil {
			return err
		}
		if _, ok := s.units[u.EnhedID]; !ok || !uuidRe.MatchString(u.ID) || !cprRe.MatchString(u.CPR) {
			t.Errorf("bad user %s", line)
		}
		if _, dup := s.users[u.ID]; dup || logins[u.Brugernavn] {
			t.Errorf("duplicate id or brugernavn: %s", line)
		}
		s.users[u.ID], logins[u.Brugernavn] = u, true
		s.order = append(s.order, u.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDrift(t *testing.T) {
	base, out, again := t.TempDir(), t.TempDir(), t.TempDir()
	const n, share = 20000, 0.05
	if err := writeSynthetic(base, 30, n, 1); err != nil {
		t.Fatal(err)
	}
	st, err := writeDrift(base, out, share, "2026-02-01", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeDrift(base, again, share, "2026-02-01", 1); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tree(t, out)["users.jsonl"], tree(t, again)["users.jsonl"]) {
		t.Error("drift is not deterministic")
	}
	if !bytes.Equal(tree(t, out)["units.csv"], tree(t, base)["units.csv"]) {
		t.Error("drift changed units.csv")
	}
	a, b := loadSynthetic(t, base), loadSynthetic(t, out)
	d := compare(a, b, "2026-02-01")
	var renamed int
	for id, u := range b.users {
		if old, ok := a.users[id]; ok && old.Navn != u.Navn {
			renamed++
		}
	}
	got := []struct {
		name          string
		files, report int
	}{
		{"moved", len(d.usersMoved), st.moved},
		{"renamed", renamed, st.renamed},
		{"deleted", len(d.usersGone), st.deleted},
		{"added", len(d.usersNew), st.added},
		{"users", len(b.users), st.users},
	}
	for _, g := range got {
		if g.files != g.report {
			t.Errorf("%s: files show %d, report says %d", g.name, g.files, g.report)
		}
	}
	if len(d.otherChanges) != st.renamed || len(d.corrections)+len(d.backdated) != 0 {
		t.Errorf("unexpected changes: %d other (want the %d renames), %d corrections", len(d.otherChanges), st.renamed, len(d.corrections)+len(d.backdated))
	}
	// About share·n users drift; allow five standard deviations.
	drifted := st.moved + st.renamed + st.deleted
	if want, tol := share*n, 5*70.0; float64(drifted) < want-tol || float64(drifted) > want+tol {
		t.Errorf("%d users drifted, want about %.0f", drifted, want)
	}
	if want := int(math.Round(float64(n) * share * addShare)); st.added != want {
		t.Errorf("added %d, want %d", st.added, want)
	}
	// Unchanged users are copied in order.
	var kept []string
	for _, id := range a.order {
		if u, ok := b.users[id]; ok && u == a.users[id] {
			kept = append(kept, id)
		}
	}
	var inOut []string
	for _, id := range b.order {
		if u, ok := a.users[id]; ok && u == b.users[id] {
			inOut = append(inOut, id)
		}
	}
	if !slices.Equal(kept, inOut) {
		t.Error("drift reorders unchanged users")
	}
}

func TestRunUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"-users", "10"},
		{"-out", dir, "-drift", "0.1"},
		{"-out", dir, "-from", dir},
		{"-out", dir, "-from", dir, "-drift", "2"},
		{"-out", dir, "-from", dir, "-drift", "0.1", "-users", "5"},
		{"-out", dir, "-from", dir, "-drift", "0.1", "-date", "1 feb"},
		{"-demo", dir, "-seed", "3"},
		{"-out", dir, "extra"},
		{"-nosuchflag"},
	} {
		var stderr bytes.Buffer
		if err := run(args, &stderr); err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
	// A missing -from directory is a runtime error naming the file.
	err := run([]string{"-out", dir, "-from", filepath.Join(dir, "nope"), "-drift", "0.1"}, new(bytes.Buffer))
	if err == nil || strings.Contains(err.Error(), "usage") || !strings.Contains(err.Error(), "units.csv") {
		t.Errorf("missing -from: %v", err)
	}
}

func TestDriftRefusesTruncatedInput(t *testing.T) {
	base, out := t.TempDir(), t.TempDir()
	if err := writeSynthetic(base, 5, 10, 1); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(base, "users.jsonl")
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, b[:len(b)-20], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := writeDrift(base, out, 1, "2026-02-01", 1)
	if err == nil || !strings.Contains(err.Error(), "users.jsonl:10") {
		t.Errorf("truncated input: %v, want an error naming users.jsonl:10", err)
	}
}

func BenchmarkSynthetic(b *testing.B) {
	dir := b.TempDir()
	for b.Loop() {
		if err := writeSynthetic(dir, 100, 100000, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100000)/b.Elapsed().Seconds(), "users/s")
}
