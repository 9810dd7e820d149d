package postgres

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// decodeFunc turns a value's text form (as the type's output function
// writes it under sessionParams) into a JSON-friendly Go value. It never
// fails: what it cannot read stays its text.
type decodeFunc func(text string) any

// typeCache resolves type OIDs to decoders. Built-in types come from pgx's
// type map; others (domains, enums, arrays of them, extension types) from
// pg_type, once per OID.
type typeCache struct {
	mu  sync.Mutex
	m   *pgtype.Map
	dec map[uint32]decodeFunc
}

func newTypeCache() *typeCache {
	return &typeCache{m: pgtype.NewMap(), dec: map[uint32]decodeFunc{}}
}

// querier is the part of *pgx.Conn the type lookup needs.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// decoder returns the decoder for oid. q may be nil (then unknown types
// decode as text and are looked up again next time).
func (c *typeCache) decoder(ctx context.Context, q querier, oid uint32) decodeFunc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resolve(ctx, q, oid, 0)
}

func (c *typeCache) resolve(ctx context.Context, q querier, oid uint32, depth int) decodeFunc {
	if d, ok := c.dec[oid]; ok {
		return d
	}
	if depth > 8 {
		return decodeText
	}
	if d := builtin(oid); d != nil {
		c.dec[oid] = d
		return d
	}
	if t, ok := c.m.TypeForOID(oid); ok {
		d := decodeText
		if ac, ok := t.Codec.(*pgtype.ArrayCodec); ok && ac.ElementType != nil {
			delim := ac.Delimiter
			if delim == 0 {
				delim = ','
			}
			d = arrayDecoder(c.resolve(ctx, q, ac.ElementType.OID, depth+1), delim)
		}
		c.dec[oid] = d
		return d
	}
	if q == nil {
		return decodeText
	}
	var (
		typtype, typcategory, typdelim string
		typelem, typbasetype           uint32
	)
	err := q.QueryRow(ctx, `SELECT typtype::text, typcategory::text, typdelim::text, typelem, typbasetype
		FROM pg_catalog.pg_type WHERE oid = $1`, oid).Scan(&typtype, &typcategory, &typdelim, &typelem, &typbasetype)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			c.dec[oid] = decodeText
			return decodeText
		}
		return decodeText // not cached: the next relation tries again
	}
	d := decodeText
	switch {
	case typtype == "d" && typbasetype != 0:
		d = c.resolve(ctx, q, typbasetype, depth+1)
	case typcategory == "A" && typelem != 0:
		delim := byte(',')
		if len(typdelim) == 1 {
			delim = typdelim[0]
		}
		d = arrayDecoder(c.resolve(ctx, q, typelem, depth+1), delim)
	}
	// Enums, composites, ranges, extension types: their text form.
	c.dec[oid] = d
	return d
}

func builtin(oid uint32) decodeFunc {
	switch oid {
	case pgtype.BoolOID:
		return decodeBool
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID, pgtype.XIDOID, pgtype.CIDOID, pgtype.XID8OID:
		return decodeInt
	case pgtype.NumericOID, pgtype.Float4OID, pgtype.Float8OID:
		return decodeNumber
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.QCharOID, pgtype.UUIDOID,
		pgtype.DateOID, pgtype.TimeOID, pgtype.TimetzOID, pgtype.IntervalOID:
		// ISO forms under DateStyle ISO / IntervalStyle iso_8601.
		return decodeText
	case pgtype.TimestamptzOID:
		return decodeTimestamptz
	case pgtype.TimestampOID:
		return decodeTimestamp
	case pgtype.JSONOID, pgtype.JSONBOID:
		return decodeJSON
	case pgtype.ByteaOID:
		return decodeBytea
	}
	return nil
}

func decodeText(s string) any { return s }

func decodeBool(s string) any {
	switch s {
	case "t", "true":
		return true
	case "f", "false":
		return false
	}
	return s
}

func decodeInt(s string) any { return json.Number(s) }

// decodeNumber keeps numerics exact; NaN and infinities are not JSON
// numbers and stay strings.
func decodeNumber(s string) any {
	switch s {
	case "NaN", "Infinity", "-Infinity", "inf", "-inf":
		return s
	}
	return json.Number(s)
}

const tsLayout = "2006-01-02T15:04:05.000000Z"

