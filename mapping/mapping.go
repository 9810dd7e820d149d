// Package mapping turns a source's records into business objects, as the
// configuration declares: which records become which object type, its key,
// secondary keys, fields (renames, constants, expr-lang expressions),
// relations to other objects, where valid time comes from, and how each
// object and field is classified. It also redacts fields a receiver is not
// cleared for.
package mapping

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"
)

// Levels of classification, lowest first (the CloudEvents labels).
var Levels = []string{"public", "internal", "confidential", "restricted"}

// Level returns the rank of a classification label, or -1.
func Level(label string) int { return slices.Index(Levels, label) }

// Config is one mapping entry of the configuration file.
type Config struct {
	Type           string           `yaml:"type"`
	Source         string           `yaml:"source"`
	Record         string           `yaml:"record"`
	Where          string           `yaml:"where"`
	ID             Field            `yaml:"id"`
	Keys           map[string]Field `yaml:"keys"`
	Fields         map[string]Field `yaml:"fields"`
	ValidFrom      *Field           `yaml:"valid_from"`
	ValidTo        *Field           `yaml:"valid_to"`
	Classification string           `yaml:"classification"`
	Category       string           `yaml:"category"`
	Regulation     []string         `yaml:"regulation"`
	Sikkerhed      string           `yaml:"sikkerhedsklassificering"`
	Timezone       string           `yaml:"timezone"`
}

// Field says where a value comes from: a source field (the short form
// `name: source_field`), an expression, or a constant.
type Field struct {
	From           string `yaml:"from"`
	Expr           string `yaml:"expr"`
	Value          any    `yaml:"value"`
	Relation       string `yaml:"relation"`
	Classification string `yaml:"classification"`
}

// UnmarshalYAML accepts a bare source field name as well as the long form.
func (f *Field) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		f.From = n.Value
		return nil
	}
	type plain Field
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*f = Field(p)
	return nil
}

func (f Field) set() int {
	n := 0
	if f.From != "" {
		n++
	}
	if f.Expr != "" {
		n++
	}
	if f.Value != nil {
		n++
	}
	return n
}

// Object is a mapped business object.
type Object struct {
	Type string
	ID   string
	Keys map[string]string
	// Fields is the complete image: every configured field, null when the
	// record has no value.
	Fields map[string]any
	// ValidFrom/ValidTo come from the configured valid-time fields; zero
	// ValidFrom means the mapping has none (or the record left it empty)
	// and the engine uses the source's change time.
	ValidFrom time.Time
	ValidTo   *time.Time
	// ValidSource names where ValidFrom came from: "column:<name>" or "".
	ValidSource string
}

// Mapping is a compiled Config.
type Mapping struct {
	Config
	where     *vm.Program
	id        value
	keys      []named
	fields    []named
	validFrom *value
	validTo   *value
	loc       *time.Location
	level     int
	fieldLvl  map[string]int
}

type named struct {
	name string
	v    value
}

// value is one compiled Field.
type value struct {
	from  string
	prog  *vm.Program
	konst any
}

func (v value) eval(rec map[string]any) (any, error) {
	switch {
	case v.prog != nil:
		out, err := expr.Run(v.prog, rec)
		if err != nil {
			return nil, err
		}
		return Normalize(out), nil
	case v.from != "":
		return rec[v.from], nil
	}
	return v.konst, nil
}

