package render

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/os2sandbox/connector/history"
)

const testInstallation = "3f1e8a52-6c1d-4b7a-9e0f-2a4b6c8d0e1f"

// besked is a fully configured renderer.
func besked() *Besked {
	return &Besked{
		InstallationID:           testInstallation,
		Beskedtype:               map[string]string{"OrganisationEnhed.delete": "11111111-2222-4333-8444-555555555555", "*": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"},
		BeskedAnsvarligAktoer:    "b0b0b0b0-1111-4222-8333-444444444444",
		ObjektAnsvarligMyndighed: "urn:oio:cvr-nr:29189846",
		TilladtModtager:          []string{"urn:oio:cvr-nr:11111111", "c1c1c1c1-1111-4222-8333-444444444444"},
		ObjektType:               map[string]string{"OrganisationEnhed": "d2d2d2d2-1111-4222-8333-444444444444"},
		ObjektHandling:           map[string]string{"update": "e3e3e3e3-1111-4222-8333-444444444444", "update:korrektion": "f5f5f5f5-1111-4222-8333-444444444444"},
		OpgaveEmne:               map[string]string{"*": "85.02.02"},
		Related:                  []Related{{Field: "parent", ObjektType: "urn:connector:objekttype:OrganisationEnhed"}},
	}
}

// flatten reads an XML document into element path → text values, paths
// made of namespace-resolved local names ("{ns}Name/..."); it fails the
// test when the document is not well-formed.
func flatten(t *testing.T, doc []byte) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	d := xml.NewDecoder(bytes.NewReader(doc))
	var path []string
	var text strings.Builder
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if tok.Name.Space != NamespaceKuvert && tok.Name.Space != NamespaceSagdok {
				t.Errorf("element %s in namespace %q", tok.Name.Local, tok.Name.Space)
			}
			prefix := "k:"
			if tok.Name.Space == NamespaceSagdok {
				prefix = "s:"
			}
			path = append(path, prefix+tok.Name.Local)
			text.Reset()
		case xml.CharData:
			text.Write(tok)
		case xml.EndElement:
			p := strings.Join(path, "/")
			if v := strings.TrimSpace(text.String()); v != "" {
				out[p] = append(out[p], text.String())
			} else {
				out[p] = append(out[p], "")
			}
			text.Reset()
			path = path[:len(path)-1]
		}
	}
	return out
}

const (
	root = "k:Haendelsesbesked/"
	filt = root + "k:Beskedkuvert/k:Filtreringsdata/"
	reg  = filt + "k:ObjektRegistrering/"
	lev  = root + "k:Beskedkuvert/k:Leveranceinformation/"
)

