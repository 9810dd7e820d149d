package docs

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/os2sandbox/connector/history"
)

const schemaFile = "event.schema.json"

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", schemaFile, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(schemaFile, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(schemaFile)
	if err != nil {
		t.Fatalf("compile %s: %v", schemaFile, err)
	}
	return sch
}

func validate(sch *jsonschema.Schema, b []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

var (
	t0 = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	t1 = time.Date(2026, 2, 2, 0, 0, 0, 0, time.UTC)
	t2 = time.Date(2026, 3, 2, 7, 30, 0, 123456789, time.FixedZone("CET", 3600))
)

// base is a snapshot (initial load) event for one Bruger.
func base() history.Event {
	return history.Event{
		SchemaVersion: history.SchemaVersion,
		EventID:       "0b0f3e0c-5d0a-5b7e-9a3c-1f2e3d4c5b6a",
		Sequence:      1,
		Emission:      history.EmissionBackfill,
		Source: history.SourceRef{
			Name: "demokommune", Type: "file", ID: "file:///srv/demo/snapshots", Epoch: 1,
			Position: "2026-01-05/users.jsonl:17",
		},
		Object: history.ObjectRef{
			Type: "Bruger", ID: "5b1f6f0e-2c1e-4c39-8f59-0e8b0a8c1d01",
			Keys: map[string]string{"brugernavn": "abc123"}, Version: 1,
		},
		Operation:  history.OpSnapshot,
		ChangeKind: history.KindUoplyst,
		Bitemporal: history.Bitemporal{
			RegistreringFra:     history.At(t0),
			Registreringsaktoer: "connector/demokommune",
			VirkningFra:         history.At(time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)),
			Virkningsaktoer:     "demokommune",
			VirkningKilde:       "column:gyldig_fra",
		},
		After: map[string]any{
			"brugernavn": "abc123", "navn": "Anne Bøgh", "enhed": "e1",
			"roller": []any{"a", "b"},
		},
		Changed: []string{},
		Classification: history.Classification{
			Dataclassification: "internal", Dataregulation: []string{"GDPR"},
		},
		Trace:           history.Trace{TransactionID: "snapshot-2026-01-05"},
		ObservedAt:      history.At(t0.Add(time.Second)),
		SourceChangedAt: history.Ptr(t0),
		Integrity:       history.Integrity{ContentHash: history.ContentHash(map[string]any{"brugernavn": "abc123"})},
	}
}

func validEvents() map[string]history.Event {
	snap := base()

	create := base()
	create.Emission = history.EmissionLive
	create.Operation = history.OpCreate
	create.ChangeKind = history.KindAendring
	create.SourceChangedAt = nil
	create.Source.Position = ""
	create.Object.Keys = nil

	update := base()
	update.Sequence = 2
	update.Emission = history.EmissionReconcile
	update.Operation = history.OpUpdate
	update.ChangeKind = history.KindAendring
	update.Object.Version = 2
	update.Before = snap.After
	update.After = map[string]any{"brugernavn": "abc123", "navn": "Anne Bøgh", "enhed": "e2"}
	update.Changed = []string{"enhed", "roller"}
	update.Bitemporal.RegistreringFra = history.At(t1)
	update.Bitemporal.VirkningFra = history.At(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	update.Integrity.PrevContentHash = snap.Integrity.ContentHash
	update.Classification.Redacted = []string{"/after/cpr", "/before/cpr"}

	korr := update
	korr.Emission = history.EmissionReplay
	korr.ChangeKind = history.KindKorrektion
	korr.Bitemporal.VirkningTil = history.Ptr(t2)
	korr.Bitemporal.RegistreringTil = history.Ptr(t2)
	korr.Supersedes = []history.Superseded{{
		EventID:         "0b0f3e0c-5d0a-5b7e-9a3c-1f2e3d4c5b6a",
		RegistreringFra: history.At(t0),
		VirkningFra:     history.At(time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)),
	}}

	del := base()
	del.Emission = history.EmissionLive
	del.Operation = history.OpDelete
	del.Reason = history.ReasonDeletedInSource
	del.ChangeKind = history.KindAendring
	del.Before, del.After = snap.After, nil
	del.Changed = []string{"brugernavn", "enhed", "navn", "roller"}

	undel := base()
	undel.Emission = history.EmissionLive
	undel.Operation = history.OpUndelete
	undel.Reason = history.ReasonRestored
	undel.ChangeKind = history.KindAendring

	return map[string]history.Event{
		"snapshot": snap, "create": create, "update": update, "korrektion": korr,
		"delete": del, "undelete": undel,
	}
}

func TestSchemaAcceptsMarshalledEvents(t *testing.T) {
	sch := compileSchema(t)
	for name, ev := range validEvents() {
		t.Run(name, func(t *testing.T) {
			b, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate(sch, b); err != nil {
				t.Errorf("valid %s event rejected: %v\n%s", name, err, b)
			}
		})
	}
}