// Compile checks and compiles a mapping; errors name the problem (the
// caller adds file and line).
func Compile(c Config) (*Mapping, error) {
	m := &Mapping{Config: c, fieldLvl: map[string]int{}}
	if c.Type == "" {
		return nil, fmt.Errorf("mapping has no type")
	}
	if c.Source == "" || c.Record == "" {
		return nil, fmt.Errorf("mapping %s: source and record are required", c.Type)
	}
	if c.Classification == "" {
		m.Classification = "internal"
	}
	if m.level = Level(m.Classification); m.level < 0 {
		return nil, fmt.Errorf("mapping %s: classification %q is not one of %s", c.Type, c.Classification, strings.Join(Levels, ", "))
	}
	var err error
	if c.Where != "" {
		if m.where, err = expr.Compile(c.Where, exprOptions(expr.AsBool())...); err != nil {
			return nil, fmt.Errorf("mapping %s: where: %w", c.Type, err)
		}
	}
	if c.ID.set() == 0 {
		return nil, fmt.Errorf("mapping %s: id is required (a source field, or {expr: ...})", c.Type)
	}
	if m.id, err = compileField(c.Type, "id", c.ID); err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(c.Keys) {
		v, err := compileField(c.Type, "keys."+name, c.Keys[name])
		if err != nil {
			return nil, err
		}
		m.keys = append(m.keys, named{name, v})
	}
	if len(c.Fields) == 0 {
		return nil, fmt.Errorf("mapping %s: no fields", c.Type)
	}
	for _, name := range sortedKeys(c.Fields) {
		f := c.Fields[name]
		v, err := compileField(c.Type, "fields."+name, f)
		if err != nil {
			return nil, err
		}
		m.fields = append(m.fields, named{name, v})
		if f.Classification != "" {
			l := Level(f.Classification)
			if l < 0 {
				return nil, fmt.Errorf("mapping %s: field %s: classification %q is not one of %s", c.Type, name, f.Classification, strings.Join(Levels, ", "))
			}
			m.fieldLvl[name] = l
		}
	}
	for _, vt := range []struct {
		name string
		f    *Field
		dst  **value
	}{{"valid_from", c.ValidFrom, &m.validFrom}, {"valid_to", c.ValidTo, &m.validTo}} {
		if vt.f == nil {
			continue
		}
		v, err := compileField(c.Type, vt.name, *vt.f)
		if err != nil {
			return nil, err
		}
		*vt.dst = &v
	}
	if c.Timezone == "" {
		m.Timezone = "Europe/Copenhagen"
	}
	if m.loc, err = time.LoadLocation(m.Timezone); err != nil {
		return nil, fmt.Errorf("mapping %s: timezone %q: %w", c.Type, m.Timezone, err)
	}
	return m, nil
}

func compileField(typ, name string, f Field) (value, error) {
	switch f.set() {
	case 0:
		return value{}, fmt.Errorf("mapping %s: %s: say where the value comes from (from, expr or value)", typ, name)
	case 1:
	default:
		return value{}, fmt.Errorf("mapping %s: %s: give only one of from, expr and value", typ, name)
	}
	if f.Expr != "" {
		p, err := expr.Compile(f.Expr, exprOptions()...)
		if err != nil {
			return value{}, fmt.Errorf("mapping %s: %s: expression: %w", typ, name, err)
		}
		return value{prog: p}, nil
	}
	return value{from: f.From, konst: Normalize(f.Value)}, nil
}

// exprOptions are the expression environment: the record's fields as
// variables (a missing one is nil) and a few helpers.
func exprOptions(extra ...expr.Option) []expr.Option {
	return append([]expr.Option{
		expr.AllowUndefinedVariables(),
		expr.Function("first", func(p ...any) (any, error) {
			if l, ok := p[0].([]any); ok {
				if len(l) == 0 {
					return nil, nil
				}
				return l[0], nil
			}
			return p[0], nil
		}),
		expr.Function("str", func(p ...any) (any, error) {
			if p[0] == nil {
				return nil, nil
			}
			return fmt.Sprint(p[0]), nil
		}),
	}, extra...)
}

// Relations returns field name → related object type.
func (m *Mapping) Relations() map[string]string {
	out := map[string]string{}
	for name, f := range m.Fields {
		if f.Relation != "" {
			out[name] = f.Relation
		}
	}
	return out
}

