package fordeler

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/publish/render"
)

// beskeddata returns the canonical event a Haendelsesbesked carries.
func beskeddata(t *testing.T, body []byte) history.Event {
	t.Helper()
	var doc struct {
		XMLName xml.Name `xml:"urn:oio:besked:kuvert:1.0 Haendelsesbesked"`
		ID      struct {
			UUID string `xml:"urn:oio:sagdok:3.0.0 UUIDIdentifikator"`
		} `xml:"urn:oio:besked:kuvert:1.0 BeskedId"`
		Data string `xml:"urn:oio:besked:kuvert:1.0 Beskeddata"`
	}
	if err := xml.Unmarshal(body, &doc); err != nil {
		t.Fatalf("not a Haendelsesbesked: %v\n%s", err, body)
	}
	var e history.Event
	if err := json.Unmarshal([]byte(doc.Data), &e); err != nil {
		t.Fatalf("Beskeddata is not the event: %v", err)
	}
	if doc.ID.UUID != e.EventID {
		t.Errorf("BeskedId %s, event %s", doc.ID.UUID, e.EventID)
	}
	return e
}

// structuredEvent returns the canonical event a structured CloudEvent carries.
func structuredEvent(t *testing.T, body []byte) (map[string]any, history.Event) {
	t.Helper()
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	var e history.Event
	if err := json.Unmarshal(doc["data"], &e); err != nil {
		t.Fatalf("data is not the event: %v", err)
	}
	attrs := map[string]any{}
	for k, v := range doc {
		if k != "data" {
			var s any
			json.Unmarshal(v, &s)
			attrs[k] = s
		}
	}
	return attrs, e
}

func TestAMQPDeliver(t *testing.T) {
	for _, format := range []string{FormatHaendelsesbesked, FormatCloudEvents} {
		t.Run(format, func(t *testing.T) {
			ex, q := exchangeWithQueue(t)
			extra := []string{"format: " + format}
			if format == FormatHaendelsesbesked {
				extra = append(extra, bfBlock)
			}
			r := openReceiver(t, nil, amqpConfig(ex, extra...))
			events := batch(1, 300)
			events[7] = publishtest.Event(8, "hr", "Employee", "o3", history.OpDelete, 2)
			if err := r.Deliver(context.Background(), events); err != nil {
				t.Fatal(err)
			}
			got := mq.Drain(t, q)
			if len(got) != len(events) {
				t.Fatalf("%d messages in the queue, want %d", len(got), len(events))
			}
			for i, d := range got {
				want := &events[i]
				if d.MessageId != want.EventID {
					t.Fatalf("message %d: id %s, want %s (order)", i, d.MessageId, want.EventID)
				}
				if d.DeliveryMode != amqp.Persistent {
					t.Errorf("message %d: delivery mode %d, want persistent", i, d.DeliveryMode)
				}
				if wantKey := "Employee." + want.Operation; d.RoutingKey != wantKey {
					t.Errorf("message %d: routing key %q, want %q", i, d.RoutingKey, wantKey)
				}
				if !d.Timestamp.Equal(want.ObservedAt.Time.Truncate(time.Second)) {
					t.Errorf("message %d: timestamp %s, want %s", i, d.Timestamp, want.ObservedAt)
				}
				if d.Type != "dk.os2sandbox.connector.employee."+want.Operation {
					t.Errorf("message %d: type %q", i, d.Type)
				}
				var e history.Event
				switch format {
				case FormatHaendelsesbesked:
					if d.ContentType != render.ContentTypeXML {
						t.Errorf("content type %q", d.ContentType)
					}
					e = beskeddata(t, d.Body)
				case FormatCloudEvents:
					if d.ContentType != render.ContentTypeStructured {
						t.Errorf("content type %q", d.ContentType)
					}
					var attrs map[string]any
					attrs, e = structuredEvent(t, d.Body)
					if attrs["id"] != want.EventID || attrs["specversion"] != "1.0" || attrs["sequence"] != render.Sequence(want.Sequence) {
						t.Errorf("message %d: attributes %v", i, attrs)
					}
				}
				if e.EventID != want.EventID || e.Operation != want.Operation || e.Object.ID != want.Object.ID {
					t.Errorf("message %d carries %s %s %s, want %s %s %s", i, e.EventID, e.Operation, e.Object.ID, want.EventID, want.Operation, want.Object.ID)
				}
			}
			if e := beskeddataOrNil(t, format, got[7].Body); e != nil && (e.After != nil || e.Before["name"] != publishtest.Name("Employee", "o3", 1)) {
				t.Errorf("delete event carries before %v after %v", e.Before, e.After)
			}
		})
	}
}

