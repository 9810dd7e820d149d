package fordeler

import (
	"context"
	"flag"
	"fmt"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/os2sandbox/connector/history"
)

var (
	benchEvents = flag.Int("fordeler.events", 100000, "events per BenchmarkDeliverAMQP run")
	benchBatch  = flag.Int("fordeler.batch", 1000, "events per Deliver call (the dispatcher's batch) in BenchmarkDeliverAMQP")
	benchFormat = flag.String("fordeler.format", FormatHaendelsesbesked, "haendelsesbesked or cloudevents")
)

// benchEvent is event i of a stream over 1,000 objects with realistic
// images (about 20 fields), carrying the canonical JSON the log holds
// (Raw), as the dispatcher hands it over.
func benchEvent(b *testing.B, i int) history.Event {
	id := fmt.Sprintf("%08d-aaaa-4bbb-8ccc-%012d", i%1000, i%1000)
	op := history.OpUpdate
	if i < 1000 {
		op = history.OpCreate
	}
	e := ev(uint64(i+1), "Employee", id, op)
	e.After = map[string]any{
		"id": id, "givenName": "Karen", "surname": fmt.Sprintf("Jensen-%d", i%977), "displayName": "Karen Jensen",
		"mail": fmt.Sprintf("kj%d@kommune.example.dk", i%1000), "phone": "+45 33 12 34 56",
		"title": "Sagsbehandler", "department": "Borgerservice", "unit": fmt.Sprintf("OU-%d", i%37),
		"manager": "00000042-aaaa-4bbb-8ccc-000000000042", "employeeNumber": fmt.Sprintf("E%06d", i%1000),
		"startDate": "2019-08-01", "costCenter": "4711", "location": "Rådhuset, 2. sal",
		"groups": []any{"alle-ansatte", "borgerservice", "sagsbehandlere"}, "enabled": true,
	}
	raw, err := history.AppendJSON(nil, &e)
	if err != nil {
		b.Fatal(err)
	}
	e.Raw = raw
	return e
}

func benchBatchEvents(b *testing.B, from, n int) []history.Event {
	out := make([]history.Event, n)
	for i := range out {
		out[i] = benchEvent(b, from+i)
	}
	return out
}

// BenchmarkDeliverAMQP puts the same events through Receiver.Deliver and,
// in the same run, the same message bytes through a bare amqp091-go
// publisher (one channel in confirm mode, mandatory persistent publishes
// of a batch, then waiting for every confirmation of it: what Deliver
// does, without rendering), and reports both rates and their ratio. The
// queue keeps at most 1,000 messages (x-max-length, drop-head), so broker
// storage does not blur the client-side figures; broker and clients share
// this machine's cores.
//
//	go test -run '^$' -bench BenchmarkDeliverAMQP -benchtime 1x ./publish/fordeler
func BenchmarkDeliverAMQP(b *testing.B) {
	const ex, q = "bench.ex", "bench.q"
	admin(b, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(ex, "topic", false, true, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(q, false, true, false, false, amqp.Table{"x-max-length": int32(1000)}); err != nil {
			return err
		}
		return ch.QueueBind(q, "#", ex, false, nil)
	})
	var extra []string
	if *benchFormat != FormatHaendelsesbesked {
		extra = append(extra, "format: "+*benchFormat)
	}
	r := openReceiver(b, &testLog{t: b}, amqpConfig(ex, extra...))
	pre := openReceiver(b, &testLog{t: b}, amqpConfig(ex, extra...))
	total, batch := *benchEvents, *benchBatch

	conn, err := amqp.Dial(mq.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))

	var bytes int64
	messages := func(from, n int) []message {
		events := benchBatchEvents(b, from, n)
		out := make([]message, len(events))
		for i := range events {
			m, err := pre.render(&events[i])
			if err != nil {
				b.Fatal(err)
			}
			out[i] = m
		}
		return out
	}
	for _, m := range messages(0, batch) {
		bytes += int64(len(m.body))
	}
	bytes = bytes * int64(total) / int64(batch)

	deliver := func(from, n int) time.Duration {
		var d time.Duration
		for i := from; i < from+n; i += batch {
			evs := benchBatchEvents(b, i, min(batch, from+n-i))
			start := time.Now()
			if err := r.Deliver(context.Background(), evs); err != nil {
				b.Fatal(err)
			}
			d += time.Since(start)
		}
		return d
	}
	bare := func(from, n int) time.Duration {
		var d time.Duration
		for i := from; i < from+n; i += batch {
			msgs := messages(i, min(batch, from+n-i))
			start := time.Now()
			dcs := make([]*amqp.DeferredConfirmation, len(msgs))
			for j, m := range msgs {
				dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), ex, m.routingKey, true, false, amqp.Publishing{
					ContentType: m.contentType, DeliveryMode: amqp.Persistent, MessageId: m.eventID,
					Timestamp: m.timestamp, Type: m.ceType, AppId: "connector", Body: m.body,
				})
				if err != nil {
					b.Fatal(err)
				}
				dcs[j] = dc
			}
			for _, dc := range dcs {
				if !dc.Wait() {
					b.Fatal("nack")
				}
			}
			d += time.Since(start)
			select {
			case ret := <-returns:
				b.Fatalf("returned: %s", ret.ReplyText)
			default:
			}
		}
		return d
	}
	deliver(0, min(total, 2000))
	bare(0, min(total, 2000))

	const slices = 10
	b.ResetTimer()
	var tr, tp time.Duration
	for range b.N {
		for i := range slices {
			from, to := total*i/slices, total*(i+1)/slices
			tp += bare(from, to-from)
			tr += deliver(from, to-from)
		}
	}
	b.StopTimer()
	n := float64(b.N * total)
	mb := float64(int64(b.N)*bytes) / 1e6
	b.ReportMetric(n/tr.Seconds(), "events/s")
	b.ReportMetric(mb/tr.Seconds(), "MB/s")
	b.ReportMetric(n/tp.Seconds(), "baseline-events/s")
	b.ReportMetric(tp.Seconds()/tr.Seconds(), "ratio")
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MB") // Linux: KiB
	}
	b.Logf("%d events (%s), %.0f MB of messages: receiver %v, bare publisher %v", total, *benchFormat, mb/float64(b.N), tr/time.Duration(b.N), tp/time.Duration(b.N))
}
