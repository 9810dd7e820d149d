package kafka

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/testenv"
)

// partitionOf is where the receiver puts e's key in an n-partition topic.
func partitionOf(e *history.Event, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return balancer.Balance(kafkago.Message{Key: []byte(e.Object.Type + "/" + e.Object.ID)}, parts...)
}

// onKafka returns the event ids present on topic.
func onKafka(t *testing.T, k *testenv.Kafka, topic string, events []history.Event) map[string]bool {
	t.Helper()
	got := consume(t, k, []string{topic}, func([]kafkago.Message) bool { return true })
	ids := map[string]bool{}
	for _, m := range got {
		ids[ceID(m)] = true
	}
	return ids
}

// TestPartialFailure: a produce to one partition fails; Deliver reports
// exactly the events before the first unconfirmed one, sends nothing more
// to that partition, and redelivery from there completes the topic in
// per-key order.
func TestPartialFailure(t *testing.T) {
	const topic, parts = "connector.hr.employee", 3
	tests := []struct {
		name      string
		batchSize int
		err       *kerr.Error
		failNth   int64 // fail the nth produce request to the partition
		applied   bool  // the failed request was applied anyway (timeout after append)
	}{
		{"first request to the partition", 10000, kerr.NotEnoughReplicas, 1, false},
		{"third request to the partition, small batches", 3, kerr.NotLeaderForPartition, 3, false},
		{"request timed out after the append", 4, kerr.RequestTimedOut, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := testenv.NewKafka(t, testenv.KafkaOptions{})
			r := openReceiver(t, nil, testConfig(k.Addr, "create_topics: {partitions: 3}", "batch_size: "+itoa(tt.batchSize)))
			events := objectHistory("hr", "Employee", 12, 6)
			// The faulted partition is one the first event does not use.
			p := (partitionOf(&events[0], parts) + 1) % parts
			var seen atomic.Int64
			k.Cluster().Fault(kfake.Fault{
				Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{int32(p)},
				Err: tt.err, Count: 1,
				When: func(kmsg.Request) bool { return seen.Add(1) == tt.failNth },
			})
			err := r.Deliver(context.Background(), events)
			var pe *publish.PartialError
			if !errors.As(err, &pe) {
				t.Fatalf("Deliver = %v, want a *publish.PartialError", err)
			}
			c := pe.Confirmed
			if c <= 0 || c >= len(events) || partitionOf(&events[c], parts) != p {
				t.Fatalf("confirmed %d: event %d is not on faulted partition %d", c, c, p)
			}
			if tt.failNth == 1 {
				for i := 0; i < c; i++ {
					if partitionOf(&events[i], parts) == p {
						t.Fatalf("confirmed %d, but event %d before it was on the failed partition", c, i)
					}
				}
			}
			if !strings.Contains(err.Error(), topic) || !strings.Contains(err.Error(), "partition "+itoa(p)) {
				t.Errorf("error does not name topic and partition: %v", err)
			}
			ids := onKafka(t, k, topic, events)
			for i := range c {
				if !ids[events[i].EventID] {
					t.Fatalf("event %d reported confirmed but not on Kafka", i)
				}
			}
			// Nothing after the failure reached the failed partition,
			// unless the broker applied the failed request itself.
			for i := c; i < len(events); i++ {
				if partitionOf(&events[i], parts) == p && ids[events[i].EventID] && !tt.applied {
					t.Fatalf("event %d reached partition %d after the failure at %d", i, p, c)
				}
			}
			if err := r.Deliver(context.Background(), events[c:]); err != nil {
				t.Fatalf("redelivery: %v", err)
			}
			checkDelivery(t, events, consume(t, k, []string{topic}, haveIDs(events, ceID)))
		})
	}
}

// TestFailureOfFirstEvent: when not even the first event is confirmed the
// error is a plain one (nothing to advance).
func TestFailureOfFirstEvent(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr))
	events := objectHistory("hr", "Employee", 1, 3)
	k.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.LeaderNotAvailable, Count: 1})
	err := r.Deliver(context.Background(), events)
	if err == nil || publish.Confirmed(err) != 0 {
		t.Fatalf("Deliver = %v, want an error confirming nothing", err)
	}
	var pe *publish.PartialError
	var re *publish.RejectedError
	if errors.As(err, &pe) || errors.As(err, &re) {
		t.Fatalf("Deliver = %T, want a plain error", err)
	}
	if !errors.Is(err, kafkago.LeaderNotAvailable) {
		t.Errorf("error does not unwrap to the Kafka error: %v", err)
	}
	if err := r.Deliver(context.Background(), events); err != nil {
		t.Fatal(err)
	}
}

