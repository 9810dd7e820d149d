package docs

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"testing"

	"github.com/os2sandbox/connector/history"
)

// TestEventsDocExamples keeps the examples in events.md honest: each is
// valid against the schema, is exactly what history.Event marshals to, and
// has consistent hashes, changed lists and version chains.
func TestEventsDocExamples(t *testing.T) {
	sch := compileSchema(t)
	md, err := os.ReadFile("events.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)\n```").FindAllSubmatch(md, -1)
	ops := map[string]bool{}
	byObject := map[string][]history.Event{}
	for i, m := range blocks {
		block := m[1]
		if err := validate(sch, block); err != nil {
			t.Errorf("example %d is not valid against the schema: %v", i+1, err)
			continue
		}
		var ev history.Event
		dec := json.NewDecoder(bytes.NewReader(block))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ev); err != nil {
			t.Errorf("example %d: %v", i+1, err)
			continue
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, block); err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(ev); !bytes.Equal(b, compact.Bytes()) {
			t.Errorf("example %d is not as history.Event marshals it:\n got %s\nwant %s", i+1, compact.Bytes(), b)
		}
		ops[ev.Operation] = true
		byObject[ev.Object.Type+"/"+ev.Object.ID] = append(byObject[ev.Object.Type+"/"+ev.Object.ID], ev)

		if len(ev.Classification.Redacted) > 0 {
			continue // hashes are over the full image, changed lost the hidden fields
		}
		img := ev.After
		if ev.Operation == history.OpDelete {
			img = ev.Before
		}
		if got := history.ContentHash(img); got != ev.Integrity.ContentHash {
			t.Errorf("example %d: contentHash %s, image hashes to %s", i+1, ev.Integrity.ContentHash, got)
		}
		if want := changedFields(ev.Before, ev.After); !slices.Equal(ev.Changed, want) {
			t.Errorf("example %d: changed %v, want %v", i+1, ev.Changed, want)
		}
	}
	for _, op := range []string{history.OpSnapshot, history.OpCreate, history.OpUpdate, history.OpDelete, history.OpUndelete} {
		if !ops[op] {
			t.Errorf("events.md has no example of operation %s", op)
		}
	}
	for key, evs := range byObject {
		sort.Slice(evs, func(i, j int) bool { return evs[i].Object.Version < evs[j].Object.Version })
		for i := 1; i < len(evs); i++ {
			a, b := evs[i-1], evs[i]
			if b.Object.Version == a.Object.Version+1 && b.Integrity.PrevContentHash != a.Integrity.ContentHash {
				t.Errorf("%s: version %d prevContentHash does not chain to version %d", key, b.Object.Version, a.Object.Version)
			}
			if !b.Bitemporal.RegistreringFra.After(a.Bitemporal.RegistreringFra.Time) || b.Sequence <= a.Sequence {
				t.Errorf("%s: version %d is not registered after version %d", key, b.Object.Version, a.Object.Version)
			}
		}
	}
}

func changedFields(before, after map[string]any) []string {
	keys := map[string]bool{}
	for k := range maps.Keys(before) {
		keys[k] = true
	}
	for k := range maps.Keys(after) {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		b, _ := json.Marshal(before[k])
		a, _ := json.Marshal(after[k])
		_, inB := before[k]
		_, inA := after[k]
		if inA != inB || !bytes.Equal(a, b) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
