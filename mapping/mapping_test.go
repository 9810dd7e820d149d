package mapping

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// user is a complete mapping in the configuration's own syntax.
const user = `
type: Bruger
source: hr
record: users
where: 'active != false'
id: id
keys:
  brugernavn: login
  email: {expr: 'lower(email)'}
fields:
  navn: name
  email: {expr: 'lower(email)'}
  kommune: {value: 101}
  land: {value: DK}
  enhed: {from: unit_id, relation: Enhed}
  cpr: {from: cpr, classification: confidential}
  grupper: {expr: 'first(groups)'}
valid_from: start
valid_to: {from: end}
regulation: [GDPR]
`

func parse(t *testing.T, src string) Config {
	t.Helper()
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func compile(t *testing.T, c Config) *Mapping {
	t.Helper()
	m, err := Compile(c)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return m
}

func TestFieldYAML(t *testing.T) {
	c := parse(t, user)
	if c.ID != (Field{From: "id"}) {
		t.Errorf("short form id = %+v", c.ID)
	}
	if c.Fields["enhed"] != (Field{From: "unit_id", Relation: "Enhed"}) {
		t.Errorf("long form = %+v", c.Fields["enhed"])
	}
	if c.Fields["email"].Expr != "lower(email)" || c.Fields["kommune"].Value != 101 {
		t.Errorf("expr/value = %+v %+v", c.Fields["email"], c.Fields["kommune"])
	}
	var f Field
	if err := yaml.Unmarshal([]byte("[a, b]"), &f); err == nil {
		t.Error("a list decoded as a Field")
	}
}

func TestCompileErrors(t *testing.T) {
	base := func() Config {
		return Config{Type: "T", Source: "s", Record: "r", ID: Field{From: "id"},
			Fields: map[string]Field{"a": {From: "a"}}}
	}
	tests := []struct {
		name  string
		edit  func(c *Config)
		parts []string
	}{
		{"no type", func(c *Config) { c.Type = "" }, []string{"no type"}},
		{"no source", func(c *Config) { c.Source = "" }, []string{"mapping T", "source and record are required"}},
		{"no record", func(c *Config) { c.Record = "" }, []string{"source and record are required"}},
		{"no id", func(c *Config) { c.ID = Field{} }, []string{"mapping T", "id is required"}},
		{"id with a relation only", func(c *Config) { c.ID = Field{Relation: "X"} }, []string{"id is required"}},
		{"id from and expr", func(c *Config) { c.ID = Field{From: "id", Expr: "id"} }, []string{"id", "only one of from, expr and value"}},
		{"field from and value", func(c *Config) { c.Fields["a"] = Field{From: "a", Value: 1} }, []string{"fields.a", "only one"}},
		{"field expr and value", func(c *Config) { c.Fields["a"] = Field{Expr: "a", Value: "x"} }, []string{"fields.a", "only one"}},
		{"field with nothing", func(c *Config) { c.Fields["b"] = Field{Classification: "public"} }, []string{"fields.b", "say where the value comes from"}},
		{"key with two", func(c *Config) { c.Keys = map[string]Field{"k": {From: "a", Expr: "a"}} }, []string{"keys.k", "only one"}},
		{"no fields", func(c *Config) { c.Fields = nil }, []string{"no fields"}},
		{"bad field expression", func(c *Config) { c.Fields["a"] = Field{Expr: "lower(email"} }, []string{"fields.a", "expression"}},
		{"bad id expression", func(c *Config) { c.ID = Field{Expr: "id +"} }, []string{"id: expression"}},
		{"bad valid_from expression", func(c *Config) { c.ValidFrom = &Field{Expr: "(("} }, []string{"valid_from", "expression"}},
		{"bad valid_to", func(c *Config) { c.ValidTo = &Field{} }, []string{"valid_to", "say where"}},
		{"bad where", func(c *Config) { c.Where = "active ==" }, []string{"where"}},
		{"where not boolean", func(c *Config) { c.Where = `"yes"` }, []string{"where"}},
		{"bad classification", func(c *Config) { c.Classification = "secret" }, []string{`classification "secret"`, "public, internal, confidential, restricted"}},
		{"bad field classification", func(c *Config) { c.Fields["a"] = Field{From: "a", Classification: "top"} }, []string{"field a", `classification "top"`}},
		{"bad timezone", func(c *Config) { c.Timezone = "Mars/Olympus" }, []string{`timezone "Mars/Olympus"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.edit(&c)
			m, err := Compile(c)
			if err == nil {
				t.Fatalf("Compile succeeded: %+v", m.Config)
			}
			for _, p := range tt.parts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not mention %q", err, p)
				}
			}
		})
	}
}

func TestCompileDefaults(t *testing.T) {
	m := compile(t, Config{Type: "T", Source: "s", Record: "r", ID: Field{From: "id"},
		Fields: map[string]Field{"a": {From: "a"}}})
	if m.Classification != "internal" || m.Level() != Level("internal") {
		t.Errorf("default classification = %q (%d)", m.Classification, m.Level())
	}
	if m.Timezone != "Europe/Copenhagen" {
		t.Errorf("default timezone = %q", m.Timezone)
	}
}

func TestMap(t *testing.T) {
	m := compile(t, parse(t, user))
	cph, err := time.LoadLocation("Europe/Copenhagen")
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	rec := func(kv ...any) map[string]any {
		r := map[string]any{"id": "u1", "login": "aa", "name": "Anne", "email": "Anne@Example.DK"}
		for i := 0; i < len(kv); i += 2 {
			r[kv[i].(string)] = kv[i+1]
		}
		return r
	}
	tests := []struct {
		name    string
		rec     map[string]any
		skip    bool   // where excludes it
		err     string // error substring
		check   func(t *testing.T, o Object)
		checkTZ *time.Location
	}{
		{
			name: "rename, expr, constants, missing fields null",
			rec:  rec("unit_id", json.Number("7"), "extra", "ignored"),
			check: func(t *testing.T, o Object) {
				want := map[string]any{
					"navn": "Anne", "email": "anne@example.dk", "kommune": json.Number("101"), "land": "DK",
					"enhed": json.Number("7"), "cpr": nil, "grupper": nil,
				}
				if !reflect.DeepEqual(o.Fields, want) {
					t.Errorf("fields = %#v\nwant     %#v", o.Fields, want)
				}
				if o.Type != "Bruger" || o.ID != "u1" {
					t.Errorf("object = %s/%s", o.Type, o.ID)
				}
			},
		},
		{
			name: "keys",
			rec:  rec(),
			check: func(t *testing.T, o Object) {
				want := map[string]string{"brugernavn": "aa", "email": "anne@example.dk"}
				if !maps.Equal(o.Keys, want) {
					t.Errorf("keys = %v, want %v", o.Keys, want)
				}
			},
		},
		{
			name: "empty key left out",
			rec:  rec("login", "  "),
			check: func(t *testing.T, o Object) {
				if _, ok := o.Keys["brugernavn"]; ok {
					t.Errorf("blank key kept: %q", o.Keys)
				}
			},
		},
		{
			name: "expression over a list",
			rec:  rec("groups", []any{"g1", "g2"}),
			check: func(t *testing.T, o Object) {
				if o.Fields["grupper"] != "g1" {
					t.Errorf("first(groups) = %#v", o.Fields["grupper"])
				}
			},
		},
		{name: "where false", rec: rec("active", false), skip: true},
		{name: "where true", rec: rec("active", true), check: func(*testing.T, Object) {}},
		{
			name: "valid_from date is midnight in Copenhagen (winter)",
			rec:  rec("start", "2024-03-01"),
			check: func(t *testing.T, o Object) {
				if want := utc("2024-02-29T23:00:00Z"); !o.ValidFrom.Equal(want) || o.ValidFrom.Location() != time.UTC {
					t.Errorf("valid from = %v, want %v in UTC", o.ValidFrom, want)
				}
				if !o.ValidFrom.In(cph).Equal(time.Date(2024, 3, 1, 0, 0, 0, 0, cph)) {
					t.Errorf("not local midnight: %v", o.ValidFrom.In(cph))
				}
				if o.ValidSource != "column:start" {
					t.Errorf("valid source = %q", o.ValidSource)
				}
			},
		},
		{
			name: "valid_from date in summer time",
			rec:  rec("start", "2024-07-01"),
			check: func(t *testing.T, o Object) {
				if want := utc("2024-06-30T22:00:00Z"); !o.ValidFrom.Equal(want) {
					t.Errorf("valid from = %v, want %v", o.ValidFrom, want)
				}
			},
		},
		{
			name: "valid_from RFC 3339 keeps its offset",
			rec:  rec("start", "2024-03-01T10:00:00+05:00"),
			check: func(t *testing.T, o Object) {
				if want := utc("2024-03-01T05:00:00Z"); !o.ValidFrom.Equal(want) {
					t.Errorf("valid from = %v, want %v", o.ValidFrom, want)
				}
			},
		},
		{
			name: "valid_from RFC 3339 with fraction",
			rec:  rec("start", "2024-03-01T10:00:00.123456Z"),
			check: func(t *testing.T, o Object) {
				if want := utc("2024-03-01T10:00:00.123456Z"); !o.ValidFrom.Equal(want) {
					t.Errorf("valid from = %v, want %v", o.ValidFrom, want)
				}
			},
		},
		{
			name: "valid_from local time without offset",
			rec:  rec("start", "2024-03-01T10:00:00"),
			check: func(t *testing.T, o Object) {
				if want := utc("2024-03-01T09:00:00Z"); !o.ValidFrom.Equal(want) {
					t.Errorf("valid from = %v, want %v", o.ValidFrom, want)
				}
			},
		},
		{
			// The form capture/postgres gives a timestamp without time zone.
			name: "valid_from local time with microseconds",
			rec:  rec("start", "2024-03-01T10:00:00.250000"),
			check: func(t *testing.T, o Object) {
				if want := utc("2024-03-01T09:00:00.25Z"); !o.ValidFrom.Equal(want) {
					t.Errorf("valid from = %v, want %v", o.ValidFrom, want)
				}
			},
		},
		{
			name: "valid_to",
			rec:  rec("start", "2024-01-01", "end", "2024-12-31"),
			check: func(t *testing.T, o Object) {
				if o.ValidTo == nil || !o.ValidTo.Equal(utc("2024-12-30T23:00:00Z")) {
					t.Errorf("valid to = %v", o.ValidTo)
				}
			},
		},
		{
			name: "empty valid_from is zero",
			rec:  rec("start", ""),
			check: func(t *testing.T, o Object) {
				if !o.ValidFrom.IsZero() || o.ValidSource != "" || o.ValidTo != nil {
					t.Errorf("valid = %v %q %v", o.ValidFrom, o.ValidSource, o.ValidTo)
				}
			},
		},
		{
			name: "missing valid_from is zero",
			rec:  rec(),
			check: func(t *testing.T, o Object) {
				if !o.ValidFrom.IsZero() || o.ValidSource != "" {
					t.Errorf("valid = %v %q", o.ValidFrom, o.ValidSource)
				}
			},
		},
		{name: "bad valid_from", rec: rec("start", "01/03/2024"), err: `valid_from: "01/03/2024" is neither a date`},
		{name: "bad valid_to", rec: rec("end", "soon"), err: "valid_to"},
		{name: "no id", rec: rec("id", nil), err: "the record has no id (id is empty)"},
		{name: "blank id", rec: rec("id", " "), err: "has no id"},
		{name: "expression fails at run time", rec: rec("email", 42), err: "mapping Bruger: keys.email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, ok, err := m.Map(tt.rec)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.err)
				}
				if ok {
					t.Error("ok with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok == tt.skip {
				t.Fatalf("ok = %v, want %v", ok, !tt.skip)
			}
			if tt.check != nil {
				tt.check(t, o)
			}
		})
	}
}

func TestMapTimezone(t *testing.T) {
	c := parse(t, user)
	c.Timezone = "UTC"
	m := compile(t, c)
	o, _, err := m.Map(map[string]any{"id": "1", "email": "x", "start": "2024-03-01"})
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC); !o.ValidFrom.Equal(want) {
		t.Errorf("valid from = %v, want %v", o.ValidFrom, want)
	}
}

func TestMapExpressionFieldError(t *testing.T) {
	m := compile(t, Config{Type: "T", Source: "s", Record: "r", ID: Field{From: "id"},
		Fields: map[string]Field{"n": {Expr: "upper(name)"}}})
	if _, _, err := m.Map(map[string]any{"id": "1", "name": 3}); err == nil || !strings.Contains(err.Error(), "field n") {
		t.Errorf("err = %v, want one naming field n", err)
	}
	o, _, err := m.Map(map[string]any{"id": "1", "name": "ab"})
	if err != nil || o.Fields["n"] != "AB" {
		t.Errorf("upper(name) = %#v, %v", o.Fields["n"], err)
	}
}

func TestObjectID(t *testing.T) {
	byField := compile(t, Config{Type: "T", Source: "s", Record: "r", ID: Field{From: "id"},
		Fields: map[string]Field{"a": {From: "a"}}})
	byExpr := compile(t, Config{Type: "T", Source: "s", Record: "r", ID: Field{Expr: `kind + ":" + str(n)`},
		Fields: map[string]Field{"a": {From: "a"}}})
	tests := []struct {
		m    *Mapping
		rec  map[string]any
		want string // "" means an error
	}{
		{byField, map[string]any{"id": json.Number("12345678901234567890")}, "12345678901234567890"},
		{byField, map[string]any{"id": json.Number("42")}, "42"},
		{byField, map[string]any{"id": 42.0}, "42"},
		{byField, map[string]any{"id": 1e21}, "1000000000000000000000"},
		{byField, map[string]any{"id": 7}, "7"},
		{byField, map[string]any{"id": " u1 "}, "u1"},
		{byField, map[string]any{"id": []any{"dn=x"}}, "dn=x"},
		{byField, map[string]any{"id": true}, "true"},
		{byField, map[string]any{"id": ""}, ""},
		{byField, map[string]any{"id": []any{}}, "[]"},
		{byField, map[string]any{}, ""},
		{byExpr, map[string]any{"kind": "user", "n": 5}, "user:5"},
	}
	for _, tt := range tests {
		got, err := tt.m.ObjectID(tt.rec)
		if tt.want == "" {
			if err == nil {
				t.Errorf("ObjectID(%v) = %q, want an error", tt.rec, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ObjectID(%v) = %q, %v; want %q", tt.rec, got, err, tt.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	tm := time.Date(2024, 3, 1, 10, 0, 0, 5000, time.FixedZone("x", 3600))
	tests := []struct {
		in   any
		want any
	}{
		{nil, nil},
		{"s", "s"},
		{true, true},
		{json.Number("1.5"), json.Number("1.5")},
		{3, json.Number("3")},
		{int64(-9), json.Number("-9")},
		{2.5, json.Number("2.5")},
		{1e21, json.Number("1000000000000000000000")},
		{[]string{"a", "b"}, []any{"a", "b"}},
		{[]any{1, "x", []any{2.0}}, []any{json.Number("1"), "x", []any{json.Number("2")}}},
		{map[string]any{"n": 1, "m": map[string]any{"f": 0.5}}, map[string]any{"n": json.Number("1"), "m": map[string]any{"f": json.Number("0.5")}}},
		{tm, "2024-03-01T09:00:00.000005Z"},
		{uint8(4), "4"},
	}
	for _, tt := range tests {
		if got := Normalize(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Normalize(%#v) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
}

func TestLevels(t *testing.T) {
	m := compile(t, parse(t, user))
	if got := m.Relations(); !maps.Equal(got, map[string]string{"enhed": "Enhed"}) {
		t.Errorf("Relations = %v", got)
	}
	if m.Level() != 1 || m.FieldLevel("navn") != 1 || m.FieldLevel("cpr") != 2 || m.MaxLevel() != 2 {
		t.Errorf("levels: object %d navn %d cpr %d max %d", m.Level(), m.FieldLevel("navn"), m.FieldLevel("cpr"), m.MaxLevel())
	}
	// A field never ranks below its object.
	c := parse(t, user)
	c.Classification = "confidential"
	c.Fields["land"] = Field{Value: "DK", Classification: "public"}
	if m := compile(t, c); m.FieldLevel("land") != 2 {
		t.Errorf("public field of a confidential object ranks %d", m.FieldLevel("land"))
	}
	for i, l := range Levels {
		if Level(l) != i {
			t.Errorf("Level(%q) = %d", l, Level(l))
		}
	}
	if Level("secret") != -1 || Level("") != -1 {
		t.Error("unknown labels rank")
	}
}

func configs(t *testing.T) []Config {
	t.Helper()
	enhed := parse(t, `
type: Enhed
source: hr
record: units
id: id
fields:
  navn: name
  overordnet: {from: parent, relation: Enhed}
`)
	ad := parse(t, `
type: Konto
source: ad
record: accounts
id: sid
fields:
  bruger: {from: employee, relation: Bruger}
`)
	adGroup := parse(t, `
type: Gruppe
source: ad
record: groups
id: sid
fields: {navn: cn}
`)
	// Two types from one record.
	login := parse(t, `
type: Login
source: hr
record: users
id: login
fields: {navn: login}
`)
	return []Config{parse(t, user), enhed, ad, adGroup, login}
}

var sources = map[string]bool{"hr": true, "ad": true}

func TestNewSet(t *testing.T) {
	s, _, err := NewSet(configs(t), sources)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Types(); !slices.Equal(got, []string{"Bruger", "Enhed", "Gruppe", "Konto", "Login"}) {
		t.Errorf("Types = %v", got)
	}
	if s.Type("Enhed") == nil || s.Type("Enhed").Record != "units" || s.Type("Nope") != nil {
		t.Error("Type lookup")
	}
	var forUsers []string
	for _, m := range s.ForRecord("hr", "users") {
		forUsers = append(forUsers, m.Type)
	}
	if !slices.Equal(forUsers, []string{"Bruger", "Login"}) {
		t.Errorf("ForRecord(hr, users) = %v", forUsers)
	}
	if s.ForRecord("ad", "users") != nil {
		t.Error("ForRecord mixes sources")
	}
	if got := s.Records("hr"); !slices.Equal(got, []string{"units", "users"}) {
		t.Errorf("Records(hr) = %v", got)
	}
	if got := s.Records("ad"); !slices.Equal(got, []string{"accounts", "groups"}) {
		t.Errorf("Records(ad) = %v", got)
	}
	if got := s.Records("none"); len(got) != 0 {
		t.Errorf("Records(none) = %v", got)
	}
	if got := s.TypesOf("hr", []string{"users", "units", "missing"}); !slices.Equal(got, []string{"Bruger", "Enhed", "Login"}) {
		t.Errorf("TypesOf = %v", got)
	}
	if got := s.TypesOf("ad", []string{"units"}); len(got) != 0 {
		t.Errorf("TypesOf(ad, units) = %v", got)
	}
}

func TestNewSetErrors(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(cs []Config) []Config
		index int
		parts []string
	}{
		{"unknown source", func(cs []Config) []Config { cs[2].Source = "hrr"; return cs }, 2,
			[]string{`source "hrr" is not configured`, "configured: ad, hr"}},
		{"duplicate type", func(cs []Config) []Config { cs[4].Type = "Enhed"; return cs }, 4,
			[]string{"Enhed", "defined twice"}},
		{"dangling relation", func(cs []Config) []Config { return slices.Delete(cs, 0, 1) }, 1,
			[]string{"Konto", "field bruger", `type "Bruger"`, "no mapping defines"}},
		{"compile error", func(cs []Config) []Config { cs[3].ID = Field{}; return cs }, 3,
			[]string{"Gruppe", "id is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, i, err := NewSet(tt.edit(configs(t)), sources)
			if err == nil {
				t.Fatalf("NewSet succeeded: %v", s.Types())
			}
			if i != tt.index {
				t.Errorf("index = %d, want %d (%v)", i, tt.index, err)
			}
			for _, p := range tt.parts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not mention %q", err, p)
				}
			}
		})
	}
}

func TestRedact(t *testing.T) {
	c := parse(t, user)
	c.Fields["note"] = Field{From: "note", Classification: "restricted"}
	c.Fields["land"] = Field{Value: "DK", Classification: "public"}
	s, _, err := NewSet([]Config{c, configs(t)[1]}, sources)
	if err != nil {
		t.Fatal(err)
	}
	image := func() map[string]any {
		return map[string]any{"navn": "Anne", "cpr": "0101011234", "note": "x", "land": "DK", "email": nil}
	}
	tests := []struct {
		name    string
		typ     string
		image   map[string]any
		ceiling string
		removed []string
	}{
		{"internal hides cpr and note", "Bruger", image(), "internal", []string{"cpr", "note"}},
		{"confidential hides note", "Bruger", image(), "confidential", []string{"note"}},
		{"restricted sees all", "Bruger", image(), "restricted", nil},
		{"absent fields are not reported", "Bruger", map[string]any{"navn": "A", "cpr": nil}, "internal", []string{"cpr"}},
		{"nothing to hide", "Bruger", map[string]any{"navn": "A"}, "internal", nil},
		{"unknown type untouched", "Nope", image(), "public", nil},
		{"type without classified fields", "Enhed", map[string]any{"navn": "x"}, "public", nil},
		{"nil image", "Bruger", nil, "internal", nil},
	}
	for _, h := range []struct {
		typ, ceiling string
		want         bool
	}{{"Bruger", "internal", true}, {"Bruger", "confidential", true}, {"Bruger", "restricted", false}, {"Nope", "public", false}} {
		if got := s.Hides(h.typ, h.ceiling); got != h.want {
			t.Errorf("Hides(%s, %s) = %v, want %v", h.typ, h.ceiling, got, h.want)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := maps.Clone(tt.image)
			out, removed := s.Redact(tt.typ, tt.image, tt.ceiling)
			if !slices.Equal(removed, tt.removed) {
				t.Errorf("removed = %v, want %v", removed, tt.removed)
			}
			// Receivers skip Redact where Hides says there is nothing to
			// hide: it must never say so when Redact would remove something.
			if len(removed) > 0 && !s.Hides(tt.typ, tt.ceiling) {
				t.Errorf("Hides(%s, %s) = false, yet Redact removed %v", tt.typ, tt.ceiling, removed)
			}
			if !reflect.DeepEqual(tt.image, orig) {
				t.Errorf("input changed: %v, was %v", tt.image, orig)
			}
			for k, v := range tt.image {
				got, ok := out[k]
				if slices.Contains(tt.removed, k) {
					if ok {
						t.Errorf("%s still in the output", k)
					}
				} else if !ok || got != v {
					t.Errorf("%s = %v, %v in the output, want %v", k, got, ok, v)
				}
			}
			if len(out) != len(tt.image)-len(tt.removed) {
				t.Errorf("output %v has extra fields", out)
			}
		})
	}
}
