package history_test

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/os2sandbox/connector/history"
)

// genString draws strings that exercise JSON escaping: quotes,
// backslashes, control bytes, HTML characters, U+2028, Danish letters,
// invalid UTF-8.
func genString() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.String(),
		rapid.SampledFrom([]string{"", "plain", `q"uo\te`, "<a href='x'>&</a>", "line\u2028sep\u2029", "\x00\x01\b\f\n\r\t\x1f", "æøå ÆØÅ", "bad\xffutf8\xc3", "\u00e9\U0001F600"}),
	)
}

func genTime() *rapid.Generator[history.Time] {
	return rapid.Custom(func(t *rapid.T) history.Time {
		return history.At(time.Unix(rapid.Int64Range(-1e10, 1e10).Draw(t, "s"), rapid.Int64Range(0, 999999999).Draw(t, "ns")))
	})
}

func genTimePtr() *rapid.Generator[*history.Time] {
	return rapid.Custom(func(t *rapid.T) *history.Time {
		if rapid.Bool().Draw(t, "nil") {
			return nil
		}
		v := genTime().Draw(t, "time")
		return &v
	})
}

// genValue draws the values images hold: JSON types, plus Go types a
// mapping may put there (ints, []string, time.Time), at most depth deep.
func genValue(depth int) *rapid.Generator[any] {
	return rapid.Custom(func(t *rapid.T) any {
		kinds := 9
		if depth <= 0 {
			kinds = 7
		}
		switch rapid.IntRange(0, kinds-1).Draw(t, "kind") {
		case 0:
			return nil
		case 1:
			return genString().Draw(t, "s")
		case 2:
			return rapid.Bool().Draw(t, "b")
		case 3:
			return rapid.OneOf(rapid.Float64(), rapid.SampledFrom([]float64{0, math.Copysign(0, -1), 1e-7, 1e21, 123456789, 1.5e300, -2.5e-300, 0.1})).Draw(t, "f")
		case 4:
			if rapid.Bool().Draw(t, "number") {
				return json.Number(rapid.SampledFrom([]string{"0", "-0", "12", "-3.25", "1e9", "1.5E-7", "123456789012345678901234567890.000001"}).Draw(t, "n"))
			}
			return rapid.Int().Draw(t, "i")
		case 5:
			return rapid.SliceOf(genString()).Draw(t, "ss")
		case 6:
			return time.Unix(rapid.Int64Range(0, 1e10).Draw(t, "ts"), 0).UTC()
		case 7:
			return rapid.SliceOf(genValue(depth-1)).Draw(t, "list")
		default:
			return genImage(depth-1).Draw(t, "map")
		}
	})
}

func genImage(depth int) *rapid.Generator[map[string]any] {
	return rapid.Custom(func(t *rapid.T) map[string]any {
		if rapid.IntRange(0, 5).Draw(t, "nil") == 0 {
			return nil
		}
		return rapid.MapOfN(genString(), genValue(depth), 0, 6).Draw(t, "image")
	})
}

func genStrings() *rapid.Generator[[]string] {
	return rapid.Custom(func(t *rapid.T) []string {
		if rapid.Bool().Draw(t, "nil") {
			return nil
		}
		return rapid.SliceOfN(genString(), 0, 4).Draw(t, "strings")
	})
}

