package kafka

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/os2sandbox/connector/testenv"
)

// TestPerKeyOrder: 60 objects with 20 versions each, interleaved, go to a
// 4-partition topic through small produce requests (many rounds per
// Deliver); a consumer group sees each object's events in sequence order,
// all on one partition, and the keys spread over the partitions.
func TestPerKeyOrder(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr, "create_topics: {partitions: 4}", "batch_size: 7"))
	events := objectHistory("hr", "Employee", 60, 20)
	// Vary the batch sizes the dispatcher hands over.
	rng := rand.New(rand.NewPCG(1, 2))
	for next := 0; next < len(events); {
		end := min(next+1+rng.IntN(150), len(events))
		if err := r.Deliver(context.Background(), events[next:end]); err != nil {
			t.Fatalf("Deliver(%d:%d): %v", next, end, err)
		}
		next = end
	}
	got := consume(t, k, []string{"connector.hr.employee"}, haveIDs(events, ceID))
	checkDelivery(t, events, got)
	if len(got) != len(events) {
		t.Errorf("%d records for %d events without any failure", len(got), len(events))
	}
	parts := map[int]bool{}
	for _, m := range got {
		parts[m.Partition] = true
	}
	if len(parts) != 4 {
		t.Errorf("keys landed on %d of 4 partitions", len(parts))
	}
}

// TestDeliverEmpty: nothing to do is not an error and needs no broker.
func TestDeliverEmpty(t *testing.T) {
	r := openReceiver(t, nil, testConfig("127.0.0.1:1"))
	if err := r.Deliver(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

// TestBufferReuse: a batch's records are built in the buffers of the
// batch before only when Kafka answered for all of those; after a failed
// Deliver, where a timed-out request may still be reading them, they are
// dropped. Records built in reused buffers arrive intact.
func TestBufferReuse(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr, "timeout: 2s", "state_topic: {enabled: true}"))
	events := objectHistory("hr", "Employee", 50, 6)
	third := len(events) / 3
	if err := r.Deliver(context.Background(), events[:third]); err != nil {
		t.Fatal(err)
	}
	if r.spare == nil {
		t.Fatal("no buffers kept after a confirmed batch")
	}
	k.Stop()
	if err := r.Deliver(context.Background(), events[third:2*third]); err == nil {
		t.Fatal("Deliver with the broker stopped succeeded")
	}
	if r.spare != nil {
		t.Fatal("buffers of a failed Deliver kept for reuse")
	}
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	deliverAll(t, r, events[third:], 10, 30*time.Second)
	checkDelivery(t, events, consume(t, k, []string{"connector.hr.employee"}, haveIDs(events, ceID)))
}
