package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The demo: Demokommune, a small municipality, as three dated snapshots of
// its HR export. Everything is derived from demoSeed and the tables below,
// so the committed files under configs/demo are reproducible (a test checks
// that they are byte for byte what this program writes).
const demoSeed = 20260105

// The snapshot days (directory names) and the valid-from dates they bring.
const (
	day1, day2, day3 = "2026-01-05", "2026-02-02", "2026-03-02"
	from2, from3     = "2026-02-01", "2026-03-01"
)

// unitDef describes one unit of the demo organisation.
type unitDef struct {
	kort, navn, parent, from string
	// staff is the unit's relative share of ordinary staff (0: leader only).
	staff int
	// leader is the leader's title; titles are the staff's.
	leader string
	titles []string
	// ean says the unit receives invoices (institutions, departments).
	ean bool
}

var demoUnits = []unitDef{
	{kort: "DK", navn: "Demokommune", from: "2007-01-01", leader: "Kommunaldirektør", ean: true},

	{kort: "BU", navn: "Børn og Unge", parent: "DK", from: "2020-01-01", leader: "Direktør", ean: true},
	{kort: "TM", navn: "Teknik og Miljø", parent: "DK", from: "2020-01-01", leader: "Direktør", ean: true},
	{kort: "SSA", navn: "Social, Sundhed og Ældre", parent: "DK", from: "2020-01-01", leader: "Direktør", ean: true},
	{kort: "KFB", navn: "Kultur, Fritid og Borgerservice", parent: "DK", from: "2020-01-01", leader: "Direktør", ean: true},
	{kort: "OP", navn: "Økonomi og Personale", parent: "DK", from: "2020-01-01", leader: "Direktør", ean: true},

	{kort: "BU-DAG", navn: "Dagtilbud", parent: "BU", from: "2020-01-01", leader: "Dagtilbudschef", staff: 1, ean: true},
	{kort: "BU-SKO", navn: "Skole", parent: "BU", from: "2020-01-01", leader: "Skolechef", staff: 1, ean: true},
	{kort: "BU-FAM", navn: "Familie og Forebyggelse", parent: "BU", from: "2020-01-01", leader: "Afdelingsleder", staff: 1, ean: true},
	{kort: "TM-VEJ", navn: "Vej og Park", parent: "TM", from: "2020-01-01", leader: "Afdelingsleder", staff: 1, ean: true},
	{kort: "TM-BYG", navn: "Byggeri og Plan", parent: "TM", from: "2020-01-01", leader: "Afdelingsleder", staff: 1, ean: true},
	{kort: "TM-NAT", navn: "Natur og Miljø", parent: "TM", from: "2021-04-01", leader: "Afdelingsleder", staff: 1, ean: true},
	{kort: "SSA-AEL", navn: "Ældreområdet", parent: "SSA", from: "2020-01-01", leader: "Ældrechef", staff: 1, ean: true},
	{kort: "SSA-HAP", navn: "Handicap og Psykiatri", parent: "SSA", from: "2020-01-01", leader: "Afdelingsleder", staff: 1, ean: true},
	{kort: "SSA-SUN", navn: "Sundhed", parent: "SSA", from: "2020-01-01", leader: "Afdelingsleder", staff: 1, ean: true},
	{kort: "KFB-BOR", navn: "Borgerservice", parent: "KFB", from: "2020-01-01", leader: "Afdelingsleder", staff: 1, ean: true},
	{kort: "KFB-KUL", navn: "Kultur og Fritid", parent: "KFB", from: "2020-01-01", leader: "Afdelingsleder", staff: 1, ean: true},
	{kort: "KFB-BIB", navn: "Bibliotekerne", parent: "KFB", from: "2020-01-01", leader: "Bibliotekschef", staff: 1, ean: true},
	{kort: "OP-OKO", navn: "Økonomi", parent: "OP", from: "2020-01-01", leader: "Økonomichef", staff: 1, ean: true},
	{kort: "OP-HR", navn: "HR og Løn", parent: "OP", from: "2020-01-01", leader: "HR-chef", staff: 1, ean: true},
	{kort: "OP-IT", navn: "Digitalisering og IT", parent: "OP", from: "2022-01-01", leader: "IT-chef", staff: 1, ean: true},

	{kort: "BU-DAG-OST", navn: "Dagtilbud Østbyen", parent: "BU-DAG", from: "2020-01-01", leader: "Dagtilbudsleder", staff: 10, titles: []string{"Pædagog", "Pædagog", "Pædagogmedhjælper"}, ean: true},
	{kort: "BU-DAG-VEST", navn: "Dagtilbud Vestbyen", parent: "BU-DAG", from: "2020-01-01", leader: "Dagtilbudsleder", staff: 10, titles: []string{"Pædagog", "Pædagog", "Pædagogmedhjælper"}, ean: true},
	{kort: "BU-DAG-NORD", navn: "Dagtilbud Nordby", parent: "BU-DAG", from: "2021-08-01", leader: "Dagtilbudsleder", staff: 8, titles: []string{"Pædagog", "Pædagogmedhjælper"}, ean: true},
	{kort: "BU-DAG-PLE", navn: "Dagplejen", parent: "BU-DAG", from: "2020-01-01", leader: "Dagplejeleder", staff: 8, titles: []string{"Dagplejer"}},
	{kort: "BU-SKO-OST", navn: "Østbyskolen", parent: "BU-SKO", from: "2020-01-01", leader: "Skoleleder", staff: 12, titles: []string{"Lærer", "Lærer", "Lærer", "Pædagog", "Skolesekretær"}, ean: true},
	{kort: "BU-SKO-AA", navn: "Åskolen", parent: "BU-SKO", from: "2020-01-01", leader: "Skoleleder", staff: 12, titles: []string{"Lærer", "Lærer", "Lærer", "Pædagog", "Skolesekretær"}, ean: true},
	{kort: "BU-SKO-NOR", navn: "Nørremarkskolen", parent: "BU-SKO", from: "2020-01-01", leader: "Skoleleder", staff: 10, titles: []string{"Lærer", "Lærer", "Pædagog", "Skolesekretær"}, ean: true},
	{kort: "BU-FAM-RAD", navn: "Familierådgivningen", parent: "BU-FAM", from: "2020-01-01", leader: "Teamleder", staff: 6, titles: []string{"Socialrådgiver"}},
	{kort: "BU-FAM-PPR", navn: "Pædagogisk Psykologisk Rådgivning", parent: "BU-FAM", from: "2020-01-01", leader: "PPR-leder", staff: 4, titles: []string{"Psykolog", "Tale-hørelærer"}},
	{kort: "TM-VEJ-DRI", navn: "Vejdrift", parent: "TM-VEJ", from: "2020-01-01", leader: "Driftsleder", staff: 6, titles: []string{"Vejarbejder", "Maskinfører"}},
	{kort: "TM-VEJ-PAR", navn: "Parkdrift", parent: "TM-VEJ", from: "2020-01-01", leader: "Driftsleder", staff: 5, titles: []string{"Gartner", "Anlægsgartner"}},
	{kort: "TM-BYG-SAG", navn: "Byggesag", parent: "TM-BYG", from: "2020-01-01", leader: "Teamleder", staff: 4, titles: []string{"Byggesagsbehandler", "Bygningskonstruktør"}},
	{kort: "TM-BYG-PLA", navn: "Planlægning", parent: "TM-BYG", from: "2020-01-01", leader: "Teamleder", staff: 3, titles: []string{"Byplanlægger", "Landinspektør"}},
	{kort: "TM-NAT-TIL", navn: "Miljøtilsyn", parent: "TM-NAT", from: "2021-04-01", leader: "Teamleder", staff: 3, titles: []string{"Miljømedarbejder", "Ingeniør"}},
	{kort: "TM-NAT-VAN", navn: "Natur og Vand", parent: "TM-NAT", from: "2021-04-01", leader: "Teamleder", staff: 3, titles: []string{"Biolog", "Ingeniør"}},
	{kort: "SSA-AEL-SYD", navn: "Hjemmeplejen Syd", parent: "SSA-AEL", from: "2020-01-01", leader: "Områdeleder", staff: 14, titles: []string{"Social- og sundhedshjælper", "Social- og sundhedsassistent"}},
	{kort: "SSA-AEL-NORD", navn: "Hjemmeplejen Nord", parent: "SSA-AEL", from: "2020-01-01", leader: "Områdeleder", staff: 14, titles: []string{"Social- og sundhedshjælper", "Social- og sundhedsassistent"}},
	{kort: "SSA-AEL-SOL", navn: "Plejecenter Solgården", parent: "SSA-AEL", from: "2020-01-01", leader: "Centerleder", staff: 14, titles: []string{"Social- og sundhedsassistent", "Sygeplejerske", "Køkkenassistent"}, ean: true},
	{kort: "SSA-AEL-TRN", navn: "Træning og Rehabilitering", parent: "SSA-AEL", from: "2020-01-01", leader: "Teamleder", staff: 4, titles: []string{"Fysioterapeut", "Ergoterapeut"}},
	{kort: "SSA-HAP-BOS", navn: "Bostøtten", parent: "SSA-HAP", from: "2020-01-01", leader: "Teamleder", staff: 5, titles: []string{"Socialpædagog"}},
	{kort: "SSA-HAP-ENG", navn: "Botilbuddet Engly", parent: "SSA-HAP", from: "2020-01-01", leader: "Forstander", staff: 6, titles: []string{"Socialpædagog", "Social- og sundhedsassistent"}, ean: true},
	{kort: "SSA-SUN-PLE", navn: "Sundhedsplejen", parent: "SSA-SUN", from: "2020-01-01", leader: "Ledende sundhedsplejerske", staff: 4, titles: []string{"Sundhedsplejerske"}},
	{kort: "SSA-SUN-TAN", navn: "Tandplejen", parent: "SSA-SUN", from: "2020-01-01", leader: "Overtandlæge", staff: 4, titles: []string{"Tandlæge", "Tandplejer", "Klinikassistent"}, ean: true},
	{kort: "KFB-BOR-RAD", navn: "Borgerservice Rådhuset", parent: "KFB-BOR", from: "2020-01-01", leader: "Teamleder", staff: 5, titles: []string{"Borgerservicemedarbejder"}},
	{kort: "KFB-BOR-YDE", navn: "Ydelseskontoret", parent: "KFB-BOR", from: "2020-01-01", leader: "Teamleder", staff: 4, titles: []string{"Sagsbehandler"}},
	{kort: "KFB-KUL-MOL", navn: "Kulturhuset Møllen", parent: "KFB-KUL", from: "2020-01-01", leader: "Kulturhusleder", staff: 3, titles: []string{"Kulturmedarbejder", "Tekniker"}, ean: true},
	{kort: "KFB-KUL-IDR", navn: "Idrætscenter Åbyhøj", parent: "KFB-KUL", from: "2020-01-01", leader: "Centerleder", staff: 3, titles: []string{"Halinspektør", "Servicemedarbejder"}, ean: true},
	{kort: "KFB-BIB-HOV", navn: "Hovedbiblioteket", parent: "KFB-BIB", from: "2020-01-01", leader: "Biblioteksleder", staff: 4, titles: []string{"Bibliotekar", "Biblioteksassistent"}},
	{kort: "OP-OKO-REG", navn: "Regnskab", parent: "OP-OKO", from: "2020-01-01", leader: "Teamleder", staff: 4, titles: []string{"Økonomimedarbejder", "Controller"}},
	{kort: "OP-OKO-IND", navn: "Indkøb", parent: "OP-OKO", from: "2020-01-01", leader: "Teamleder", staff: 2, titles: []string{"Indkøbskonsulent"}},
	{kort: "OP-HR-LON", navn: "Lønkontoret", parent: "OP-HR", from: "2020-01-01", leader: "Teamleder", staff: 3, titles: []string{"Lønkonsulent"}},
	{kort: "OP-IT-DRI", navn: "IT-drift", parent: "OP-IT", from: "2022-01-01", leader: "Teamleder", staff: 4, titles: []string{"IT-supporter", "Systemadministrator"}},
}

