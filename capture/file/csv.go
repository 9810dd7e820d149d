package file

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

type csvOptions struct {
	delimiter  rune // 0: ',' (or '\t' for tsv)
	header     bool
	columns    []string // names when there is no header row
	comment    rune
	lazyQuotes bool
}

// csvReader reads CSV (RFC 4180) with encoding/csv. Every value is a string;
// an empty cell is nil, whether or not it was quoted (encoding/csv does not
// tell "" from nothing).
type csvReader struct {
	r            *csv.Reader
	last         *lastByteReader
	file         string
	names        []string
	finalNewline bool
	lastLine     int
	checkUTF8    bool
	header       bool // names come from a header row (not from columns)
}

func newCSVReader(br *bufio.Reader, tsv bool, name string, o readOptions) (recordReader, error) {
	last := &lastByteReader{r: br}
	r := csv.NewReader(last)
	r.ReuseRecord = true
	r.LazyQuotes = o.csv.lazyQuotes
	r.Comment = o.csv.comment
	if o.csv.delimiter != 0 {
		r.Comma = o.csv.delimiter
	} else if tsv {
		r.Comma = '\t'
	}
	c := &csvReader{r: r, last: last, file: name, finalNewline: o.finalNewline,
		checkUTF8: o.encoding == "" || o.encoding == "utf-8"}
	if !o.csv.header {
		if len(o.csv.columns) == 0 {
			return nil, &ParseError{File: name, Msg: "csv.header is false, so the record needs columns naming the fields"}
		}
		c.names = o.csv.columns
		r.FieldsPerRecord = len(c.names)
		return c, nil
	}
	head, err := r.Read()
	if err == io.EOF {
		return emptyReader{}, nil
	}
	if err != nil {
		return nil, c.error(err, head)
	}
	line, _ := r.FieldPos(0)
	c.lastLine = line
	seen := make(map[string]int, len(head))
	c.names = make([]string, len(head))
	for i, h := range head {
		switch {
		case c.checkUTF8 && !utf8.ValidString(h):
			return nil, invalidUTF8(name, line)
		case h == "":
			return nil, &ParseError{File: name, Line: line,
				Msg: fmt.Sprintf("header column %d has no name; every column needs one", i+1)}
		}
		if j, dup := seen[h]; dup {
			return nil, &ParseError{File: name, Line: line,
				Msg: fmt.Sprintf("duplicate header %q (columns %d and %d); column names must be unique", h, j+1, i+1)}
		}
		seen[h] = i
		c.names[i] = h
	}
	r.FieldsPerRecord = len(c.names)
	c.header = true
	return c, nil
}

func (c *csvReader) next() (map[string]any, int, error) {
	rec, err := c.r.Read()
	if err == io.EOF {
		if err := c.checkEnd(); err != nil {
			return nil, 0, err
		}
		return nil, 0, io.EOF
	}
	if err != nil {
		return nil, 0, c.error(err, rec)
	}
	line, _ := c.r.FieldPos(0)
	c.lastLine = line
	v := make(map[string]any, len(c.names))
	for i, name := range c.names {
		s := rec[i]
		if s == "" {
			v[name] = nil
			continue
		}
		if c.checkUTF8 && !utf8.ValidString(s) {
			return nil, 0, invalidUTF8(c.file, line)
		}
		v[name] = s
	}
	return v, line, nil
}

// checkEnd, called at the end of the file, refuses a file whose last row
// has no line break: the row may be cut short and still parse.
func (c *csvReader) checkEnd() error {
	if !c.finalNewline || !c.last.any || c.last.last == '\n' {
		return nil
	}
	return &ParseError{File: c.file, Line: c.lastLine,
		Msg: "the file does not end with a line break, so its last row may be cut short; " +
			"re-export it, or set final_newline: optional if the exporter never writes one"}
}

func (c *csvReader) error(err error, rec []string) error {
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return readError(c.file, c.lastLine+1, err)
	}
	msg := pe.Err.Error()
	line := pe.Line
	switch {
	case errors.Is(pe.Err, csv.ErrFieldCount):
		line = pe.StartLine
		what := "the header has"
		if !c.header {
			what = "columns lists"
		}
		msg = fmt.Sprintf("row has %d fields, %s %d: a delimiter or quote problem, or a row cut short",
			len(rec), what, c.r.FieldsPerRecord)
	case errors.Is(pe.Err, csv.ErrQuote):
		msg = `a quoted field is not closed, or text follows its closing quote (")`
		if pe.StartLine != pe.Line {
			msg += fmt.Sprintf(" (the row starts on line %d)", pe.StartLine)
		}
		msg += "; the row is malformed or the file is cut short"
	case errors.Is(pe.Err, csv.ErrBareQuote):
		msg = `a quote (") inside an unquoted field; quote the field ("a ""b"" c") or set csv.lazy_quotes: true`
	}
	return &ParseError{File: c.file, Line: line, Msg: msg}
}
