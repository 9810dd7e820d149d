// Package render projects the canonical history.Event onto the formats that
// receivers put on the wire: CloudEvents 1.0 (binary-mode headers and the
// structured JSON document) and a Debezium-compatible envelope.
//
// Every projection is lossless: the canonical event travels whole, as the
// CloudEvents data or split between the Debezium envelope's fields, so a
// consumer never has to ask the agent for something a rendering dropped.
// Renderers are pure functions of the event; they hold no state and are safe
// for concurrent use.
package render

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/os2sandbox/connector/history"
)

// CloudEvents constants.
const (
	SpecVersion = "1.0"
	// DefaultTypePrefix is the CloudEvents type prefix unless configured.
	DefaultTypePrefix = "dk.os2sandbox.connector"
	// ContentTypeJSON is the data content type: the canonical event as JSON.
	ContentTypeJSON = "application/json"
	// ContentTypeStructured is the content type of a structured-mode event.
	ContentTypeStructured = "application/cloudevents+json"
)

// Key is the partition key of an event, object type "/" object id: all
// events of one object share it, so they keep their order on a partitioned
// transport.
func Key(e *history.Event) string { return e.Object.Type + "/" + e.Object.ID }

// Data is the CloudEvents data of e: the canonical event as JSON (the
// bytes the log holds, when the dispatcher passed them on).
func Data(e *history.Event) ([]byte, error) {
	if e.Raw != nil {
		return e.Raw, nil
	}
	b, err := history.AppendJSON(make([]byte, 0, 2048), e)
	if err != nil {
		return nil, fmt.Errorf("render event %s (sequence %d) as JSON: %w", e.EventID, e.Sequence, err)
	}
	return b, nil
}

// AppendData appends Data(e) to dst. On error dst is returned as it was.
func AppendData(dst []byte, e *history.Event) ([]byte, error) {
	if e.Raw != nil {
		return append(dst, e.Raw...), nil
	}
	b, err := history.AppendJSON(dst, e)
	if err != nil {
		return dst, fmt.Errorf("render event %s (sequence %d) as JSON: %w", e.EventID, e.Sequence, err)
	}
	return b, nil
}

// Attribute is one CloudEvents context attribute; Name is lower case.
type Attribute struct {
	Name  string
	Value string
}

// CloudEvents renders the CloudEvents 1.0 context of events from one agent
// installation.
type CloudEvents struct {
	// InstallationID is the agent installation's UUID (part of source).
	InstallationID string
	// TypePrefix starts every type; DefaultTypePrefix when empty.
	TypePrefix string
}

// Source is the CloudEvents source of e: urn:connector:<installation>:<source.id>.
func (c CloudEvents) Source(e *history.Event) string {
	return "urn:connector:" + c.InstallationID + ":" + e.Source.ID
}

// Type is the CloudEvents type of e: <prefix>.<object type lower>.<operation>.
func (c CloudEvents) Type(e *history.Event) string { return string(c.appendType(nil, e)) }

// Sequence renders a sequence number zero-padded to 20 digits, so that the
// CloudEvents sequence extension (a string) sorts like the number.
func Sequence(n uint64) string { return string(AppendSequence(nil, n)) }

