package history_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"pgregory.net/rapid"

	"github.com/os2sandbox/connector/history"
)

// exact is the reference decoder: encoding/json with UseNumber.
func exact(b []byte, e *history.Event) error {
	d := json.NewDecoder(bytesReader(b))
	d.UseNumber()
	if err := d.Decode(e); err != nil {
		return err
	}
	if d.More() {
		return errTrailing
	}
	return nil
}

// TestDecodeEventMatchesEncodingJSON: the hand-written decoder gives what
// encoding/json (UseNumber) gives, for random events in canonical and in
// indented form.
func TestDecodeEventMatchesEncodingJSON(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		e := genEvent().Draw(t, "event")
		b, err := history.AppendJSON(nil, &e)
		if err != nil {
			t.Skip("not JSON") // NaN and the like: never in a log
		}
		inputs := [][]byte{b}
		if ind, err := json.MarshalIndent(&e, "", "  "); err == nil {
			inputs = append(inputs, ind)
		}
		for _, in := range inputs {
			var got, want history.Event
			gerr, werr := history.DecodeEvent(in, &got), exact(in, &want)
			if (gerr != nil) != (werr != nil) {
				t.Fatalf("error %v, encoding/json %v", gerr, werr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded differently:\ngot  %#v\nwant %#v\nfrom %s", got, want, in)
			}
		}
	})
}

func TestDecodeEventOddInput(t *testing.T) {
	for _, in := range []string{
		`{"sequence":1,"unknown":{"a":[1,2,{"b":null}]},"after":{"x":1.50,"y":"æ\u00f8\"q"}}`,
		`{"sequence":-1}`,
		`{"sequence":1.5}`,
		`{"eventId":12}`,
		`{"after":[1]}`,
		`{"after":{"a":1},}`,
		`{"after":{"a":1}} x`,
		`{"observedAt":"yesterday"}`,
		`{"observedAt":"2026-01-02T03:04:05.123456789+02:00","bitemporal":{"virkningTil":null}}`,
		`{"changed":[],"before":null,"object":{"keys":{}}}`,
		"{\"eventId\":\"bad \xff utf8\"}",
		`{"trace":null,"integrity":{"contentHash":"h","extra":[true,false,null]}}`,
		``,
		`null`,
	} {
		var got, want history.Event
		gerr, werr := history.DecodeEvent([]byte(in), &got), exact([]byte(in), &want)
		if (gerr != nil) != (werr != nil) {
			t.Errorf("%s: error %v, encoding/json %v", in, gerr, werr)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded differently:\ngot  %#v\nwant %#v", in, got, want)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	e := history.Event{SchemaVersion: "1.0", EventID: "0b6bd2b5-8c0e-5a8b-9f43-1c7e6b7d8a9f", Sequence: 1, Operation: history.OpUpdate,
		Before: map[string]any{}, After: map[string]any{}}
	for _, k := range []string{"id", "givenName", "surname", "mail", "phone", "title", "department", "unit"} {
		e.After[k] = "some value of " + k
		e.Before[k] = json.Number("12345.50")
	}
	data, _ := history.AppendJSON(nil, &e)
	b.Run("DecodeEvent", func(b *testing.B) {
		for b.Loop() {
			var e history.Event
			history.DecodeEvent(data, &e)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var e history.Event
			exact(data, &e)
		}
	})
	// What the dispatcher does for receivers that send the logged JSON,
	// on an event as the log holds it.
	b.Run("DecodeEventHead", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e history.Event
			if err := history.DecodeEventHead(bytes.Clone(loggedEvent), &e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// loggedEvent is an event as the demo's log holds it.
var loggedEvent = []byte(`{"schemaVersion":"1.0","eventId":"656d437a-156d-5261-abe5-5fb467713d68","sequence":600,"emission":"live","source":{"name":"demokommune","type":"file","id":"file:///work/main/configs/demo/snapshots","epoch":0},"object":{"type":"Bruger","id":"441d4009-3431-52c4-8044-638a5a1c2a10","keys":{"brugernavn":"cmo386"},"version":2},"operation":"update","changeKind":"aendring","bitemporal":{"registreringFra":"2026-11-22T21:20:06.453751Z","registreringTil":null,"registreringsaktoer":"connector/demokommune","virkningFra":"2026-02-01T23:00:00.000000Z","virkningTil":null,"virkningsaktoer":"demokommune","virkningKilde":"commit-time"},"before":{"brugernavn":"cmo386","email":"camilla.mortensen@demokommune.dk","enhed":"848c10fc-b187-556c-a414-e0b1b7ef2e7d","navn":"Camilla Mortensen","stilling":"Biblioteksassistent","telefon":"+45 78 15 19 97"},"after":{"brugernavn":"cmo386","email":"camilla.mortensen@demokommune.dk","enhed":"848c10fc-b187-556c-a414-e0b1b7ef2e7d","navn":"Camilla Mortensen","stilling":"Bibliotekar","telefon":"+45 78 15 19 97"},"changed":["stilling"],"classification":{"dataclassification":"internal","dataregulation":["GDPR"]},"trace":{"transactionId":"2026-02-02@2398fb0f3adde72e"},"observedAt":"2026-11-22T21:20:06.453751Z","sourceChangedAt":"2026-02-01T23:00:00.000000Z","integrity":{"contentHash":"sha256:f4f5cf4cdc5beb520e5ff84f517158fb8922a3e288556664a2b6f0f9f62dc4bc","prevContentHash":"sha256:04f5cf4cdc5beb520e5ff84f517158fb8922a3e288556664a2b6f0f9f62dc4bc"}}`)

var errTrailing = errorString("data after the JSON value")

type errorString string

func (e errorString) Error() string { return string(e) }

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// DecodeEventHead then Images gives what DecodeEvent gives, and an event
// decoded by DecodeEventHead encodes to the same event without ever
// decoding its images.
func TestDecodeEventHead(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		e := genEvent().Draw(t, "event")
		b, err := history.AppendJSON(nil, &e)
		if err != nil {
			t.Skip("not JSON")
		}
		var full, head history.Event
		if err := history.DecodeEvent(b, &full); err != nil {
			t.Fatal(err)
		}
		if err := history.DecodeEventHead(b, &head); err != nil {
			t.Fatal(err)
		}
		again, err := history.AppendJSON(nil, &head)
		var back history.Event
		if err != nil || history.DecodeEvent(again, &back) != nil || !reflect.DeepEqual(back, full) {
			t.Fatalf("encoded again (%v):\n%s\nwant the same event as\n%s", err, again, b)
		}
		if err := head.Images(); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(head, full) {
			t.Fatalf("after Images:\ngot  %#v\nwant %#v", head, full)
		}
	})
}
