package file

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

type parsed struct {
	line   int
	values map[string]any
}

// parseAll reads content with the reader of format.
func parseAll(format, name, content string, o readOptions) ([]parsed, error) {
	rr, err := newRecordReader(strings.NewReader(content), format, false, name, o)
	if err != nil {
		return nil, err
	}
	var out []parsed
	for {
		v, line, err := rr.next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, parsed{line, v})
	}
}

func defaults() readOptions {
	return readOptions{finalNewline: true, csv: csvOptions{header: true}}
}

func TestJSONL(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []parsed
	}{
		{
			name:    "numbers stay exact, nested values kept",
			content: `{"id":12345678901234567890,"name":"Æblegård Ærø","x":{"a":[1,2.50,"ø"],"b":null},"ok":true}` + "\n",
			want: []parsed{{1, map[string]any{
				"id": json.Number("12345678901234567890"), "name": "Æblegård Ærø",
				"x":  map[string]any{"a": []any{json.Number("1"), json.Number("2.50"), "ø"}, "b": nil},
				"ok": true,
			}}},
		},
		{
			name:    "blank lines skipped, line numbers kept, CRLF",
			content: "{\"a\":\"1\"}\r\n\r\n  \n {\"a\":\"2\"} \r\n",
			want:    []parsed{{1, map[string]any{"a": "1"}}, {4, map[string]any{"a": "2"}}},
		},
		{
			name:    "byte order mark, no final newline",
			content: "\xef\xbb\xbf{\"a\":1}\n{\"a\":2}",
			want:    []parsed{{1, map[string]any{"a": json.Number("1")}}, {2, map[string]any{"a": json.Number("2")}}},
		},
		{
			name:    "quotes and escapes",
			content: `{"s":"a \"b\" \\ c\n\u00e6"}` + "\n",
			want:    []parsed{{1, map[string]any{"s": "a \"b\" \\ c\næ"}}},
		},
		{name: "empty file", content: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAll(FormatJSONL, "users.jsonl", tt.content, defaults())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestJSONLMalformed(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"truncated last line", "{\"a\":1}\n{\"a\":2}\n{\"a\":3,\"na", "users.jsonl:3: invalid JSON: unexpected end of input"},
		{"truncated line in the middle", "{\"a\":1}\n{\"a\":\n{\"a\":3}\n", "users.jsonl:2: invalid JSON: unexpected end of input"},
		{"syntax error", "{\"a\":1}\n\n{\"a\":1,}\n", "users.jsonl:3: invalid JSON: invalid character '}'"},
		{"not an object", "{\"a\":1}\n[1,2]\n", "users.jsonl:2: not a JSON object"},
		{"null line", "null\n", "users.jsonl:1: not a JSON object"},
		{"two objects on a line", "{\"a\":1} {\"b\":2}\n", "users.jsonl:1: invalid JSON: more than one value on the line (column 9)"},
		{"invalid UTF-8", "{\"a\":1}\n{\"a\":\"\xe6\"}\n", "users.jsonl:2: text is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseAll(FormatJSONL, "users.jsonl", tt.content, defaults())
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *ParseError", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("got  %q\nwant %q…", err, tt.want)
			}
		})
	}
}