// AppendSequence appends Sequence(n) to dst.
func AppendSequence(dst []byte, n uint64) []byte {
	const width = 20 // len("18446744073709551615")
	var digits [width]byte
	s := strconv.AppendUint(digits[:0], n, 10)
	for range width - len(s) {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

// AppendKey appends Key(e) to dst.
func AppendKey(dst []byte, e *history.Event) []byte {
	dst = append(dst, e.Object.Type...)
	dst = append(dst, '/')
	return append(dst, e.Object.ID...)
}

// The context attributes, in the order Attributes returns them.
const (
	attrSpecVersion = iota
	attrID
	attrSource
	attrType
	attrDataContentType
	attrSubject
	attrTime
	attrPartitionKey
	attrSequence
	attrRecordedTime
	attrDataClassification
	attrDataCategory
	attrDataRegulation
	attrEmission
	attrChangeKind
	attrReason
	attrObjectVersion
	attrVirkningFra
	attrVirkningTil
	attrSourceEpoch
	attrTransactionID
	attrCorrelationID
	numAttributes
)

var attributeNames = [numAttributes]string{
	"specversion", "id", "source", "type", "datacontenttype", "subject", "time", "partitionkey", "sequence",
	"recordedtime", "dataclassification", "datacategory", "dataregulation", "emission", "changekind", "reason",
	"objectversion", "virkningfra", "virkningtil", "sourceepoch", "transactionid", "correlationid",
}

// Attributes returns the context attributes of e in a fixed order: the
// required ones, the optional ones, then the extensions. An attribute
// without a value (no virkningTil, no reason) is left out, as the
// specification asks. Extension names are lower-case ASCII of at most 20
// characters.
func (c CloudEvents) Attributes(e *history.Event) []Attribute {
	attrs := make([]Attribute, 0, numAttributes)
	c.appendAttributes(make([]byte, 0, 512), e, func(a int, value []byte) {
		attrs = append(attrs, Attribute{attributeNames[a], string(value)})
	})
	return attrs
}

// appendAttributes is Attributes without an allocation per value: it
// appends the values to buf and calls add with each attribute and its
// value, a slice of buf whose capacity ends with the value, so that
// appending to buf later, even when that moves it, leaves the value as it
// was. Empty values are left out.
func (c CloudEvents) appendAttributes(buf []byte, e *history.Event, add func(attr int, value []byte)) []byte {
	bt := &e.Bitemporal
	cl := &e.Classification
	emit := func(attr, from int) { // buf[from:] is attr's value
		if len(buf) > from {
			add(attr, buf[from:len(buf):len(buf)])
		}
	}
	str := func(attr int, s string) {
		from := len(buf)
		buf = append(buf, s...)
		emit(attr, from)
	}
	tm := func(attr int, t history.Time) {
		from := len(buf)
		buf = history.AppendTime(buf, t)
		emit(attr, from)
	}
	num := func(attr int, n uint64) {
		from := len(buf)
		buf = strconv.AppendUint(buf, n, 10)
		emit(attr, from)
	}
	// Required.
	str(attrSpecVersion, SpecVersion)
	str(attrID, e.EventID)
	from := len(buf)
	buf = append(buf, "urn:connector:"...)
	buf = append(buf, c.InstallationID...)
	buf = append(buf, ':')
	buf = append(buf, e.Source.ID...)
	emit(attrSource, from)
	from = len(buf)
	buf = c.appendType(buf, e)
	emit(attrType, from)
	// Optional.
	str(attrDataContentType, ContentTypeJSON)
	from = len(buf)
	buf = AppendKey(buf, e)
	emit(attrSubject, from)
	key := buf[from:len(buf):len(buf)]
	from = len(buf)
	tm(attrTime, bt.RegistreringFra)
	registered := buf[from:len(buf):len(buf)]
	// Extensions defined by CloudEvents (partitioning, sequence, recorded
	// time, data classification).
	add(attrPartitionKey, key) // the subject's bytes: the same value
	from = len(buf)
	buf = AppendSequence(buf, e.Sequence)
	emit(attrSequence, from)
	tm(attrRecordedTime, e.ObservedAt)
	str(attrDataClassification, cl.Dataclassification)
	str(attrDataCategory, cl.Datacategory)
	from = len(buf)
	for i, r := range cl.Dataregulation {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, r...)
	}
	emit(attrDataRegulation, from)
	// The agent's own extensions: what a consumer routes or filters on
	// without parsing data.
	str(attrEmission, e.Emission)
	str(attrChangeKind, e.ChangeKind)
	str(attrReason, e.Reason)
	num(attrObjectVersion, e.Object.Version)
	if bt.VirkningFra.Equal(bt.RegistreringFra.Time) {
		add(attrVirkningFra, registered) // commonly so: valid from the commit
	} else {
		tm(attrVirkningFra, bt.VirkningFra)
	}
	if bt.VirkningTil != nil {
		tm(attrVirkningTil, *bt.VirkningTil)
	}
	num(attrSourceEpoch, e.Source.Epoch)
	str(attrTransactionID, e.Trace.TransactionID)
	str(attrCorrelationID, e.Trace.CorrelationID)
	return buf
}

// appendType appends Type(e) to dst.
func (c CloudEvents) appendType(dst []byte, e *history.Event) []byte {
	prefix := c.TypePrefix
	if prefix == "" {
		prefix = DefaultTypePrefix
	}
	dst = append(dst, prefix...)
	dst = append(dst, '.')
	dst = appendLower(dst, e.Object.Type)
	dst = append(dst, '.')
	return append(dst, e.Operation...)
}

// appendLower appends strings.ToLower(s) to dst, without an allocation
// when s is ASCII.
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return append(dst, strings.ToLower(s)...)
		}
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		dst = append(dst, b)
	}
	return dst
}

