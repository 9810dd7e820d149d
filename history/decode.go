package history

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
)

// DecodeEvent decodes an event's JSON (as the log holds it) with exact
// numbers (json.Number). Every receiver's dispatcher decodes every event,
// so this is a hand-written decoder for the event's known shape, several
// times faster than encoding/json's reflection; JSON it does not expect
// (and its errors) goes through encoding/json, so the result is always
// what encoding/json with UseNumber would give.
func DecodeEvent(b []byte, e *Event) error { return decodeEvent(b, e, false) }

// DecodeEventHead decodes an event but for its images, which it keeps as
// the JSON they are in b until Images decodes them: for a receiver that
// sends the logged JSON and never reads Before and After, decoding them is
// most of the work. The event keeps b (its images are slices of it), so
// the caller must not change b afterwards.
func DecodeEventHead(b []byte, e *Event) error { return decodeEvent(b, e, true) }

func decodeEvent(b []byte, e *Event, lazy bool) error {
	d := newDecoder(b, lazy)
	d.event(e)
	d.ws()
	if d.err == nil && d.p == len(b) {
		return nil
	}
	*e = Event{}
	return unmarshalExact(b, e)
}

var errSyntax = errors.New("unexpected JSON")

type decoder struct {
	b    []byte
	s    string // b as a string: the strings decoded are slices of it
	p    int
	err  error
	lazy bool // keep images as JSON (DecodeEventHead)

	// name is the name object last passed to member, as a string.
	name string
}

// newDecoder decodes b. The strings it returns share one copy of b: one
// allocation instead of one per string.
func newDecoder(b []byte, lazy bool) decoder { return decoder{b: b, s: string(b), lazy: lazy} }

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errSyntax
	}
	d.p = len(d.b)
}

