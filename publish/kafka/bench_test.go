package kafka

import (
	"context"
	"flag"
	"fmt"
	"syscall"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/testenv"
)

var (
	benchEvents = flag.Int("kafka.events", 1000000, "events per BenchmarkDeliver run")
	benchBatch  = flag.Int("kafka.batch", 1000, "events per Deliver call (the dispatcher's batch) in BenchmarkDeliver")
)

// benchEvent is event i of a stream over 1,000 objects with realistic
// images (about 20 fields, 600-700 bytes of JSON each).
func benchEvent(i int) history.Event {
	id := fmt.Sprintf("%08d-aaaa-4bbb-8ccc-%012d", i%1000, i%1000)
	version := uint64(i/1000 + 1)
	op := history.OpUpdate
	if version == 1 {
		op = history.OpCreate
	}
	e := publishtest.Event(uint64(i+1), "hr", "Employee", id, op, version)
	img := publishtest.BenchImage(i, id)
	img["version"] = float64(version)
	img["lastChange"] = fmt.Sprintf("2024-05-01T12:%02d:00Z", i%60)
	e.After = img
	if op == history.OpUpdate {
		prev := make(map[string]any, len(img))
		for k, v := range img {
			prev[k] = v
		}
		prev["version"] = float64(version - 1)
		e.Before = prev
		e.Changed = []string{"lastChange", "version"}
	}
	return e
}

// benchBatchEvents returns events from..from+n as the dispatcher hands
// them over: each carries the canonical JSON the log holds (Raw), since
// the events are neither redacted nor replayed.
func benchBatchEvents(b *testing.B, from, n int) []history.Event {
	return publishtest.RawBatch(b, from, n, benchEvent)
}

