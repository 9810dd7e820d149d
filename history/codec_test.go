package history

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// changedRef is the rule on decoded maps: a field changed when it is new,
// gone, or its value differs; against no image, fields that are not null.
func changedRef(before, after map[string]any) []string {
	out := []string{}
	for k, v := range after {
		if b, ok := before[k]; !ok || string(Canonical(map[string]any{"v": b})) != string(Canonical(map[string]any{"v": v})) {
			if before == nil && v == nil {
				continue
			}
			out = append(out, k)
		}
	}
	for k, v := range before {
		if _, ok := after[k]; !ok && !(after == nil && v == nil) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func genFields() *rapid.Generator[map[string]any] {
	names := rapid.SampledFrom([]string{"a", "b", "navn", "æble", `q"uote`, "back\\slash", "ctl\x01", "z"})
	values := rapid.SampledFrom([]any{nil, "x", "y", `"`, json.Number("1"), json.Number("1.50"), true, false,
		[]any{"x", json.Number("2")}, map[string]any{"k": "v", "l": []any{}}, map[string]any{"k": "w"}})
	return rapid.Custom(func(t *rapid.T) map[string]any {
		if rapid.IntRange(0, 6).Draw(t, "nil") == 0 {
			return nil
		}
		return rapid.MapOfN(names, values, 0, 6).Draw(t, "fields")
	})
}

func TestChangedJSONMatchesMaps(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := genFields().Draw(t, "before"), genFields().Draw(t, "after")
		got, err := changedJSON(Canonical(a), Canonical(b))
		if err != nil {
			t.Fatal(err)
		}
		if want := changedRef(a, b); !slices.Equal(got, want) {
			t.Fatalf("changedJSON(%s, %s) = %q, want %q", Canonical(a), Canonical(b), got, want)
		}
	})
}

func TestImageRoundTrip(t *testing.T) {
	mk := func() *Image {
		img := &Image{Source: "hr", Record: "public.person", Version: 7, Deleted: false, Hash: "sha256:ab",
			RegFra: At(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)), VirkFra: At(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)),
			EventID: "e-1", Open: []uint64{5, 7},
			Fields: map[string]any{"name": "Ærø", "salary": json.Number("12.50")},
			Keys:   map[string]string{"cpr": "x"}, Row: map[string]any{"id": json.Number("1"), "blob": "big"}}
		img.fieldsJSON, img.keysJSON, img.rowJSON = Canonical(img.Fields), keysJSON(img.Keys), Canonical(img.Row)
		return img
	}
	withHead := func(deleted bool, virkTil *Time, supersedes ...uint64) *Image {
		img := mk()
		img.Deleted = deleted
		img.head = &Version{Version: img.Version, EventID: img.EventID, Sequence: 42, Operation: OpUpdate,
			ChangeKind: KindKorrektion, RegFra: img.RegFra, VirkFra: img.VirkFra, VirkTil: virkTil, VirkKilde: "commit-time",
			Deleted: deleted, Hash: img.Hash, Supersedes: supersedes}
		if !deleted {
			img.head.fieldsJSON = img.fieldsJSON
		}
		return img
	}
	cases := map[string]*Image{
		"no head (written before heads)": mk(),
		"head":                           withHead(false, nil),
		"head, valid to, supersedes":     withHead(false, Ptr(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)), 5, 6),
		"deleted head":                   withHead(true, nil, 6),
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			rec := encodeImage(img)
			got, err := decodeImage(rec, true)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, img) {
				t.Fatalf("round trip:\ngot  %#v\nwant %#v", got, img)
			}
			if got.head != nil && !reflect.DeepEqual(got.head, img.head) {
				t.Fatalf("head:\ngot  %#v\nwant %#v", got.head, img.head)
			}
			h, err := peekImage(rec)
			if err != nil || h.Source != "hr" || h.Record != "public.person" || h.Hash != "sha256:ab" ||
				h.VirkFra != img.VirkFra.UnixMicro() || h.Deleted != img.Deleted {
				t.Fatalf("peek = %+v, %v", h, err)
			}
			for n := range len(rec) {
				if _, err := decodeImage(rec[:n], true); err == nil {
					t.Fatalf("a record cut at %d bytes decoded", n)
				}
			}
		})
	}
}

// Images and versions written by earlier versions (JSON) are still read,
// with exact numbers.
func TestLegacyRecords(t *testing.T) {
	legacy := []byte(`{"source":"hr","record":"t","version":2,"hash":"sha256:x","fields":{"n":12345678901234567890.5},` +
		`"keys":{"k":"v"},"row":{"id":1},"registreringFra":"2026-01-01T00:00:00.000000Z","virkningFra":"2025-01-01T00:00:00.000000Z","eventId":"e","open":[2]}`)
	rec := []byte{legacyImageMagic, 0}
	for _, s := range []string{"hr", "t", "sha256:x"} {
		rec = appendStr(rec, s)
	}
	rec = append(rec, make([]byte, 8)...)
	rec = append(rec, legacy...)
	img, err := decodeImage(rec, true)
	if err != nil {
		t.Fatal(err)
	}
	if img.Fields["n"] != json.Number("12345678901234567890.5") || img.Version != 2 || img.Keys["k"] != "v" || !slices.Equal(img.Open, []uint64{2}) {
		t.Fatalf("legacy image: %#v", img)
	}
	if string(img.fieldsJSON) != `{"n":12345678901234567890.5}` {
		t.Fatalf("legacy fields JSON %s", img.fieldsJSON)
	}
	v, err := decodeVersion([]byte(`{"version":3,"eventId":"e","sequence":9,"operation":"update","changeKind":"aendring",`+
		`"registreringFra":"2026-01-01T00:00:00.000000Z","registreringTil":null,"virkningFra":"2025-01-01T00:00:00.000000Z",`+
		`"virkningTil":null,"virkningKilde":"k","fields":{"a":1.0},"contentHash":"h","supersedes":[1,2]}`), true)
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != 3 || v.Sequence != 9 || v.Fields["a"] != json.Number("1.0") || !slices.Equal(v.Supersedes, []uint64{1, 2}) || v.RegTil != nil {
		t.Fatalf("legacy version: %#v", v)
	}
	again, err := decodeVersion(encodeVersion(v), true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, v) {
		t.Fatalf("version round trip:\ngot  %#v\nwant %#v", again, v)
	}
}