// Map maps one record. ok is false when the where filter excludes it.
func (m *Mapping) Map(rec map[string]any) (obj Object, ok bool, err error) {
	if m.where != nil {
		out, err := expr.Run(m.where, rec)
		if err != nil {
			return obj, false, fmt.Errorf("mapping %s: where: %w", m.Type, err)
		}
		if b, _ := out.(bool); !b {
			return obj, false, nil
		}
	}
	obj.Type = m.Type
	if obj.ID, err = m.ObjectID(rec); err != nil {
		return obj, false, err
	}
	if len(m.keys) > 0 {
		obj.Keys = make(map[string]string, len(m.keys))
		for _, k := range m.keys {
			v, err := k.v.eval(rec)
			if err != nil {
				return obj, false, fmt.Errorf("mapping %s: keys.%s: %w", m.Type, k.name, err)
			}
			if s := scalarString(v); s != "" {
				obj.Keys[k.name] = s
			}
		}
	}
	obj.Fields = make(map[string]any, len(m.fields))
	for _, f := range m.fields {
		v, err := f.v.eval(rec)
		if err != nil {
			return obj, false, fmt.Errorf("mapping %s: field %s: %w", m.Type, f.name, err)
		}
		obj.Fields[f.name] = v
	}
	if m.validFrom != nil {
		v, err := m.validFrom.eval(rec)
		if err != nil {
			return obj, false, fmt.Errorf("mapping %s: valid_from: %w", m.Type, err)
		}
		if t, err := m.parseTime(v); err != nil {
			return obj, false, fmt.Errorf("mapping %s: valid_from: %w", m.Type, err)
		} else if t != nil {
			obj.ValidFrom = *t
			obj.ValidSource = "column:" + fieldName(*m.ValidFrom)
		}
	}
	if m.validTo != nil {
		v, err := m.validTo.eval(rec)
		if err != nil {
			return obj, false, fmt.Errorf("mapping %s: valid_to: %w", m.Type, err)
		}
		if obj.ValidTo, err = m.parseTime(v); err != nil {
			return obj, false, fmt.Errorf("mapping %s: valid_to: %w", m.Type, err)
		}
	}
	return obj, true, nil
}

// ObjectID computes only the id, e.g. for a delete that carries just the
// key columns.
func (m *Mapping) ObjectID(rec map[string]any) (string, error) {
	v, err := m.id.eval(rec)
	if err != nil {
		return "", fmt.Errorf("mapping %s: id: %w", m.Type, err)
	}
	id := scalarString(v)
	if id == "" {
		return "", fmt.Errorf("mapping %s: the record has no id (%s is empty)", m.Type, fieldName(m.ID))
	}
	return id, nil
}

func fieldName(f Field) string {
	if f.From != "" {
		return f.From
	}
	if f.Expr != "" {
		return "expr"
	}
	return "value"
}

// parseTime reads a valid-time value: an RFC 3339 timestamp, or a date
// (midnight in the mapping's time zone). Empty means none.
func (m *Mapping) parseTime(v any) (*time.Time, error) {
	s := scalarString(v)
	if s == "" {
		return nil, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		loc := m.loc
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			t = t.UTC()
			return &t, nil
		}
	}
	return nil, fmt.Errorf("%q is neither a date (2006-01-02) nor an RFC 3339 time", s)
}

// Level returns the object's classification rank.
func (m *Mapping) Level() int { return m.level }

// FieldLevel returns a field's classification rank (the object's if the
// field has none of its own).
func (m *Mapping) FieldLevel(field string) int {
	if l, ok := m.fieldLvl[field]; ok {
		return max(l, m.level)
	}
	return m.level
}

// MaxLevel is the highest classification of the object or any field.
func (m *Mapping) MaxLevel() int {
	l := m.level
	for _, fl := range m.fieldLvl {
		l = max(l, fl)
	}
	return l
}

// scalarString renders an id or key value as a string.
func scalarString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return strings.TrimSpace(x)
	case json.Number:
		return x.String()
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []any:
		if len(x) == 1 {
			return scalarString(x[0])
		}
	}
	return fmt.Sprint(v)
}

// Normalize turns expression results into the JSON-friendly value set:
// ints and floats become json.Number, typed slices and maps become []any
// and map[string]any.
func Normalize(v any) any {
	switch x := v.(type) {
	case nil, string, bool, json.Number:
		return x
	case int:
		return json.Number(strconv.Itoa(x))
	case int64:
		return json.Number(strconv.FormatInt(x, 10))
	case float64:
		return json.Number(strconv.FormatFloat(x, 'f', -1, 64))
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = Normalize(x[i])
		}
		return out
	case []string:
		out := make([]any, len(x))
		for i := range x {
			out[i] = x[i]
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = Normalize(e)
		}
		return out
	case time.Time:
		return x.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	}
	return fmt.Sprint(v)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := slices.Collect(maps.Keys(m))
	sort.Strings(ks)
	return ks
}
