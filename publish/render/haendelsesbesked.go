package render

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/os2sandbox/connector/history"
)

// Haendelsesbesked namespaces: the Beskedfordeler's envelope and the
// OIO sagdok types its identifiers and timestamps are made of.
const (
	NamespaceKuvert = "urn:oio:besked:kuvert:1.0"
	NamespaceSagdok = "urn:oio:sagdok:3.0.0"
	// ContentTypeXML is the content type of a rendered Haendelsesbesked.
	ContentTypeXML = "application/xml"
	// DefaultBeskedVersion is the envelope's BeskedVersion unless configured.
	DefaultBeskedVersion = "1.0"
)

// Besked renders events as the Danish Beskedfordeler's Haendelsesbesked
// (docs/receivers/fordeler.md says which parts follow the published
// envelope and which are this project's reading of it). A Besked is
// configured once per receiver and is safe for concurrent use.
type Besked struct {
	// InstallationID is the agent installation's UUID: the namespace of
	// ObjektRegistreringId, as of the events' ids, and part of the default
	// Kildesystem.
	InstallationID string
	// Version is BeskedVersion; DefaultBeskedVersion when empty.
	Version string
	// Beskedtype maps "Type.operation", "Type" or "*" (tried in that order)
	// to the Beskedtype id the Beskedfordeler has registered.
	Beskedtype map[string]string
	// BeskedAnsvarligAktoer is the id (UUID or URN) of who answers for the
	// messages, e.g. the municipality's organisation UUID.
	BeskedAnsvarligAktoer string
	// ObjektAnsvarligMyndighed is the authority responsible for the
	// objects, e.g. urn:oio:cvr-nr:29189846.
	ObjektAnsvarligMyndighed string
	// TilladtModtager, when set, limits who may receive the messages.
	TilladtModtager []string
	// ObjektType maps an object type to its ObjektType id; an unmapped
	// type is urn:connector:objekttype:<type>.
	ObjektType map[string]string
	// ObjektHandling maps an operation (or operation:changeKind, tried
	// first) to its ObjektHandling id; unmapped it is
	// urn:connector:handling:<operation>[:<changeKind>].
	ObjektHandling map[string]string
	// OpgaveEmne maps an object type (or "*") to its KLE task subject,
	// e.g. "85.02.02"; none when unmapped.
	OpgaveEmne map[string]string
	// Related lists related objects taken from the object's image.
	Related []Related
	// Kildesystem is the source system's id; the CloudEvents source
	// (urn:connector:<installation>:<source id>) when empty.
	Kildesystem string
}

// Related names a field of the object's image that holds the id of a
// related object (e.g. a user's organisation unit) and that object's
// ObjektType id.
type Related struct {
	Field      string
	ObjektType string
}

// NeedsImages reports whether rendering reads the events' Before and After
// (for Related); otherwise the events' JSON and heads suffice.
func (b *Besked) NeedsImages() bool { return len(b.Related) > 0 }

// The envelope, in the element order of the published Haendelsesbesked.
// Prefixed names (kuvert:, sagdok:) are declared on the root element.
type haendelsesbesked struct {
	XMLName      xml.Name `xml:"kuvert:Haendelsesbesked"`
	XmlnsKuvert  string   `xml:"xmlns:kuvert,attr"`
	XmlnsSagdok  string   `xml:"xmlns:sagdok,attr"`
	BeskedID     uuidRef  `xml:"kuvert:BeskedId"`
	BeskedVersio string   `xml:"kuvert:BeskedVersion"`
	Kuvert       kuvert   `xml:"kuvert:Beskedkuvert"`
	Data         data     `xml:"kuvert:Beskeddata"`
}

type kuvert struct {
	Filtreringsdata      filtreringsdata      `xml:"kuvert:Filtreringsdata"`
	Leveranceinformation leveranceinformation `xml:"kuvert:Leveranceinformation"`
}

type filtreringsdata struct {
	Beskedtype            unikID             `xml:"kuvert:Beskedtype"`
	BeskedAnsvarligAktoer *unikID            `xml:"kuvert:BeskedAnsvarligAktoer,omitempty"`
	TilladtModtager       []unikID           `xml:"kuvert:TilladtModtager"`
	RelateretObjekt       []relateretObjekt  `xml:"kuvert:RelateretObjekt"`
	ObjektRegistrering    objektRegistrering `xml:"kuvert:ObjektRegistrering"`
}

type relateretObjekt struct {
	ObjektID   unikID `xml:"kuvert:ObjektId"`
	ObjektType unikID `xml:"kuvert:ObjektType"`
}

