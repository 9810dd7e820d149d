package file

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// jsonlReader reads JSON Lines: one JSON object per line. Blank lines are
// skipped. A last line without a line break is accepted: a cut-off JSON
// object never parses, so JSON Lines need no final newline to detect
// truncation.
type jsonlReader struct {
	lines lineReader
}

func (j *jsonlReader) next() (map[string]any, int, error) {
	for {
		line, err := j.lines.next()
		if err != nil {
			return nil, 0, err
		}
		n := j.lines.n
		lead := len(line)
		line = bytes.TrimLeft(line, " \t")
		lead -= len(line)
		line = bytes.TrimRight(line, " \t")
		if len(line) == 0 {
			continue
		}
		if !utf8.Valid(line) {
			return nil, 0, invalidUTF8(j.lines.file, n)
		}
		if line[0] != '{' {
			return nil, 0, &ParseError{File: j.lines.file, Line: n,
				Msg: "not a JSON object: each line of a JSON Lines file must hold one {...} record"}
		}
		// A decoder per line keeps line numbers exact and refuses objects
		// spanning lines; UseNumber keeps numbers exact (json.Number).
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var v map[string]any
		if err := dec.Decode(&v); err != nil {
			return nil, 0, &ParseError{File: j.lines.file, Line: n, Msg: jsonMessage(err, lead)}
		}
		if end := int(dec.InputOffset()); end < len(line) {
			col := lead + end + 1 + len(line[end:]) - len(bytes.TrimLeft(line[end:], " \t"))
			return nil, 0, &ParseError{File: j.lines.file, Line: n,
				Msg: fmt.Sprintf("invalid JSON: more than one value on the line (column %d); put each record on its own line", col)}
		}
		return v, n, nil
	}
}

func jsonMessage(err error, lead int) string {
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "invalid JSON: unexpected end of input (the line is cut short)"
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON: %s (column %d)", se.Error(), lead+int(se.Offset))
	}
	return "invalid JSON: " + err.Error()
}