// The day 2 new unit.
var newUnit = unitDef{kort: "TM-KLI", navn: "Klimasekretariatet", parent: "TM", from: from2, leader: "Teamleder", staff: 2, titles: []string{"Klimakonsulent"}}

// Unit changes: renames (valid from the day's date) and moves.
var (
	renames2 = map[string]string{
		"SSA":         "Sundhed og Omsorg",
		"TM-VEJ":      "Vej, Park og Trafik",
		"BU-DAG-NORD": "Dagtilbud Nørreby",
		"KFB-BIB-HOV": "Biblioteket ved Rådhuspladsen",
		"OP-IT":       "Digitalisering og Teknologi",
	}
	moves2   = map[string]string{"SSA-SUN-PLE": "BU-FAM", "KFB-KUL-IDR": "TM-VEJ"}
	renames3 = map[string]string{"KFB-KUL-MOL": "Kulturhuset Møllen og Musikskolen"}
)

const userCount = 500

var featuredID = userID(featured)

// Special users, by creation index (all ordinary staff, not leaders).
const (
	featured     = 77  // day 1 typo in navn, corrected day 2, moved day 3
	fixedLetters = 123 // navn "Mads Moller" corrected to "Mads Møller" on day 2
	fixedTitle   = 201 // wrong stilling on day 1, corrected on day 2
	backdated    = 314 // gyldig_fra corrected from 2024-03-01 to 2023-09-01 on day 2
)

