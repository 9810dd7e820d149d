package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/publish/render"
	"github.com/os2sandbox/connector/testenv"
)

// objectHistory is the history of objects objects of type typ, each created and then updated
// versions-1 times, interleaved round-robin, sequences from 1.
func objectHistory(source, typ string, objects, versions int) []history.Event {
	var out []history.Event
	seq := uint64(0)
	for v := 1; v <= versions; v++ {
		for o := 0; o < objects; o++ {
			seq++
			op := history.OpUpdate
			if v == 1 {
				op = history.OpCreate
			}
			out = append(out, publishtest.Event(seq, source, typ, fmt.Sprintf("o%03d", o), op, uint64(v)))
		}
	}
	return out
}

// openReceiver builds a receiver through the registered factory, as the
// dispatcher does; a nil log is publishtest.NewLog(t).
func openReceiver(t testing.TB, log *capturetest.Log, config string) *Receiver {
	t.Helper()
	return publishtest.Open(t, "kafka", "events", log, config).(*Receiver)
}

// testConfig is a minimal receiver config for broker addr plus extra lines.
func testConfig(addr string, extra ...string) string {
	return "name: events\ntype: kafka\nbrokers: [" + addr + "]\n" + strings.Join(extra, "\n") + "\n"
}

// deliverAll delivers events the way the dispatcher does: in batches, and
// after an error again from the first unconfirmed event, with backoff. It
// fails the test on a RejectedError or when giving up takes longer than
// patience.
func deliverAll(t testing.TB, r publish.Receiver, events []history.Event, batch int, patience time.Duration) (errs int) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(patience)
	backoff := 50 * time.Millisecond
	for next := 0; next < len(events); {
		end := min(next+batch, len(events))
		err := r.Deliver(ctx, events[next:end])
		if err == nil {
			next = end
			backoff = 50 * time.Millisecond
			continue
		}
		var rej *publish.RejectedError
		if errors.As(err, &rej) {
			t.Fatalf("event %d rejected: %v", next+rej.Index, err)
		}
		errs++
		next += publish.Confirmed(err)
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %v: %v", patience, err)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
	return errs
}

var groupSeq atomic.Int64

// consume reads topics with a kafka-go consumer group from the start until
// done says it has what it waits for and then nothing new came for 2 s.
func consume(t testing.TB, k *testenv.Kafka, topics []string, done func([]kafkago.Message) bool) []kafkago.Message {
	t.Helper()
	return consumeWith(t, k, nil, topics, done)
}

// consumeWith is consume through dialer (TLS, SASL); nil is plain TCP.
func consumeWith(t testing.TB, k *testenv.Kafka, dialer *kafkago.Dialer, topics []string, done func([]kafkago.Message) bool) []kafkago.Message {
	t.Helper()
	rc := k.ReaderConfig(fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), groupSeq.Add(1)), topics)
	rc.Dialer = dialer
	rd := kafkago.NewReader(rc)
	defer rd.Close()
	var out []kafkago.Message
	deadline := time.Now().Add(60 * time.Second)
	idle := time.Duration(0)
	for {
		wait := time.Second
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		m, err := rd.FetchMessage(ctx)
		cancel()
		if err == nil {
			out = append(out, m)
			idle = 0
			continue
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("consume %v: %v", topics, err)
		}
		idle += wait
		if done(out) && idle >= 2*time.Second {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("consume %v: gave up after 60s with %d records", topics, len(out))
		}
	}
}

// header returns a record header's value.
func header(m kafkago.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// haveIDs is a consume stop condition: every event id of events was seen.
func haveIDs(events []history.Event, id func(kafkago.Message) string) func([]kafkago.Message) bool {
	return func(ms []kafkago.Message) bool {
		seen := map[string]bool{}
		for _, m := range ms {
			seen[id(m)] = true
		}
		for _, e := range events {
			if !seen[e.EventID] {
				return false
			}
		}
		return true
	}
}

func ceID(m kafkago.Message) string { return header(m, "ce_id") }

// checkDelivery asserts that got holds every event exactly as rendered
// (duplicates identical), and, per key, first copies in sequence order
// and all on one partition.
func checkDelivery(t testing.TB, events []history.Event, got []kafkago.Message) {
	t.Helper()
	want := map[string]history.Event{}
	for _, e := range events {
		want[e.EventID] = e
	}
	first := map[string][]byte{}
	lastSeq := map[string]uint64{}
	partOf := map[string]int{}
	dups := 0
	for _, m := range got {
		id := header(m, "ce_id")
		e, ok := want[id]
		if !ok {
			t.Fatalf("record with unknown ce_id %q", id)
		}
		if string(m.Key) != e.Object.Type+"/"+e.Object.ID {
			t.Fatalf("event %s has key %q", id, m.Key)
		}
		key := string(m.Key)
		if header(m, "ce_subject") != key || header(m, "ce_sequence") != render.Sequence(e.Sequence) {
			t.Fatalf("event %s (key %s, sequence %d) has ce_subject %q, ce_sequence %q",
				id, key, e.Sequence, header(m, "ce_subject"), header(m, "ce_sequence"))
		}
		if p, ok := partOf[key]; ok && p != m.Partition {
			t.Fatalf("key %s on partitions %d and %d", key, p, m.Partition)
		}
		partOf[key] = m.Partition
		if v, ok := first[id]; ok {
			dups++
			if string(v) != string(m.Value) {
				t.Fatalf("duplicate of %s differs:\n%s\n%s", id, v, m.Value)
			}
			continue
		}
		first[id] = m.Value
		if e.Sequence <= lastSeq[key] {
			t.Fatalf("key %s: sequence %d arrived after %d", key, e.Sequence, lastSeq[key])
		}
		lastSeq[key] = e.Sequence
		var back history.Event
		if err := json.Unmarshal(m.Value, &back); err != nil || back.Sequence != e.Sequence {
			t.Fatalf("value of %s: %v (sequence %d)", id, err, back.Sequence)
		}
	}
	if len(first) != len(events) {
		t.Fatalf("%d of %d events on Kafka", len(first), len(events))
	}
	t.Logf("%d events, %d records (%d duplicates), %d keys", len(events), len(got), dups, len(lastSeq))
}

func itoa(n int) string { return strconv.Itoa(n) }

func itoaSlice(ns []int) string { return fmt.Sprint(ns) }

// hungListener accepts connections and never answers; it returns its
// address.
func hungListener(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}
