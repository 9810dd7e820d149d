package publishtest

import (
	"bytes"
	"testing"
)

// FirstCopies takes n messages in arrival order, message i being id and
// body, and returns the indexes of the first copy of each id, in order.
// It fails t when a later copy's body differs from the first's: a receiver
// may deliver an event twice, but only with the same bytes.
func FirstCopies(t testing.TB, n int, msg func(i int) (id string, body []byte)) []int {
	t.Helper()
	seen := map[string][]byte{}
	var first []int
	for i := range n {
		id, body := msg(i)
		if prev, dup := seen[id]; dup {
			if !bytes.Equal(prev, body) {
				t.Fatalf("duplicate of %s differs", id)
			}
			continue
		}
		seen[id] = body
		first = append(first, i)
	}
	return first
}
