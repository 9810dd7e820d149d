package main

import (
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/testenv"
)

// The tests here run the real binary with a fordeler receiver: over AMQP
// to a throwaway RabbitMQ node (testenv.NewRabbitMQ), and over HTTP to a
// net/http server in this test. What arrived is compared with the
// organisation file receiver, which has the same classification ceiling
// and no filter, so it sees the same events with the same bytes.

// withFordelerAMQP adds an AMQP fordeler receiver named "bf" that
// declares exchange bf.ex and queue bf.q itself; its password comes from
// secret (a ${env:...} or ${file:...} reference). extra are more lines.
func withFordelerAMQP(mq *testenv.RabbitMQ, secret string, extra ...string) func(string) string {
	return func(s string) string {
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += `  - name: bf
    type: fordeler
    transport: amqp
    format: haendelsesbesked
    start: beginning
    classification: internal
    amqp:
      url: amqp://` + mq.Addr() + `/
      username: ` + mq.User + `
      password: ` + secret + `
      exchange: bf.ex
      declare: {exchange_type: topic, queue: bf.q}
    haendelsesbesked:
      beskedtype: {"*": "2b1d7f4e-9a1c-4e7b-8d3f-5a6b7c8d9e0f"}
      besked_ansvarlig_aktoer: "7c2f1a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"
      objekt_ansvarlig_myndighed: "urn:oio:cvr-nr:29189846"
      relateret_objekt: [{field: enhed, objekt_type: "urn:connector:objekttype:OrganisationEnhed"}]
`
		for _, l := range extra {
			s += "    " + l + "\n"
		}
		return s
	}
}

// besked is what the tests read of a Haendelsesbesked.
type besked struct {
	ID struct {
		UUID string `xml:"urn:oio:sagdok:3.0.0 UUIDIdentifikator"`
	} `xml:"urn:oio:besked:kuvert:1.0 BeskedId"`
	Related []struct {
		ID struct {
			UUID string `xml:"urn:oio:sagdok:3.0.0 UUIDIdentifikator"`
		} `xml:"urn:oio:besked:kuvert:1.0 ObjektId"`
	} `xml:"urn:oio:besked:kuvert:1.0 Beskedkuvert>Filtreringsdata>RelateretObjekt"`
	Data string `xml:"urn:oio:besked:kuvert:1.0 Beskeddata"`
}

// checkBeskeder checks that the messages carry the log: every event, the
// first copies in sequence order, duplicates identical, each Beskeddata
// the event's bytes as the file receiver wrote them. It returns the
// number of duplicates.
func checkBeskeder(t *testing.T, msgs []amqp.Delivery, log []line) int {
	t.Helper()
	firsts := publishtest.FirstCopies(t, len(msgs), func(i int) (string, []byte) { return msgs[i].MessageId, msgs[i].Body })
	if len(firsts) > len(log) {
		t.Fatalf("more distinct messages than the %d events", len(log))
	}
	next, related := 0, 0
	for _, i := range firsts {
		d := msgs[i]
		want := log[next]
		next++
		var b besked
		if err := xml.Unmarshal(d.Body, &b); err != nil {
			t.Fatalf("message %s is not a Haendelsesbesked: %v", d.MessageId, err)
		}
		if d.MessageId != want.ev.EventID || b.ID.UUID != want.ev.EventID {
			t.Fatalf("message %d: id %s / BeskedId %s, want event %s (sequence %d)", next-1, d.MessageId, b.ID.UUID, want.ev.EventID, want.ev.Sequence)
		}
		if b.Data != want.raw {
			t.Fatalf("event %d: Beskeddata differs from the file receiver's line\n%s\n%s", want.ev.Sequence, b.Data, want.raw)
		}
		if want.ev.Object.Type == "Bruger" && want.ev.Operation != "delete" {
			if len(b.Related) != 1 || b.Related[0].ID.UUID == "" {
				t.Fatalf("event %d: Bruger without its RelateretObjekt (enhed): %+v", want.ev.Sequence, b.Related)
			}
			related++
		}
		if want.ev.Operation == "delete" && want.ev.Before == nil {
			t.Fatalf("event %d: a delete without its before image", want.ev.Sequence)
		}
		if d.DeliveryMode != amqp.Persistent || d.ContentType != "application/xml" {
			t.Fatalf("message %s: delivery mode %d, content type %q", d.MessageId, d.DeliveryMode, d.ContentType)
		}
	}
	if next != len(log) {
		t.Fatalf("%d distinct messages for %d events", next, len(log))
	}
	if related == 0 {
		t.Fatal("no RelateretObjekt at all")
	}
	return len(msgs) - next
}

