package render

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitTemplate(t *testing.T) {
	tests := []struct {
		raw   string
		parts []string
		err   string
	}{
		{raw: "hr-events", parts: []string{"hr-events"}},
		{raw: "{source}.{type}", parts: []string{"", "{source}", ".", "{type}"}},
		{raw: "hr.{type}.events", parts: []string{"hr.", "{type}", ".events"}},
		{raw: "", parts: nil},
		{raw: "hr.{type", err: `"hr.{type" has an unclosed {`},
		{raw: "hr.{operation}", err: `unknown placeholder {operation} in "hr.{operation}"`},
	}
	for _, tt := range tests {
		parts, err := SplitTemplate(tt.raw, "{source}", "{type}")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("SplitTemplate(%q): error %v, want %q", tt.raw, err, tt.err)
			}
			continue
		}
		if err != nil || !slices.Equal(parts, tt.parts) {
			t.Errorf("SplitTemplate(%q) = %q, %v; want %q", tt.raw, parts, err, tt.parts)
		}
	}
}
