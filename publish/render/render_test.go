package render

import (
	"bytes"
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/os2sandbox/connector/history"
)

var t0 = time.Date(2024, 3, 1, 8, 30, 0, 123456000, time.UTC)

// event builds a canonical event for tests; edit the result for variants.
func event(op string, seq uint64) history.Event {
	e := history.Event{
		SchemaVersion: history.SchemaVersion,
		EventID:       "6f1c1b5e-8d7a-5b7e-9c1d-0a1b2c3d4e5f",
		Sequence:      seq,
		Emission:      history.EmissionLive,
		Source:        history.SourceRef{Name: "hr", Type: "postgres", ID: "postgres://7301234567890/hr", Epoch: 2, Position: "0/16B3748"},
		Object:        history.ObjectRef{Type: "OrganisationEnhed", ID: "e1", Keys: map[string]string{"code": "IT"}, Version: 3},
		Operation:     op,
		ChangeKind:    history.KindAendring,
		Bitemporal: history.Bitemporal{
			RegistreringFra:     history.At(t0),
			Registreringsaktoer: "connector",
			VirkningFra:         history.At(t0.Add(-time.Hour)),
			Virkningsaktoer:     "hr",
			VirkningKilde:       "commit-time",
		},
		Before:         map[string]any{"name": "IT", "n": 1.0},
		After:          map[string]any{"name": "IT-afd.", "n": 2.0, "tags": []any{"a", "b"}},
		Changed:        []string{"n", "name"},
		Classification: history.Classification{Dataclassification: "internal"},
		Trace:          history.Trace{TransactionID: "tx-771"},
		ObservedAt:     history.At(t0.Add(time.Second)),
		Integrity:      history.Integrity{ContentHash: "sha256:aa", PrevContentHash: "sha256:bb"},
	}
	switch op {
	case history.OpCreate, history.OpSnapshot:
		e.Before = nil
		e.Integrity.PrevContentHash = ""
	case history.OpDelete:
		e.After = nil
		e.Reason = history.ReasonDeletedInSource
	}
	return e
}

func attrMap(attrs []Attribute) map[string]string {
	m := map[string]string{}
	for _, a := range attrs {
		m[a.Name] = a.Value
	}
	return m
}

