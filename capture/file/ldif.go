package file

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ldifReader reads LDIF content records (RFC 2849): "dn" is the field "dn";
// an attribute with one value is a string, with several a []any of strings
// in file order. Attribute names keep the spelling of their first
// occurrence in the record; later lines with another case add to it (LDAP
// names are case-insensitive). "attr:: base64" is decoded; a value that is
// not UTF-8 text after decoding (jpegPhoto, objectGUID) stays base64 text,
// the engine's convention for bytes. Change records (changetype:) are
// refused: a snapshot holds content only.
type ldifReader struct {
	lines        lineReader
	file         string
	finalNewline bool

	buf      []byte // the current logical (unfolded) line
	peek     []byte // a physical line read ahead
	peekLine int
	hasPeek  bool
	started  bool // the version line may only come first
}

// logical returns the next logical line, with folded continuation lines
// (those starting with one space) joined, and its first physical line.
func (l *ldifReader) logical() ([]byte, int, error) {
	var n int
	if l.hasPeek {
		l.buf = append(l.buf[:0], l.peek...)
		n, l.hasPeek = l.peekLine, false
	} else {
		line, err := l.lines.next()
		if err != nil {
			return nil, 0, err
		}
		l.buf = append(l.buf[:0], line...)
		n = l.lines.n
	}
	if len(l.buf) == 0 {
		return l.buf, n, nil // a record separator is never continued
	}
	for {
		next, err := l.lines.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		if len(next) > 0 && next[0] == ' ' {
			l.buf = append(l.buf, next[1:]...)
			if len(l.buf) > maxLine {
				return nil, 0, &ParseError{File: l.file, Line: n, Msg: fmt.Sprintf("value longer than %d MiB", maxLine>>20)}
			}
			continue
		}
		l.peek = append(l.peek[:0], next...)
		l.peekLine, l.hasPeek = l.lines.n, true
		break
	}
	return l.buf, n, nil
}

func (l *ldifReader) next() (map[string]any, int, error) {
	var (
		rec   map[string]any
		names map[string]string // lower-case name → spelling used in rec
		start int
	)
	for {
		line, n, err := l.logical()
		if err == io.EOF {
			if rec == nil {
				return nil, 0, io.EOF
			}
			if l.finalNewline && l.lines.unterminated {
				return nil, 0, &ParseError{File: l.file, Line: l.lines.n,
					Msg: "the file does not end with a line break, so its last record may be cut short; " +
						"re-export it, or set final_newline: optional if the exporter never writes one"}
			}
			return l.finish(rec, start)
		}
		if err != nil {
			return nil, 0, err
		}
		if len(line) == 0 {
			if rec != nil {
				return l.finish(rec, start)
			}
			continue
		}
		switch line[0] {
		case '#':
			continue
		case ' ':
			return nil, 0, &ParseError{File: l.file, Line: n, Msg: "a continuation line (starting with a space) follows an empty line"}
		case '-':
			if len(line) == 1 {
				return nil, 0, &ParseError{File: l.file, Line: n, Msg: `a "-" line belongs to an LDIF change record; a snapshot file holds content records only (export with ldapsearch or slapcat)`}
			}
		}
		name, value, err := l.attribute(line, n)
		if err != nil {
			return nil, 0, err
		}
		lower := strings.ToLower(name)
		if rec == nil {
			if !l.started && lower == "version" {
				l.started = true
				if value != "1" {
					return nil, 0, &ParseError{File: l.file, Line: n, Msg: fmt.Sprintf("LDIF version %v is not supported (only version: 1)", value)}
				}
				continue
			}
			l.started = true
			if lower != "dn" {
				return nil, 0, &ParseError{File: l.file, Line: n,
					Msg: fmt.Sprintf(`a record must start with "dn:", found %q; records are separated by an empty line`, name+":")}
			}
			dn, ok := value.(string)
			if !ok || !utf8.ValidString(dn) {
				return nil, 0, &ParseError{File: l.file, Line: n, Msg: "the dn is not UTF-8 text"}
			}
			rec = map[string]any{"dn": dn}
			names = map[string]string{}
			start = n
			continue
		}
		switch lower {
		case "dn":
			return nil, 0, &ParseError{File: l.file, Line: n, Msg: `a second "dn:" line in a record; records must be separated by an empty line`}
		case "changetype", "control":
			return nil, 0, &ParseError{File: l.file, Line: n,
				Msg: fmt.Sprintf(`%q: LDIF change records are refused; a snapshot file holds content records only (export with ldapsearch or slapcat)`, name+":")}
		}
		spelled, seen := names[lower]
		if !seen {
			names[lower] = name
			rec[name] = value
			continue
		}
		switch cur := rec[spelled].(type) {
		case []any:
			rec[spelled] = append(cur, value)
		default:
			rec[spelled] = []any{cur, value}
		}
	}
}

func (l *ldifReader) finish(rec map[string]any, start int) (map[string]any, int, error) {
	if len(rec) == 1 {
		return nil, 0, &ParseError{File: l.file, Line: start, Msg: "the record has a dn but no attributes; the file may be cut short"}
	}
	return rec, start, nil
}

// attribute parses "name: value", "name:: base64" (and refuses "name:< url").
func (l *ldifReader) attribute(line []byte, n int) (string, any, error) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", nil, &ParseError{File: l.file, Line: n, Msg: fmt.Sprintf(`expected "attribute: value", found %q`, clip(line))}
	}
	for j, c := range line[:i] {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			j > 0 && (c == '-' || c == ';' || c == '.')
		if !ok {
			return "", nil, &ParseError{File: l.file, Line: n, Msg: fmt.Sprintf(`%q is not an attribute name; expected "attribute: value"`, clip(line[:i]))}
		}
	}
	name, rest := string(line[:i]), line[i+1:]
	switch {
	case len(rest) > 0 && rest[0] == ':':
		text := bytes.TrimSpace(rest[1:])
		raw := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
		m, err := base64.StdEncoding.Decode(raw, text)
		if err != nil {
			return "", nil, &ParseError{File: l.file, Line: n, Msg: fmt.Sprintf("%s:: is not valid base64 (%v); the value may be cut short", name, err)}
		}
		if utf8.Valid(raw[:m]) {
			return name, string(raw[:m]), nil
		}
		return name, string(text), nil
	case len(rest) > 0 && rest[0] == '<':
		return "", nil, &ParseError{File: l.file, Line: n, Msg: fmt.Sprintf("%s:< takes the value from a URL, which is not supported; export the value inline", name)}
	}
	value := bytes.TrimLeft(rest, " ")
	if !utf8.Valid(value) {
		return "", nil, invalidUTF8(l.file, n)
	}
	return name, string(value), nil
}

// clip shortens a piece of input for a message.
func clip(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}