type objektRegistrering struct {
	ObjektRegistreringID     uuidRef    `xml:"kuvert:ObjektRegistreringId"`
	RegistreringsAktoer      *unikID    `xml:"kuvert:RegistreringsAktoer,omitempty"`
	Registreringstidspunkt   tidspunkt  `xml:"kuvert:Registreringstidspunkt"`
	ObjektAnsvarligMyndighed *unikID    `xml:"kuvert:ObjektAnsvarligMyndighed,omitempty"`
	ObjektID                 unikID     `xml:"kuvert:ObjektId"`
	ObjektType               unikID     `xml:"kuvert:ObjektType"`
	ObjektHandling           unikID     `xml:"kuvert:ObjektHandling"`
	OpgaveEmne               string     `xml:"kuvert:OpgaveEmne,omitempty"`
	GyldighedFra             tidspunkt  `xml:"kuvert:GyldighedFra"`
	GyldighedTil             *tidspunkt `xml:"kuvert:GyldighedTil,omitempty"`
}

type leveranceinformation struct {
	Dannelsestidspunkt       tidspunkt `xml:"kuvert:Dannelsestidspunkt"`
	TransaktionsID           *unikID   `xml:"kuvert:TransaktionsId,omitempty"`
	Kildesystem              unikID    `xml:"kuvert:Kildesystem"`
	Sikkerhedsklassificering *unikID   `xml:"kuvert:Sikkerhedsklassificering,omitempty"`
}

// unikID is sagdok's UnikIdType: a UUID or, for anything else, a URN.
type unikID struct {
	UUID string `xml:"sagdok:UUIDIdentifikator,omitempty"`
	URN  string `xml:"sagdok:URNIdentifikator,omitempty"`
}

type uuidRef struct {
	UUID string `xml:"sagdok:UUIDIdentifikator"`
}

type tidspunkt struct {
	Tid string `xml:"sagdok:TidsstempelDatoTid"`
}

type data struct {
	JSON string `xml:",cdata"`
}

// ident renders an id as UUIDIdentifikator when it is a UUID, else as
// URNIdentifikator.
func ident(v string) unikID {
	if u, err := uuid.Parse(v); err == nil && len(v) == 36 {
		return unikID{UUID: u.String()}
	}
	return unikID{URN: v}
}

func optIdent(v string) *unikID {
	if v == "" {
		return nil
	}
	id := ident(v)
	return &id
}

func at(t history.Time) tidspunkt { return tidspunkt{Tid: t.String()} }

// ObjektRegistreringID is the id of e's registration: UUIDv5 in the
// installation's namespace over object id "," registreringFra.
func (b *Besked) ObjektRegistreringID(e *history.Event) (string, error) {
	ns, err := uuid.Parse(b.InstallationID)
	if err != nil {
		return "", fmt.Errorf("installation id %q is not a UUID: %w", b.InstallationID, err)
	}
	return uuid.NewSHA1(ns, []byte(e.Object.ID+","+e.Bitemporal.RegistreringFra.String())).String(), nil
}

// ErrNoBeskedtype is returned when no Beskedtype is configured for an
// event's object type and operation.
var ErrNoBeskedtype = errors.New("no beskedtype configured")

