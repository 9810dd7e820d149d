package render

import (
	"fmt"
	"slices"
	"strings"
)

// SplitTemplate splits a name template such as "hr.{type}.{operation}"
// into literals and placeholders (which keep their braces), in order: a
// literal, a placeholder, a literal, … It refuses an unclosed brace and a
// placeholder not in allowed. Each receiver expands and checks the result
// by its own naming rules (Kafka topics, AMQP routing keys).
func SplitTemplate(raw string, allowed ...string) ([]string, error) {
	var parts []string
	rest := raw
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			parts = append(parts, rest)
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("%q has an unclosed {", raw)
		}
		ph := rest[i : i+j+1]
		if !slices.Contains(allowed, ph) {
			return nil, fmt.Errorf("unknown placeholder %s in %q", ph, raw)
		}
		parts = append(parts, rest[:i], ph)
		rest = rest[i+j+1:]
	}
	return parts, nil
}