// logEntry is one line of the README's change list.
type logEntry struct{ kind, id, name, what string }

type demoGen struct {
	r        *rng
	units    []unit
	users    []user
	defs     map[string]unitDef // by kortnavn
	byKort   map[string]string  // kortnavn → id
	unitOf   map[string]string  // user id → kortnavn, for readable logs
	names    map[string]bool    // brugernavne in use, ever
	emails   map[string]bool
	index    map[string]int  // user id → creation index
	touched  map[string]bool // users a scripted change has used
	deleted2 []user          // day 2's deletions, as they were
	nextUser int
	log      []logEntry
}

func unitID(kort string) string { return nameUUID("demokommune/enhed/" + kort) }
func userID(n int) string       { return nameUUID(fmt.Sprintf("demokommune/bruger/%d", n)) }

// writeDemo writes dir/snapshots/<day>/{units.csv,users.jsonl} and dir/README.md.
func writeDemo(dir string) error {
	g := &demoGen{
		r: newRNG(demoSeed), defs: map[string]unitDef{}, byKort: map[string]string{},
		unitOf: map[string]string{}, names: map[string]bool{}, emails: map[string]bool{},
		index: map[string]int{}, touched: map[string]bool{},
	}
	var readme strings.Builder
	readme.WriteString(readmeHead)
	for _, day := range []struct {
		name, title string
		step        func()
	}{
		{day1, "Day 1: the first snapshot", g.day1},
		{day2, "Day 2: renames, moves, corrections, deletions", g.day2},
		{day3, "Day 3: undeletes, a re-creation, more moves", g.day3},
	} {
		g.log = nil
		day.step()
		out := filepath.Join(dir, "snapshots", day.name)
		if err := mkdir(out); err != nil {
			return err
		}
		if err := writeUnits(filepath.Join(out, "units.csv"), g.units); err != nil {
			return err
		}
		if err := writeUsers(filepath.Join(out, "users.jsonl"), g.users); err != nil {
			return err
		}
		fmt.Fprintf(&readme, "\n## %s — `snapshots/%s`\n\n%d units, %d users.\n", day.title, day.name, len(g.units), len(g.users))
		g.writeLog(&readme)
	}
	return os.WriteFile(filepath.Join(dir, "README.md"), []byte(readme.String()), 0o644)
}