// BeskedtypeOf returns the Beskedtype id of e's object type and operation.
func (b *Besked) BeskedtypeOf(e *history.Event) (string, error) {
	for _, k := range [...]string{e.Object.Type + "." + e.Operation, e.Object.Type, "*"} {
		if v, ok := b.Beskedtype[k]; ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%w for %s.%s (nor for %s or *)", ErrNoBeskedtype, e.Object.Type, e.Operation, e.Object.Type)
}

// Haendelsesbesked appends the Haendelsesbesked of e to dst: an XML
// document whose Beskeddata is e's canonical JSON as CDATA. On error dst
// is returned as it was.
func (b *Besked) Haendelsesbesked(dst []byte, e *history.Event) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		return dst, fmt.Errorf("render event %s (sequence %d) as Haendelsesbesked: %w", e.EventID, e.Sequence, err)
	}
	typ, err := b.BeskedtypeOf(e)
	if err != nil {
		return fail(err)
	}
	regID, err := b.ObjektRegistreringID(e)
	if err != nil {
		return fail(err)
	}
	js, err := Data(e)
	if err != nil {
		return fail(err)
	}
	version := b.Version
	if version == "" {
		version = DefaultBeskedVersion
	}
	kilde := b.Kildesystem
	if kilde == "" {
		kilde = "urn:connector:" + b.InstallationID + ":" + e.Source.ID
	}
	objType, ok := b.ObjektType[e.Object.Type]
	if !ok {
		objType = "urn:connector:objekttype:" + e.Object.Type
	}
	opgave, ok := b.OpgaveEmne[e.Object.Type]
	if !ok {
		opgave = b.OpgaveEmne["*"]
	}
	m := haendelsesbesked{
		XmlnsKuvert:  NamespaceKuvert,
		XmlnsSagdok:  NamespaceSagdok,
		BeskedID:     uuidRef{e.EventID},
		BeskedVersio: version,
		Kuvert: kuvert{
			Filtreringsdata: filtreringsdata{
				Beskedtype:            ident(typ),
				BeskedAnsvarligAktoer: optIdent(b.BeskedAnsvarligAktoer),
				ObjektRegistrering: objektRegistrering{
					ObjektRegistreringID:     uuidRef{regID},
					RegistreringsAktoer:      optIdent(e.Bitemporal.Registreringsaktoer),
					Registreringstidspunkt:   at(e.Bitemporal.RegistreringFra),
					ObjektAnsvarligMyndighed: optIdent(b.ObjektAnsvarligMyndighed),
					ObjektID:                 ident(e.Object.ID),
					ObjektType:               ident(objType),
					ObjektHandling:           ident(b.handling(e)),
					OpgaveEmne:               opgave,
					GyldighedFra:             at(e.Bitemporal.VirkningFra),
				},
			},
			Leveranceinformation: leveranceinformation{
				Dannelsestidspunkt:       at(e.ObservedAt),
				TransaktionsID:           optIdent(e.Trace.TransactionID),
				Kildesystem:              ident(kilde),
				Sikkerhedsklassificering: optIdent(e.Classification.Sikkerhedsklassificering),
			},
		},
		Data: data{JSON: string(xmlSafeJSON(js))},
	}
	if t := e.Bitemporal.VirkningTil; t != nil {
		m.Kuvert.Filtreringsdata.ObjektRegistrering.GyldighedTil = &tidspunkt{t.String()}
	}
	for _, r := range b.TilladtModtager {
		m.Kuvert.Filtreringsdata.TilladtModtager = append(m.Kuvert.Filtreringsdata.TilladtModtager, ident(r))
	}
	for _, r := range b.Related {
		img := e.After
		if img == nil {
			img = e.Before
		}
		if v, ok := img[r.Field].(string); ok && v != "" {
			m.Kuvert.Filtreringsdata.RelateretObjekt = append(m.Kuvert.Filtreringsdata.RelateretObjekt,
				relateretObjekt{ObjektID: ident(v), ObjektType: ident(r.ObjektType)})
		}
	}
	buf := bytes.NewBuffer(dst)
	buf.WriteString(xml.Header)
	if err := xml.NewEncoder(buf).Encode(&m); err != nil {
		return fail(err)
	}
	return buf.Bytes(), nil
}

// handling is the ObjektHandling id of e.
func (b *Besked) handling(e *history.Event) string {
	full := e.Operation
	if e.ChangeKind == history.KindKorrektion || e.ChangeKind == history.KindAnnullering {
		full += ":" + e.ChangeKind
	}
	if v, ok := b.ObjektHandling[full]; ok {
		return v
	}
	if v, ok := b.ObjektHandling[e.Operation]; ok {
		return v
	}
	return "urn:connector:handling:" + full
}

// xmlSafeJSON returns js with every character XML 1.0 does not allow
// written as a JSON \u escape, which JSON reads as the same string (such
// characters can only occur inside JSON strings). Invalid UTF-8 is left to
// the XML encoder. Most events have none: js is returned as it is.
func xmlSafeJSON(js []byte) []byte {
	i := 0
	for i < len(js) {
		r, n := utf8.DecodeRune(js[i:])
		if !xmlChar(r) && r != utf8.RuneError {
			break
		}
		i += n
	}
	if i == len(js) {
		return js
	}
	out := append(make([]byte, 0, len(js)+12), js[:i]...)
	for i < len(js) {
		r, n := utf8.DecodeRune(js[i:])
		if xmlChar(r) || r == utf8.RuneError {
			out = append(out, js[i:i+n]...)
		} else {
			out = appendUEscape(out, r)
		}
		i += n
	}
	return out
}

// appendUEscape appends r, a rune of the Basic Multilingual Plane (every
// character XML refuses is one), as a JSON \u escape.
func appendUEscape(dst []byte, r rune) []byte {
	s := strconv.FormatInt(int64(r), 16)
	dst = append(dst, `\u`...)
	for range 4 - len(s) {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

// xmlChar reports whether r is a Char of XML 1.0.
func xmlChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}
