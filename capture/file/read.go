package file

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Formats a record file can have.
const (
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
	FormatTSV   = "tsv" // CSV with a tab as the default delimiter
	FormatLDIF  = "ldif"
)

// maxLine bounds one line (or one LDIF record's folded line) so that a file
// without line breaks cannot exhaust memory.
const maxLine = 64 << 20

// ParseError is malformed or truncated input at a line of a file.
type ParseError struct {
	File string // as shown to the user, e.g. "2026-01-05/users.jsonl"
	Line int    // 1-based; 0 when the problem concerns the file as a whole
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// recordReader yields the records of one file in file order.
type recordReader interface {
	// next returns a record's values and the line it starts on, or io.EOF
	// after the last record. Other errors are *ParseError.
	next() (map[string]any, int, error)
}

// readOptions are the per-file settings of the readers.
type readOptions struct {
	csv          csvOptions
	finalNewline bool   // a last line without a line break means truncation
	encoding     string // "", "utf-8", "iso-8859-1" or "windows-1252"
}

// formatOf derives a format from a file name: .csv, .tsv, .jsonl, .ndjson,
// .ldif, each optionally followed by .gz.
func formatOf(name string) (format string, gz bool) {
	lower := strings.ToLower(name)
	if strings.HasSuffix(lower, ".gz") {
		gz = true
		lower = strings.TrimSuffix(lower, ".gz")
	}
	switch filepath.Ext(lower) {
	case ".csv":
		return FormatCSV, gz
	case ".tsv":
		return FormatTSV, gz
	case ".jsonl", ".ndjson":
		return FormatJSONL, gz
	case ".ldif":
		return FormatLDIF, gz
	}
	return "", gz
}

// newRecordReader builds the reader of format over r, the file's raw bytes
// (gzip-compressed when gz). name is the file as shown in messages.
func newRecordReader(r io.Reader, format string, gz bool, name string, o readOptions) (recordReader, error) {
	if gz {
		zr, err := gzip.NewReader(r)
		if err == io.EOF {
			return emptyReader{}, nil
		}
		if err != nil {
			return nil, &ParseError{File: name, Msg: fmt.Sprintf("not a readable gzip file (%v); re-export it, or drop .gz from its name if it is not compressed", err)}
		}
		r = zr
	}
	switch o.encoding {
	case "", "utf-8":
	case "iso-8859-1":
		r = &singleByteReader{r: r, table: latin1}
	case "windows-1252":
		r = &singleByteReader{r: r, table: windows1252}
	default:
		return nil, fmt.Errorf("unknown encoding %q", o.encoding)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	// Spreadsheet programs start UTF-8 files with a byte order mark.
	if b, _ := br.Peek(3); bytes.Equal(b, []byte("\xef\xbb\xbf")) {
		br.Discard(3)
	}
	switch format {
	case FormatJSONL:
		return &jsonlReader{lines: lineReader{br: br, file: name}}, nil
	case FormatCSV, FormatTSV:
		return newCSVReader(br, format == FormatTSV, name, o)
	case FormatLDIF:
		return &ldifReader{lines: lineReader{br: br, file: name}, file: name, finalNewline: o.finalNewline}, nil
	}
	return nil, fmt.Errorf("unknown format %q", format)
}

type emptyReader struct{}

func (emptyReader) next() (map[string]any, int, error) { return nil, 0, io.EOF }

// lineReader splits a stream into lines without holding more than one line.
type lineReader struct {
	br   *bufio.Reader
	file string
	n    int    // lines returned so far
	long []byte // holds a line longer than br's buffer
	// unterminated is set when the last line returned had no line break.
	unterminated bool
}

// next returns the next line without its "\n" or "\r\n"; the slice is valid
// until the next call. It returns io.EOF after the last line.
func (l *lineReader) next() ([]byte, error) {
	line, err := l.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		l.long = append(l.long[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = l.br.ReadSlice('\n')
			l.long = append(l.long, line...)
			if len(l.long) > maxLine {
				return nil, &ParseError{File: l.file, Line: l.n + 1,
					Msg: fmt.Sprintf("line longer than %d MiB: this is not a line-oriented export", maxLine>>20)}
			}
		}
		line = l.long
	}
	switch {
	case err == io.EOF && len(line) == 0:
		return nil, io.EOF
	case err == io.EOF:
		l.unterminated = true
	case err != nil:
		return nil, readError(l.file, l.n+1, err)
	default:
		line = line[:len(line)-1]
	}
	l.n++
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readError describes a failure of the underlying stream at a line.
func readError(file string, line int, err error) error {
	var pe *ParseError
	if errors.As(err, &pe) {
		return err
	}
	msg := fmt.Sprintf("cannot read: %v", err)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = "the compressed data ends early: the file is truncated"
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
		msg = fmt.Sprintf("the compressed data is corrupt (%v)", err)
	}
	return &ParseError{File: file, Line: line, Msg: msg}
}

// lastByteReader remembers the last byte read, so that a reader that hides
// line breaks (encoding/csv) can still tell whether the file ended with one.
type lastByteReader struct {
	r    io.Reader
	last byte
	any  bool
}

func (l *lastByteReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		l.last, l.any = p[n-1], true
	}
	return n, err
}

func invalidUTF8(name string, line int) *ParseError {
	return &ParseError{File: name, Line: line, Msg: "text is not valid UTF-8; re-export the file as UTF-8, " +
		"or set encoding: windows-1252 (or iso-8859-1) if that is what the exporter writes"}
}

// ParseOnly reads and parses the file at path with the same readers as the
// source, calling fn for each record; it is the raw baseline of `make bench`.
// format is one of FormatJSONL, FormatCSV, FormatTSV, FormatLDIF, or "" to
// derive it from the file name. CSV files are read with a header row.
func ParseOnly(ctx context.Context, path string, format string, fn func(map[string]any) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fmtName, gz := formatOf(path)
	if format == "" {
		if fmtName == "" {
			return fmt.Errorf("%s: cannot tell the format from the name; pass one of jsonl, csv, tsv, ldif", path)
		}
		format = fmtName
	}
	o := readOptions{finalNewline: true, csv: csvOptions{header: true}}
	rr, err := newRecordReader(f, format, gz, path, o)
	if err != nil {
		return err
	}
	for n := 0; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		v, _, err := rr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(v); err != nil {
			return err
		}
	}
}
