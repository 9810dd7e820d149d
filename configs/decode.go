// Package configs reads the agent's configuration file and holds the
// complete example configurations (demo.yaml and one per use), embedded so
// that `connector` can run them without a checkout.
package configs

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is a configuration error at a place in a file. Its message names
// the file and line and, where there is one, the fix.
type Error struct {
	File string
	Line int
	Msg  string
	Hint string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString(" (")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// IsConfigError reports whether err is (or wraps) a configuration error,
// which the CLI turns into exit code 2.
func IsConfigError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// Errorf builds an Error at node's line.
func Errorf(file string, node *yaml.Node, hint, format string, args ...any) *Error {
	line := 0
	if node != nil {
		line = node.Line
	}
	return &Error{File: file, Line: line, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// Decode decodes node into v (a pointer to a struct) strictly: a key that no
// field of v takes, and that is not in ignore, is an error naming the line,
// the known keys and the nearest one. Type errors name the line too. file is
// used in messages only.
func Decode(file string, node *yaml.Node, v any, ignore ...string) error {
	if node == nil {
		return nil
	}
	if err := checkKeys(file, node, reflect.TypeOf(v), ignore); err != nil {
		return err
	}
	return DecodeTypes(file, node, v)
}

// DecodeTypes decodes node into v without checking for unknown keys (for
// the part of an entry that is shared with an adapter, which checks them);
// type errors name the file and line.
func DecodeTypes(file string, node *yaml.Node, v any) error {
	if err := node.Decode(v); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			// yaml.v3 says "line N: cannot unmarshal !!str `abc` into int".
			msg := strings.TrimSpace(te.Errors[0])
			line := 0
			if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
				msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
			}
			if strings.Contains(msg, "already defined") {
				return &Error{File: file, Line: line, Msg: msg, Hint: "remove one of the two"}
			}
			return &Error{File: file, Line: line, Msg: "wrong type: " + msg,
				Hint: "see the configuration reference in README.md"}
		}
		return &Error{File: file, Line: node.Line, Msg: err.Error()}
	}
	return nil
}

// checkKeys walks node alongside type t and reports the first unknown key.
func checkKeys(file string, node *yaml.Node, t reflect.Type, ignore []string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nodeType {
		return nil // kept raw, checked by its owner
	}
	if node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			return nil // Decode reports the type error
		}
		fields := structFields(t)
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, val := node.Content[i], node.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				if contains(ignore, k.Value) {
					continue
				}
				known := make([]string, 0, len(fields))
				for name := range fields {
					known = append(known, name)
				}
				sort.Strings(known)
				hint := "known keys: " + strings.Join(known, ", ")
				if near := nearest(k.Value, known); near != "" {
					hint = fmt.Sprintf("did you mean %q? %s", near, hint)
				}
				return Errorf(file, k, hint, "unknown key %q", k.Value)
			}
			if err := checkKeys(file, val, ft, nil); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if node.Kind == yaml.SequenceNode {
			for _, c := range node.Content {
				if err := checkKeys(file, c, t.Elem(), nil); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if node.Kind == yaml.MappingNode {
			for i := 1; i < len(node.Content); i += 2 {
				if err := checkKeys(file, node.Content[i], t.Elem(), nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

var nodeType = reflect.TypeOf(yaml.Node{})

// structFields maps yaml key → field type, following `yaml:",inline"`.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range structFields(ft) {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// nearest returns the known key within edit distance 2 of s, if any.
func nearest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
