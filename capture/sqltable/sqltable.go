// Package sqltable checks which tables a SQL source captures: the tables
// setting (or, without it, the records the mappings read), each written
// "<qualifier>.<table>", and the keys setting given per captured table.
package sqltable

import (
	"fmt"
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