func beskeddataOrNil(t *testing.T, format string, body []byte) *history.Event {
	if format != FormatHaendelsesbesked {
		return nil
	}
	e := beskeddata(t, body)
	return &e
}

// TestAMQPUnroutable: an event no queue takes is an error naming the
// exchange, the routing key and the fix; the events before it count as
// confirmed; nothing is dropped silently.
func TestAMQPUnroutable(t *testing.T) {
	ex, q := exchangeWithQueue(t)
	mq.Admin(t, func(ch *amqp.Channel) error { return ch.QueueUnbind(q, "#", ex, nil) })
	mq.Admin(t, func(ch *amqp.Channel) error { return ch.QueueBind(q, "Employee.*", ex, false, nil) })
	r := openReceiver(t, nil, amqpConfig(ex))
	events := batch(1, 10)
	events[6] = publishtest.Event(7, "hr", "Department", "d1", history.OpCreate, 1)
	// A second unroutable one in the same window: its return must not be
	// taken for a return of its redelivery once a queue is bound.
	events[8] = publishtest.Event(9, "hr", "Department", "d2", history.OpCreate, 1)
	err := r.Deliver(context.Background(), events)
	var pe *publish.PartialError
	if !errors.As(err, &pe) || pe.Confirmed != 6 {
		t.Fatalf("Deliver = %v, want 6 confirmed", err)
	}
	for _, want := range []string{`exchange "` + ex + `"`, `routing key "Department.create"`, "bind a queue", "not dropped"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	// Bound now, the redelivery of the rest goes through.
	mq.Admin(t, func(ch *amqp.Channel) error { return ch.QueueBind(q, "Department.*", ex, false, nil) })
	if err := r.Deliver(context.Background(), events[6:]); err != nil {
		t.Fatal(err)
	}
	// Messages after the returned one were published in the same window
	// and routed: they arrive twice (identical), as the package
	// documentation says.
	got := mq.Drain(t, q)
	seen := map[string][]byte{}
	for i, d := range got {
		if i < 6 && d.MessageId != events[i].EventID {
			t.Errorf("message %d is %s, want %s", i, d.MessageId, events[i].EventID)
		}
		if prev, dup := seen[d.MessageId]; dup && !bytes.Equal(prev, d.Body) {
			t.Errorf("duplicate of %s differs", d.MessageId)
		}
		seen[d.MessageId] = d.Body
	}
	if len(seen) != 10 {
		t.Fatalf("%d distinct events after the binding, want 10", len(seen))
	}
}

func TestAMQPExchangeMissing(t *testing.T) {
	r := openReceiver(t, nil, amqpConfig("no-such-exchange"))
	err := r.Deliver(context.Background(), batch(1, 3))
	if err == nil || !strings.Contains(err.Error(), "no-such-exchange") || !strings.Contains(err.Error(), "amqp.declare") {
		t.Fatalf("Deliver = %v, want an error naming the exchange and the fix", err)
	}
	if publish.Confirmed(err) != 0 {
		t.Errorf("confirmed %d", publish.Confirmed(err))
	}
	if err := r.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "exchange does not exist") {
		t.Fatalf("Check = %v", err)
	}
	// With declare, the receiver makes the exchange and a queue itself.
	r = openReceiver(t, nil, amqpConfig("declared.ex", "  declare: {exchange_type: topic, queue: declared.q}"))
	t.Cleanup(func() {
		mq.Admin(t, func(ch *amqp.Channel) error {
			ch.QueueDelete("declared.q", false, false, false)
			return ch.ExchangeDelete("declared.ex", false, false)
		})
	})
	if err := r.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Deliver(context.Background(), batch(1, 3)); err != nil {
		t.Fatal(err)
	}
	if got := mq.Drain(t, "declared.q"); len(got) != 3 {
		t.Fatalf("%d messages in the declared queue", len(got))
	}
}

