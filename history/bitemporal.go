package history

import (
	"math"
	"sort"
	"time"
)

// Canonical renders an image as canonical JSON: keys sorted (encoding/json
// sorts map keys), no HTML escaping, numbers as given. Equal images give
// equal bytes, so the content hash decides "changed or not".
func Canonical(fields map[string]any) []byte {
	return appendCanonical(nil, fields)
}

// ContentHash is "sha256:<hex>" of the canonical image.
func ContentHash(fields map[string]any) string { return hashJSON(Canonical(fields)) }

// Version is one registration of an object: append-only, except that
// RegTil is set once, when later registrations hide all of its valid time.
type Version struct {
	Version    uint64         `json:"version"`
	EventID    string         `json:"eventId"`
	Sequence   uint64         `json:"sequence"`
	Operation  string         `json:"operation"`
	ChangeKind string         `json:"changeKind"`
	RegFra     Time           `json:"registreringFra"`
	RegTil     *Time          `json:"registreringTil"`
	VirkFra    Time           `json:"virkningFra"`
	VirkTil    *Time          `json:"virkningTil"`
	VirkKilde  string         `json:"virkningKilde"`
	Deleted    bool           `json:"deleted,omitempty"`
	Fields     map[string]any `json:"fields"`
	Hash       string         `json:"contentHash"`
	Supersedes []uint64       `json:"supersedes,omitempty"`

	fieldsJSON []byte // Fields' canonical JSON, as stored
}

// The bitemporal rule (dobbelthistorik) in one sentence: the answer to
// "what did we know at registration time R about valid time V" is, among
// the registrations made at or before R whose valid period contains V, the
// one registered last. A registration is closed (RegTil) at the moment the
// registrations after it cover all of its valid period: it can no longer be
// an answer. Queries may therefore consider only registrations open at R.

type span struct{ from, to int64 } // [from, to) in µs; to = MaxInt64 for open

func spanOf(v *Version) span {
	s := span{v.VirkFra.UnixMicro(), math.MaxInt64}
	if v.VirkTil != nil {
		s.to = v.VirkTil.UnixMicro()
	}
	return s
}

// subtract removes cut from every span in set.
func subtract(set []span, cut span) []span {
	var out []span
	for _, s := range set {
		if cut.to <= s.from || cut.from >= s.to {
			out = append(out, s)
			continue
		}
		if s.from < cut.from {
			out = append(out, span{s.from, cut.from})
		}
		if cut.to < s.to {
			out = append(out, span{cut.to, s.to})
		}
	}
	return out
}

// visible returns the valid-time spans where open registration open[i] is
// the answer, given the open registrations (in registration order).
func visible(open []*Version, i int) []span {
	vis := []span{spanOf(open[i])}
	for _, later := range open[i+1:] {
		if vis = subtract(vis, spanOf(later)); len(vis) == 0 {
			break
		}
	}
	return vis
}

// Classify decides how a new registration n relates to the object's open
// registrations (in registration order): its change kind, and which open
// registrations it hides completely (to be closed at n.RegFra).
//
//   - aendring: n starts after every open registration — a new period;
//   - korrektion: n re-registers valid time already registered;
//   - annullering: a delete that hides every open registration — the
//     object, as registered, never was.
func Classify(open []*Version, n *Version) (kind string, hidden []*Version) {
	if len(open) == 0 {
		return KindAendring, nil
	}
	latest := int64(math.MinInt64)
	for _, o := range open {
		latest = max(latest, o.VirkFra.UnixMicro())
	}
	all := append(append([]*Version(nil), open...), n)
	for i, o := range open {
		if len(visible(all, i)) == 0 {
			hidden = append(hidden, o)
		}
	}
	switch {
	case n.VirkFra.UnixMicro() > latest:
		return KindAendring, hidden
	case n.Deleted && len(hidden) == len(open):
		return KindAnnullering, hidden
	default:
		return KindKorrektion, hidden
	}
}

// AsOf answers the bitemporal question over an object's versions (in
// version order): the version known at registration time r for valid time
// v, or nil if the object did not exist then (or was deleted).
func AsOf(versions []*Version, r, v time.Time) *Version {
	rm, vm := r.UnixMicro(), v.UnixMicro()
	var best *Version
	for _, x := range versions {
		if x.RegFra.UnixMicro() > rm {
			break
		}
		if x.RegTil != nil && x.RegTil.UnixMicro() <= rm {
			continue
		}
		if s := spanOf(x); s.from <= vm && vm < s.to {
			best = x // later versions were registered later
		}
	}
	if best == nil || best.Deleted {
		return nil
	}
	return best
}

// Period is a stretch of valid time and the version that answers for it.
type Period struct {
	From    Time
	To      *Time
	Version *Version
}

// Snapshot returns the object's valid-time timeline as known at
// registration time r: non-overlapping periods in valid-time order.
func Snapshot(versions []*Version, r time.Time) []Period {
	rm := r.UnixMicro()
	var open []*Version
	for _, x := range versions {
		if x.RegFra.UnixMicro() > rm {
			break
		}
		if x.RegTil == nil || x.RegTil.UnixMicro() > rm {
			open = append(open, x)
		}
	}
	var out []Period
	for i, o := range open {
		for _, s := range visible(open, i) {
			p := Period{From: At(time.UnixMicro(s.from)), Version: o}
			if s.to != math.MaxInt64 {
				p.To = Ptr(time.UnixMicro(s.to))
			}
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].From.Before(out[j].From.Time) })
	return out
}
