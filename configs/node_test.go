package configs

import (
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestKeyValue(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("a:\n  b:\n    c: 1\nd: [x]\n"), &doc); err != nil {
		t.Fatal(err)
	}
	root := doc.Content[0]
	tests := []struct {
		path            []string
		keyLine         int
		keyValue, value string // "" value: Value returns nil
	}{
		{path: []string{"a", "b", "c"}, keyLine: 3, keyValue: "c", value: "1"},
		{path: []string{"a", "b"}, keyLine: 2, keyValue: "b"},
		{path: []string{"a", "x"}, keyLine: 1, keyValue: "a"}, // falls back to the deepest key found
		{path: []string{"d", "e"}, keyLine: 4, keyValue: "d"}, // d is not a mapping
		{path: []string{"nope"}, keyLine: 1, keyValue: ""},    // the root itself
		{path: []string{"a", "b", "c", "z"}, keyLine: 3, keyValue: "c"},
	}
	for _, tt := range tests {
		k := Key(root, tt.path...)
		if k.Line != tt.keyLine || k.Value != tt.keyValue {
			t.Errorf("Key(%v) = line %d %q, want line %d %q", tt.path, k.Line, k.Value, tt.keyLine, tt.keyValue)
		}
		v := Value(root, tt.path...)
		switch {
		case tt.value == "" && tt.path[len(tt.path)-1] != "b" && v != nil:
			t.Errorf("Value(%v) = %q, want nil", tt.path, v.Value)
		case tt.value != "" && (v == nil || v.Value != tt.value):
			t.Errorf("Value(%v) = %v, want %q", tt.path, v, tt.value)
		}
	}
	if v := Value(root, "a", "b"); v == nil || v.Kind != yaml.MappingNode {
		t.Errorf("Value(a, b) = %v, want the mapping under b", v)
	}
	if Value(nil, "a") != nil || Key(nil, "a") != nil {
		t.Error("a nil node must give nil")
	}
}
