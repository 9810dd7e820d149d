package kafka

import (
	"testing"
	"time"

	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/testenv"
)

// outage is how long the broker is down in TestBrokerOutage: the issue's
// 30 s, several times kafka-go's metadata refresh (6 s) and longer than
// the dispatcher-like backoff cap, so every connection and every cached
// piece of cluster state the receiver has goes stale.
const outage = 30 * time.Second

// TestBrokerOutage: the broker is stopped mid-stream for 30 s and
// restarted; a dispatcher-like loop keeps calling Deliver from the first
// unconfirmed event with backoff, and in the end every event is on Kafka,
// first copies in per-key order, duplicates identical.
func TestBrokerOutage(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr, "timeout: 2s", "create_topics: {partitions: 3}", "state_topic: {enabled: true}"))
	events := objectHistory("hr", "Employee", 40, 75) // 3000 events

	// A live feed, not a bulk load.
	feed := publishtest.StartFeed(t, r, events, 50, 5*time.Millisecond)
	feed.WaitFor(t, int64(len(events)/3), time.Minute)
	k.Stop()
	stoppedAt := feed.Next()
	t.Logf("broker stopped after %d of %d events", stoppedAt, len(events))
	time.Sleep(outage)
	if got := feed.Next(); got > stoppedAt+50 {
		t.Fatalf("%d events confirmed while the broker was down", got-stoppedAt)
	}
	failed := feed.Failures()
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := feed.Wait(60 * time.Second); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	t.Logf("%d failed Deliver calls during the outage; all %d events confirmed %v after the restart", failed, len(events), time.Since(restarted).Round(time.Millisecond))
	if failed == 0 {
		t.Fatal("no Deliver call failed: the outage did not happen mid-stream")
	}
	checkDelivery(t, events, consume(t, k, []string{"connector.hr.employee"}, haveIDs(events, ceID)))
}

// TestLeaderChange: three brokers; partition leaders move to other brokers
// twice mid-stream (kfake's simulated leader election). Produce requests to
// the old leaders fail with NOT_LEADER_FOR_PARTITION; the receiver renews
// its metadata and the dispatcher-like loop's retries deliver every event,
// in per-key order.
func TestLeaderChange(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{Brokers: 3})
	r := openReceiver(t, nil, testConfig(k.Addr, "create_topics: {partitions: 6}", "state_topic: {enabled: true}"))
	events := objectHistory("hr", "Employee", 30, 30) // 900
	errs := 0
	start := time.Now()
	for i, third := 0, len(events)/3; i < 3; i++ {
		if i > 0 {
			k.Cluster().ShufflePartitionLeaders()
		}
		errs += deliverAll(t, r, events[i*third:(i+1)*third], 50, 30*time.Second)
	}
	t.Logf("%d failed Deliver calls over two leader elections, %v", errs, time.Since(start).Round(time.Millisecond))
	// kafka-go alone would keep sending to the old leaders until its
	// metadata cache expires (up to 6 s, many failed attempts); the
	// receiver renews its metadata on the first refusal.
	if errs > 6 {
		t.Errorf("%d failed Deliver calls: the receiver did not renew its metadata after a leader change", errs)
	}
	checkDelivery(t, events, consume(t, k, []string{"connector.hr.employee"}, haveIDs(events, ceID)))
}