func (g *demoGen) addUnit(d unitDef) {
	g.defs[d.kort] = d
	id := unitID(d.kort)
	g.byKort[d.kort] = id
	u := unit{ID: id, Navn: d.navn, Kortnavn: d.kort, GyldigFra: d.from}
	if d.parent != "" {
		u.Parent = g.byKort[d.parent]
	}
	if d.ean {
		u.EAN = ean(len(g.units) + 1)
	}
	g.units = append(g.units, u)
}

// newUser creates the next user in unit kort.
func (g *demoGen) newUser(kort, title, from string) *user {
	u := user{
		ID: userID(g.nextUser), Telefon: phone(g.r), Stilling: title, EnhedID: g.byKort[kort],
		CPR: fakeCPR(g.r), GyldigFra: from,
	}
	first, last, full := person(g.r)
	g.setPerson(&u, first, last, full)
	g.index[u.ID] = g.nextUser
	g.nextUser++
	g.unitOf[u.ID] = kort
	g.users = append(g.users, u)
	return &g.users[len(g.users)-1]
}

// setPerson gives u a name and a new, unique brugernavn and e-mail address
// derived from it.
func (g *demoGen) setPerson(u *user, first, last, full string) {
	login := ""
	for login == "" || g.names[login] {
		login = fmt.Sprintf("%s%03d", initials(first, last), 100+g.r.intn(900))
	}
	g.names[login] = true
	local := fold(first) + "." + fold(last)
	email := local + "@demokommune.dk"
	for n := 2; g.emails[email]; n++ {
		email = fmt.Sprintf("%s%d@demokommune.dk", local, n)
	}
	g.emails[email] = true
	u.Brugernavn, u.Navn, u.Email = login, full, email
}

