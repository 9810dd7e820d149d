package postgres

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

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

// Without sslmode: verify-full (host name checked, no plain-text
// fallback) except on loopback, where a CA asks for verify-full too.
func TestPgConfigTLSDefault(t *testing.T) {
	tests := []struct {
		dsn, env string // env: PGSSLMODE
		want     string // "", "verify-full", "no-verify"
	}{
		{dsn: "postgres://u@db.example.org/hr", want: "verify-full"},
		{dsn: "host=db.example.org user=u dbname=hr", want: "verify-full"},
		{dsn: "postgres://u@10.1.2.3/hr", want: "verify-full"},
		{dsn: "postgres://u@127.0.0.1/hr", want: ""},
		{dsn: "postgres://u@[::1]/hr", want: ""},
		{dsn: "postgres://u@localhost/hr", want: ""},
		{dsn: "host=/var/run/postgresql user=u", want: ""},
		{dsn: "postgres://u@127.0.0.1/hr?sslrootcert=%CA%", want: "verify-full"},
		{dsn: "host=localhost sslrootcert=%CA%", want: "verify-full"},
		{dsn: "postgres://u@db.example.org/hr?sslmode=disable", want: ""},
		{dsn: "host=db.example.org sslmode=disable", want: ""},
		{dsn: "postgres://u@db.example.org/hr?sslmode=require", want: "no-verify"},
		{dsn: "postgres://u@db.example.org/hr", env: "disable", want: ""},
		{dsn: "postgres://u@127.0.0.1/hr", env: "verify-full", want: "verify-full"},
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeCA(t, ca)
	for _, tt := range tests {
		t.Run(tt.dsn+" "+tt.env, func(t *testing.T) {
			t.Setenv("PGSSLMODE", tt.env)
			if tt.env == "" {
				os.Unsetenv("PGSSLMODE")
			}
			dsn := strings.ReplaceAll(tt.dsn, "%CA%", ca)
			s := &Source{name: "x", cfg: Config{DSN: dsn}}
			cfg, err := s.pgConfig()
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if c := cfg.TLSConfig; c != nil {
				got = "no-verify"
				if !c.InsecureSkipVerify && c.ServerName == cfg.Host {
					got = "verify-full"
				}
			}
			if got != tt.want {
				t.Errorf("TLS = %q, want %q", got, tt.want)
			}
			if len(cfg.Fallbacks) > 0 && tt.want != "" {
				t.Errorf("falls back to plain text")
			}
		})
	}
}

// writeCA writes a self-signed CA certificate (PEM) to path.
func writeCA(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
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