func TestAMQPCheckFailures(t *testing.T) {
	ex, _ := exchangeWithQueue(t)
	tests := []struct {
		name   string
		config string
		want   []string
		not    string
	}{
		{"wrong password", strings.Replace(amqpConfig(ex), "password: "+mq.Password, "password: wrong-Secret-42", 1),
			[]string{"refused the login", `"connector"`, "amqp.password"}, "wrong-Secret-42"},
		{"unknown vhost", strings.Replace(amqpConfig(ex), mq.Addr()+"/", mq.Addr()+"/nope", 1),
			[]string{`vhost "nope"`, "amqp.url"}, mq.Password},
		{"nothing listens", strings.Replace(amqpConfig(ex), mq.Addr(), "127.0.0.1:1", 1),
			[]string{"nothing listens"}, mq.Password},
		{"TLS spoken to plain port", strings.Replace(amqpConfig(ex), "amqp://", "amqps://", 1) + "tls: {ca_file: " + mq.CAFile + "}\n",
			[]string{"TLS"}, mq.Password},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := publishtest.NewLog(t)
			r := openReceiver(t, log, tt.config)
			err := r.Check(context.Background())
			if err == nil {
				t.Fatal("Check passed")
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if tt.not != "" && (strings.Contains(err.Error(), tt.not) || log.Has(tt.not)) {
				t.Errorf("the password shows in the error or the log: %v", err)
			}
			derr := r.Deliver(context.Background(), batch(1, 1))
			if derr == nil || publish.Confirmed(derr) != 0 {
				t.Errorf("Deliver = %v", derr)
			}
		})
	}
}

func tlsConfig(ex string, tls string, extra ...string) string {
	c := strings.Replace(amqpConfig(ex, extra...), fmt.Sprintf("amqp://%s/", mq.Addr()), fmt.Sprintf("amqps://localhost:%d/", mq.TLSPort), 1)
	return c + "tls: " + tls + "\n"
}

func TestAMQPTLS(t *testing.T) {
	ex, q := exchangeWithQueue(t)
	client := fmt.Sprintf("cert_file: %s, key_file: %s", mq.ClientCertFile, mq.ClientKeyFile)
	external := fmt.Sprintf("name: bf\ntype: fordeler\ntransport: amqp\nformat: cloudevents\ntimeout: 5s\namqp: {url: \"amqps://localhost:%d/\", auth: external, exchange: %s}\ntls: {ca_file: %s, %s}\n",
		mq.TLSPort, ex, mq.CAFile, client)
	tests := []struct {
		name   string
		config string
		want   string // "" delivers
	}{
		{"client certificate and password", tlsConfig(ex, "{ca_file: "+mq.CAFile+", "+client+"}", "format: cloudevents"), ""},
		{"client certificate is the login (EXTERNAL)", external, ""},
		{"unknown CA", tlsConfig(ex, "{ca_file: "+mq.OtherCAFile+", "+client+"}", "format: cloudevents"), "not signed by a CA this machine trusts; set tls.ca_file"},
		{"no client certificate", tlsConfig(ex, "{ca_file: "+mq.CAFile+"}", "format: cloudevents"), "client certificate"},
	}
	sent := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := openReceiver(t, nil, tt.config)
			cerr := r.Check(context.Background())
			derr := r.Deliver(context.Background(), batch(1, 5))
			if tt.want == "" {
				if cerr != nil || derr != nil {
					t.Fatalf("Check = %v, Deliver = %v", cerr, derr)
				}
				sent += 5
				return
			}
			t.Log(cerr)
			for _, err := range []error{cerr, derr} {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error = %v, want one saying %q", err, tt.want)
				}
			}
		})
	}
	if got := mq.Drain(t, q); len(got) != sent {
		t.Errorf("%d messages arrived over TLS, want %d", len(got), sent)
	}
}