// staffTitle draws an ordinary title for unit kort.
func (g *demoGen) staffTitle(kort string) string {
	if t := g.defs[kort].titles; len(t) > 0 {
		return pick(g.r, t)
	}
	return pick(g.r, generalTitles)
}

// staffUnit draws a unit for an ordinary employee, weighted by staff share.
func (g *demoGen) staffUnit() string {
	total := 0
	for _, d := range demoUnits {
		total += d.staff
	}
	n := g.r.intn(total)
	for _, d := range demoUnits {
		if n -= d.staff; n < 0 {
			return d.kort
		}
	}
	panic("unreachable")
}

func (g *demoGen) day1() {
	for _, d := range demoUnits {
		g.addUnit(d)
	}
	for _, d := range demoUnits {
		g.newUser(d.kort, d.leader, monthStart(g.r, 2010, 2023))
	}
	for g.nextUser < userCount {
		kort := g.staffUnit()
		g.newUser(kort, g.staffTitle(kort), monthStart(g.r, 2010, 2025))
	}
	// The special cases, set by hand so the README can name them.
	u := g.userByIndex(featured)
	// The e-mail address was right; the HR system's navn had a typo.
	g.setPerson(u, "Astrid", "Lund", "Astrid Østergaard Lund")
	u.Navn, u.Stilling, u.GyldigFra = "Astrid Østergaard Lnud", "Pædagog", "2024-03-01"
	g.moveUser(u, "BU-DAG-OST")
	u = g.userByIndex(fixedLetters)
	g.setPerson(u, "Mads", "Møller", "Mads Moller")
	u = g.userByIndex(fixedTitle)
	u.Stilling = "Socialrådgiver"
	g.moveUser(u, "SSA-SUN-PLE")
	u = g.userByIndex(backdated)
	u.GyldigFra = "2024-03-01"
	g.log = append(g.log,
		logEntry{"unit", "", "", fmt.Sprintf("%d units in four levels: kommune → 5 forvaltninger → 15 afdelinger → %d teams and institutions", len(g.units), len(g.units)-21)},
		logEntry{"user", "", "", fmt.Sprintf("%d users; the first %d are the leaders of each unit", len(g.users), len(demoUnits))},
		g.userEntry(g.userByIndex(featured), `created with a typo in navn ("Astrid Østergaard Lnud"), in Dagtilbud Østbyen, gyldig_fra 2024-03-01 — **the featured user**`),
		g.userEntry(g.userByIndex(fixedLetters), `created with navn "Mads Moller" (ø lost in an old export)`),
		g.userEntry(g.userByIndex(fixedTitle), `created with the wrong stilling "Socialrådgiver" in Sundhedsplejen`),
		g.userEntry(g.userByIndex(backdated), `created with gyldig_fra 2024-03-01 (the employment really began 2023-09-01)`),
	)
}