// BenchmarkDeliver puts the same events through Receiver.Deliver and, in
// the same run, the same serialized records through a bare kafka-go Writer
// (acks=all, same balancer, compression and batch limits, WriteMessages
// with the same batches), and reports both rates and their ratio. kfake
// discards the records (BlackholeProduce) but parses and acknowledges
// every batch, so broker storage does not blur the client-side figures;
// broker and clients share this machine's cores.
//
//	go test -run '^$' -bench BenchmarkDeliver -benchtime 1x ./publish/kafka
func BenchmarkDeliver(b *testing.B) {
	k := testenv.NewKafka(b, testenv.KafkaOptions{InMemory: true, Extra: []kfake.Opt{kfake.BlackholeProduce()}})
	r := openReceiver(b, publishtest.NewLog(b), testConfig(k.Addr))
	// pre, configured alike, renders the baseline's records and those of
	// the produce-only figure, leaving r's buffers to r's Deliver calls.
	pre := openReceiver(b, publishtest.NewLog(b), testConfig(k.Addr))
	total, batch := *benchEvents, *benchBatch

	// The baseline's records are exactly what the receiver produces,
	// rendered batch by batch outside the clock. Events, too, are made
	// batch by batch outside the clock, as the dispatcher reads them from
	// the log: the harness holds no large heap for the garbage collector
	// to scan, which would slow down whichever side allocates more.
	var bytes int64
	records := func(from, n int) []kafkago.Message {
		pre.mu.Lock()
		msgs, _, err := pre.build(context.Background(), benchBatchEvents(b, from, n), 0, false)
		pre.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		out := make([]kafkago.Message, len(msgs))
		for i, m := range msgs {
			out[i] = kafkago.Message{Topic: m.topic, Key: m.key, Value: m.value, Headers: m.headers}
		}
		return out
	}
	for _, m := range records(0, batch) {
		bytes += int64(len(m.Key) + len(m.Value))
		for _, h := range m.Headers {
			bytes += int64(len(h.Key) + len(h.Value))
		}
	}
	bytes = bytes * int64(total) / int64(batch) // events are alike in size
	w := &kafkago.Writer{
		Addr:         kafkago.TCP(k.Addr),
		Balancer:     balancer,
		RequiredAcks: kafkago.RequireAll,
		Compression:  pre.s.compression,
		// WriteMessages gets batch records at a time, so no partition
		// batch holds more (the Writer allocates BatchSize slots for each).
		BatchSize:  batch,
		BatchBytes: int64(pre.s.BatchBytes),
		// WriteMessages waits for a batch that is not full this long,
		// and a partition's share of a call (about batch/6 records) never
		// fills one; the receiver never waits. A millisecond would add a
		// second per million events. The timer cannot cut a share short:
		// the Writer adds a call's records to a partition's batch under
		// the lock that the expiry takes.
		BatchTimeout: time.Nanosecond,
	}
	defer w.Close()

	events := func(from, n int) []history.Event { return benchBatchEvents(b, from, n) }
	deliver := func(from, n int) time.Duration {
		return publishtest.TimedDeliver(b, r, from, n, batch, events)
	}
	write := func(from, n int) time.Duration {
		return publishtest.Timed(from, n, batch, records, func(recs []kafkago.Message) {
			if err := w.WriteMessages(context.Background(), recs...); err != nil {
				b.Fatal(err)
			}
		})
	}
	// The receiver's delivery machinery alone, on the same records.
	produce := func(from, n int) time.Duration {
		var d time.Duration
		for i := from; i < from+n; i += batch {
			pre.mu.Lock()
			msgs, _, err := pre.build(context.Background(), benchBatchEvents(b, i, min(batch, from+n-i)), 0, false)
			pre.mu.Unlock()
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if _, err := pre.produce(context.Background(), msgs); err != nil {
				b.Fatal(err)
			}
			d += time.Since(start)
		}
		return d
	}
	// Warm up both (topic metadata, connections, buffers).
	deliver(0, min(total, 5000))
	write(0, min(total, 5000))

	// Alternate in slices, so that both see the same machine: other
	// processes' load comes and goes.
	const slices = 20
	b.ResetTimer()
	var tr, tw, tp time.Duration
	for range b.N {
		for i := range slices {
			from, to := total*i/slices, total*(i+1)/slices
			tw += write(from, to-from)
			tr += deliver(from, to-from)
			tp += produce(from, to-from)
		}
	}
	b.StopTimer()
	mb := float64(bytes) / 1e6
	publishtest.ReportRates(b, total, mb, tr, tw)
	// Without rendering: Deliver's produce path on the baseline's records.
	b.ReportMetric(tw.Seconds()/tp.Seconds(), "produce-ratio")
	b.Logf("%d events, %.0f MB of records: receiver %v, bare Writer %v", total, mb, tr/time.Duration(b.N), tw/time.Duration(b.N))
}

// BenchmarkBuild is Deliver's own work, without a broker: routing and
// rendering -kafka.events events into records (CloudEvents binary, events
// carrying Raw), batch by batch in buffers reused from the batch before,
// as Deliver does. It reports wall and CPU time (garbage collection
// included) per event.
//
//	go test -run '^$' -bench BenchmarkBuild -benchtime 1x ./publish/kafka
func BenchmarkBuild(b *testing.B) {
	r := openReceiver(b, publishtest.NewLog(b), testConfig("127.0.0.1:1"))
	// The topic as if looked up: no broker needed.
	r.topics["connector.hr.employee"] = &topicInfo{partitions: []int{0, 1, 2, 3, 4, 5}}
	events := benchBatchEvents(b, 0, *benchBatch) // one batch over and over: no allocation in the loop
	batches := max(1, *benchEvents / *benchBatch)
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ReportAllocs()
	b.ResetTimer()
	start, began := cpu(), time.Now()
	for range b.N {
		for range batches {
			msgs, _, err := r.build(context.Background(), events, 0, true)
			if err != nil || len(msgs) != len(events) {
				b.Fatalf("build: %d records, %v", len(msgs), err)
			}
			r.release() // as Deliver does once Kafka confirmed them
		}
	}
	b.StopTimer()
	n := float64(b.N * batches * len(events))
	b.ReportMetric(float64(time.Since(began))/n, "ns/event")
	b.ReportMetric(float64(cpu()-start)/n, "cpu-ns/event")
}
