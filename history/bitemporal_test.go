package history

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// register applies a registration the way the engine does: classify,
// close the hidden registrations, append.
func registerVersion(all []*Version, n *Version) (string, []*Version) {
	var open []*Version
	for _, v := range all {
		if v.RegTil == nil {
			open = append(open, v)
		}
	}
	kind, hidden := Classify(open, n)
	for _, h := range hidden {
		h.RegTil = Ptr(n.RegFra.Time)
	}
	n.ChangeKind = kind
	return kind, append(all, n)
}

// naiveAsOf is the definition: among all registrations made at or before
// r whose valid period contains v, the last registered one answers. It
// ignores RegTil entirely, so it checks that closing is exact.
func naiveAsOf(all []*Version, r, v time.Time) *Version {
	var best *Version
	for _, x := range all {
		if x.RegFra.After(r) {
			continue
		}
		if x.VirkFra.After(v) || (x.VirkTil != nil && !v.Before(x.VirkTil.Time)) {
			continue
		}
		best = x
	}
	if best == nil || best.Deleted {
		return nil
	}
	return best
}

func TestBitemporalProperties(t *testing.T) {
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	day := func(n int) time.Time { return base.AddDate(0, 0, n) }
	rapid.Check(t, func(t *rapid.T) {
		var all []*Version
		type frozen struct {
			n   uint64
			reg Time
			vf  Time
			vt  *Time
			del bool
		}
		var history []frozen
		n := rapid.IntRange(1, 25).Draw(t, "registrations")
		for i := 0; i < n; i++ {
			vf := rapid.IntRange(0, 60).Draw(t, "virkFra")
			v := &Version{
				Version: uint64(i + 1),
				RegFra:  At(day(1000 + i)),
				VirkFra: At(day(vf)),
				Deleted: rapid.IntRange(0, 5).Draw(t, "delete") == 0,
				Fields:  map[string]any{"i": i},
			}
			if rapid.Bool().Draw(t, "bounded") {
				v.VirkTil = Ptr(day(vf + rapid.IntRange(1, 30).Draw(t, "length")))
			}
			kind, next := registerVersion(all, v)
			all = next
			// Change kind: aendring iff it starts after every open start.
			latest := time.Time{}
			for _, x := range all[:len(all)-1] {
				if x.RegTil == nil || x.RegTil.Equal(v.RegFra.Time) {
					if x.VirkFra.After(latest) {
						latest = x.VirkFra.Time
					}
				}
			}
			if (kind == KindAendring) != (len(all) == 1 || v.VirkFra.After(latest)) {
				t.Fatalf("registration %d: kind %s, latest open start %v, new start %v", i+1, kind, latest, v.VirkFra)
			}
			history = append(history, frozen{v.Version, v.RegFra, v.VirkFra, v.VirkTil, v.Deleted})
		}
		// Append-only: every version keeps what it was registered with;
		// RegTil, once set, is after RegFra.
		for i, h := range history {
			v := all[i]
			if v.Version != h.n || !v.RegFra.Equal(h.reg.Time) || !v.VirkFra.Equal(h.vf.Time) || v.Deleted != h.del {
				t.Fatalf("version %d rewritten", h.n)
			}
			if v.RegTil != nil && !v.RegTil.After(v.RegFra.Time) {
				t.Fatalf("version %d closed at %v, not after its registration %v", h.n, v.RegTil, v.RegFra)
			}
			if i > 0 && !v.RegFra.After(all[i-1].RegFra.Time) {
				t.Fatalf("registration time not strictly increasing at version %d", h.n)
			}
		}
		// As-of answers equal the naive model at every registration time
		// (and between them) for valid times around every boundary.
		for i := range all {
			for _, r := range []time.Time{all[i].RegFra.Time, all[i].RegFra.Add(time.Hour)} {
				for vd := -1; vd <= 92; vd++ {
					v := day(vd).Add(12 * time.Hour)
					got, want := AsOf(all, r, v), naiveAsOf(all, r, v)
					if got != want {
						t.Fatalf("as of reg %v, valid %v: got version %v, naive model says %v", r, v, ver(got), ver(want))
					}
				}
				// No overlapping valid periods in the registration snapshot.
				ps := Snapshot(all, r)
				for j := 1; j < len(ps); j++ {
					prev := ps[j-1]
					if prev.To == nil || prev.To.After(ps[j].From.Time) {
						t.Fatalf("as of %v: periods overlap: %v–%v (v%d) and %v (v%d)", r, prev.From, prev.To, prev.Version.Version, ps[j].From, ps[j].Version.Version)
					}
				}
			}
		}
	})
}

func ver(v *Version) any {
	if v == nil {
		return nil
	}
	return v.Version
}

func TestClassify(t *testing.T) {
	d := func(n int) Time { return At(time.Date(2024, 1, n, 0, 0, 0, 0, time.UTC)) }
	v1 := &Version{Version: 1, RegFra: d(1), VirkFra: d(1)}
	v2 := &Version{Version: 2, RegFra: d(2), VirkFra: d(10)}
	tests := []struct {
		name       string
		n          *Version
		kind       string
		hiddenVers []uint64
	}{
		{"later period", &Version{RegFra: d(3), VirkFra: d(20)}, KindAendring, nil},
		{"same start as latest", &Version{RegFra: d(3), VirkFra: d(10)}, KindKorrektion, []uint64{2}},
		{"back-dated correction hides both", &Version{RegFra: d(3), VirkFra: d(1)}, KindKorrektion, []uint64{1, 2}},
		{"bounded correction in the middle hides none", &Version{RegFra: d(3), VirkFra: d(3), VirkTil: Ptr(d(5).Time)}, KindKorrektion, nil},
		{"delete from the first start annuls", &Version{RegFra: d(3), VirkFra: d(1), Deleted: true}, KindAnnullering, []uint64{1, 2}},
		{"delete later is a change", &Version{RegFra: d(3), VirkFra: d(20), Deleted: true}, KindAendring, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kind, hidden := Classify([]*Version{v1, v2}, tc.n)
			var hv []uint64
			for _, h := range hidden {
				hv = append(hv, h.Version)
			}
			if kind != tc.kind || len(hv) != len(tc.hiddenVers) {
				t.Fatalf("got %s %v, want %s %v", kind, hv, tc.kind, tc.hiddenVers)
			}
			for i := range hv {
				if hv[i] != tc.hiddenVers[i] {
					t.Fatalf("got hidden %v, want %v", hv, tc.hiddenVers)
				}
			}
		})
	}
}