// Binary returns the headers of binary content mode: each attribute as
// prefix+name, except datacontenttype, which becomes "content-type". The
// Kafka binding uses prefix "ce_", the HTTP binding "ce-".
func Binary(attrs []Attribute, prefix string) []Attribute {
	names := binaryNames[prefix] // the usual names, without an allocation each
	out := make([]Attribute, len(attrs))
	for i, a := range attrs {
		name, ok := names[a.Name]
		switch {
		case ok:
		case a.Name == "datacontenttype":
			name = "content-type"
		default:
			name = prefix + a.Name
		}
		out[i] = Attribute{name, a.Value}
	}
	return out
}

// AppendBinary is Binary(c.Attributes(e), prefix) for a batch of events
// sharing one buffer: it appends the header values to buf and calls add
// with each header's name and value, in Binary's order, and returns the
// buffer. A value is a slice of the buffer whose capacity ends with it, so
// it stays valid and unchanged when buf grows for later events.
func (c CloudEvents) AppendBinary(buf []byte, e *history.Event, prefix string, add func(name string, value []byte)) []byte {
	names := binaryHeaders[prefix]
	if names == nil {
		names = binaryHeaderNames(prefix)
	}
	return c.appendAttributes(buf, e, func(a int, value []byte) { add(names[a], value) })
}

func binaryHeaderNames(prefix string) *[numAttributes]string {
	var names [numAttributes]string
	for i, n := range attributeNames {
		names[i] = prefix + n
	}
	names[attrDataContentType] = "content-type"
	return &names
}

// binaryHeaders are the header names of the Kafka and HTTP bindings, by
// attribute; binaryNames the same by attribute name.
var (
	binaryHeaders = map[string]*[numAttributes]string{"ce_": binaryHeaderNames("ce_"), "ce-": binaryHeaderNames("ce-")}
	binaryNames   = func() map[string]map[string]string {
		out := map[string]map[string]string{}
		for prefix, names := range binaryHeaders {
			m := map[string]string{}
			for i, n := range attributeNames {
				m[n] = names[i]
			}
			out[prefix] = m
		}
		return out
	}()
)

// Structured returns the structured-mode document: a JSON object of the
// attributes and "data". data must be a JSON document (normally Data(e));
// it is embedded as it is, not re-validated. The document's content type is
// ContentTypeStructured.
func Structured(attrs []Attribute, data []byte) []byte {
	b := make([]byte, 0, len(data)+64*len(attrs))
	b = append(b, '{')
	for _, a := range attrs {
		b = history.AppendString(b, a.Name)
		b = append(b, ':')
		b = history.AppendString(b, a.Value)
		b = append(b, ',')
	}
	b = append(b, `"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// AppendStructured appends Structured(c.Attributes(e), data) to dst;
// scratch is room for the attribute values, returned for reuse.
func (c CloudEvents) AppendStructured(dst, scratch []byte, e *history.Event, data []byte) ([]byte, []byte) {
	dst = append(dst, '{')
	scratch = c.appendAttributes(scratch[:0], e, func(a int, value []byte) {
		dst = append(dst, '"')
		dst = append(dst, attributeNames[a]...) // plain ASCII: nothing to escape
		dst = append(dst, '"', ':')
		dst = appendJSONBytes(dst, value)
		dst = append(dst, ',')
	})
	dst = append(dst, `"data":`...)
	dst = append(dst, data...)
	return append(dst, '}'), scratch
}

// appendJSONBytes is history.AppendString for a value held as bytes; values
// of plain printable ASCII without quotes or backslashes, which are nearly
// all, are copied as they are.
func appendJSONBytes(dst, v []byte) []byte {
	for _, b := range v {
		if b < 0x20 || b >= utf8.RuneSelf || b == '"' || b == '\\' {
			return history.AppendString(dst, string(v))
		}
	}
	dst = append(dst, '"')
	dst = append(dst, v...)
	return append(dst, '"')
}
