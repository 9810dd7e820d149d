package fordeler

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish/publishtest"
)

var (
	benchEvents = flag.Int("fordeler.events", 100000, "events per BenchmarkDeliverAMQP run")
	benchBatch  = flag.Int("fordeler.batch", 1000, "events per Deliver call (the dispatcher's batch) in BenchmarkDeliverAMQP")
	benchFormat = flag.String("fordeler.format", FormatHaendelsesbesked, "haendelsesbesked or cloudevents")
)

// benchEvent is event i of a stream over 1,000 objects with realistic
// images (about 20 fields); an update carries no before image.
func benchEvent(i int) history.Event {
	id := fmt.Sprintf("%08d-aaaa-4bbb-8ccc-%012d", i%1000, i%1000)
	op := history.OpUpdate
	if i < 1000 {
		op = history.OpCreate
	}
	e := publishtest.Event(uint64(i+1), "hr", "Employee", id, op, 1)
	e.Before, e.Changed, e.After = nil, nil, publishtest.BenchImage(i, id)
	return e
}

func benchBatchEvents(b *testing.B, from, n int) []history.Event {
	return publishtest.RawBatch(b, from, n, benchEvent)
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
	mq.Admin(b, func(ch *amqp.Channel) error {
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
	r := openReceiver(b, publishtest.NewLog(b), amqpConfig(ex, extra...))
	pre := openReceiver(b, publishtest.NewLog(b), amqpConfig(ex, extra...))
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

	events := func(from, n int) []history.Event { return benchBatchEvents(b, from, n) }
	deliver := func(from, n int) time.Duration {
		return publishtest.TimedDeliver(b, r, from, n, batch, events)
	}
	bare := func(from, n int) time.Duration {
		return publishtest.Timed(from, n, batch, messages, func(msgs []message) {
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
			select {
			case ret := <-returns:
				b.Fatalf("returned: %s", ret.ReplyText)
			default:
			}
		})
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
	mb := float64(bytes) / 1e6
	publishtest.ReportRates(b, total, mb, tr, tp)
	b.Logf("%d events (%s), %.0f MB of messages: receiver %v, bare publisher %v", total, *benchFormat, mb, tr/time.Duration(b.N), tp/time.Duration(b.N))
}
