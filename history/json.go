package history

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// The canonical event is rendered for every record a receiver sends, and
// encoding/json spends most of its time on reflection and on sorting map
// keys through reflect.Values. AppendJSON writes the same bytes as
// encoding/json without HTML escaping, the project's canonical JSON (the
// file receiver's, and that of the integrity hashes; the tests compare
// them on random events), several times faster: the event's structure is
// written out by hand and the JSON types images hold take a direct path.
// Other value types fall back to encoding/json.

// AppendJSON appends e as canonical JSON: byte for byte what a
// json.Encoder with SetEscapeHTML(false) writes, without the newline.
func AppendJSON(dst []byte, e *Event) ([]byte, error) {
	var err error
	dst = append(dst, `{"schemaVersion":`...)
	dst = AppendString(dst, e.SchemaVersion)
	dst = append(dst, `,"eventId":`...)
	dst = AppendString(dst, e.EventID)
	dst = append(dst, `,"sequence":`...)
	dst = strconv.AppendUint(dst, e.Sequence, 10)
	dst = append(dst, `,"emission":`...)
	dst = AppendString(dst, e.Emission)

	s := &e.Source
	dst = append(dst, `,"source":{"name":`...)
	dst = AppendString(dst, s.Name)
	dst = append(dst, `,"type":`...)
	dst = AppendString(dst, s.Type)
	dst = append(dst, `,"id":`...)
	dst = AppendString(dst, s.ID)
	dst = append(dst, `,"epoch":`...)
	dst = strconv.AppendUint(dst, s.Epoch, 10)
	if s.Position != "" {
		dst = append(dst, `,"position":`...)
		dst = AppendString(dst, s.Position)
	}

	o := &e.Object
	dst = append(dst, `},"object":{"type":`...)
	dst = AppendString(dst, o.Type)
	dst = append(dst, `,"id":`...)
	dst = AppendString(dst, o.ID)
	if len(o.Keys) > 0 {
		dst = append(dst, `,"keys":`...)
		dst = appendStringMap(dst, o.Keys)
	}
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendUint(dst, o.Version, 10)

	dst = append(dst, `},"operation":`...)
	dst = AppendString(dst, e.Operation)
	if e.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = AppendString(dst, e.Reason)
	}
	dst = append(dst, `,"changeKind":`...)
	dst = AppendString(dst, e.ChangeKind)
	if len(e.Supersedes) > 0 {
		dst = append(dst, `,"supersedes":[`...)
		for i := range e.Supersedes {
			sp := &e.Supersedes[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"eventId":`...)
			dst = AppendString(dst, sp.EventID)
			dst = append(dst, `,"registreringFra":`...)
			dst = appendTime(dst, sp.RegistreringFra)
			dst = append(dst, `,"virkningFra":`...)
			dst = appendTime(dst, sp.VirkningFra)
			dst = append(dst, `,"virkningTil":`...)
			dst = appendTimePtr(dst, sp.VirkningTil)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}

	b := &e.Bitemporal
	dst = append(dst, `,"bitemporal":{"registreringFra":`...)
	dst = appendTime(dst, b.RegistreringFra)
	dst = append(dst, `,"registreringTil":`...)
	dst = appendTimePtr(dst, b.RegistreringTil)
	dst = append(dst, `,"registreringsaktoer":`...)
	dst = AppendString(dst, b.Registreringsaktoer)
	dst = append(dst, `,"virkningFra":`...)
	dst = appendTime(dst, b.VirkningFra)
	dst = append(dst, `,"virkningTil":`...)
	dst = appendTimePtr(dst, b.VirkningTil)
	dst = append(dst, `,"virkningsaktoer":`...)
	dst = AppendString(dst, b.Virkningsaktoer)
	dst = append(dst, `,"virkningKilde":`...)
	dst = AppendString(dst, b.VirkningKilde)
	for _, f := range [...]struct{ name, value string }{
		{`,"status":`, b.Status},
		{`,"forretningshaendelse":`, b.Forretningshaendelse},
		{`,"forretningsproces":`, b.Forretningsproces},
		{`,"forretningsomraade":`, b.Forretningsomraade},
	} {
		if f.value != "" {
			dst = append(dst, f.name...)
			dst = AppendString(dst, f.value)
		}
	}

	dst = append(dst, `},"before":`...)
	if dst, err = appendImage(dst, e.Before, e.beforeJSON); err != nil {
		return nil, err
	}
	dst = append(dst, `,"after":`...)
	if dst, err = appendImage(dst, e.After, e.afterJSON); err != nil {
		return nil, err
	}
	dst = append(dst, `,"changed":`...)
	dst = appendStrings(dst, e.Changed)

	c := &e.Classification
	dst = append(dst, `,"classification":{"dataclassification":`...)
	dst = AppendString(dst, c.Dataclassification)
	if c.Datacategory != "" {
		dst = append(dst, `,"datacategory":`...)
		dst = AppendString(dst, c.Datacategory)
	}
	if len(c.Dataregulation) > 0 {
		dst = append(dst, `,"dataregulation":`...)
		dst = appendStrings(dst, c.Dataregulation)
	}
	if c.Sikkerhedsklassificering != "" {
		dst = append(dst, `,"sikkerhedsklassificering":`...)
		dst = AppendString(dst, c.Sikkerhedsklassificering)
	}
	if len(c.Redacted) > 0 {
		dst = append(dst, `,"redacted":`...)
		dst = appendStrings(dst, c.Redacted)
	}

	dst = append(dst, `},"trace":{"transactionId":`...)
	dst = AppendString(dst, e.Trace.TransactionID)
	if e.Trace.CorrelationID != "" {
		dst = append(dst, `,"correlationId":`...)
		dst = AppendString(dst, e.Trace.CorrelationID)
	}
	dst = append(dst, `},"observedAt":`...)
	dst = appendTime(dst, e.ObservedAt)
	if e.SourceChangedAt != nil {
		dst = append(dst, `,"sourceChangedAt":`...)
		dst = appendTime(dst, *e.SourceChangedAt)
	}
	dst = append(dst, `,"integrity":{"contentHash":`...)
	dst = AppendString(dst, e.Integrity.ContentHash)
	if e.Integrity.PrevContentHash != "" {
		dst = append(dst, `,"prevContentHash":`...)
		dst = AppendString(dst, e.Integrity.PrevContentHash)
	}
	return append(dst, `}}`...), nil
}

// AppendValue appends v as canonical JSON, as AppendJSON does.
func AppendValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case string:
		return AppendString(dst, v), nil
	case bool:
		return strconv.AppendBool(dst, v), nil
	case float64:
		return appendFloat(dst, v)
	case int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(dst, v, 10), nil
	case json.Number:
		// Numbers from sources arrive exact, as json.Number: written as
		// they are once known to be JSON numbers, as encoding/json does.
		if v == "" {
			return append(dst, '0'), nil
		}
		if !isNumber(string(v)) {
			return nil, fmt.Errorf("json: invalid number literal %q", string(v))
		}
		return append(dst, v...), nil
	case map[string]any:
		return appendObject(dst, v)
	case []any:
		if v == nil {
			return append(dst, "null"...), nil
		}
		dst = append(dst, '[')
		for i, x := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = AppendValue(dst, x); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	case []string:
		return appendStrings(dst, v), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...), nil
}

// isNumber reports whether s is a JSON number (RFC 8259 §6).
func isNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i, n = i+1, n+1
		}
		return n
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// appendImage writes an image given as JSON (raw) or as a map.
func appendImage(dst []byte, m map[string]any, raw []byte) ([]byte, error) {
	if raw != nil {
		return append(dst, raw...), nil
	}
	return appendObject(dst, m)
}

func appendObject(dst []byte, m map[string]any) ([]byte, error) {
	if m == nil {
		return append(dst, "null"...), nil
	}
	return appendMap(dst, m, AppendValue)
}

func appendStringMap(dst []byte, m map[string]string) []byte {
	dst, _ = appendMap(dst, m, func(dst []byte, s string) ([]byte, error) { return AppendString(dst, s), nil })
	return dst
}

// appendMap renders a map with sorted keys, as encoding/json does.
func appendMap[V any](dst []byte, m map[string]V, value func([]byte, V) ([]byte, error)) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, k)
		dst = append(dst, ':')
		var err error
		if dst, err = value(dst, m[k]); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

func appendStrings(dst []byte, ss []string) []byte {
	if ss == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, s)
	}
	return append(dst, ']')
}

func appendTime(dst []byte, t Time) []byte {
	dst = append(dst, '"')
	dst = AppendTime(dst, t)
	return append(dst, '"')
}

// AppendTime appends t in TimeLayout (RFC 3339, UTC, microseconds),
// without time.Format's layout interpretation for the common years.
func AppendTime(dst []byte, t Time) []byte {
	u := t.UTC()
	year, month, day := u.Date()
	if year < 0 || year > 9999 {
		return u.AppendFormat(dst, TimeLayout)
	}
	hour, min, sec := u.Clock()
	b := [...]byte{0, 0, 0, 0, '-', 0, 0, '-', 0, 0, 'T', 0, 0, ':', 0, 0, ':', 0, 0, '.', 0, 0, 0, 0, 0, 0, 'Z'}
	putDigits(b[0:4], uint(year))
	putDigits(b[5:7], uint(month))
	putDigits(b[8:10], uint(day))
	putDigits(b[11:13], uint(hour))
	putDigits(b[14:16], uint(min))
	putDigits(b[17:19], uint(sec))
	putDigits(b[20:26], uint(u.Nanosecond()/1000))
	return append(dst, b[:]...)
}

// putDigits fills b with n, zero-padded.
func putDigits(b []byte, n uint) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
}

func appendTimePtr(dst []byte, t *Time) []byte {
	if t == nil {
		return append(dst, "null"...)
	}
	return appendTime(dst, *t)
}

// appendFloat writes f as encoding/json does (ES6 number formatting).
func appendFloat(dst []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("json: unsupported value: %s", strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9, as encoding/json does.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst, nil
}

// jsonSafe marks the ASCII bytes encoding/json writes as they are (HTML
// escaping off).
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// AppendString writes s as a JSON string exactly as encoding/json does
// with HTML escaping off: invalid UTF-8 replaced, U+2028 and U+2029
// escaped.
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if jsonSafe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendCanonical appends v's canonical JSON. Images hold JSON values by
// construction (sources convert, mappings produce JSON types); anything
// else is a bug in a source's value conversion, not bad input.
func appendCanonical(dst []byte, v any) []byte {
	switch m := v.(type) {
	case map[string]any:
		if m == nil {
			return append(dst, "null"...)
		}
	case map[string]string:
		if m == nil {
			return append(dst, "null"...)
		}
		return appendStringMap(dst, m)
	}
	out, err := AppendValue(dst, v)
	if err != nil {
		panic("history: image is not JSON: " + err.Error())
	}
	return out
}

// unmarshalExact decodes JSON with numbers as json.Number, so that values
// keep every digit the source gave (numeric(30,10), bigint ids).
func unmarshalExact(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("data after the JSON value at offset %d", d.InputOffset())
	}
	return nil
}
