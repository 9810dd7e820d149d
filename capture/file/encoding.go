package file

import (
	"io"
	"unicode/utf8"
)

// Exports from older Danish systems and from spreadsheet programs are often
// ISO-8859-1 or Windows-1252 rather than UTF-8; both are single-byte
// encodings, small enough to decode here.

// latin1 and windows1252 map each byte to its code point.
var (
	latin1      = singleByteTable(nil)
	windows1252 = singleByteTable(&[32]rune{
		// 0x80–0x9F; the five unassigned bytes keep their C1 code points
		// (as the WHATWG encoding standard does).
		0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
		0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D, 0x017D, 0x8F,
		0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
		0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
	})
)

func singleByteTable(c1 *[32]rune) *[256]rune {
	var t [256]rune
	for i := range t {
		t[i] = rune(i)
	}
	if c1 != nil {
		copy(t[0x80:0xA0], c1[:])
	}
	return &t
}

// singleByteReader decodes a single-byte encoding to UTF-8.
type singleByteReader struct {
	r     io.Reader
	table *[256]rune
	in    [16 << 10]byte
	dec   []byte // decoded; dec[pos:] is not yet returned
	pos   int
	err   error
}

func (s *singleByteReader) Read(p []byte) (int, error) {
	for s.pos == len(s.dec) {
		if s.err != nil {
			return 0, s.err
		}
		n, err := s.r.Read(s.in[:])
		s.err = err
		s.dec, s.pos = s.dec[:0], 0
		for _, b := range s.in[:n] {
			if b < utf8.RuneSelf {
				s.dec = append(s.dec, b)
			} else {
				s.dec = utf8.AppendRune(s.dec, s.table[b])
			}
		}
	}
	n := copy(p, s.dec[s.pos:])
	s.pos += n
	return n, nil
}