func (g *demoGen) day2() {
	for _, u := range g.units {
		if navn, ok := renames2[u.Kortnavn]; ok {
			g.renameUnit(u.Kortnavn, navn, from2)
		}
	}
	for _, u := range g.units {
		if to, ok := moves2[u.Kortnavn]; ok {
			g.moveUnit(u.Kortnavn, to, from2)
		}
	}
	g.addUnit(newUnit)
	g.log = append(g.log, g.unitEntry(newUnit.kort, fmt.Sprintf("new unit %q under Teknik og Miljø, gyldig_fra %s", newUnit.navn, from2)))

	// Corrections: same gyldig_fra (or an earlier one), so a korrektion.
	u := g.userByIndex(featured)
	u.Navn = "Astrid Østergaard Lund"
	g.log = append(g.log, g.userEntry(u, `korrektion: navn "Astrid Østergaard Lnud" → "Astrid Østergaard Lund", gyldig_fra unchanged (2024-03-01) — **the featured user**`))
	u = g.userByIndex(fixedLetters)
	u.Navn = "Mads Møller"
	g.log = append(g.log, g.userEntry(u, `korrektion: navn "Mads Moller" → "Mads Møller", gyldig_fra unchanged (`+u.GyldigFra+`)`))
	u = g.userByIndex(fixedTitle)
	u.Stilling = "Sundhedsplejerske"
	g.log = append(g.log, g.userEntry(u, `korrektion: stilling "Socialrådgiver" → "Sundhedsplejerske", gyldig_fra unchanged (`+u.GyldigFra+`)`))
	u = g.userByIndex(backdated)
	u.GyldigFra = "2023-09-01"
	g.log = append(g.log, g.userEntry(u, "korrektion: gyldig_fra 2024-03-01 → 2023-09-01 (earlier than registered), nothing else changed"))

	pool := g.ordinary()
	for _, u := range take(&pool, 20) {
		g.relocate(u, from2)
	}
	for _, u := range take(&pool, 15) {
		g.deleted2 = append(g.deleted2, *u)
		g.log = append(g.log, g.userEntry(u, "deleted (absent from the snapshot)"))
	}
	g.removeUsers(g.deleted2)

	g.log = append(g.log, g.userEntry(g.newUser(newUnit.kort, newUnit.leader, from2), "new, leader of Klimasekretariatet"))
	for range 2 {
		g.log = append(g.log, g.userEntry(g.newUser(newUnit.kort, g.staffTitle(newUnit.kort), from2), "new, in Klimasekretariatet"))
	}
	for range 7 {
		kort := g.staffUnit()
		g.log = append(g.log, g.userEntry(g.newUser(kort, g.staffTitle(kort), from2), "new, in "+g.defs[kort].navn))
	}
}

