package history

import (
	"encoding/json"
	"fmt"
	"time"
)

// SchemaVersion is the version of the event contract (docs/events.md).
const SchemaVersion = "1.0"

// Operations.
const (
	OpCreate   = "create"
	OpUpdate   = "update"
	OpDelete   = "delete"
	OpUndelete = "undelete"
	OpSnapshot = "snapshot"
)

// Emissions: how an event reached a receiver.
const (
	EmissionLive      = "live"
	EmissionReplay    = "replay"
	EmissionBackfill  = "backfill"
	EmissionReconcile = "reconcile"
)

// Change kinds (Grunddata terms, folded to ASCII).
const (
	KindAendring    = "aendring"
	KindKorrektion  = "korrektion"
	KindAnnullering = "annullering"
	KindUoplyst     = "uoplyst"
)

// Delete and undelete reasons.
const (
	ReasonDeletedInSource       = "deleted-in-source"
	ReasonTombstone             = "tombstone"
	ReasonDisabled              = "disabled"
	ReasonMovedOutOfScope       = "moved-out-of-scope"
	ReasonMovedIntoScope        = "moved-into-scope"
	ReasonRestored              = "restored"
	ReasonReconciliationMissing = "reconciliation-missing"
	ReasonTruncated             = "truncated"
)

// Classification levels, lowest first (the CloudEvents labels).
var Levels = []string{"public", "internal", "confidential", "restricted"}

// Level returns the rank of a classification label, or -1.
func Level(label string) int {
	for i, l := range Levels {
		if l == label {
			return i
		}
	}
	return -1
}

// Event is the canonical data event, version 1 (docs/events.md). Every
// renderer (CloudEvents, Haendelsesbesked, Debezium envelope) projects it.
type Event struct {
	SchemaVersion   string         `json:"schemaVersion"`
	EventID         string         `json:"eventId"`
	Sequence        uint64         `json:"sequence"`
	Emission        string         `json:"emission"`
	Source          SourceRef      `json:"source"`
	Object          ObjectRef      `json:"object"`
	Operation       string         `json:"operation"`
	Reason          string         `json:"reason,omitempty"`
	ChangeKind      string         `json:"changeKind"`
	Supersedes      []Superseded   `json:"supersedes,omitempty"`
	Bitemporal      Bitemporal     `json:"bitemporal"`
	Before          map[string]any `json:"before"`
	After           map[string]any `json:"after"`
	Changed         []string       `json:"changed"`
	Classification  Classification `json:"classification"`
	Trace           Trace          `json:"trace"`
	ObservedAt      Time           `json:"observedAt"`
	SourceChangedAt *Time          `json:"sourceChangedAt,omitempty"`
	Integrity       Integrity      `json:"integrity"`

	// Raw is the event's canonical JSON (AppendJSON) as the log holds it.
	// The dispatcher sets it while the event is exactly what was logged
	// (not redacted, not a replay), so a receiver can send these bytes
	// instead of encoding the event again; whoever changes an event
	// clears it.
	Raw []byte `json:"-"`

	// beforeJSON and afterJSON, when set, are Before and After as
	// canonical JSON: the engine writes the images it stores as they are,
	// and DecodeEventHead keeps them so until Images.
	beforeJSON, afterJSON []byte
}

// Images decodes Before and After where DecodeEventHead kept them as
// JSON; for other events it does nothing. Call it before reading or
// changing them: until then the kept JSON is what is encoded.
func (e *Event) Images() error {
	if e.beforeJSON == nil && e.afterJSON == nil {
		return nil
	}
	before, err := decodeObject(e.beforeJSON)
	if err != nil {
		return fmt.Errorf("event %s: before: %w", e.EventID, err)
	}
	after, err := decodeObject(e.afterJSON)
	if err != nil {
		return fmt.Errorf("event %s: after: %w", e.EventID, err)
	}
	e.Before, e.After, e.beforeJSON, e.afterJSON = before, after, nil, nil
	return nil
}

// SourceRef says where an event came from.
type SourceRef struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	ID       string `json:"id"`
	Epoch    uint64 `json:"epoch"`
	Position string `json:"position,omitempty"`
}

// ObjectRef names the business object.
type ObjectRef struct {
	Type    string            `json:"type"`
	ID      string            `json:"id"`
	Keys    map[string]string `json:"keys,omitempty"`
	Version uint64            `json:"version"`
}

// Superseded is a registration a korrektion or annullering replaces.
type Superseded struct {
	EventID         string `json:"eventId"`
	RegistreringFra Time   `json:"registreringFra"`
	VirkningFra     Time   `json:"virkningFra"`
	VirkningTil     *Time  `json:"virkningTil"`
}

// Bitemporal carries registration time and valid time (dobbelthistorik).
type Bitemporal struct {
	RegistreringFra      Time   `json:"registreringFra"`
	RegistreringTil      *Time  `json:"registreringTil"`
	Registreringsaktoer  string `json:"registreringsaktoer"`
	VirkningFra          Time   `json:"virkningFra"`
	VirkningTil          *Time  `json:"virkningTil"`
	Virkningsaktoer      string `json:"virkningsaktoer"`
	VirkningKilde        string `json:"virkningKilde"`
	Status               string `json:"status,omitempty"`
	Forretningshaendelse string `json:"forretningshaendelse,omitempty"`
	Forretningsproces    string `json:"forretningsproces,omitempty"`
	Forretningsomraade   string `json:"forretningsomraade,omitempty"`
}

// Classification is the event's data classification.
type Classification struct {
	Dataclassification       string   `json:"dataclassification"`
	Datacategory             string   `json:"datacategory,omitempty"`
	Dataregulation           []string `json:"dataregulation,omitempty"`
	Sikkerhedsklassificering string   `json:"sikkerhedsklassificering,omitempty"`
	Redacted                 []string `json:"redacted,omitempty"`
}

// Trace ties events of one source transaction together.
type Trace struct {
	TransactionID string `json:"transactionId"`
	CorrelationID string `json:"correlationId,omitempty"`
}

// Integrity is the per-object content hash chain.
type Integrity struct {
	ContentHash     string `json:"contentHash"`
	PrevContentHash string `json:"prevContentHash,omitempty"`
}

// Time is a UTC timestamp rendered as RFC 3339 with microseconds.
type Time struct{ time.Time }

// TimeLayout is the event timestamp format.
const TimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// At wraps t, truncated to microseconds in UTC.
func At(t time.Time) Time { return Time{t.UTC().Truncate(time.Microsecond)} }

// Ptr returns a pointer to At(t).
func Ptr(t time.Time) *Time { v := At(t); return &v }

// MarshalJSON renders the timestamp in TimeLayout.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(TimeLayout) + `"`), nil
}

// UnmarshalJSON parses any RFC 3339 timestamp.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	*t = At(v)
	return nil
}

// String renders the timestamp in TimeLayout.
func (t Time) String() string { return t.UTC().Format(TimeLayout) }