func TestHaendelsesbesked(t *testing.T) {
	del := event(history.OpDelete, 9)
	del.Bitemporal.VirkningTil = history.Ptr(t0)
	korr := event(history.OpUpdate, 10)
	korr.ChangeKind = history.KindKorrektion
	korr.Supersedes = []history.Superseded{{EventID: "0e0e0e0e-1111-4222-8333-444444444444", RegistreringFra: history.At(t0.Add(-time.Hour)), VirkningFra: history.At(t0.Add(-2 * time.Hour))}}
	special := event(history.OpCreate, 11)
	special.Object.ID = `a<b>&"c'd`
	special.After = map[string]any{"name": "x]]>y <&> \uffff æøå", "parent": "f4f4f4f4-1111-4222-8333-444444444444"}
	special.Bitemporal.Registreringsaktoer = "c0ffee00-1111-4222-8333-444444444444"
	special.Classification.Sikkerhedsklassificering = "urn:kombit:sikkerhed:fortrolig"
	special.Trace.TransactionID = "5e5e5e5e-1111-4222-8333-444444444444"

	tests := []struct {
		name string
		e    history.Event
		want map[string]string // path → the one value it must have; "-" absent
	}{
		{"create", event(history.OpCreate, 1), map[string]string{
			filt + "k:Beskedtype/s:UUIDIdentifikator":        "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
			reg + "k:ObjektHandling/s:URNIdentifikator":      "urn:connector:handling:create",
			reg + "k:ObjektId/s:URNIdentifikator":            "e1",
			reg + "k:GyldighedTil":                           "-",
			lev + "k:Sikkerhedsklassificering":               "-",
			lev + "k:TransaktionsId/s:URNIdentifikator":      "tx-771",
			reg + "k:RegistreringsAktoer/s:URNIdentifikator": "connector",
			filt + "k:RelateretObjekt":                       "-",
		}},
		{"delete", del, map[string]string{
			filt + "k:Beskedtype/s:UUIDIdentifikator":             "11111111-2222-4333-8444-555555555555",
			reg + "k:ObjektHandling/s:URNIdentifikator":           "urn:connector:handling:delete",
			reg + "k:GyldighedFra/s:TidsstempelDatoTid":           del.Bitemporal.VirkningFra.String(),
			reg + "k:GyldighedTil/s:TidsstempelDatoTid":           "2024-03-01T08:30:00.123456Z",
			reg + "k:Registreringstidspunkt/s:TidsstempelDatoTid": "2024-03-01T08:30:00.123456Z",
		}},
		{"update", event(history.OpUpdate, 2), map[string]string{
			reg + "k:ObjektHandling/s:UUIDIdentifikator": "e3e3e3e3-1111-4222-8333-444444444444",
		}},
		{"korrektion", korr, map[string]string{
			reg + "k:ObjektHandling/s:UUIDIdentifikator": "f5f5f5f5-1111-4222-8333-444444444444",
		}},
		{"special characters", special, map[string]string{
			reg + "k:ObjektId/s:URNIdentifikator":                      `a<b>&"c'd`,
			reg + "k:RegistreringsAktoer/s:UUIDIdentifikator":          "c0ffee00-1111-4222-8333-444444444444",
			lev + "k:Sikkerhedsklassificering/s:URNIdentifikator":      "urn:kombit:sikkerhed:fortrolig",
			lev + "k:TransaktionsId/s:UUIDIdentifikator":               "5e5e5e5e-1111-4222-8333-444444444444",
			filt + "k:RelateretObjekt/k:ObjektId/s:UUIDIdentifikator":  "f4f4f4f4-1111-4222-8333-444444444444",
			filt + "k:RelateretObjekt/k:ObjektType/s:URNIdentifikator": "urn:connector:objekttype:OrganisationEnhed",
		}},
	}
	b := besked()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.e
			doc, err := b.Haendelsesbesked([]byte("prefix"), &e)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(doc, []byte("prefix<?xml")) {
				t.Fatalf("not appended to dst: %.40q", doc)
			}
			got := flatten(t, doc[len("prefix"):])
			wantReg, _ := b.ObjektRegistreringID(&e)
			common := map[string]string{
				root + "k:BeskedId/s:UUIDIdentifikator":               e.EventID,
				root + "k:BeskedVersion":                              "1.0",
				filt + "k:BeskedAnsvarligAktoer/s:UUIDIdentifikator":  "b0b0b0b0-1111-4222-8333-444444444444",
				reg + "k:ObjektRegistreringId/s:UUIDIdentifikator":    wantReg,
				reg + "k:ObjektAnsvarligMyndighed/s:URNIdentifikator": "urn:oio:cvr-nr:29189846",
				reg + "k:ObjektType/s:UUIDIdentifikator":              "d2d2d2d2-1111-4222-8333-444444444444",
				reg + "k:OpgaveEmne":                                  "85.02.02",
				reg + "k:Registreringstidspunkt/s:TidsstempelDatoTid": e.Bitemporal.RegistreringFra.String(),
				reg + "k:GyldighedFra/s:TidsstempelDatoTid":           e.Bitemporal.VirkningFra.String(),
				lev + "k:Dannelsestidspunkt/s:TidsstempelDatoTid":     e.ObservedAt.String(),
				lev + "k:Kildesystem/s:URNIdentifikator":              "urn:connector:" + testInstallation + ":" + e.Source.ID,
			}
			for p, v := range tt.want {
				common[p] = v
			}
			for p, want := range common {
				vs := got[p]
				switch {
				case want == "-" && len(vs) > 0:
					t.Errorf("%s present: %q", p, vs)
				case want != "-" && (len(vs) != 1 || vs[0] != want):
					t.Errorf("%s = %q, want %q", p, vs, want)
				}
			}
			if tm := got[filt+"k:TilladtModtager/s:URNIdentifikator"]; len(tm) != 1 || tm[0] != "urn:oio:cvr-nr:11111111" {
				t.Errorf("TilladtModtager URNs = %q", tm)
			}
			if tm := got[filt+"k:TilladtModtager/s:UUIDIdentifikator"]; len(tm) != 1 || tm[0] != "c1c1c1c1-1111-4222-8333-444444444444" {
				t.Errorf("TilladtModtager UUIDs = %q", tm)
			}
			// Beskeddata is the canonical event: it decodes to the same event.
			data := got[root+"k:Beskeddata"]
			if len(data) != 1 {
				t.Fatalf("Beskeddata: %q", data)
			}
			var back history.Event
			if err := json.Unmarshal([]byte(data[0]), &back); err != nil {
				t.Fatalf("Beskeddata is not the event's JSON: %v\n%s", err, data[0])
			}
			assertSameEvent(t, e, back)
		})
	}
}

