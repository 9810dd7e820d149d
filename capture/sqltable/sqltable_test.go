package sqltable

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestList(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("type: postgres\ntables: [a]\nkeys: {}\n"), &doc); err != nil {
		t.Fatal(err)
	}
	node := doc.Content[0]
	at := func(key string) *yaml.Node { return node }
	n := Naming{Qualifier: "schema", Examples: [2]string{"public.person", "public.unit"}}
	cases := []struct {
		name            string
		tables, records []string
		keys            map[string][]string
		want            []string
		err, hint       string
	}{
		{name: "tables", tables: []string{"public.b", "public.a", "public.b"}, records: []string{"public.a"}, want: []string{"public.b", "public.a"}},
		{name: "records", records: []string{"public.a"}, keys: map[string][]string{"public.a": {"id"}}, want: []string{"public.a"}},
		{name: "none", err: `src: no tables: list them under tables, or map records from this source`, hint: "e.g. tables: [public.person, public.unit]"},
		{name: "unqualified", tables: []string{"a"}, err: `src: table "a" is not schema-qualified`, hint: `write the schema too, e.g. "public.person"`},
		{name: "empty part", tables: []string{"public."}, err: `table "public." is not schema-qualified`},
		{name: "record missing", tables: []string{"public.a"}, records: []string{"public.b"}, err: `src: the mappings read record "public.b", which is not among the captured tables`, hint: `add "public.b" to tables`},
		{name: "keys of other table", tables: []string{"public.a"}, keys: map[string][]string{"public.b": {"id"}}, err: `src: keys names table "public.b", which is not captured`},
		{name: "empty keys", tables: []string{"public.a"}, keys: map[string][]string{"public.a": nil}, err: `src: keys for "public.a" is empty`, hint: "list the key columns"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := n.List(Setting{File: "c.yaml", Node: node, At: at, Where: "src", Tables: c.tables, Records: c.records, Keys: c.keys})
			if c.err == "" {
				if err != nil || !reflect.DeepEqual(got, c.want) {
					t.Fatalf("List = %v, %v; want %v", got, err, c.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), c.hint) || !strings.Contains(err.Error(), "c.yaml:") {
				t.Fatalf("List error = %v; want %q with hint %q and the file", err, c.err, c.hint)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	for in, want := range map[string][3]any{
		"hr.person":    {"hr", "person", true},
		"a.b.c":        {"a", "b.c", true},
		"person":       {"person", "", false},
		".person":      {"", "person", false},
		"Public.Mixed": {"Public", "Mixed", true},
	} {
		q, tab, ok := Split(in)
		if q != want[0] || tab != want[1] || ok != want[2] {
			t.Errorf("Split(%q) = %q, %q, %v; want %v", in, q, tab, ok, want)
		}
	}
}

func TestUnionMissing(t *testing.T) {
	tests := []struct {
		a, b           []string
		union, missing []string
	}{
		{a: nil, b: nil, union: []string{}, missing: nil},
		{a: []string{"s.a", "s.b"}, b: []string{"s.b", "s.c"}, union: []string{"s.a", "s.b", "s.c"}, missing: []string{"s.a"}},
		{a: []string{"s.a"}, b: []string{"s.a"}, union: []string{"s.a"}, missing: nil},
		{a: nil, b: []string{"s.c", "s.c"}, union: []string{"s.c"}, missing: nil},
	}
	for _, tt := range tests {
		if got := Union(tt.a, tt.b); !slices.Equal(got, tt.union) {
			t.Errorf("Union(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.union)
		}
		if got := Missing(tt.a, tt.b); !slices.Equal(got, tt.missing) {
			t.Errorf("Missing(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.missing)
		}
	}
}

func TestDescribeChange(t *testing.T) {
	base := []Column{{Name: "id", Type: "integer"}, {Name: "name", Type: "text"}, {Name: "age", Type: "integer"}}
	tests := []struct {
		cur  []Column
		want string
	}{
		{base, ""},
		{[]Column{{Name: "id", Type: "integer"}, {Name: "name", Type: "text"}, {Name: "age", Type: "integer"}, {Name: "email", Type: "text"}}, "added column email (text)"},
		{[]Column{{Name: "id", Type: "integer"}, {Name: "name", Type: "text"}}, "dropped column age"},
		{[]Column{{Name: "id", Type: "integer"}, {Name: "full_name", Type: "text"}, {Name: "age", Type: "integer"}}, "renamed column name to full_name"},
		{[]Column{{Name: "id", Type: "integer"}, {Name: "name", Type: "text"}, {Name: "age", Type: "bigint"}}, "column age changed type from integer to bigint"},
	}
	for _, tt := range tests {
		if got := DescribeChange(base, tt.cur); got != tt.want {
			t.Errorf("DescribeChange(%v) = %q, want %q", tt.cur, got, tt.want)
		}
	}
}