func (g *demoGen) day3() {
	// Two of day 2's deletions come back with the same id: one restored
	// as it was, one re-hired into another unit from the 1st of the month.
	restored := g.deleted2[0]
	g.users = append(g.users, restored)
	g.log = append(g.log, g.userEntry(&restored, "undelete: back with the same id and exactly the same data as on day 1"))
	rehired := g.deleted2[1]
	rehired.GyldigFra = from3
	g.users = append(g.users, rehired)
	g.moveUser(&g.users[len(g.users)-1], g.sibling(g.unitOf[rehired.ID]))
	g.log = append(g.log, g.userEntry(&g.users[len(g.users)-1], fmt.Sprintf("undelete: back with the same id, now in %s, gyldig_fra %s", g.defs[g.unitOf[rehired.ID]].navn, from3)))
	// A third comes back as a new record: new id, same brugernavn.
	again := g.deleted2[2]
	again.ID = userID(g.nextUser)
	g.index[again.ID] = g.nextUser
	g.nextUser++
	again.GyldigFra = from3
	g.unitOf[again.ID] = g.unitOf[g.deleted2[2].ID]
	g.users = append(g.users, again)
	g.log = append(g.log, g.userEntry(&again, fmt.Sprintf("re-created with a NEW id and the same brugernavn as %s (deleted on day 2), gyldig_fra %s", g.deleted2[2].ID, from3)))

	for _, u := range g.units {
		if navn, ok := renames3[u.Kortnavn]; ok {
			g.renameUnit(u.Kortnavn, navn, from3)
		}
	}

	u := g.userByIndex(featured)
	g.moveUser(u, "BU-DAG-VEST")
	u.GyldigFra = from3
	g.log = append(g.log, g.userEntry(u, "moved Dagtilbud Østbyen → Dagtilbud Vestbyen, gyldig_fra "+from3+" — **the featured user**"))

	pool := g.ordinary()
	for _, u := range take(&pool, 3) {
		g.relocate(u, from3)
	}
	for _, u := range take(&pool, 2) {
		old := u.Telefon
		u.Telefon, u.GyldigFra = phone(g.r), from3
		g.log = append(g.log, g.userEntry(u, fmt.Sprintf("telefon %s → %s, gyldig_fra %s", old, u.Telefon, from3)))
	}
	var gone []user
	for _, u := range take(&pool, 3) {
		gone = append(gone, *u)
		g.log = append(g.log, g.userEntry(u, "deleted (absent from the snapshot)"))
	}
	g.removeUsers(gone)
	for range 2 {
		kort := g.staffUnit()
		g.log = append(g.log, g.userEntry(g.newUser(kort, g.staffTitle(kort), from3), "new, in "+g.defs[kort].navn))
	}
}

func (g *demoGen) renameUnit(kort, navn, from string) {
	u := g.unit(kort)
	g.log = append(g.log, g.unitEntry(kort, fmt.Sprintf("renamed %q → %q, gyldig_fra %s", u.Navn, navn, from)))
	u.Navn, u.GyldigFra = navn, from
}

func (g *demoGen) moveUnit(kort, parent, from string) {
	u := g.unit(kort)
	g.log = append(g.log, g.unitEntry(kort, fmt.Sprintf("moved: overordnet %s → %s, gyldig_fra %s", g.kortOf(u.Parent), parent, from)))
	u.Parent, u.GyldigFra = g.byKort[parent], from
}

// relocate moves an ordinary user to a sibling unit from a given date.
func (g *demoGen) relocate(u *user, from string) {
	was := g.unitOf[u.ID]
	g.moveUser(u, g.sibling(was))
	u.GyldigFra = from
	g.log = append(g.log, g.userEntry(u, fmt.Sprintf("moved %s → %s, gyldig_fra %s", g.defs[was].navn, g.defs[g.unitOf[u.ID]].navn, from)))
}

func (g *demoGen) moveUser(u *user, kort string) {
	u.EnhedID = g.byKort[kort]
	g.unitOf[u.ID] = kort
}

// sibling draws another staffed unit, under the same afdeling where there is
// one, else under the same forvaltning: people move to similar work.
func (g *demoGen) sibling(kort string) string {
	parent := g.defs[kort].parent
	area, _, _ := strings.Cut(kort, "-")
	var near, far []string
	for _, d := range demoUnits {
		switch {
		case d.staff <= 1 || d.kort == kort:
		case d.parent == parent:
			near = append(near, d.kort)
		case strings.HasPrefix(d.kort, area+"-"):
			far = append(far, d.kort)
		}
	}
	if len(near) > 0 {
		return pick(g.r, near)
	}
	return pick(g.r, far)
}

