// Package sqltable checks which tables a SQL source captures: the tables
// setting (or, without it, the records the mappings read), each written
// "<qualifier>.<table>", and the keys setting given per captured table.
package sqltable

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/configs"
)

// Split splits "qualifier.table" (a schema or database, then the table);
// names are taken literally.
func Split(t string) (qualifier, table string, ok bool) {
	qualifier, table, ok = strings.Cut(t, ".")
	return qualifier, table, ok && qualifier != "" && table != ""
}

// Naming is how a source type qualifies its tables, for error messages.
type Naming struct {
	// Qualifier is "schema" or "database".
	Qualifier string
	// Examples are two qualified tables, e.g. "public.person", "public.unit".
	Examples [2]string
}

// Setting is a source's tables and keys settings, with what its errors
// need: the config file, the source's node, a setting's node (for the
// line) and the source's name in messages (`mysql source "hr"`).
type Setting struct {
	File    string
	Node    *yaml.Node
	At      func(key string) *yaml.Node
	Where   string
	Tables  []string
	Records []string // the records the mappings read
	Keys    map[string][]string
}

// List returns the captured tables, each once, in order: Tables, or
// Records when Tables is empty. Every table must be qualified, every
// record among them, and Keys must name captured tables with at least
// one column.
func (n Naming) List(s Setting) ([]string, error) {
	tables := s.Tables
	if len(tables) == 0 {
		tables = s.Records
	}
	if len(tables) == 0 {
		return nil, configs.Errorf(s.File, s.Node, fmt.Sprintf("e.g. tables: [%s, %s]", n.Examples[0], n.Examples[1]),
			"%s: no tables: list them under tables, or map records from this source", s.Where)
	}
	var out []string
	seen := map[string]bool{}
	for _, t := range tables {
		if _, _, ok := Split(t); !ok {
			return nil, configs.Errorf(s.File, s.At("tables"), fmt.Sprintf("write the %s too, e.g. %q", n.Qualifier, n.Examples[0]),
				"%s: table %q is not %s-qualified", s.Where, t, n.Qualifier)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	for _, r := range s.Records {
		if !seen[r] {
			return nil, configs.Errorf(s.File, s.At("tables"), fmt.Sprintf("add %q to tables", r),
				"%s: the mappings read record %q, which is not among the captured tables", s.Where, r)
		}
	}
	for t, cols := range s.Keys {
		if !seen[t] {
			return nil, configs.Errorf(s.File, s.At("keys"), "keys are given per captured table",
				"%s: keys names table %q, which is not captured", s.Where, t)
		}
		if len(cols) == 0 {
			return nil, configs.Errorf(s.File, s.At("keys"), "list the key columns, e.g. [id]",
				"%s: keys for %q is empty", s.Where, t)
		}
	}
	return out, nil
}

// Union is a followed by the tables of b it lacks.
func Union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// Missing lists the tables of want not in have.
func Missing(want, have []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			out = append(out, w)
		}
	}
	return out
}

// Column describes a table's column as last seen, to report schema
// changes (kept in the SQL sources' checkpoints).
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// DescribeChange says how a table's columns changed from old to cur
// ("added column x (text); renamed column a to b; dropped column y"),
// or "" if they did not.
func DescribeChange(old, cur []Column) string {
	var parts []string
	oldBy := map[string]Column{}
	for _, c := range old {
		oldBy[c.Name] = c
	}
	curBy := map[string]Column{}
	for _, c := range cur {
		curBy[c.Name] = c
	}
	renamed := map[string]bool{}
	for i, c := range old {
		if _, ok := curBy[c.Name]; ok || i >= len(cur) {
			continue
		}
		if n := cur[i]; n.Type == c.Type {
			if _, existed := oldBy[n.Name]; !existed {
				parts = append(parts, fmt.Sprintf("renamed column %s to %s", c.Name, n.Name))
				renamed[c.Name], renamed[n.Name] = true, true
			}
		}
	}
	for _, c := range cur {
		o, ok := oldBy[c.Name]
		switch {
		case renamed[c.Name]:
		case !ok:
			parts = append(parts, fmt.Sprintf("added column %s (%s)", c.Name, c.Type))
		case o.Type != c.Type:
			parts = append(parts, fmt.Sprintf("column %s changed type from %s to %s", c.Name, o.Type, c.Type))
		}
	}
	for _, c := range old {
		if _, ok := curBy[c.Name]; !ok && !renamed[c.Name] {
			parts = append(parts, fmt.Sprintf("dropped column %s", c.Name))
		}
	}
	return strings.Join(parts, "; ")
}

// MergeColumns returns old with the tables of add replaced or added; old
// is not changed (checkpoints share it).
func MergeColumns(old, add map[string][]Column) map[string][]Column {
	out := make(map[string][]Column, len(old)+len(add))
	maps.Copy(out, old)
	maps.Copy(out, add)
	return out
}
