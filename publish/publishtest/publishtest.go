package publishtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
)

// Installation is the installation id the tests' receivers get.
const Installation = "0b6f1a52-5a0e-4c39-9d43-7f0c2a1e9b11"

var base = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// Event builds a canonical event: object typ/id of source at version,
// with sequence seq. The event id is derived from source and seq, as the
// agent derives it from the change, so a redelivery carries the same id.
// The images' names hold XML's special characters.
func Event(seq uint64, source, typ, id, op string, version uint64) history.Event {
	at := base.Add(time.Duration(seq) * time.Millisecond)
	e := history.Event{
		SchemaVersion: history.SchemaVersion,
		EventID:       uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%s/%d", source, seq)).String(),
		Sequence:      seq,
		Emission:      history.EmissionLive,
		Source:        history.SourceRef{Name: source, Type: "postgres", ID: "postgres://7301/" + source, Epoch: 1, Position: fmt.Sprintf("0/%X", seq)},
		Object:        history.ObjectRef{Type: typ, ID: id, Version: version},
		Operation:     op,
		ChangeKind:    history.KindAendring,
		Bitemporal: history.Bitemporal{
			RegistreringFra: history.At(at), Registreringsaktoer: "connector",
			VirkningFra: history.At(at), Virkningsaktoer: source, VirkningKilde: "commit-time",
		},
		Classification: history.Classification{Dataclassification: "internal"},
		Trace:          history.Trace{TransactionID: fmt.Sprintf("tx-%d", seq/10)},
		ObservedAt:     history.At(at.Add(time.Millisecond)),
		Integrity:      history.Integrity{ContentHash: fmt.Sprintf("h-%s-%d", id, version)},
	}
	img := map[string]any{"id": id, "name": Name(typ, id, version), "version": float64(version)}
	prev := map[string]any{"id": id, "name": Name(typ, id, version-1), "version": float64(version - 1)}
	switch op {
	case history.OpCreate, history.OpSnapshot, history.OpUndelete:
		e.After = img
	case history.OpUpdate:
		e.Before, e.After, e.Changed = prev, img, []string{"name", "version"}
	case history.OpDelete:
		e.Before, e.Reason = prev, history.ReasonDeletedInSource
	}
	return e
}

// Name is the "name" field of Event's image of object typ/id at version.
func Name(typ, id string, version uint64) string {
	return fmt.Sprintf("%s <&> %s v%d", typ, id, version)
}

// YAMLNode parses a receiver's config entry.
func YAMLNode(t testing.TB, text string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("test config: %v", err)
	}
	return doc.Content[0]
}

// NewLog is a logger for a receiver under test: it keeps every line,
// Debug too, and logs it through t.
func NewLog(t testing.TB) *capturetest.Log {
	return &capturetest.Log{T: t, KeepDebug: true}
}

// Open builds receiver name of type typ from config through the
// registered factory, as the dispatcher does, and closes it when t ends.
// A nil log is NewLog(t).
func Open(t testing.TB, typ, name string, log *capturetest.Log, config string) publish.Receiver {
	t.Helper()
	f, ok := publish.Lookup(typ)
	if !ok {
		t.Fatalf("receiver type %q is not registered", typ)
	}
	if log == nil {
		log = NewLog(t)
	}
	r, err := f(YAMLNode(t, config), publish.Options{Name: name, InstallationID: Installation, Log: log})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
