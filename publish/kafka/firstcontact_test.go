package kafka

import (
	"context"
	"testing"

	"github.com/os2sandbox/connector/testenv"
)

// TestBrokerDownAtFirstContact: kafka-go keeps the error of a transport's
// first, failed metadata fetch as the answer to every metadata request
// until its next periodic refresh, a random 0–6 s later. A receiver that
// first met the brokers while they were down (the agent started during an
// outage) must deliver on its first attempt after they are back.
func TestBrokerDownAtFirstContact(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	k.Stop()
	r := openReceiver(t, nil, testConfig(k.Addr, "timeout: 2s"))
	events := objectHistory("hr", "Employee", 3, 2)
	ctx := context.Background()
	for range 2 {
		if err := r.Deliver(ctx, events); err == nil {
			t.Fatal("delivered with the broker down")
		}
	}
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	if err := r.Deliver(ctx, events); err != nil {
		t.Fatalf("the first Deliver after the broker came back: %v", err)
	}
	checkDelivery(t, events, consume(t, k, []string{"connector.hr.employee"}, haveIDs(events, ceID)))
}
