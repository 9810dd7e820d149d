package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
)

// BenchmarkValues: decoding one typical row (the benchmark table's
// columns) from pgoutput's text tuple, without a server.
func BenchmarkValues(b *testing.B) {
	c := newTypeCache()
	ctx := context.Background()
	cols := []struct {
		name string
		oid  uint32
		text string
	}{
		{"id", pgtype.Int4OID, "123456"},
		{"name", pgtype.TextOID, "name 123456"},
		{"email", pgtype.TextOID, "user123456@example.org"},
		{"dept", pgtype.Int4OID, "6"},
		{"salary", pgtype.NumericOID, "154320.00"},
		{"updated", pgtype.TimestamptzOID, "2026-11-22 21:35:14.123456+00"},
	}
	rel := &relation{table: "public.w", captured: true}
	tup := &pglogrepl.TupleData{}
	for _, col := range cols {
		rel.cols = append(rel.cols, relCol{name: col.name, typ: col.oid, dec: c.decoder(ctx, nil, col.oid)})
		tup.Columns = append(tup.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Data: []byte(col.text)})
	}
	st := &streamer{}
	b.ReportAllocs()
	for b.Loop() {
		st.values(rel, tup, false)
	}
}

// BenchmarkParseInsert: what the decode-only baseline does per row.
func BenchmarkParseInsert(b *testing.B) {
	texts := []string{"123456", "name 123456", "user123456@example.org", "6", "154320.00", "2026-11-22 21:35:14.123456+00"}
	msg := []byte{'I', 0, 0, 0x40, 0x01, 'N', 0, byte(len(texts))}
	for _, t := range texts {
		msg = append(msg, 't', 0, 0, 0, byte(len(t)))
		msg = append(msg, t...)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pglogrepl.Parse(msg); err != nil {
			b.Fatal(err)
		}
	}
}