func TestCSV(t *testing.T) {
	headerless := defaults()
	headerless.csv = csvOptions{header: false, columns: []string{"id", "name"}}
	semicolon := defaults()
	semicolon.csv.delimiter = ';'
	comments := defaults()
	comments.csv.comment = '#'
	cp1252 := defaults()
	cp1252.encoding = "windows-1252"
	latin := defaults()
	latin.encoding = "iso-8859-1"
	optional := defaults()
	optional.finalNewline = false
	tests := []struct {
		name    string
		format  string
		o       readOptions
		content string
		want    []parsed
	}{
		{
			name:    "header, quoting, empty cells, UTF-8",
			content: "id,name,parent\n1,\"Ærø, Søby\",\n2,\"say \"\"hi\"\"\",\"\"\n",
			want: []parsed{
				{2, map[string]any{"id": "1", "name": "Ærø, Søby", "parent": nil}},
				{3, map[string]any{"id": "2", "name": `say "hi"`, "parent": nil}},
			},
		},
		{
			name:    "newline inside a quoted field; the next row's line is right",
			content: "id,text\n1,\"two\nlines\"\n2,x\n",
			want: []parsed{
				{2, map[string]any{"id": "1", "text": "two\nlines"}},
				{4, map[string]any{"id": "2", "text": "x"}},
			},
		},
		{
			name:    "byte order mark and CRLF",
			content: "\xef\xbb\xbfid,name\r\n1,å\r\n",
			want:    []parsed{{2, map[string]any{"id": "1", "name": "å"}}},
		},
		{
			name: "semicolon", o: semicolon,
			content: "id;name\n1;a,b\n",
			want:    []parsed{{2, map[string]any{"id": "1", "name": "a,b"}}},
		},
		{
			name: "tsv", format: FormatTSV,
			content: "id\tname\n1\ta b\n",
			want:    []parsed{{2, map[string]any{"id": "1", "name": "a b"}}},
		},
		{
			name: "no header", o: headerless,
			content: "1,a\n2,b\n",
			want:    []parsed{{1, map[string]any{"id": "1", "name": "a"}}, {2, map[string]any{"id": "2", "name": "b"}}},
		},
		{
			name: "comments", o: comments,
			content: "# exported 2026-01-05\nid\n# a note\n1\n",
			want:    []parsed{{4, map[string]any{"id": "1"}}},
		},
		{
			name: "windows-1252", o: cp1252,
			content: "id,name\n1,\xc6bleg\xe5rd \x80\n",
			want:    []parsed{{2, map[string]any{"id": "1", "name": "Æblegård €"}}},
		},
		{
			name: "iso-8859-1", o: latin,
			content: "id,name\n1,S\xf8by\n",
			want:    []parsed{{2, map[string]any{"id": "1", "name": "Søby"}}},
		},
		{
			name: "final newline optional", o: optional,
			content: "id\n1\n2",
			want:    []parsed{{2, map[string]any{"id": "1"}}, {3, map[string]any{"id": "2"}}},
		},
		{name: "header only", content: "id,name\n", want: nil},
		{name: "empty file", content: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			if reflect.ValueOf(o).IsZero() {
				o = defaults()
			}
			format := tt.format
			if format == "" {
				format = FormatCSV
			}
			got, err := parseAll(format, "units.csv", tt.content, o)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestCSVMalformed(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"too few fields", "id,name,parent\n1,a,\n2,b\n", "units.csv:3: row has 2 fields, the header has 3"},
		{"too many fields", "id,name\n1,a\n2,b,c\n", "units.csv:3: row has 3 fields, the header has 2"},
		{"last row cut inside a quote", "id,name\n1,a\n2,\"Sø", "units.csv:3: a quoted field is not closed"},
		{"quote problem spanning lines", "id,name\n1,\"a\nb\"x\n", "units.csv:3: a quoted field is not closed, or text follows its closing quote (\") (the row starts on line 2)"},
		{"bare quote", "id,name\n1,a\"b\n", `units.csv:2: a quote (") inside an unquoted field`},
		{"no final newline", "id,name\n1,a\n2,Ander", "units.csv:3: the file does not end with a line break"},
		{"header without final newline", "id,name", "units.csv:1: the file does not end with a line break"},
		{"duplicate header", "id,name,id\n1,a,b\n", `units.csv:1: duplicate header "id" (columns 1 and 3)`},
		{"unnamed column", "id,,name\n", "units.csv:1: header column 2 has no name"},
		{"invalid UTF-8", "id,name\n1,S\xf8by\n", "units.csv:2: text is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseAll(FormatCSV, "units.csv", tt.content, defaults())
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *ParseError", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("got  %q\nwant %q…", err, tt.want)
			}
		})
	}
}

const sampleLDIF = `# extended LDIF
#
# LDAPv3
version: 1

# unit, kommune.dk
dn: ou=Skole og Børn,dc=kom
 mune,dc=dk
objectClass: top
objectClass: organizationalUnit
ou: Skole og Børn
description: a long description that the exporter fol
 ded over
  two lines

# a comment that is
  folded
dn:: dWlkPcOmYmxlLG91PXBlb3BsZSxkYz1rb21tdW5lLGRjPWRr
objectclass: inetOrgPerson
cn:: w4ZibGUgR8OlcmQ=
sn: Gård
mail: a@kommune.dk
mail: b@kommune.dk
mail: c@kommune.dk
ObjectClass: person
jpegPhoto:: /9j/4AAQ
cn;lang-da: Æble



dn: cn=empty value,dc=dk
description:
cn: empty value
`

func TestLDIF(t *testing.T) {
	crlf := strings.ReplaceAll(sampleLDIF, "\n", "\r\n")
	want := []parsed{
		{7, map[string]any{
			"dn":          "ou=Skole og Børn,dc=kommune,dc=dk",
			"objectClass": []any{"top", "organizationalUnit"},
			"ou":          "Skole og Børn",
			"description": "a long description that the exporter folded over two lines",
		}},
		{18, map[string]any{
			"dn":          "uid=æble,ou=people,dc=kommune,dc=dk",
			"objectclass": []any{"inetOrgPerson", "person"},
			"cn":          "Æble Gård",
			"sn":          "Gård",
			"mail":        []any{"a@kommune.dk", "b@kommune.dk", "c@kommune.dk"},
			"jpegPhoto":   "/9j/4AAQ", // not UTF-8 once decoded: stays base64
			"cn;lang-da":  "Æble",
		}},
		{31, map[string]any{"dn": "cn=empty value,dc=dk", "description": "", "cn": "empty value"}},
	}
	for name, content := range map[string]string{"LF": sampleLDIF, "CRLF": crlf} {
		t.Run(name, func(t *testing.T) {
			got, err := parseAll(FormatLDIF, "org.ldif", content, defaults())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %#v\nwant %#v", got, want)
			}
		})
	}
	t.Run("no version line, no trailing empty line", func(t *testing.T) {
		got, err := parseAll(FormatLDIF, "org.ldif", "dn: cn=a\ncn: a\n", defaults())
		if err != nil || len(got) != 1 || got[0].values["cn"] != "a" {
			t.Fatalf("got %v, %v", got, err)
		}
	})
	t.Run("version then dn without empty line", func(t *testing.T) {
		got, err := parseAll(FormatLDIF, "org.ldif", "version: 1\ndn: cn=a\ncn: a\n", defaults())
		if err != nil || len(got) != 1 || got[0].line != 2 {
			t.Fatalf("got %v, %v", got, err)
		}
	})
}

