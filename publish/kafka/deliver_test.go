package kafka

import (
	"context"
	"math/rand/v2"
	"testing"

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
