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
	"bytes"
	"fmt"
	"strconv"
	"strings"

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
func (c CloudEvents) Type(e *history.Event) string {
	prefix := c.TypePrefix
	if prefix == "" {
		prefix = DefaultTypePrefix
	}
	return prefix + "." + strings.ToLower(e.Object.Type) + "." + e.Operation
}

// Sequence renders a sequence number zero-padded to 20 digits, so that the
// CloudEvents sequence extension (a string) sorts like the number.
func Sequence(n uint64) string {
	const width = 20 // len("18446744073709551615")
	var buf [width]byte
	for i := range buf {
		buf[i] = '0'
	}
	s := strconv.AppendUint(nil, n, 10)
	copy(buf[width-len(s):], s)
	return string(buf[:])
}

// Attributes returns the context attributes of e in a fixed order: the
// required ones, the optional ones, then the extensions. An attribute
// without a value (no virkningTil, no reason) is left out, as the
// specification asks. Extension names are lower-case ASCII of at most 20
// characters.
func (c CloudEvents) Attributes(e *history.Event) []Attribute {
	bt := &e.Bitemporal
	cl := &e.Classification
	attrs := make([]Attribute, 0, 24)
	add := func(name, value string) {
		if value != "" {
			attrs = append(attrs, Attribute{name, value})
		}
	}
	key := Key(e)
	// Required.
	add("specversion", SpecVersion)
	add("id", e.EventID)
	add("source", c.Source(e))
	add("type", c.Type(e))
	// Optional.
	add("datacontenttype", ContentTypeJSON)
	add("subject", key)
	add("time", timeString(bt.RegistreringFra))
	// Extensions defined by CloudEvents (partitioning, sequence, recorded
	// time, data classification).
	add("partitionkey", key)
	add("sequence", Sequence(e.Sequence))
	add("recordedtime", timeString(e.ObservedAt))
	add("dataclassification", cl.Dataclassification)
	add("datacategory", cl.Datacategory)
	add("dataregulation", strings.Join(cl.Dataregulation, ","))
	// The agent's own extensions: what a consumer routes or filters on
	// without parsing data.
	add("emission", e.Emission)
	add("changekind", e.ChangeKind)
	add("reason", e.Reason)
	add("objectversion", strconv.FormatUint(e.Object.Version, 10))
	add("virkningfra", timeString(bt.VirkningFra))
	if bt.VirkningTil != nil {
		add("virkningtil", timeString(*bt.VirkningTil))
	}
	add("sourceepoch", strconv.FormatUint(e.Source.Epoch, 10))
	add("transactionid", e.Trace.TransactionID)
	add("correlationid", e.Trace.CorrelationID)
	return attrs
}

func timeString(t history.Time) string {
	var buf [32]byte
	return string(history.AppendTime(buf[:0], t))
}

// Binary returns the headers of binary content mode: each attribute as
// prefix+name, except datacontenttype, which becomes "content-type". The
// Kafka binding uses prefix "ce_", the HTTP binding "ce-".
func Binary(attrs []Attribute, prefix string) []Attribute {
	names := binaryNames[prefix] // the usual names, without an allocation each
	out := make([]Attribute, len(attrs))
	for i, a := range attrs {
		name, ok := names[a.Name]
		if !ok {
			name = prefix + a.Name
		}
		out[i] = Attribute{name, a.Value}
	}
	return out
}

// binaryNames maps the attributes Attributes writes to their binary-mode
// header names, for the Kafka and HTTP prefixes.
var binaryNames = func() map[string]map[string]string {
	known := []string{"specversion", "id", "source", "type", "subject", "time", "partitionkey", "sequence",
		"recordedtime", "dataclassification", "datacategory", "dataregulation", "emission", "changekind", "reason",
		"objectversion", "virkningfra", "virkningtil", "sourceepoch", "transactionid", "correlationid"}
	out := map[string]map[string]string{}
	for _, prefix := range []string{"ce_", "ce-"} {
		m := map[string]string{"datacontenttype": "content-type"}
		for _, n := range known {
			m[n] = prefix + n
		}
		out[prefix] = m
	}
	return out
}()

// Structured returns the structured-mode document: a JSON object of the
// attributes and "data". data must be a JSON document (normally Data(e));
// it is embedded as it is, not re-validated. The document's content type is
// ContentTypeStructured.
func Structured(attrs []Attribute, data []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(data) + 64*len(attrs))
	b.WriteByte('{')
	for _, a := range attrs {
		b.Write(history.AppendString(nil, a.Name))
		b.WriteByte(':')
		b.Write(history.AppendString(nil, a.Value))
		b.WriteByte(',')
	}
	b.WriteString(`"data":`)
	b.Write(data)
	b.WriteByte('}')
	return b.Bytes()
}