func TestFordelerAMQPDemo(t *testing.T) {
	mq := testenv.NewRabbitMQ(t, testenv.RabbitMQOptions{})
	dir := demoDir(t, withFordelerAMQP(mq, "${env:BF_AMQP_PASSWORD}"))
	t.Setenv("BF_AMQP_PASSWORD", mq.Password) // status reads the config too
	var env []string
	r := runEnv(t, dir, env, "check", "-c", "demo.yaml")
	if r.code != 0 || !strings.Contains(r.stdout, "receiver bf") {
		t.Fatalf("check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runEnv(t, dir, env, "run", "--once", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("run --once: exit %d\n%s", r.code, r.stderr)
	} else if strings.Contains(r.stderr, mq.Password) {
		t.Fatal("the password shows in the agent's log")
	}
	rep := statusOf(t, dir)
	log := deliveredLog(t, dir)
	if br := receiverOf(t, rep, "bf"); br.Cursor != rep.LogLength || br.DeadLetters != 0 || br.LastError != "" {
		t.Fatalf("bf receiver after run --once: %+v", br)
	}
	msgs := mq.Drain(t, "bf.q")
	if dups := checkBeskeder(t, msgs, log); dups != 0 {
		t.Fatalf("%d duplicates; an undisturbed run delivers each event once", dups)
	}
	// A wrong password fails check with the fix, not the secret.
	r = runEnv(t, dir, []string{"BF_AMQP_PASSWORD=wrong-Pw-9"}, "check", "-c", "demo.yaml")
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "amqp.password") || strings.Contains(r.stdout+r.stderr, "wrong-Pw-9") {
		t.Fatalf("check with a wrong password: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("%d events, %d messages", len(log), len(msgs))
}

// TestFordelerAMQPKill9 is TestKafkaKill9 for the AMQP fordeler receiver:
// the agent is SIGKILLed at random moments while it publishes, restarted
// each time, and finished with run --once. The queue must then hold every
// event, first copies in sequence order, duplicates identical.
func TestFordelerAMQPKill9(t *testing.T) {
	mq := testenv.NewRabbitMQ(t, testenv.RabbitMQOptions{})
	secret := filepath.Join(t.TempDir(), "amqp-password")
	writeFile(t, secret, mq.Password+"\n")
	bf := withFordelerAMQP(mq, "${file:"+secret+"}", "batch: 3", "rate: 50", "timeout: 3s", "retry: {initial: 50ms, max: 500ms}")
	dir := demoDir(t, withSmallOrgBatch(t, bf))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))
	// At 50 events/s the demo's 625 events take about 12 s of delivery,
	// so each of the 12 runs (0.7–2 s) ends mid-delivery; a kill counts
	// once the run has saved its cursor (after a second of delivery).
	const kills = 12
	midDelivery := killDuringDelivery(t, dir, "bf", kills, func(int) time.Duration {
		return time.Duration(700+rng.IntN(1300)) * time.Millisecond
	})
	if r := run(t, dir, "run", "--once", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("final run: %s", r.stderr)
	}
	rep := statusOf(t, dir)
	log := deliveredLog(t, dir)
	if br := receiverOf(t, rep, "bf"); br.Cursor != rep.LogLength || br.DeadLetters != 0 {
		t.Fatalf("bf receiver after the final run: %+v", br)
	}
	msgs := mq.Drain(t, "bf.q")
	dups := checkBeskeder(t, msgs, log)
	if midDelivery < 3 {
		t.Errorf("only %d of %d kills hit the receiver mid-delivery; the test no longer tests what it says", midDelivery, kills)
	}
	t.Logf("%d kills (%d mid-delivery); %d events; %d messages, %d duplicates, all identical", kills, midDelivery, len(log), len(msgs), dups)
}

// TestFordelerHTTPDemo delivers the demo as CloudEvents batches to an
// HTTPS endpoint that refuses the first request with 503 and Retry-After.
func TestFordelerHTTPDemo(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	requests := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodPost {
			return // connector check's OPTIONS
		}
		requests++
		if requests == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("Authorization") != "Bearer tok-1" || r.Header.Get("Content-Type") != "application/cloudevents-batch+json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		bodies = append(bodies, b)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	dir := demoDir(t, func(s string) string {
		return s + `  - name: push
    type: fordeler
    transport: http
    start: beginning
    classification: internal
    batch: 100
    http: {url: "` + srv.URL + `/events", mode: batch, bearer_token: "${env:PUSH_TOKEN}"}
    tls: {ca_file: "` + ca + `"}
`
	})
	t.Setenv("PUSH_TOKEN", "tok-1")
	var env []string
	if r := runEnv(t, dir, env, "check", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("check: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runEnv(t, dir, env, "run", "--once", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("run --once: exit %d\n%s", r.code, r.stderr)
	}
	log := deliveredLog(t, dir)
	var got []string
	for _, b := range bodies {
		var docs []struct {
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(b, &docs); err != nil {
			t.Fatalf("batch: %v", err)
		}
		for _, d := range docs {
			got = append(got, d.ID)
			if want := log[len(got)-1]; d.ID != want.ev.EventID || string(d.Data) != want.raw {
				t.Fatalf("event %d: %s, want %s with the file receiver's bytes", len(got), d.ID, want.ev.EventID)
			}
		}
	}
	if len(got) != len(log) {
		t.Fatalf("%d events arrived, the log has %d", len(got), len(log))
	}
	rep := statusOf(t, dir)
	if pr := receiverOf(t, rep, "push"); pr.Cursor != rep.LogLength || pr.DeadLetters != 0 {
		t.Fatalf("push receiver: %+v", pr)
	}
	t.Logf("%d events in %d batches after one 503", len(got), len(bodies))
}
