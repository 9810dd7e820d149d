package history

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// hashJSON is the content hash of an image's canonical JSON.
func hashJSON(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// keysJSON is the stored form of an object's alternative keys: none is
// empty, so that nil and an empty map compare equal.
func keysJSON(m map[string]string) []byte {
	if len(m) == 0 {
		return nil
	}
	return appendStringMap(nil, m)
}

func decodeKeys(b []byte, m *map[string]string) error {
	*m = nil
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, m)
}

// changedJSON lists, sorted, the fields whose values differ between two
// canonical JSON images (null for none). Canonical JSON makes equal values
// equal bytes, so values are compared as bytes. Against no image, the
// fields that are not null count as changed.
func changedJSON(before, after []byte) ([]string, error) {
	// Images rarely have more than a few dozen fields: the member lists
	// stay on the stack.
	var abuf, bbuf [32]member
	a, err := members(abuf[:0], before)
	if err != nil {
		return nil, fmt.Errorf("before: %w", err)
	}
	b, err := members(bbuf[:0], after)
	if err != nil {
		return nil, fmt.Errorf("after: %w", err)
	}
	out := make([]string, 0, max(len(a), len(b)))
	if a == nil || b == nil {
		for _, m := range append(a, b...) {
			if string(m.value) != "null" {
				out = append(out, string(m.name))
			}
		}
		return out, nil
	}
	// Both are sorted by name (canonical JSON sorts members by their
	// unescaped names): merge.
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && bytes.Compare(a[i].name, b[j].name) < 0):
			out = append(out, string(a[i].name))
			i++
		case i == len(a) || bytes.Compare(b[j].name, a[i].name) < 0:
			out = append(out, string(b[j].name))
			j++
		default:
			if !bytes.Equal(a[i].value, b[j].value) {
				out = append(out, string(a[i].name))
			}
			i, j = i+1, j+1
		}
	}
	return out, nil
}

// member is one member of a JSON object: its unescaped name and its
// value's bytes.
type member struct {
	name, value []byte
}

var errNotObject = errors.New("not a JSON object")

// members appends the members of a canonical JSON object (nil for none)
// to dst.
func members(dst []member, b []byte) ([]member, error) {
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	if b[0] != '{' {
		return nil, errNotObject
	}
	out := dst[:0]
	p := 1
	for p < len(b) && b[p] != '}' {
		if b[p] == ',' {
			p++
		}
		end, err := skipValue(b, p)
		if err != nil {
			return nil, err
		}
		name := b[p+1 : end-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			var s string
			if err := json.Unmarshal(b[p:end], &s); err != nil {
				return nil, err
			}
			name = []byte(s)
		}
		if end >= len(b) || b[end] != ':' {
			return nil, errNotObject
		}
		vend, err := skipValue(b, end+1)
		if err != nil {
			return nil, err
		}
		out = append(out, member{name: name, value: b[end+1 : vend]})
		p = vend
	}
	if p >= len(b) {
		return nil, errNotObject
	}
	return out, nil
}

// skipValue returns the offset after the JSON value that starts at p (no
// whitespace: canonical JSON has none).
func skipValue(b []byte, p int) (int, error) {
	if p >= len(b) {
		return 0, errNotObject
	}
	switch b[p] {
	case '"':
		for i := p + 1; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1, nil
			}
		}
		return 0, errNotObject
	case '{', '[':
		depth := 0
		for i := p; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, err := skipValue(b, i)
				if err != nil {
					return 0, err
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
		}
		return 0, errNotObject
	default:
		i := p
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ':' {
			i++
		}
		if i == p {
			return 0, errNotObject
		}
		return i, nil
	}
}