func TestLDIFMalformed(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"change record", "dn: cn=a\ncn: a\n\ndn: cn=b\nchangetype: modify\nreplace: cn\ncn: c\n-\n", `org.ldif:5: "changetype:": LDIF change records are refused`},
		{"record without dn", "version: 1\n\ncn: a\n", `org.ldif:3: a record must start with "dn:", found "cn:"`},
		{"cut at end of file", "dn: cn=a\ncn: a\n\ndn: cn=b\ncn: Ander", "org.ldif:5: the file does not end with a line break"},
		{"dn only at end", "dn: cn=a\ncn: a\n\ndn: cn=b\n", "org.ldif:4: the record has a dn but no attributes"},
		{"invalid base64", "dn: cn=a\ncn:: w4ZibGU\n", "org.ldif:2: cn:: is not valid base64"},
		{"value from URL", "dn: cn=a\njpegPhoto:< file:///tmp/a.jpg\n", "org.ldif:2: jpegPhoto:< takes the value from a URL"},
		{"line without colon", "dn: cn=a\ncn: a\ngarbage\n", `org.ldif:3: expected "attribute: value", found "garbage"`},
		{"missing empty line between records", "dn: cn=a\ncn: a\ndn: cn=b\ncn: b\n", `org.ldif:3: a second "dn:" line in a record`},
		{"version 2", "version: 2\ndn: cn=a\ncn: a\n", "org.ldif:1: LDIF version 2 is not supported"},
		{"continuation after empty line", "dn: cn=a\ncn: a\n\n b\n", "org.ldif:4: a continuation line"},
		{"invalid UTF-8", "dn: cn=a\ncn: S\xf8by\n", "org.ldif:2: text is not valid UTF-8"},
		{"bad attribute name", "dn: cn=a\nc n: x\n", `org.ldif:2: "c n" is not an attribute name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseAll(FormatLDIF, "org.ldif", tt.content, defaults())
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *ParseError", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("got  %q\nwant %q…", err, tt.want)
			}
		})
	}
	t.Run("final newline optional", func(t *testing.T) {
		o := defaults()
		o.finalNewline = false
		got, err := parseAll(FormatLDIF, "org.ldif", "dn: cn=a\ncn: a", o)
		if err != nil || len(got) != 1 {
			t.Fatalf("got %v, %v", got, err)
		}
	})
}

func TestGzip(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte("{\"a\":1}\n{\"a\":2}\n"))
	zw.Close()
	full := buf.Bytes()

	rr, err := newRecordReader(bytes.NewReader(full), FormatJSONL, true, "u.jsonl.gz", defaults())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ {
		if _, _, err := rr.next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if n != 2 {
		t.Fatalf("read %d records, want 2", n)
	}

	// Cut inside the compressed stream: the gzip trailer is missing.
	rr, err = newRecordReader(bytes.NewReader(full[:len(full)-6]), FormatJSONL, true, "u.jsonl.gz", defaults())
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, _, err = rr.next()
	}
	if err == io.EOF || !strings.Contains(err.Error(), "u.jsonl.gz:") || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("got %v, want a truncation error", err)
	}

	if _, err := newRecordReader(strings.NewReader("plain text\n"), FormatJSONL, true, "u.jsonl.gz", defaults()); err == nil ||
		!strings.Contains(err.Error(), "not a readable gzip file") {
		t.Fatalf("got %v, want a gzip header error", err)
	}
}

func TestParseOnly(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	count := func(path, format string) (int, error) {
		n := 0
		err := ParseOnly(context.Background(), path, format, func(map[string]any) error { n++; return nil })
		return n, err
	}
	if n, err := count(write("a.csv", "id\n1\n2\n"), ""); n != 2 || err != nil {
		t.Errorf("csv: %d, %v", n, err)
	}
	if n, err := count(write("a.txt", "{\"a\":1}\n"), FormatJSONL); n != 1 || err != nil {
		t.Errorf("jsonl by name: %d, %v", n, err)
	}
	if _, err := count(write("b.txt", "x"), ""); err == nil || !strings.Contains(err.Error(), "cannot tell the format") {
		t.Errorf("unknown format: %v", err)
	}
	p := write("bad.jsonl", "{\"a\":1}\n{")
	if _, err := count(p, ""); err == nil || !strings.HasPrefix(err.Error(), p+":2: invalid JSON") {
		t.Errorf("malformed: %v", err)
	}
	stop := errors.New("stop")
	if err := ParseOnly(context.Background(), write("c.ldif", "dn: cn=a\ncn: a\n"), "", func(map[string]any) error { return stop }); err != stop {
		t.Errorf("fn's error: %v", err)
	}
}