// TestMessageTooLarge: the broker refuses one event as too large; the
// events before it are confirmed (the batch is split until the big one is
// alone), it is rejected with the reason, and delivery goes on after it.
func TestMessageTooLarge(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr, `create_topics: {partitions: 2, configs: {max.message.bytes: "8192"}}`))
	events := objectHistory("hr", "Employee", 4, 5)
	const big = 9
	noise := make([]byte, 15000)
	rand.Read(noise)
	events[big].After["photo"] = base64.StdEncoding.EncodeToString(noise) // incompressible
	err := r.Deliver(context.Background(), events)
	var re *publish.RejectedError
	if !errors.As(err, &re) || re.Index != big {
		t.Fatalf("Deliver = %v, want RejectedError for event %d", err, big)
	}
	if !errors.Is(err, kafkago.MessageSizeTooLarge) || !strings.Contains(err.Error(), "max.message.bytes") {
		t.Errorf("rejection lacks the cause or the fix: %v", err)
	}
	// The dispatcher dead-letters it and goes on.
	if err := r.Deliver(context.Background(), events[big+1:]); err != nil {
		t.Fatal(err)
	}
	rest := append(append([]history.Event{}, events[:big]...), events[big+1:]...)
	got := consume(t, k, []string{"connector.hr.employee"}, haveIDs(rest, ceID))
	for _, m := range got {
		if ceID(m) == events[big].EventID {
			t.Fatal("the refused event is on Kafka")
		}
	}
	checkDelivery(t, rest, got)
}

// TestTopicNotWritable: a topic the client may not write refuses each of
// its events; the dispatcher dead-letters them one by one and the other
// topics' events all arrive, so the receiver never stalls.
func TestTopicNotWritable(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr))
	var events []history.Event
	for i := range 30 {
		typ := "Employee"
		if i%4 == 3 {
			typ = "Secret"
		}
		events = append(events, publishtest.Event(uint64(i+1), "hr", typ, "x"+itoa(i%5), history.OpCreate, 1))
	}
	k.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "connector.hr.secret", Err: kerr.TopicAuthorizationFailed, Count: -1})
	var rejected []int
	for next := 0; next < len(events); {
		err := r.Deliver(context.Background(), events[next:])
		if err == nil {
			break
		}
		var re *publish.RejectedError
		if !errors.As(err, &re) {
			t.Fatalf("Deliver = %v, want only rejections", err)
		}
		if !strings.Contains(err.Error(), "connector.hr.secret") || !strings.Contains(err.Error(), "grant") {
			t.Errorf("rejection does not name the topic and the fix: %v", err)
		}
		rejected = append(rejected, next+re.Index)
		next += re.Index + 1
	}
	var want []int
	var employees []history.Event
	for i, e := range events {
		if e.Object.Type == "Secret" {
			want = append(want, i)
		} else {
			employees = append(employees, e)
		}
	}
	if itoaSlice(rejected) != itoaSlice(want) {
		t.Fatalf("rejected events %v, want %v", rejected, want)
	}
	got := consume(t, k, []string{"connector.hr.employee"}, haveIDs(employees, ceID))
	checkDelivery(t, employees, got)
	// After the first refusal, later events of the refusing topic are
	// probed alone, so skipping them one by one does not resend the batch.
	if len(got) > 2*len(employees) {
		t.Errorf("%d records for %d events: redelivery is amplified", len(got), len(employees))
	}
}

// TestBrokerDown: with no broker, Deliver fails within its timeout with a
// plain error naming the brokers, and the same receiver delivers once the
// broker is there.
func TestBrokerDown(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	k.Stop()
	r := openReceiver(t, nil, testConfig(k.Addr, "timeout: 2s"))
	events := objectHistory("hr", "Employee", 3, 2)
	start := time.Now()
	err := r.Deliver(context.Background(), events)
	if err == nil || publish.Confirmed(err) != 0 {
		t.Fatalf("Deliver with the broker down = %v", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("Deliver took %v with the broker down; it must stay bounded by timeout", d)
	}
	if !strings.Contains(err.Error(), k.Addr) {
		t.Errorf("error does not name the broker: %v", err)
	}
	if err := r.Check(context.Background()); err == nil || !strings.Contains(err.Error(), k.Addr) || !strings.Contains(err.Error(), "is the broker running") {
		t.Errorf("Check with the broker down = %v", err)
	}
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	deliverAll(t, r, events, 100, 30*time.Second)
	checkDelivery(t, events, consume(t, k, []string{"connector.hr.employee"}, haveIDs(events, ceID)))
}

// TestHungBroker: a broker that accepts connections and never answers
// does not hang Deliver: it returns after about timeout.
func TestHungBroker(t *testing.T) {
	ln := hungListener(t)
	r := openReceiver(t, nil, testConfig(ln, "timeout: 1s"))
	start := time.Now()
	err := r.Deliver(context.Background(), objectHistory("hr", "Employee", 1, 1))
	if err == nil {
		t.Fatal("Deliver to a silent broker succeeded")
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("Deliver took %v against a silent broker with timeout 1s", d)
	}
	t.Log(err)
}
