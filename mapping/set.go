package mapping

import (
	"fmt"
	"sort"
	"strings"
)

// Set is every compiled mapping of a configuration.
type Set struct {
	all      []*Mapping
	byRecord map[[2]string][]*Mapping // {source, record} → mappings
	byType   map[string]*Mapping
}

// NewSet compiles configs and checks references between them. sources is
// the set of configured source names. An error is returned with the index
// of the offending mapping, so the caller can name its line.
func NewSet(configs []Config, sources map[string]bool) (*Set, int, error) {
	s := &Set{byRecord: map[[2]string][]*Mapping{}, byType: map[string]*Mapping{}}
	for i, c := range configs {
		m, err := Compile(c)
		if err != nil {
			return nil, i, err
		}
		if !sources[c.Source] {
			return nil, i, fmt.Errorf("mapping %s: source %q is not configured (configured: %s)", c.Type, c.Source, strings.Join(sortedKeys(sources), ", "))
		}
		if _, dup := s.byType[c.Type]; dup {
			return nil, i, fmt.Errorf("mapping %s: type defined twice; one mapping per object type", c.Type)
		}
		s.all = append(s.all, m)
		s.byType[c.Type] = m
		k := [2]string{c.Source, c.Record}
		s.byRecord[k] = append(s.byRecord[k], m)
	}
	for i, m := range s.all {
		for field, rel := range m.Relations() {
			if _, ok := s.byType[rel]; !ok {
				return nil, i, fmt.Errorf("mapping %s: field %s relates to type %q, which no mapping defines (defined: %s)", m.Type, field, rel, strings.Join(s.Types(), ", "))
			}
		}
	}
	return s, 0, nil
}

// ForRecord returns the mappings that select a source's record.
func (s *Set) ForRecord(source, record string) []*Mapping {
	return s.byRecord[[2]string{source, record}]
}

// Type returns the mapping of an object type, or nil.
func (s *Set) Type(typ string) *Mapping { return s.byType[typ] }

// Types lists the object types, sorted.
func (s *Set) Types() []string {
	out := make([]string, 0, len(s.byType))
	for t := range s.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Records lists the record names the mappings select from a source.
func (s *Set) Records(source string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range s.all {
		if m.Source == source && !seen[m.Record] {
			seen[m.Record] = true
			out = append(out, m.Record)
		}
	}
	sort.Strings(out)
	return out
}

// TypesOf lists the object types mapped from a source's records.
func (s *Set) TypesOf(source string, records []string) []string {
	var out []string
	for _, r := range records {
		for _, m := range s.ForRecord(source, r) {
			out = append(out, m.Type)
		}
	}
	sort.Strings(out)
	return out
}

// Hides reports whether Redact can remove anything from typ's images at
// ceiling.
func (s *Set) Hides(typ, ceiling string) bool {
	m := s.byType[typ]
	return m != nil && m.MaxLevel() > Level(ceiling)
}

// Redact returns image without the fields classified above ceiling (a
// classification label), and the names removed. The input is not changed.
func (s *Set) Redact(typ string, image map[string]any, ceiling string) (map[string]any, []string) {
	m := s.byType[typ]
	if m == nil || image == nil {
		return image, nil
	}
	c := Level(ceiling)
	var removed []string
	for f := range m.fieldLvl {
		if _, present := image[f]; present && m.FieldLevel(f) > c {
			removed = append(removed, f)
		}
	}
	if len(removed) == 0 {
		return image, nil
	}
	out := make(map[string]any, len(image))
	for k, v := range image {
		out[k] = v
	}
	for _, f := range removed {
		delete(out, f)
	}
	sort.Strings(removed)
	return out, removed
}