func TestSequence(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{0, "00000000000000000000"},
		{1, "00000000000000000001"},
		{1234567, "00000000000001234567"},
		{^uint64(0), "18446744073709551615"},
	}
	for _, tt := range tests {
		if got := Sequence(tt.n); got != tt.want {
			t.Errorf("Sequence(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	// String order must be numeric order: that is why it is padded.
	ns := []uint64{9, 10, 99, 100, 1 << 40, 3}
	ss := make([]string, len(ns))
	for i, n := range ns {
		ss[i] = Sequence(n)
	}
	sort.Strings(ss)
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	for i := range ns {
		if ss[i] != Sequence(ns[i]) {
			t.Fatalf("sorted strings %v do not follow numbers %v", ss, ns)
		}
	}
}

var extName = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

func TestAttributes(t *testing.T) {
	til := history.Ptr(t0.Add(24 * time.Hour))
	tests := []struct {
		name   string
		ev     func() history.Event
		ce     CloudEvents
		want   map[string]string // must be present with this value
		absent []string
	}{{
		name: "create",
		ev:   func() history.Event { return event(history.OpCreate, 42) },
		ce:   CloudEvents{InstallationID: "inst-1"},
		want: map[string]string{
			"specversion":        "1.0",
			"id":                 "6f1c1b5e-8d7a-5b7e-9c1d-0a1b2c3d4e5f",
			"source":             "urn:connector:inst-1:postgres://7301234567890/hr",
			"type":               "dk.os2sandbox.connector.organisationenhed.create",
			"subject":            "OrganisationEnhed/e1",
			"partitionkey":       "OrganisationEnhed/e1",
			"time":               "2024-03-01T08:30:00.123456Z",
			"recordedtime":       "2024-03-01T08:30:01.123456Z",
			"sequence":           "00000000000000000042",
			"datacontenttype":    "application/json",
			"dataclassification": "internal",
			"changekind":         "aendring",
			"virkningfra":        "2024-03-01T07:30:00.123456Z",
			"sourceepoch":        "2",
			"emission":           "live",
			"objectversion":      "3",
			"transactionid":      "tx-771",
		},
		absent: []string{"virkningtil", "reason", "datacategory", "dataregulation", "correlationid"},
	}, {
		name: "delete with everything optional set",
		ev: func() history.Event {
			e := event(history.OpDelete, 7)
			e.Emission = history.EmissionReplay
			e.Bitemporal.VirkningTil = til
			e.Classification = history.Classification{Dataclassification: "confidential", Datacategory: "sensitive", Dataregulation: []string{"GDPR", "NIS2"}}
			e.Trace.CorrelationID = "corr-9"
			return e
		},
		ce: CloudEvents{InstallationID: "inst-1", TypePrefix: "org.example"},
		want: map[string]string{
			"type":               "org.example.organisationenhed.delete",
			"reason":             "deleted-in-source",
			"virkningtil":        "2024-03-02T08:30:00.123456Z",
			"emission":           "replay",
			"dataclassification": "confidential",
			"datacategory":       "sensitive",
			"dataregulation":     "GDPR,NIS2",
			"correlationid":      "corr-9",
		},
	}, {
		name: "snapshot",
		ev: func() history.Event {
			e := event(history.OpSnapshot, 1)
			e.Emission = history.EmissionBackfill
			e.ChangeKind = history.KindUoplyst
			return e
		},
		ce:   CloudEvents{InstallationID: "i"},
		want: map[string]string{"type": "dk.os2sandbox.connector.organisationenhed.snapshot", "changekind": "uoplyst", "emission": "backfill"},
	}, {
		name: "valid from registration, largest sequence",
		ev: func() history.Event {
			e := event(history.OpUpdate, 18446744073709551615)
			e.Bitemporal.VirkningFra = e.Bitemporal.RegistreringFra
			return e
		},
		ce:   CloudEvents{InstallationID: "i"},
		want: map[string]string{"time": "2024-03-01T08:30:00.123456Z", "virkningfra": "2024-03-01T08:30:00.123456Z", "sequence": "18446744073709551615"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.ev()
			attrs := tt.ce.Attributes(&e)
			got := attrMap(attrs)
			if len(got) != len(attrs) {
				t.Errorf("duplicate attribute names in %v", attrs)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for _, k := range tt.absent {
				if v, ok := got[k]; ok {
					t.Errorf("%s present (%q), want absent", k, v)
				}
			}
			for _, a := range attrs {
				if !extName.MatchString(a.Name) {
					t.Errorf("attribute name %q is not 1-20 lower-case letters or digits", a.Name)
				}
				if a.Value == "" {
					t.Errorf("attribute %s has an empty value; it should be left out", a.Name)
				}
			}
			for _, req := range []string{"specversion", "id", "source", "type"} {
				if got[req] == "" {
					t.Errorf("required attribute %s missing", req)
				}
			}
		})
	}
}

func TestBinary(t *testing.T) {
	e := event(history.OpUpdate, 5)
	attrs := CloudEvents{InstallationID: "i"}.Attributes(&e)
	for _, prefix := range []string{"ce_", "ce-"} {
		h := Binary(attrs, prefix)
		if len(h) != len(attrs) {
			t.Fatalf("%d headers for %d attributes", len(h), len(attrs))
		}
		m := attrMap(h)
		if m["content-type"] != ContentTypeJSON {
			t.Errorf("content-type = %q", m["content-type"])
		}
		if _, ok := m[prefix+"datacontenttype"]; ok {
			t.Errorf("datacontenttype must travel as content-type in binary mode")
		}
		if m[prefix+"id"] != e.EventID || m[prefix+"specversion"] != "1.0" {
			t.Errorf("headers %v lack %sid/%sspecversion", m, prefix, prefix)
		}
		for _, x := range h {
			if x.Name != "content-type" && !strings.HasPrefix(x.Name, prefix) {
				t.Errorf("header %q lacks prefix %q", x.Name, prefix)
			}
		}
	}
}

// variants are events that exercise every attribute: optional ones set,
// non-ASCII and characters JSON escapes.
func variants() []history.Event {
	full := event(history.OpDelete, 7)
	full.Emission = history.EmissionReplay
	full.Bitemporal.VirkningTil = history.Ptr(t0.Add(24 * time.Hour))
	full.Classification = history.Classification{Dataclassification: "confidential", Datacategory: "sensitive", Dataregulation: []string{"GDPR", "NIS2"}}
	full.Trace.CorrelationID = "corr-9"
	odd := event(history.OpCreate, 18446744073709551615)
	odd.Object.Type = "ÆrøKøbing"
	odd.Object.ID = "id \"quoted\" \\ with \u00e6\u00f8\u00e5 and \x01\u2028"
	odd.Source.ID = "ldap://example.test/ou=\"x\"\\y\n\tz"
	return []history.Event{event(history.OpCreate, 1), event(history.OpUpdate, 42), full, odd, event(history.OpSnapshot, 0)}
}

// TestAppendBinary: the batch form gives Binary's headers, and values
// handed out for earlier events survive the shared buffer growing.
func TestAppendBinary(t *testing.T) {
	for _, prefix := range []string{"ce_", "ce-", "x-"} {
		ce := CloudEvents{InstallationID: "inst", TypePrefix: "org.example"}
		events := variants()
		type header struct {
			name  string
			value []byte
		}
		got := make([][]header, len(events))
		buf := make([]byte, 0, 8) // grows, and moves, many times
		for i := range events {
			buf = ce.AppendBinary(buf, &events[i], prefix, func(name string, value []byte) {
				got[i] = append(got[i], header{name, value})
			})
		}
		for i := range events {
			want := Binary(ce.Attributes(&events[i]), prefix)
			if len(got[i]) != len(want) {
				t.Fatalf("prefix %q event %d: %d headers, want %d", prefix, i, len(got[i]), len(want))
			}
			for j, w := range want {
				if g := got[i][j]; g.name != w.Name || string(g.value) != w.Value || cap(g.value) != len(g.value) {
					t.Errorf("prefix %q event %d header %d: %s=%q (cap %d), want %s=%q", prefix, i, j, g.name, g.value, cap(g.value), w.Name, w.Value)
				}
			}
		}
	}
	odd := variants()[3]
	if got, want := (CloudEvents{}).Type(&odd), "dk.os2sandbox.connector."+strings.ToLower(odd.Object.Type)+".create"; got != want {
		t.Errorf("Type = %q, want %q", got, want)
	}
}

// TestAppendStructured: the batch form writes Structured's document.
func TestAppendStructured(t *testing.T) {
	ce := CloudEvents{InstallationID: "inst"}
	var dst, scratch []byte
	for _, e := range variants() {
		data, err := Data(&e)
		if err != nil {
			t.Fatal(err)
		}
		want := Structured(ce.Attributes(&e), data)
		from := len(dst)
		dst, scratch = ce.AppendStructured(dst, scratch, &e, data)
		if got := dst[from:]; !bytes.Equal(got, want) {
			t.Errorf("event %d:\ngot  %s\nwant %s", e.Sequence, got, want)
		}
		var doc map[string]any
		if err := json.Unmarshal(dst[from:], &doc); err != nil {
			t.Errorf("event %d: not JSON: %v", e.Sequence, err)
		}
	}
}

func TestStructured(t *testing.T) {
	tests := []struct {
		name string
		ev   func() history.Event
	}{
		{"update", func() history.Event { return event(history.OpUpdate, 9) }},
		{"delete", func() history.Event { return event(history.OpDelete, 10) }},
		{"awkward strings", func() history.Event {
			e := event(history.OpCreate, 11)
			e.Source.ID = "ldap://example.test/ou=\"x\"\\y\n\tz"
			e.Object.ID = "id with \u00e6\u00f8\u00e5 and \x01"
			return e
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.ev()
			ce := CloudEvents{InstallationID: "inst"}
			attrs := ce.Attributes(&e)
			data, err := Data(&e)
			if err != nil {
				t.Fatal(err)
			}
			doc := Structured(attrs, data)
			var got map[string]json.RawMessage
			if err := json.Unmarshal(doc, &got); err != nil {
				t.Fatalf("structured document is not JSON: %v\n%s", err, doc)
			}
			for _, a := range attrs {
				var v string
				if err := json.Unmarshal(got[a.Name], &v); err != nil || v != a.Value {
					t.Errorf("%s = %s (err %v), want %q", a.Name, got[a.Name], err, a.Value)
				}
			}
			if len(got) != len(attrs)+1 {
				t.Errorf("document has %d members, want %d attributes + data", len(got), len(attrs))
			}
			var back history.Event
			if err := json.Unmarshal(got["data"], &back); err != nil {
				t.Fatal(err)
			}
			assertSameEvent(t, e, back)
		})
	}
}

// TestDeleteCarriesData pins EVENTS.md: a delete is never an empty value,
// so it cannot be mistaken for a compaction tombstone.
func TestDeleteCarriesData(t *testing.T) {
	e := event(history.OpDelete, 3)
	data, err := Data(&e)
	if err != nil {
		t.Fatal(err)
	}
	var back history.Event
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Before == nil || back.After != nil || back.Operation != history.OpDelete {
		t.Fatalf("delete data lost its before image: %s", data)
	}
	env, err := DebeziumJSON(&e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(env, []byte(`"before":{`)) {
		t.Fatalf("Debezium delete has no before image: %s", env)
	}
}

func TestDebeziumOp(t *testing.T) {
	tests := []struct {
		op, want string
		err      bool
	}{
		{history.OpCreate, "c", false},
		{history.OpUndelete, "c", false},
		{history.OpUpdate, "u", false},
		{history.OpDelete, "d", false},
		{history.OpSnapshot, "r", false},
		{"merge", "", true},
	}
	for _, tt := range tests {
		got, err := DebeziumOp(tt.op)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("DebeziumOp(%q) = %q, %v; want %q, error %v", tt.op, got, err, tt.want, tt.err)
		}
	}
	e := event("merge", 1)
	if _, err := DebeziumJSON(&e); err == nil || !strings.Contains(err.Error(), "merge") {
		t.Errorf("unknown operation: error %v does not name it", err)
	}
}

func TestDebezium(t *testing.T) {
	changed := history.Ptr(t0.Add(-time.Minute))
	tests := []struct {
		name         string
		ev           func() history.Event
		op           string
		snapshot     string
		sourceTsMs   int64
		beforeIsNull bool
		afterIsNull  bool
	}{
		{"create", func() history.Event { return event(history.OpCreate, 1) }, "c", "false", t0.Add(time.Second).UnixMilli(), true, false},
		{"update with source time", func() history.Event {
			e := event(history.OpUpdate, 2)
			e.SourceChangedAt = changed
			e.Supersedes = []history.Superseded{{EventID: "x", RegistreringFra: history.At(t0), VirkningFra: history.At(t0)}}
			e.ChangeKind = history.KindKorrektion
			return e
		}, "u", "false", changed.UnixMilli(), false, false},
		{"delete", func() history.Event { return event(history.OpDelete, 3) }, "d", "false", t0.Add(time.Second).UnixMilli(), false, true},
		{"snapshot", func() history.Event { return event(history.OpSnapshot, 4) }, "r", "true", t0.Add(time.Second).UnixMilli(), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.ev()
			b, err := DebeziumJSON(&e)
			if err != nil {
				t.Fatal(err)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"before", "after", "source", "op", "ts_ms", "connector"} {
				if _, ok := raw[k]; !ok {
					t.Errorf("envelope lacks %q: %s", k, b)
				}
			}
			if (string(raw["before"]) == "null") != tt.beforeIsNull || (string(raw["after"]) == "null") != tt.afterIsNull {
				t.Errorf("before=%s after=%s", raw["before"], raw["after"])
			}
			var env DebeziumEnvelope
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatal(err)
			}
			if env.Op != tt.op || env.Source.Snapshot != tt.snapshot || env.Source.TsMs != tt.sourceTsMs {
				t.Errorf("op %q snapshot %q source.ts_ms %d; want %q %q %d", env.Op, env.Source.Snapshot, env.Source.TsMs, tt.op, tt.snapshot, tt.sourceTsMs)
			}
			if env.TsMs != e.ObservedAt.UnixMilli() || env.Source.Connector != "postgres" || env.Source.Name != "hr" {
				t.Errorf("ts_ms %d connector %q name %q", env.TsMs, env.Source.Connector, env.Source.Name)
			}
			// Lossless: the canonical event comes back whole.
			assertSameEvent(t, e, env.Event())
		})
	}
}

// assertSameEvent compares two events by their canonical JSON, which is
// what travels (maps decoded from JSON hold float64s, so DeepEqual would
// compare representations, not content).
func assertSameEvent(t *testing.T, want, got history.Event) {
	t.Helper()
	a, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("event changed in rendering:\nwant %s\ngot  %s", a, b)
	}
}
