package postgres

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestDecodeBuiltin(t *testing.T) {
	c := newTypeCache()
	ctx := context.Background()
	n := func(s string) json.Number { return json.Number(s) }
	tests := []struct {
		oid  uint32
		text string
		want any
	}{
		{pgtype.BoolOID, "t", true},
		{pgtype.BoolOID, "f", false},
		{pgtype.Int2OID, "-32768", n("-32768")},
		{pgtype.Int8OID, "9223372036854775807", n("9223372036854775807")},
		{pgtype.NumericOID, "123456789012345678901234567890.000000000001", n("123456789012345678901234567890.000000000001")},
		{pgtype.NumericOID, "NaN", "NaN"},
		{pgtype.Float8OID, "Infinity", "Infinity"},
		{pgtype.Float8OID, "1.5e-07", n("1.5e-07")},
		{pgtype.TextOID, "æøå \"x\"", "æøå \"x\""},
		{pgtype.UUIDOID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{pgtype.TimestamptzOID, "2024-02-29 13:14:15.123456+00", "2024-02-29T13:14:15.123456Z"},
		{pgtype.TimestamptzOID, "2024-02-29 13:14:15+00", "2024-02-29T13:14:15.000000Z"},
		{pgtype.TimestamptzOID, "infinity", "infinity"},
		{pgtype.TimestamptzOID, "2024-02-29 13:14:15.1+00", "2024-02-29T13:14:15.100000Z"},
		{pgtype.TimestamptzOID, "0044-03-15 12:00:00+00 BC", "-0043-03-15T12:00:00.000000Z"},
		{pgtype.TimestamptzOID, "2024-02-29 13:14:15+01:30", "2024-02-29T11:44:15.000000Z"},
		{pgtype.TimestampOID, "2024-02-29 13:14:15", "2024-02-29T13:14:15.000000"},
		{pgtype.TimestampOID, "12024-02-29 13:14:15", "12024-02-29T13:14:15.000000"},
		{pgtype.TimestampOID, "2024-02-29 13:14:15.5", "2024-02-29T13:14:15.500000"},
		{pgtype.DateOID, "2024-02-29", "2024-02-29"},
		{pgtype.TimeOID, "13:14:15.25", "13:14:15.25"},
		{pgtype.JSONBOID, `{"a": [1, 2.50, null], "b": {"c": true}}`, map[string]any{"a": []any{n("1"), n("2.50"), nil}, "b": map[string]any{"c": true}}},
		{pgtype.JSONOID, `"just a string"`, "just a string"},
		{pgtype.ByteaOID, `\x00ff10`, "AP8Q"},
		{pgtype.Int4ArrayOID, "{1,2,NULL,4}", []any{n("1"), n("2"), nil, n("4")}},
		{pgtype.Int4ArrayOID, "{{1,2},{3,4}}", []any{[]any{n("1"), n("2")}, []any{n("3"), n("4")}}},
		{pgtype.Int4ArrayOID, "[0:1]={7,8}", []any{n("7"), n("8")}},
		{pgtype.TextArrayOID, `{a,"b c","with \"quote\"","NULL",NULL,""}`, []any{"a", "b c", `with "quote"`, "NULL", nil, ""}},
		{pgtype.TextArrayOID, "{}", []any{}},
		{pgtype.TextArrayOID, "{broken", "{broken"},
		{pgtype.InetOID, "192.168.0.1/24", "192.168.0.1/24"},
		{99999999, "unknown type text", "unknown type text"},
	}
	for _, tt := range tests {
		got := c.decoder(ctx, nil, tt.oid)(tt.text)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("oid %d %q: got %#v, want %#v", tt.oid, tt.text, got, tt.want)
		}
	}
}

func TestDescribeChange(t *testing.T) {
	base := []colDesc{{"id", "integer"}, {"name", "text"}, {"age", "integer"}}
	tests := []struct {
		cur  []colDesc
		want string
	}{
		{base, ""},
		{[]colDesc{{"id", "integer"}, {"name", "text"}, {"age", "integer"}, {"email", "text"}}, "added column email (text)"},
		{[]colDesc{{"id", "integer"}, {"name", "text"}}, "dropped column age"},
		{[]colDesc{{"id", "integer"}, {"full_name", "text"}, {"age", "integer"}}, "renamed column name to full_name"},
		{[]colDesc{{"id", "integer"}, {"name", "text"}, {"age", "bigint"}}, "column age changed type from integer to bigint"},
	}
	for _, tt := range tests {
		if got := describeChange(base, tt.cur); got != tt.want {
			t.Errorf("describeChange(%v) = %q, want %q", tt.cur, got, tt.want)
		}
	}
}

func TestFencesFor(t *testing.T) {
	k := func(s string) []*string { return []*string{&s} }
	sp := &snapProgress{Tables: []string{"s.a", "s.b", "s.c"}, Segments: []segment{
		{LSN: "0/100", Table: 0},
		{LSN: "0/200", Table: 1, After: k("50")},
		{LSN: "0/300", Table: 1, After: k("80")},
	}}
	got := fencesFor(sp, mustLSN("0/100"))
	want := []fence{
		{Table: "s.b", After: k("50"), LSN: "0/200"},
		{Table: "s.b", After: k("80"), LSN: "0/300"},
		{Table: "s.c", LSN: "0/300"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fencesFor:\n got %+v\nwant %+v", got, want)
	}
	// A stream resuming after every segment needs no fence.
	if got := fencesFor(sp, mustLSN("0/300")); got != nil {
		t.Fatalf("fencesFor after all segments = %+v", got)
	}
	// Resuming before the first segment fences every table.
	if got := fencesFor(&snapProgress{Tables: []string{"s.a", "s.b"}, Segments: []segment{{LSN: "0/500"}}}, mustLSN("0/400")); len(got) != 2 {
		t.Fatalf("fencesFor new tables = %+v", got)
	}
}

func TestPgConfigTLSDefault(t *testing.T) {
	tests := []struct {
		dsn  string
		want bool // TLS required
	}{
		{"postgres://u@db.example.org/hr", true},
		{"host=db.example.org user=u dbname=hr", true},
		{"postgres://u@127.0.0.1/hr", false},
		{"postgres://u@localhost/hr", false},
		{"host=/var/run/postgresql user=u", false},
		{"postgres://u@db.example.org/hr?sslmode=disable", false},
		{"host=db.example.org sslmode=disable", false},
	}
	for _, tt := range tests {
		s := &Source{name: "x", cfg: Config{DSN: tt.dsn}}
		cfg, err := s.pgConfig()
		if err != nil {
			t.Fatalf("%s: %v", tt.dsn, err)
		}
		if got := cfg.TLSConfig != nil; got != tt.want {
			t.Errorf("%s: TLS = %v, want %v", tt.dsn, got, tt.want)
		}
		if tt.want && (cfg.TLSConfig.InsecureSkipVerify && cfg.TLSConfig.VerifyPeerCertificate == nil) {
			t.Errorf("%s: TLS without verification", tt.dsn)
		}
		if len(cfg.Fallbacks) > 0 && tt.want {
			t.Errorf("%s: falls back to plain text", tt.dsn)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, in := range []string{"cannot parse `postgres://u:hunter2@h/db`", "password=hunter2 host=x"} {
		if got := redact(errString(in)); strings.Contains(got, "hunter2") {
			t.Errorf("redact(%q) = %q", in, got)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