// TestAMQPBrokerKilled: the broker is SIGKILLed mid-stream and restarted;
// a dispatcher-like loop keeps calling Deliver from the first unconfirmed
// event. In the end every event is in the queue, in order where first
// delivered, and duplicates are byte-identical: nothing confirmed is lost.
func TestAMQPBrokerKilled(t *testing.T) {
	ex, q := exchangeWithQueue(t)
	r := openReceiver(t, nil, amqpConfig(ex, bfBlock))
	events := batch(1, 3000)

	feed := publishtest.StartFeed(t, r, events, 50, 2*time.Millisecond)
	feed.WaitFor(t, int64(len(events)/3), time.Minute)
	mq.Kill()
	killedAt := feed.Next()
	restart := time.Now()
	if err := mq.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("the broker was back after %v", time.Since(restart).Round(time.Millisecond))
	// Once the broker is back, the rest goes through within a minute,
	// however long the restart took on a busy machine.
	if err := feed.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	if killedAt >= int64(len(events)) {
		t.Fatal("the kill came after the last delivery; the test proves nothing")
	}
	got := mq.Drain(t, q)
	order := publishtest.FirstCopies(t, len(got), func(i int) (string, []byte) { return got[i].MessageId, got[i].Body })
	if len(order) != len(events) {
		t.Fatalf("%d distinct events in the queue, want %d (lost %d)", len(order), len(events), len(events)-len(order))
	}
	for i, j := range order {
		if got[j].MessageId != events[i].EventID {
			t.Fatalf("first copies out of order at %d", i)
		}
	}
	t.Logf("killed after %d events; %d messages, %d duplicates", killedAt, len(got), len(got)-len(order))
}

// TestAMQPNack: a queue that is full with overflow reject-publish nacks;
// the messages before count as confirmed and the error says what it is.
func TestAMQPNack(t *testing.T) {
	const ex, q = "nack.ex", "nack.q"
	mq.Admin(t, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(ex, "topic", false, true, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(q, false, true, false, false, amqp.Table{"x-max-length": int32(3), "x-overflow": "reject-publish"}); err != nil {
			return err
		}
		return ch.QueueBind(q, "#", ex, false, nil)
	})
	r := openReceiver(t, nil, amqpConfig(ex))
	err := r.Deliver(context.Background(), batch(1, 5))
	var pe *publish.PartialError
	if !errors.As(err, &pe) || pe.Confirmed != 3 || !strings.Contains(err.Error(), "nack") {
		t.Fatalf("Deliver = %v, want 3 confirmed, then a nack", err)
	}
	mq.Drain(t, q)
	if err := r.Deliver(context.Background(), batch(4, 2)); err != nil {
		t.Fatalf("after the queue had room: %v", err)
	}
}

// TestAMQPConfirmTimeout: a broker that stops confirming (a memory alarm
// blocks publishers) makes Deliver give up after timeout with nothing
// confirmed; once the alarm clears, the retry delivers.
func TestAMQPConfirmTimeout(t *testing.T) {
	ex, q := exchangeWithQueue(t)
	r := openReceiver(t, nil, strings.Replace(amqpConfig(ex), "timeout: 5s", "timeout: 2s", 1))
	if err := r.Deliver(context.Background(), batch(1, 1)); err != nil { // connected
		t.Fatal(err)
	}
	if _, err := mq.Ctl("set_vm_memory_high_watermark", "0"); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if _, err := mq.Ctl("set_vm_memory_high_watermark", "0.4"); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	time.Sleep(500 * time.Millisecond) // the alarm reaches the connection
	start := time.Now()
	err := r.Deliver(context.Background(), batch(2, 5))
	t.Log(err)
	if err == nil || publish.Confirmed(err) != 0 || !strings.Contains(err.Error(), "within timeout 2s") || !strings.Contains(err.Error(), "blocks publishers") {
		t.Fatalf("Deliver = %v, want no confirmation within timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Deliver took %v with timeout 2s", d)
	}
	restore()
	if err := r.Deliver(context.Background(), batch(2, 5)); err != nil {
		t.Fatalf("after the alarm: %v", err)
	}
	seen := map[string]bool{}
	for _, d := range mq.Drain(t, q) {
		seen[d.MessageId] = true
	}
	if len(seen) != 6 {
		t.Fatalf("%d distinct events in the queue, want 6", len(seen))
	}
}
