package history

import (
	"reflect"
	"testing"
	"time"
)

// parseTimeLayout gives what time.Parse and At give, or leaves the
// timestamp to them.
func TestParseTimeLayout(t *testing.T) {
	for _, s := range []string{
		"2026-11-22T21:20:06.453751Z",
		"2026-01-01T00:00:00.000000Z",
		"1999-12-31T23:59:59.999999Z",
		"2024-02-29T12:00:00.000001Z",
		"2026-02-29T12:00:00.000000Z", // no such day
		"2026-02-31T12:00:00.000000Z",
		"2026-13-01T12:00:00.000000Z",
		"2026-11-22T24:00:00.000000Z",
		"2026-11-22T21:60:06.453751Z",
		"2026-11-22T21:20:60.453751Z",
		"2026-11-22T21:20:06.45375xZ",
		"2026-11-22T21:20:06.453751+01:00",
		"2026-11-22T21:20:06Z",
		"+026-11-22T21:20:06.453751Z",
	} {
		want, werr := time.Parse(time.RFC3339Nano, s)
		got, ok := parseTimeLayout([]byte(s))
		if !ok {
			if werr == nil && len(s) == 27 && s[26] == 'Z' {
				t.Errorf("%s: not parsed, time.Parse gives %v", s, want)
			}
			continue
		}
		if werr != nil {
			t.Errorf("%s: parsed as %v, time.Parse says %v", s, got, werr)
			continue
		}
		if w := At(want); !reflect.DeepEqual(Time{got}, w) {
			t.Errorf("%s: got %#v, want %#v", s, got, w.Time)
		}
	}
}