func TestSchemaRejectsInvalidEvents(t *testing.T) {
	sch := compileSchema(t)
	ev := validEvents()
	tests := []struct {
		name   string
		from   string
		mutate func(m map[string]any)
	}{
		{"missing eventId", "update", func(m map[string]any) { delete(m, "eventId") }},
		{"bad emission", "update", func(m map[string]any) { m["emission"] = "realtime" }},
		{"bad operation", "update", func(m map[string]any) { m["operation"] = "upsert" }},
		{"bad changeKind", "update", func(m map[string]any) { m["changeKind"] = "ændring" }},
		{"bad reason", "delete", func(m map[string]any) { m["reason"] = "gone" }},
		{"bad dataclassification", "update", func(m map[string]any) {
			sub(m, "classification")["dataclassification"] = "secret"
		}},
		{"timestamp without microseconds", "update", func(m map[string]any) {
			m["observedAt"] = "2026-01-05T00:00:01Z"
		}},
		{"timestamp with offset", "update", func(m map[string]any) {
			sub(m, "bitemporal")["registreringFra"] = "2026-01-05T01:00:00.000000+01:00"
		}},
		{"timestamp with nanoseconds", "update", func(m map[string]any) {
			sub(m, "bitemporal")["virkningFra"] = "2026-01-05T00:00:00.000000000Z"
		}},
		{"date only", "update", func(m map[string]any) { m["sourceChangedAt"] = "2026-01-05" }},
		{"virkningTil not timestamp", "update", func(m map[string]any) {
			sub(m, "bitemporal")["virkningTil"] = ""
		}},
		{"registreringTil missing", "update", func(m map[string]any) {
			delete(sub(m, "bitemporal"), "registreringTil")
		}},
		{"eventId upper case", "update", func(m map[string]any) {
			m["eventId"] = strings.ToUpper(m["eventId"].(string))
		}},
		{"eventId not uuid", "update", func(m map[string]any) { m["eventId"] = "42" }},
		{"unknown top-level field", "update", func(m map[string]any) { m["extra"] = 1 }},
		{"unknown source field", "update", func(m map[string]any) { sub(m, "source")["host"] = "x" }},
		{"unknown bitemporal field", "update", func(m map[string]any) {
			sub(m, "bitemporal")["registreringTid"] = "2026-01-05T00:00:00.000000Z"
		}},
		{"sequence as string", "update", func(m map[string]any) { m["sequence"] = "2" }},
		{"version zero", "update", func(m map[string]any) { sub(m, "object")["version"] = 0 }},
		{"changed null", "snapshot", func(m map[string]any) { m["changed"] = nil }},
		{"changed not strings", "update", func(m map[string]any) { m["changed"] = []any{1} }},
		{"before not object", "update", func(m map[string]any) { m["before"] = "x" }},
		{"after missing", "update", func(m map[string]any) { delete(m, "after") }},
		{"create with before", "create", func(m map[string]any) { m["before"] = map[string]any{} }},
		{"update without before", "update", func(m map[string]any) { m["before"] = nil }},
		{"delete with after", "delete", func(m map[string]any) { m["after"] = m["before"] }},
		{"delete without reason", "delete", func(m map[string]any) { delete(m, "reason") }},
		{"reason on update", "update", func(m map[string]any) { m["reason"] = "restored" }},
		{"supersedes on aendring", "korrektion", func(m map[string]any) { m["changeKind"] = "aendring" }},
		{"bad virkningKilde", "update", func(m map[string]any) {
			sub(m, "bitemporal")["virkningKilde"] = "guess"
		}},
		{"bad source type", "update", func(m map[string]any) { sub(m, "source")["type"] = "csv" }},
		{"schemaVersion 2", "update", func(m map[string]any) { m["schemaVersion"] = "2.0" }},
		{"key not string", "snapshot", func(m map[string]any) {
			sub(m, "object")["keys"] = map[string]any{"uid": 7}
		}},
		{"contentHash not sha256", "update", func(m map[string]any) {
			sub(m, "integrity")["contentHash"] = "md5:00ff"
		}},
		{"redacted not pointer", "update", func(m map[string]any) {
			sub(m, "classification")["redacted"] = []any{"after.cpr"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(ev[tt.from])
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			// The unmutated event must pass, or the case proves nothing.
			if err := validate(sch, b); err != nil {
				t.Fatalf("base %s event rejected: %v", tt.from, err)
			}
			tt.mutate(m)
			if b, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
			if err := validate(sch, b); err == nil {
				t.Errorf("schema accepted invalid event (%s):\n%s", tt.name, b)
			}
		})
	}
}

func sub(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

// TestSchemaMatchesEventType keeps the schema in step with history.Event:
// every JSON field of the Go type is a schema property and vice versa, and a
// field is required exactly when it is marshalled without omitempty.
func TestSchemaMatchesEventType(t *testing.T) {
	raw, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	compare(t, "#", reflect.TypeFor[history.Event](), schema)
}

var timeType = reflect.TypeFor[history.Time]()

func compare(t *testing.T, at string, typ reflect.Type, node map[string]any) {
	t.Helper()
	props, _ := node["properties"].(map[string]any)
	if props == nil {
		t.Errorf("%s: schema has no properties for Go type %s", at, typ)
		return
	}
	if node["additionalProperties"] != false {
		t.Errorf("%s: schema must set additionalProperties false", at)
	}
	var required []string
	for _, r := range node["required"].([]any) {
		required = append(required, r.(string))
	}
	seen := map[string]bool{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if tag == "-" || !f.IsExported() {
			continue // not part of the event (Event.Raw: its encoding)
		}
		if name == "" {
			t.Errorf("%s: Go field %s.%s has no JSON name", at, typ.Name(), f.Name)
			continue
		}
		seen[name] = true
		p, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s: Go field %s (%q) is missing from the schema", at, f.Name, name)
			continue
		}
		omit := slices.Contains(strings.Split(opts, ","), "omitempty")
		if req := slices.Contains(required, name); req == omit {
			t.Errorf("%s/%s: required=%v but omitempty=%v in history.%s", at, name, req, omit, typ.Name())
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != timeType:
			compare(t, at+"/"+name, ft, p)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			items, _ := p["items"].(map[string]any)
			compare(t, at+"/"+name+"/items", ft.Elem(), items)
		}
	}
	for name := range props {
		if !seen[name] {
			t.Errorf("%s: schema property %q is not a field of history.%s", at, name, typ.Name())
		}
	}
}
