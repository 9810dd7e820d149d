package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// unit is one row of units.csv.
type unit struct {
	ID, Navn, Kortnavn, Parent, EAN, GyldigFra string
}

var unitHeader = []string{"id", "navn", "kortnavn", "overordnet_id", "ean", "gyldig_fra"}

func (u unit) row() []string {
	return []string{u.ID, u.Navn, u.Kortnavn, u.Parent, u.EAN, u.GyldigFra}
}

// user is one line of users.jsonl. The field order here is the order on disk.
type user struct {
	ID         string `json:"id"`
	Brugernavn string `json:"brugernavn"`
	Navn       string `json:"navn"`
	Email      string `json:"email"`
	Telefon    string `json:"telefon"`
	Stilling   string `json:"stilling"`
	EnhedID    string `json:"enhed_id"`
	CPR        string `json:"cpr"`
	GyldigFra  string `json:"gyldig_fra"`
}

// appendJSON renders u as one JSON object, without a newline. It is written
// by hand rather than with encoding/json because it runs a million times in
// the benchmark generator; the tests check it against encoding/json.
func (u *user) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, u.ID)
	b = append(b, `,"brugernavn":`...)
	b = appendString(b, u.Brugernavn)
	b = append(b, `,"navn":`...)
	b = appendString(b, u.Navn)
	b = append(b, `,"email":`...)
	b = appendString(b, u.Email)
	b = append(b, `,"telefon":`...)
	b = appendString(b, u.Telefon)
	b = append(b, `,"stilling":`...)
	b = appendString(b, u.Stilling)
	b = append(b, `,"enhed_id":`...)
	b = appendString(b, u.EnhedID)
	b = append(b, `,"cpr":`...)
	b = appendString(b, u.CPR)
	b = append(b, `,"gyldig_fra":`...)
	b = appendString(b, u.GyldigFra)
	return append(b, '}')
}

// appendString appends s as a JSON string. Non-ASCII UTF-8 is kept as is.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// nameUUID derives a stable UUID (version 5 layout, SHA-1) from a label, so
// that an object's id does not depend on generation order.
func nameUUID(label string) string {
	h := sha1.Sum([]byte(label))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return formatUUID(h[:16])
}

// formatUUID renders 16 bytes in the canonical lower-case form.
func formatUUID(b []byte) string {
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:16])
	return string(s[:])
}

// folder maps Danish letters to the ASCII spelling used in e-mail addresses.
var folder = strings.NewReplacer("æ", "ae", "ø", "oe", "å", "aa", "Æ", "Ae", "Ø", "Oe", "Å", "Aa", "é", "e", " ", ".", "-", "")

func fold(s string) string { return folder.Replace(s) }

// ean returns a 13-digit GLN/EAN location number in the Danish 579 range.
func ean(n int) string {
	s := fmt.Sprintf("579800%06d", n%1000000)
	return s + checkDigit(s)
}

// checkDigit is the GS1 check digit of 12 digits.
func checkDigit(s string) string {
	sum := 0
	for i := range 12 {
		d := int(s[i] - '0')
		if i%2 == 1 {
			d *= 3
		}
		sum += d
	}
	return string(rune('0' + (10-sum%10)%10))
}

// writeUnits writes units.csv.
func writeUnits(path string, units []unit) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(bufio.NewWriter(f))
	_ = w.Write(unitHeader)
	for _, u := range units {
		_ = w.Write(u.row())
	}
	return closeCSV(f, w)
}

func closeCSV(f *os.File, w *csv.Writer) error {
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return f.Close()
}

// jsonlWriter streams users.jsonl through one reused line buffer.
type jsonlWriter struct {
	f   *os.File
	w   *bufio.Writer
	buf []byte
	n   int
}

func createJSONL(path string) (*jsonlWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &jsonlWriter{f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

func (j *jsonlWriter) user(u *user) error {
	j.buf = append(u.appendJSON(j.buf[:0]), '\n')
	j.n++
	_, err := j.w.Write(j.buf)
	return err
}

// raw writes a line that is already JSON (its newline included).
func (j *jsonlWriter) raw(line []byte) error {
	j.n++
	_, err := j.w.Write(line)
	return err
}

func (j *jsonlWriter) Close() error {
	if err := j.w.Flush(); err != nil {
		j.f.Close()
		return fmt.Errorf("write %s: %w", j.f.Name(), err)
	}
	return j.f.Close()
}

// writeUsers writes a whole users.jsonl.
func writeUsers(path string, users []user) error {
	w, err := createJSONL(path)
	if err != nil {
		return err
	}
	for i := range users {
		if err := w.user(&users[i]); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}

// readUnits reads a units.csv written by this program.
func readUnits(path string) ([]unit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(bufio.NewReader(f)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rows) == 0 || strings.Join(rows[0], ",") != strings.Join(unitHeader, ",") {
		return nil, fmt.Errorf("%s: header is not %s", path, strings.Join(unitHeader, ","))
	}
	units := make([]unit, 0, len(rows)-1)
	for _, r := range rows[1:] {
		units = append(units, unit{r[0], r[1], r[2], r[3], r[4], r[5]})
	}
	return units, nil
}

// eachLine calls fn for every line of path, newline included. The slice is
// only valid during the call.
func eachLine(path string, fn func(line []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	for n := 1; ; n++ {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return fmt.Errorf("%s:%d: line longer than 1 MiB", path, n)
		}
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				return fmt.Errorf("%s:%d: last line has no newline (truncated file?)", path, n)
			}
			if !utf8.Valid(line) {
				return fmt.Errorf("%s:%d: not UTF-8", path, n)
			}
			if err := fn(line); err != nil {
				return fmt.Errorf("%s:%d: %w", path, n, err)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func mkdir(dir string) error { return os.MkdirAll(filepath.Clean(dir), 0o755) }