func (d *decoder) ws() {
	for d.p < len(d.b) {
		switch d.b[d.p] {
		case ' ', '\t', '\n', '\r':
			d.p++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, 0 at the end.
func (d *decoder) peek() byte {
	d.ws()
	if d.p < len(d.b) {
		return d.b[d.p]
	}
	return 0
}

func (d *decoder) expect(c byte) {
	if d.peek() != c {
		d.fail()
		return
	}
	d.p++
}

// null consumes a null if one comes next.
func (d *decoder) null() bool {
	if d.peek() == 'n' && len(d.b)-d.p >= 4 && string(d.b[d.p:d.p+4]) == "null" {
		d.p += 4
		return true
	}
	return false
}

// object calls member for each member name; member must consume the value.
func (d *decoder) object(member func(name []byte)) {
	d.expect('{')
	if d.peek() == '}' {
		d.p++
		return
	}
	for d.err == nil {
		start, end, plain := d.scanString()
		var name []byte
		switch {
		case d.err != nil:
		case plain:
			name, d.name = d.b[start:end], d.s[start:end]
		default:
			d.name = d.unquote(start, end)
			name = []byte(d.name)
		}
		d.expect(':')
		member(name)
		switch d.peek() {
		case ',':
			d.p++
		case '}':
			d.p++
			return
		default:
			d.fail()
		}
	}
}

// array calls elem for each element; elem must consume it.
func (d *decoder) array(elem func()) {
	d.expect('[')
	if d.peek() == ']' {
		d.p++
		return
	}
	for d.err == nil {
		elem()
		switch d.peek() {
		case ',':
			d.p++
		case ']':
			d.p++
			return
		default:
			d.fail()
		}
	}
}

// scanString consumes a string token. plain is true when its content,
// b[start:end], needs no unescaping and is valid UTF-8.
func (d *decoder) scanString() (start, end int, plain bool) {
	if d.peek() != '"' {
		d.fail()
		return 0, 0, false
	}
	start = d.p + 1
	plain = true
	ascii := true
	for i := start; i < len(d.b); i++ {
		switch c := d.b[i]; {
		case c == '"':
			d.p = i + 1
			if !ascii {
				plain = plain && utf8.Valid(d.b[start:i])
			}
			return start, i, plain
		case c == '\\':
			plain = false
			i++
		case c < 0x20:
			d.fail()
			return 0, 0, false
		case c >= 0x80:
			ascii = false
		}
	}
	d.fail()
	return 0, 0, false
}

// unquote decodes the string token b[start-1:end+1] that is not plain.
func (d *decoder) unquote(start, end int) string {
	var out string
	if err := json.Unmarshal(d.b[start-1:end+1], &out); err != nil {
		d.fail()
	}
	return out
}

// rawString returns a string token's content when it needs no unescaping
// and is valid UTF-8 (aliasing the input); otherwise it decodes it.
func (d *decoder) rawString() []byte {
	start, end, plain := d.scanString()
	switch {
	case d.err != nil:
		return nil
	case plain:
		return d.b[start:end]
	}
	return []byte(d.unquote(start, end))
}

func (d *decoder) str() string {
	if d.null() {
		return ""
	}
	start, end, plain := d.scanString()
	switch {
	case d.err != nil:
		return ""
	case !plain:
		return d.unquote(start, end)
	}
	return d.s[start:end]
}

func (d *decoder) number() []byte {
	d.ws()
	start := d.p
	for d.p < len(d.b) {
		c := d.b[d.p]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			d.p++
			continue
		}
		break
	}
	n := d.b[start:d.p]
	if !isNumber(string(n)) {
		d.fail()
	}
	return n
}

func (d *decoder) uint() uint64 {
	if d.null() {
		return 0
	}
	v, err := strconv.ParseUint(string(d.number()), 10, 64)
	if err != nil {
		d.fail()
	}
	return v
}

func (d *decoder) time() Time {
	if d.null() {
		return Time{}
	}
	s := d.rawString()
	if t, ok := parseTimeLayout(s); ok {
		return Time{t}
	}
	t, err := time.Parse(time.RFC3339Nano, string(s))
	if err != nil {
		d.fail()
	}
	return At(t)
}

func (d *decoder) timePtr() *Time {
	if d.null() {
		return nil
	}
	t := d.time()
	return &t
}

func (d *decoder) strings() []string {
	if d.null() {
		return nil
	}
	// Most lists are short: collect on the stack, allocate once.
	var buf [16]string
	n, more := 0, []string(nil)
	d.array(func() {
		v := d.str()
		if n < len(buf) {
			buf[n] = v
			n++
		} else {
			more = append(more, v)
		}
	})
	out := make([]string, n, n+len(more))
	copy(out, buf[:n])
	return append(out, more...)
}

func (d *decoder) stringMap() map[string]string {
	if d.null() {
		return nil
	}
	out := map[string]string{}
	d.object(func([]byte) {
		k := d.name
		out[k] = d.str()
	})
	return out
}

func (d *decoder) image() map[string]any {
	if d.null() {
		return nil
	}
	if d.peek() != '{' {
		d.fail() // encoding/json says what it is
		return nil
	}
	m, _ := d.value().(map[string]any)
	return m
}

// value decodes any JSON value as encoding/json does into an any, with
// json.Number for numbers.
func (d *decoder) value() any {
	switch c := d.peek(); {
	case c == '{':
		m := map[string]any{}
		d.object(func([]byte) {
			k := d.name
			m[k] = d.value()
		})
		return m
	case c == '[':
		out := []any{}
		d.array(func() { out = append(out, d.value()) })
		return out
	case c == '"':
		return d.str()
	case c == 't' && len(d.b)-d.p >= 4 && string(d.b[d.p:d.p+4]) == "true":
		d.p += 4
		return true
	case c == 'f' && len(d.b)-d.p >= 5 && string(d.b[d.p:d.p+5]) == "false":
		d.p += 5
		return false
	case c == 'n' && d.null():
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := d.p
		d.number()
		return json.Number(d.s[start:d.p])
	}
	d.fail()
	return nil
}

// rawImage consumes an image and returns its JSON (nil for null), a slice
// of the input.
func (d *decoder) rawImage() []byte {
	switch d.peek() {
	case 'n':
		d.skip()
		return nil
	case '{':
		start := d.p
		d.skip()
		if d.err != nil {
			return nil
		}
		return d.b[start:d.p:d.p]
	}
	d.fail()
	return nil
}

// skip consumes a value, checking its syntax as value does, without
// decoding it.
func (d *decoder) skip() {
	switch c := d.peek(); {
	case c == '{':
		d.object(func([]byte) { d.skip() })
	case c == '[':
		d.array(d.skip)
	case c == '"':
		d.scanString()
	case c == 't' && len(d.b)-d.p >= 4 && string(d.b[d.p:d.p+4]) == "true":
		d.p += 4
	case c == 'f' && len(d.b)-d.p >= 5 && string(d.b[d.p:d.p+5]) == "false":
		d.p += 5
	case c == 'n' && d.null():
	case c == '-' || (c >= '0' && c <= '9'):
		d.number()
	default:
		d.fail()
	}
}

func (d *decoder) event(e *Event) {
	d.object(func(name []byte) {
		switch string(name) {
		case "schemaVersion":
			e.SchemaVersion = d.str()
		case "eventId":
			e.EventID = d.str()
		case "sequence":
			e.Sequence = d.uint()
		case "emission":
			e.Emission = d.str()
		case "source":
			d.sourceRef(&e.Source)
		case "object":
			d.objectRef(&e.Object)
		case "operation":
			e.Operation = d.str()
		case "reason":
			e.Reason = d.str()
		case "changeKind":
			e.ChangeKind = d.str()
		case "supersedes":
			e.Supersedes = d.supersedes()
		case "bitemporal":
			d.bitemporal(&e.Bitemporal)
		case "before":
			if d.lazy {
				e.beforeJSON = d.rawImage()
			} else {
				e.Before = d.image()
			}
		case "after":
			if d.lazy {
				e.afterJSON = d.rawImage()
			} else {
				e.After = d.image()
			}
		case "changed":
			e.Changed = d.strings()
		case "classification":
			d.classification(&e.Classification)
		case "trace":
			if !d.null() {
				d.object(func(name []byte) {
					switch string(name) {
					case "transactionId":
						e.Trace.TransactionID = d.str()
					case "correlationId":
						e.Trace.CorrelationID = d.str()
					default:
						d.skip()
					}
				})
			}
		case "observedAt":
			e.ObservedAt = d.time()
		case "sourceChangedAt":
			e.SourceChangedAt = d.timePtr()
		case "integrity":
			if !d.null() {
				d.object(func(name []byte) {
					switch string(name) {
					case "contentHash":
						e.Integrity.ContentHash = d.str()
					case "prevContentHash":
						e.Integrity.PrevContentHash = d.str()
					default:
						d.skip()
					}
				})
			}
		default:
			d.skip()
		}
	})
}

func (d *decoder) sourceRef(s *SourceRef) {
	if d.null() {
		return
	}
	d.object(func(name []byte) {
		switch string(name) {
		case "name":
			s.Name = d.str()
		case "type":
			s.Type = d.str()
		case "id":
			s.ID = d.str()
		case "epoch":
			s.Epoch = d.uint()
		case "position":
			s.Position = d.str()
		default:
			d.skip()
		}
	})
}

func (d *decoder) objectRef(o *ObjectRef) {
	if d.null() {
		return
	}
	d.object(func(name []byte) {
		switch string(name) {
		case "type":
			o.Type = d.str()
		case "id":
			o.ID = d.str()
		case "keys":
			o.Keys = d.stringMap()
		case "version":
			o.Version = d.uint()
		default:
			d.skip()
		}
	})
}

func (d *decoder) supersedes() []Superseded {
	if d.null() {
		return nil
	}
	out := []Superseded{}
	d.array(func() {
		var s Superseded
		d.object(func(name []byte) {
			switch string(name) {
			case "eventId":
				s.EventID = d.str()
			case "registreringFra":
				s.RegistreringFra = d.time()
			case "virkningFra":
				s.VirkningFra = d.time()
			case "virkningTil":
				s.VirkningTil = d.timePtr()
			default:
				d.skip()
			}
		})
		out = append(out, s)
	})
	return out
}

func (d *decoder) bitemporal(b *Bitemporal) {
	if d.null() {
		return
	}
	d.object(func(name []byte) {
		switch string(name) {
		case "registreringFra":
			b.RegistreringFra = d.time()
		case "registreringTil":
			b.RegistreringTil = d.timePtr()
		case "registreringsaktoer":
			b.Registreringsaktoer = d.str()
		case "virkningFra":
			b.VirkningFra = d.time()
		case "virkningTil":
			b.VirkningTil = d.timePtr()
		case "virkningsaktoer":
			b.Virkningsaktoer = d.str()
		case "virkningKilde":
			b.VirkningKilde = d.str()
		case "status":
			b.Status = d.str()
		case "forretningshaendelse":
			b.Forretningshaendelse = d.str()
		case "forretningsproces":
			b.Forretningsproces = d.str()
		case "forretningsomraade":
			b.Forretningsomraade = d.str()
		default:
			d.skip()
		}
	})
}

func (d *decoder) classification(c *Classification) {
	if d.null() {
		return
	}
	d.object(func(name []byte) {
		switch string(name) {
		case "dataclassification":
			c.Dataclassification = d.str()
		case "datacategory":
			c.Datacategory = d.str()
		case "dataregulation":
			c.Dataregulation = d.strings()
		case "sikkerhedsklassificering":
			c.Sikkerhedsklassificering = d.str()
		case "redacted":
			c.Redacted = d.strings()
		default:
			d.skip()
		}
	})
}

// parseTimeLayout parses a timestamp in TimeLayout with a Z zone (what
// the engine writes) without time.Parse's generality; ok is false for
// anything else.
func parseTimeLayout(s []byte) (t time.Time, ok bool) {
	// 2006-01-02T15:04:05.000000Z
	if len(s) != 27 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' || s[26] != 'Z' {
		return t, false
	}
	num := func(b []byte) int {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	y, mo, d, h, mi, sec, us := num(s[0:4]), num(s[5:7]), num(s[8:10]), num(s[11:13]), num(s[14:16]), num(s[17:19]), num(s[20:26])
	if y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59 || us < 0 {
		return t, false
	}
	t = time.Date(y, time.Month(mo), d, h, mi, sec, us*1000, time.UTC)
	if t.Day() != d { // 31 February and the like: time.Parse says no
		return t, false
	}
	return t, true
}