func decodeTimestamptz(b string) any {
	// Fast path: under TimeZone=UTC the text is "2006-01-02 15:04:05[.f]+00".
	if n := len(b); n >= 22 && b[n-3:] == "+00" {
		if s, ok := isoTimestamp(b[:n-3], "Z"); ok {
			return s
		}
	}
	var ts pgtype.Timestamptz
	if err := ts.Scan(b); err != nil || !ts.Valid || ts.InfinityModifier != pgtype.Finite {
		return b // infinity, or out of Go's range: the text form
	}
	return ts.Time.UTC().Format(tsLayout)
}

// decodeTimestamp writes a timestamp without time zone without an offset:
// the column does not say which zone it means.
func decodeTimestamp(b string) any {
	if s, ok := isoTimestamp(b, ""); ok {
		return s
	}
	var ts pgtype.Timestamp
	if err := ts.Scan(b); err != nil || !ts.Valid || ts.InfinityModifier != pgtype.Finite {
		return b
	}
	return ts.Time.Format("2006-01-02T15:04:05.000000")
}

func decodeJSON(b string) any {
	d := json.NewDecoder(strings.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return b
	}
	return v
}

func decodeBytea(b string) any {
	if strings.HasPrefix(b, `\x`) {
		if raw, err := hex.DecodeString(b[2:]); err == nil {
			return base64.StdEncoding.EncodeToString(raw)
		}
	}
	return b
}

// arrayDecoder reads PostgreSQL's array literal ({a,"b c",NULL,{1,2}}) into
// nested []any. Explicit lower bounds ("[0:1]={...}") are dropped.
func arrayDecoder(elem decodeFunc, delim byte) decodeFunc {
	return func(b string) any {
		s := b
		if len(s) > 0 && s[0] == '[' {
			i := strings.IndexByte(s, '=')
			if i < 0 {
				return b
			}
			s = s[i+1:]
		}
		p := arrayParser{s: s, delim: delim, elem: elem}
		v, err := p.parse()
		if err != nil || strings.TrimSpace(p.s[p.i:]) != "" {
			return b
		}
		return v
	}
}

type arrayParser struct {
	s     string
	i     int
	delim byte
	elem  decodeFunc
}

var errArray = errors.New("malformed array literal")

func (p *arrayParser) ws() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *arrayParser) parse() ([]any, error) {
	p.ws()
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, errArray
	}
	p.i++
	out := []any{}
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return out, nil
	}
	for {
		p.ws()
		if p.i >= len(p.s) {
			return nil, errArray
		}
		switch p.s[p.i] {
		case '{':
			v, err := p.parse()
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		case '"':
			p.i++
			var buf []byte
			for {
				if p.i >= len(p.s) {
					return nil, errArray
				}
				c := p.s[p.i]
				p.i++
				if c == '\\' && p.i < len(p.s) {
					buf = append(buf, p.s[p.i])
					p.i++
					continue
				}
				if c == '"' {
					break
				}
				buf = append(buf, c)
			}
			out = append(out, p.elem(string(buf)))
		default:
			start := p.i
			for p.i < len(p.s) && p.s[p.i] != p.delim && p.s[p.i] != '}' {
				p.i++
			}
			tok := strings.TrimSpace(p.s[start:p.i])
			if strings.EqualFold(tok, "NULL") {
				out = append(out, nil)
			} else {
				out = append(out, p.elem(tok))
			}
		}
		p.ws()
		if p.i >= len(p.s) {
			return nil, errArray
		}
		if p.s[p.i] == p.delim {
			p.i++
			continue
		}
		if p.s[p.i] == '}' {
			p.i++
			return out, nil
		}
		return nil, errArray
	}
}

// isoTimestamp rewrites "2006-01-02 15:04:05[.ffffff]" as
// "2006-01-02T15:04:05.ffffff"+zone without parsing; ok is false for any
// other shape (BC, years past 9999, infinity), which the slow path handles.
func isoTimestamp(b string, zone string) (string, bool) {
	if len(b) < 19 || len(b) > 26 || b[4] != '-' || b[7] != '-' || b[10] != ' ' || b[13] != ':' || b[16] != ':' {
		return "", false
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18} {
		if b[i] < '0' || b[i] > '9' {
			return "", false
		}
	}
	frac := b[19:]
	if len(frac) > 0 {
		if frac[0] != '.' {
			return "", false
		}
		frac = frac[1:]
		for _, c := range frac {
			if c < '0' || c > '9' {
				return "", false
			}
		}
	}
	var out [32]byte
	o := append(out[:0], b[:10]...)
	o = append(o, 'T')
	o = append(o, b[11:19]...)
	o = append(o, '.')
	o = append(o, frac...)
	for i := len(frac); i < 6; i++ {
		o = append(o, '0')
	}
	o = append(o, zone...)
	return string(o), true
}
