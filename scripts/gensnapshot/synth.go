package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
)

// Unit name parts for synthetic organisations.
var (
	synthAreas = []string{
		"Dagtilbud", "Skole", "Hjemmepleje", "Plejecenter", "Borgerservice", "Vejdrift",
		"Bibliotek", "Sundhedspleje", "Jobcenter", "Familierådgivning", "Botilbud", "Tandpleje",
	}
	synthPlaces = []string{
		"Østbyen", "Vestbyen", "Nørreby", "Søndermark", "Åbyhøj", "Kærby", "Bøgeskov",
		"Møllevang", "Strandby", "Højvang", "Lærkevej", "Ørsted",
	}
)

// writeSynthetic writes a units.csv with nUnits units in a tree (fan-out 8)
// and a users.jsonl with nUsers users spread over them, streaming.
func writeSynthetic(dir string, nUnits, nUsers int, seed uint64) error {
	if err := mkdir(dir); err != nil {
		return err
	}
	r := newRNG(seed)
	units := make([]unit, nUnits)
	for i := range units {
		u := unit{
			ID:        randUUID(r),
			Navn:      pick(r, synthAreas) + " " + pick(r, synthPlaces),
			Kortnavn:  fmt.Sprintf("U%06d", i),
			GyldigFra: monthStart(r, 2007, 2022),
		}
		if i == 0 {
			u.Navn = "Syntetisk Kommune"
		} else {
			u.Parent = units[(i-1)/8].ID
		}
		if i%3 == 0 {
			u.EAN = ean(i)
		}
		units[i] = u
	}
	if err := writeUnits(filepath.Join(dir, "units.csv"), units); err != nil {
		return err
	}

	w, err := createJSONL(filepath.Join(dir, "users.jsonl"))
	if err != nil {
		return err
	}
	f := newFolded()
	var u user
	for i := range nUsers {
		fi, li := r.intn(len(firstNames)), r.intn(len(lastNames))
		u = user{
			ID:         randUUID(r),
			Brugernavn: f.initials[fi][:1] + f.last[li][:2] + strconv.Itoa(i),
			Navn:       firstNames[fi] + " " + lastNames[li],
			Email:      f.first[fi] + "." + f.lastCase[li] + strconv.Itoa(i) + "@demokommune.dk",
			Telefon:    phone(r),
			Stilling:   pick(r, allTitles),
			EnhedID:    units[r.intn(nUnits)].ID,
			CPR:        fakeCPR(r),
			GyldigFra:  monthStart(r, 2005, 2025),
		}
		if err := w.user(&u); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}

// folded holds the ASCII forms of the name lists, computed once.
type folded struct{ first, initials, last, lastCase []string }

func newFolded() *folded {
	f := &folded{}
	for _, n := range firstNames {
		f.first = append(f.first, fold(n))
		f.initials = append(f.initials, lower(fold(n)))
	}
	for _, n := range lastNames {
		f.lastCase = append(f.lastCase, fold(n))
		f.last = append(f.last, lower(fold(n)))
	}
	return f
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// randUUID draws a version 4 UUID from r.
func randUUID(r *rng) string {
	var b [16]byte
	x, y := r.uint64(), r.uint64()
	for i := range 8 {
		b[i], b[8+i] = byte(x>>(8*i)), byte(y>>(8*i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b[:])
}

type driftStats struct{ users, moved, renamed, deleted, added int }

// Of the drifted users, these shares are moved and renamed; the rest are
// deleted. Added users number addShare of the drifted count.
const (
	moveShare   = 0.60
	renameShare = 0.25
	addShare    = 0.10
)

// writeDrift copies the snapshot in from to out with a share of its users
// changed: moved to another unit, renamed (new last name) or deleted, and a
// few added. Unchanged lines are copied byte for byte without parsing.
func writeDrift(from, out string, share float64, date string, seed uint64) (driftStats, error) {
	var st driftStats
	if err := mkdir(out); err != nil {
		return st, err
	}
	units, err := readUnits(filepath.Join(from, "units.csv"))
	if err != nil {
		return st, err
	}
	if len(units) < 2 {
		return st, fmt.Errorf("%s: need at least 2 units to move users between", from)
	}
	if err := copyFile(filepath.Join(from, "units.csv"), filepath.Join(out, "units.csv")); err != nil {
		return st, err
	}
	w, err := createJSONL(filepath.Join(out, "users.jsonl"))
	if err != nil {
		return st, err
	}
	// A different stream from the one that made the base snapshot.
	r := newRNG(seed ^ 0xd1f7d1f7d1f7d1f7)
	var u user
	read := 0
	err = eachLine(filepath.Join(from, "users.jsonl"), func(line []byte) error {
		read++
		if r.float() >= share {
			st.users++
			return w.raw(line)
		}
		k := r.float()
		if k >= moveShare+renameShare {
			st.deleted++
			return nil
		}
		u = user{}
		if err := json.Unmarshal(line, &u); err != nil {
			return err
		}
		if k < moveShare {
			for was := u.EnhedID; u.EnhedID == was; {
				u.EnhedID = units[r.intn(len(units))].ID
			}
			st.moved++
		} else {
			for was := u.Navn; u.Navn == was; {
				u.Navn = was[:lastSpace(was)+1] + pick(r, lastNames)
			}
			st.renamed++
		}
		u.GyldigFra = date
		st.users++
		return w.user(&u)
	})
	if err != nil {
		w.Close()
		return st, err
	}
	f := newFolded()
	st.added = int(math.Round(float64(read) * share * addShare))
	for range st.added {
		fi, li := r.intn(len(firstNames)), r.intn(len(lastNames))
		tag := strconv.FormatUint(r.uint64()>>16, 36) // 48 bits
		u = user{
			ID:         randUUID(r),
			Brugernavn: f.initials[fi][:1] + f.last[li][:2] + "n" + tag,
			Navn:       firstNames[fi] + " " + lastNames[li],
			Email:      f.first[fi] + "." + f.lastCase[li] + "." + tag + "@demokommune.dk",
			Telefon:    phone(r),
			Stilling:   pick(r, allTitles),
			EnhedID:    units[r.intn(len(units))].ID,
			CPR:        fakeCPR(r),
			GyldigFra:  date,
		}
		if err := w.user(&u); err != nil {
			w.Close()
			return st, err
		}
		st.users++
	}
	return st, w.Close()
}

func lastSpace(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ' ' {
			return i
		}
	}
	return -1
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