func genEvent() *rapid.Generator[history.Event] {
	return rapid.Custom(func(t *rapid.T) history.Event {
		s := genString()
		e := history.Event{
			SchemaVersion: s.Draw(t, "schemaVersion"),
			EventID:       s.Draw(t, "eventId"),
			Sequence:      rapid.Uint64().Draw(t, "sequence"),
			Emission:      s.Draw(t, "emission"),
			Source: history.SourceRef{Name: s.Draw(t, "sname"), Type: s.Draw(t, "stype"), ID: s.Draw(t, "sid"),
				Epoch: rapid.Uint64().Draw(t, "epoch"), Position: s.Draw(t, "position")},
			Object: history.ObjectRef{Type: s.Draw(t, "otype"), ID: s.Draw(t, "oid"),
				Keys: rapid.MapOfN(genString(), genString(), 0, 3).Draw(t, "keys"), Version: rapid.Uint64().Draw(t, "version")},
			Operation:  s.Draw(t, "operation"),
			Reason:     s.Draw(t, "reason"),
			ChangeKind: s.Draw(t, "changeKind"),
			Bitemporal: history.Bitemporal{
				RegistreringFra: genTime().Draw(t, "rf"), RegistreringTil: genTimePtr().Draw(t, "rt"),
				Registreringsaktoer: s.Draw(t, "ra"), VirkningFra: genTime().Draw(t, "vf"), VirkningTil: genTimePtr().Draw(t, "vt"),
				Virkningsaktoer: s.Draw(t, "va"), VirkningKilde: s.Draw(t, "vk"), Status: s.Draw(t, "status"),
				Forretningshaendelse: s.Draw(t, "fh"), Forretningsproces: s.Draw(t, "fp"), Forretningsomraade: s.Draw(t, "fo"),
			},
			Before:  genImage(2).Draw(t, "before"),
			After:   genImage(2).Draw(t, "after"),
			Changed: genStrings().Draw(t, "changed"),
			Classification: history.Classification{Dataclassification: s.Draw(t, "dc"), Datacategory: s.Draw(t, "dcat"),
				Dataregulation: genStrings().Draw(t, "dr"), Sikkerhedsklassificering: s.Draw(t, "sk"), Redacted: genStrings().Draw(t, "red")},
			Trace:           history.Trace{TransactionID: s.Draw(t, "tx"), CorrelationID: s.Draw(t, "corr")},
			ObservedAt:      genTime().Draw(t, "observed"),
			SourceChangedAt: genTimePtr().Draw(t, "changedAt"),
			Integrity:       history.Integrity{ContentHash: s.Draw(t, "ch"), PrevContentHash: s.Draw(t, "pch")},
		}
		for range rapid.IntRange(0, 2).Draw(t, "supersedes") {
			e.Supersedes = append(e.Supersedes, history.Superseded{EventID: s.Draw(t, "seid"),
				RegistreringFra: genTime().Draw(t, "srf"), VirkningFra: genTime().Draw(t, "svf"), VirkningTil: genTimePtr().Draw(t, "svt")})
		}
		return e
	})
}

// canonical is the reference: encoding/json without HTML escaping.
func canonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
}

// TestAppendEventMatchesEncodingJSON: AppendEvent writes exactly what
// encoding/json writes (HTML escaping off), for random events.
func TestAppendEventMatchesEncodingJSON(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		e := genEvent().Draw(t, "event")
		want, wantErr := canonical(&e)
		got, err := history.AppendJSON(nil, &e)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("error %v, encoding/json: %v", err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendEvent differs from encoding/json:\ngot  %s\nwant %s", got, want)
		}
	})
}

func TestIsNumberLikeEncodingJSON(t *testing.T) {
	for _, n := range []string{"0", "-0", "01", "1.", ".5", "1e", "1e+", "-", "+1", "1.5e+07", "0.0e-0", "NaN", "12a", "١"} {
		_, want := json.Marshal(json.Number(n))
		_, got := history.AppendValue(nil, json.Number(n))
		if (got == nil) != (want == nil) {
			t.Errorf("json.Number(%q): AppendValue error %v, encoding/json error %v", n, got, want)
		}
	}
}

func TestAppendValueUnsupported(t *testing.T) {
	for _, v := range []any{math.NaN(), math.Inf(1), map[string]any{"x": []any{math.Inf(-1)}}, make(chan int)} {
		if _, err := history.AppendValue(nil, v); err == nil {
			t.Errorf("history.AppendValue(%v) succeeded", v)
		}
	}
}

// TestEventShape fails when history.Event gains or loses a field, so that
// AppendEvent is updated with it (the random test only sees fields it
// sets).
func TestEventShape(t *testing.T) {
	fields := map[reflect.Type]int{
		reflect.TypeFor[history.Event]():          22, // with Raw, beforeJSON, afterJSON: not fields of the event
		reflect.TypeFor[history.SourceRef]():      5,
		reflect.TypeFor[history.ObjectRef]():      4,
		reflect.TypeFor[history.Superseded]():     4,
		reflect.TypeFor[history.Bitemporal]():     11,
		reflect.TypeFor[history.Classification](): 5,
		reflect.TypeFor[history.Trace]():          2,
		reflect.TypeFor[history.Integrity]():      2,
	}
	for typ, n := range fields {
		if typ.NumField() != n {
			t.Errorf("%v has %d fields, AppendEvent knows %d: update history/json.go and this test", typ, typ.NumField(), n)
		}
	}
}

func BenchmarkData(b *testing.B) {
	e := history.Event{SchemaVersion: "1.0", EventID: "0b6bd2b5-8c0e-5a8b-9f43-1c7e6b7d8a9f", Sequence: 1, Operation: history.OpUpdate}
	e.After = map[string]any{}
	e.Before = map[string]any{}
	for _, k := range []string{"id", "givenName", "surname", "mail", "phone", "title", "department", "unit", "manager", "startDate", "costCenter", "location"} {
		e.After[k] = "some value of " + k
		e.Before[k] = "some value of " + k
	}
	b.Run("AppendEvent", func(b *testing.B) {
		buf := make([]byte, 0, 4096)
		for b.Loop() {
			buf, _ = history.AppendJSON(buf[:0], &e)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(&e)
		}
	})
}