// ordinary returns the users that no scripted case touches, in random order:
// staff of teams, not leaders, not special, not created after day 1.
func (g *demoGen) ordinary() []*user {
	special := []int{featured, fixedLetters, fixedTitle, backdated}
	var out []*user
	for i := range g.users {
		u := &g.users[i]
		n := g.index[u.ID]
		if n < len(demoUnits) || n >= userCount || slices.Contains(special, n) ||
			g.defs[g.unitOf[u.ID]].staff <= 1 || g.touched[u.ID] {
			continue
		}
		out = append(out, u)
	}
	shuffle(g.r, out)
	return out
}

// take removes the first n users from the pool and marks them used.
func take(pool *[]*user, n int) []*user {
	out := (*pool)[:n]
	*pool = (*pool)[n:]
	return out
}

func (g *demoGen) removeUsers(gone []user) {
	g.users = slices.DeleteFunc(g.users, func(u user) bool {
		return slices.ContainsFunc(gone, func(v user) bool { return v.ID == u.ID })
	})
}

func (g *demoGen) userByIndex(n int) *user {
	id := userID(n)
	for i := range g.users {
		if g.users[i].ID == id {
			return &g.users[i]
		}
	}
	panic(fmt.Sprintf("demo user %d is not in the current snapshot", n))
}

func (g *demoGen) unit(kort string) *unit {
	for i := range g.units {
		if g.units[i].Kortnavn == kort {
			return &g.units[i]
		}
	}
	panic("no demo unit " + kort)
}

func (g *demoGen) kortOf(id string) string {
	for k, v := range g.byKort {
		if v == id {
			return k
		}
	}
	return ""
}

func (g *demoGen) unitEntry(kort, what string) logEntry {
	return logEntry{"unit", g.byKort[kort], kort + " " + g.unit(kort).Navn, what}
}

func (g *demoGen) userEntry(u *user, what string) logEntry {
	g.touched[u.ID] = true
	return logEntry{"user", u.ID, u.Brugernavn + " " + u.Navn, what}
}

func (g *demoGen) writeLog(b *strings.Builder) {
	for _, kind := range []string{"unit", "user"} {
		title := map[string]string{"unit": "OrganisationEnhed (units.csv)", "user": "Bruger (users.jsonl)"}[kind]
		header := false
		for _, e := range g.log {
			if e.kind != kind {
				continue
			}
			if !header {
				fmt.Fprintf(b, "\n%s:\n\n", title)
				header = true
			}
			if e.id == "" {
				fmt.Fprintf(b, "- %s\n", e.what)
				continue
			}
			fmt.Fprintf(b, "- `%s` %s — %s\n", e.id, e.name, e.what)
		}
	}
}

var readmeHead = `# Demo data: Demokommune

A small, made-up Danish municipality's organisation as three dated snapshots of
an HR export, used by ` + "`configs/demo.yaml`" + ` and ` + "`make demo`" + `. Each directory
under ` + "`snapshots/`" + ` is one full snapshot; the file source applies them in name
order and takes the snapshot time from the directory name.

- ` + "`units.csv`" + ` — OrganisationEnhed: ` + "`id,navn,kortnavn,overordnet_id,ean,gyldig_fra`" + `
  (the root has an empty overordnet_id).
- ` + "`users.jsonl`" + ` — Bruger, one JSON object a line: id, brugernavn, navn, email,
  telefon, stilling, enhed_id, cpr, gyldig_fra.

` + "`gyldig_fra`" + ` is the valid-from date (virkning). A change with a new gyldig_fra is
an aendring; a change that keeps gyldig_fra (or moves it earlier, into a period
already registered) is a korrektion.

All people are invented. Every CPR number has month 13, so none can belong to a
real person; the e-mail addresses use the made-up domain demokommune.dk.

**Featured user** (the history ` + "`make demo`" + ` prints): Bruger
` + "`" + featuredID + "`" + ` — created on day 1 with a typo in navn, corrected on day 2
(korrektion), moved to another unit on day 3 (aendring).

Generated, not hand-edited: ` + "`go run ./scripts/gensnapshot -demo configs/demo`" + `
rewrites these files byte for byte (a test in scripts/gensnapshot checks that
they match). The lists below are written by the same program.
`
