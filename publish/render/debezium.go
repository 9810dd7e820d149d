package render

import (
	"encoding/json"
	"fmt"

	"github.com/os2sandbox/connector/history"
)

// Debezium operation codes.
const (
	DebeziumCreate = "c"
	DebeziumUpdate = "u"
	DebeziumDelete = "d"
	DebeziumRead   = "r" // a snapshot row
)

// DebeziumEnvelope is the Debezium-compatible value of an event, as
// Debezium's JsonConverter writes it with schemas disabled: before, after,
// source, op and ts_ms where a Debezium consumer looks for them, and the
// canonical fields Debezium has no place for under "connector". Together
// they hold the whole canonical event.
type DebeziumEnvelope struct {
	Before    map[string]any    `json:"before"`
	After     map[string]any    `json:"after"`
	Source    DebeziumSource    `json:"source"`
	Op        string            `json:"op"`
	TsMs      int64             `json:"ts_ms"` // when the agent registered the change (observedAt)
	Connector DebeziumConnector `json:"connector"`
}

// DebeziumSource is Debezium's source block: connector is the source type
// (postgres, mysql, ldap, file), name the source's configured name, ts_ms
// the source's own change time (observedAt when the source has none). id,
// epoch and position are the canonical source fields Debezium lacks.
type DebeziumSource struct {
	Connector string `json:"connector"`
	Name      string `json:"name"`
	TsMs      int64  `json:"ts_ms"`
	Snapshot  string `json:"snapshot"` // "true" for a snapshot row, else "false"
	ID        string `json:"id"`
	Epoch     uint64 `json:"epoch"`
	Position  string `json:"position,omitempty"`
}

// DebeziumConnector carries the canonical fields that have no Debezium
// counterpart, under their canonical names.
type DebeziumConnector struct {
	SchemaVersion   string                 `json:"schemaVersion"`
	EventID         string                 `json:"eventId"`
	Sequence        uint64                 `json:"sequence"`
	Emission        string                 `json:"emission"`
	Object          history.ObjectRef      `json:"object"`
	Operation       string                 `json:"operation"`
	Reason          string                 `json:"reason,omitempty"`
	ChangeKind      string                 `json:"changeKind"`
	Supersedes      []history.Superseded   `json:"supersedes,omitempty"`
	Bitemporal      history.Bitemporal     `json:"bitemporal"`
	Changed         []string               `json:"changed"`
	Classification  history.Classification `json:"classification"`
	Trace           history.Trace          `json:"trace"`
	ObservedAt      history.Time           `json:"observedAt"`
	SourceChangedAt *history.Time          `json:"sourceChangedAt,omitempty"`
	Integrity       history.Integrity      `json:"integrity"`
}

// DebeziumOp maps a canonical operation to Debezium's op code. An undelete
// is a "c": to a Debezium consumer the object appears again.
func DebeziumOp(operation string) (string, error) {
	switch operation {
	case history.OpCreate, history.OpUndelete:
		return DebeziumCreate, nil
	case history.OpUpdate:
		return DebeziumUpdate, nil
	case history.OpDelete:
		return DebeziumDelete, nil
	case history.OpSnapshot:
		return DebeziumRead, nil
	}
	return "", fmt.Errorf("operation %q has no Debezium op code", operation)
}

// Debezium returns the Debezium-compatible envelope of e.
func Debezium(e *history.Event) (DebeziumEnvelope, error) {
	op, err := DebeziumOp(e.Operation)
	if err != nil {
		return DebeziumEnvelope{}, fmt.Errorf("render event %s (sequence %d) as Debezium: %w", e.EventID, e.Sequence, err)
	}
	changedAt := e.ObservedAt
	if e.SourceChangedAt != nil {
		changedAt = *e.SourceChangedAt
	}
	snapshot := "false"
	if e.Operation == history.OpSnapshot {
		snapshot = "true"
	}
	return DebeziumEnvelope{
		Before: e.Before,
		After:  e.After,
		Source: DebeziumSource{
			Connector: e.Source.Type,
			Name:      e.Source.Name,
			TsMs:      changedAt.UnixMilli(),
			Snapshot:  snapshot,
			ID:        e.Source.ID,
			Epoch:     e.Source.Epoch,
			Position:  e.Source.Position,
		},
		Op:   op,
		TsMs: e.ObservedAt.UnixMilli(),
		Connector: DebeziumConnector{
			SchemaVersion:   e.SchemaVersion,
			EventID:         e.EventID,
			Sequence:        e.Sequence,
			Emission:        e.Emission,
			Object:          e.Object,
			Operation:       e.Operation,
			Reason:          e.Reason,
			ChangeKind:      e.ChangeKind,
			Supersedes:      e.Supersedes,
			Bitemporal:      e.Bitemporal,
			Changed:         e.Changed,
			Classification:  e.Classification,
			Trace:           e.Trace,
			ObservedAt:      e.ObservedAt,
			SourceChangedAt: e.SourceChangedAt,
			Integrity:       e.Integrity,
		},
	}, nil
}

// DebeziumJSON returns the Debezium-compatible envelope of e as JSON.
func DebeziumJSON(e *history.Event) ([]byte, error) {
	env, err := Debezium(e)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("render event %s (sequence %d) as Debezium JSON: %w", e.EventID, e.Sequence, err)
	}
	return b, nil
}

// Event reassembles the canonical event from the envelope; it is the
// inverse of Debezium and shows that nothing is lost.
func (d DebeziumEnvelope) Event() history.Event {
	c := d.Connector
	return history.Event{
		SchemaVersion: c.SchemaVersion,
		EventID:       c.EventID,
		Sequence:      c.Sequence,
		Emission:      c.Emission,
		Source: history.SourceRef{
			Name:     d.Source.Name,
			Type:     d.Source.Connector,
			ID:       d.Source.ID,
			Epoch:    d.Source.Epoch,
			Position: d.Source.Position,
		},
		Object:          c.Object,
		Operation:       c.Operation,
		Reason:          c.Reason,
		ChangeKind:      c.ChangeKind,
		Supersedes:      c.Supersedes,
		Bitemporal:      c.Bitemporal,
		Before:          d.Before,
		After:           d.After,
		Changed:         c.Changed,
		Classification:  c.Classification,
		Trace:           c.Trace,
		ObservedAt:      c.ObservedAt,
		SourceChangedAt: c.SourceChangedAt,
		Integrity:       c.Integrity,
	}
}