func TestHaendelsesbeskedElementOrder(t *testing.T) {
	e := event(history.OpUpdate, 1)
	doc, err := besked().Haendelsesbesked(nil, &e)
	if err != nil {
		t.Fatal(err)
	}
	// The order of the published envelope, then this project's additions
	// (OpgaveEmne, GyldighedFra) after ObjektHandling.
	order := []string{"BeskedId", "BeskedVersion", "Beskedkuvert", "Filtreringsdata", "Beskedtype", "BeskedAnsvarligAktoer",
		"TilladtModtager", "ObjektRegistrering", "ObjektRegistreringId", "RegistreringsAktoer", "Registreringstidspunkt",
		"ObjektAnsvarligMyndighed", "ObjektId", "ObjektType", "ObjektHandling", "OpgaveEmne", "GyldighedFra",
		"Leveranceinformation", "Dannelsestidspunkt", "TransaktionsId", "Kildesystem", "Beskeddata"}
	s := string(doc)
	last := -1
	for _, name := range order {
		i := strings.Index(s, "<kuvert:"+name+">")
		if i < 0 {
			t.Fatalf("no <kuvert:%s> in\n%s", name, s)
		}
		if i < last {
			t.Errorf("%s out of order", name)
		}
		last = i
	}
}

func TestHaendelsesbeskedErrors(t *testing.T) {
	e := event(history.OpCreate, 1)
	b := besked()
	b.Beskedtype = map[string]string{"Bruger": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"}
	if _, err := b.Haendelsesbesked(nil, &e); !errors.Is(err, ErrNoBeskedtype) || !strings.Contains(err.Error(), "OrganisationEnhed.create") {
		t.Errorf("unmapped type: %v", err)
	}
	b = besked()
	b.InstallationID = "not-a-uuid"
	if _, err := b.Haendelsesbesked(nil, &e); err == nil {
		t.Error("a bad installation id rendered")
	}
}

func TestObjektRegistreringID(t *testing.T) {
	e := event(history.OpUpdate, 1)
	b := besked()
	got, err := b.ObjektRegistreringID(&e)
	if err != nil {
		t.Fatal(err)
	}
	want := uuid.NewSHA1(uuid.MustParse(testInstallation), []byte("e1,2024-03-01T08:30:00.123456Z")).String()
	if got != want {
		t.Errorf("ObjektRegistreringID = %s, want %s", got, want)
	}
	e.Bitemporal.RegistreringFra = history.At(t0.Add(time.Microsecond))
	if again, _ := b.ObjektRegistreringID(&e); again == got {
		t.Error("another registration has the same id")
	}
}

func TestXMLSafeJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":"b"}`, `{"a":"b"}`},
		{"{\"a\":\"\uffff\"}", `{"a":"\uffff"}`},
		{"{\"a\":\"x\ufffey\u00e6\"}", "{\"a\":\"x\\ufffey\u00e6\"}"},
	}
	for _, tt := range tests {
		got := string(xmlSafeJSON([]byte(tt.in)))
		if got != tt.want {
			t.Errorf("xmlSafeJSON(%q) = %q, want %q", tt.in, got, tt.want)
		}
		var a, b any
		if json.Unmarshal([]byte(tt.in), &a) != nil || json.Unmarshal([]byte(got), &b) != nil {
			t.Fatalf("not JSON: %q / %q", tt.in, got)
		}
		if x, y := a.(map[string]any)["a"], b.(map[string]any)["a"]; x != y {
			t.Errorf("value changed: %q → %q", x, y)
		}
	}
}
