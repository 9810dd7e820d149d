package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// stream is the part of a round that goes to one partition.
type stream struct {
	topic     string
	partition int
	msgs      []*message // pointers: a round moves no record
}

// outcome is how a stream ended: failed is the index of the first event
// whose record was not confirmed, or -1.
type outcome struct {
	failed int
	err    error
	gone   string // a topic the cluster no longer knows
	stale  bool   // the cluster metadata is out of date (leader moved, topic gone)
}

// produce sends msgs (in event order) round by round, and returns the
// index of the first event not confirmed and why, or (0, nil) when all
// were confirmed.
func (r *Receiver) produce(ctx context.Context, msgs []message) (int, error) {
	for start := 0; start < len(msgs); {
		streams, end := r.round(msgs, start)
		outs := make([]outcome, len(streams))
		if len(streams) == 1 {
			outs[0] = r.sendStream(ctx, streams[0])
		} else {
			var wg sync.WaitGroup
			for i := range streams {
				wg.Go(func() { outs[i] = r.sendStream(ctx, streams[i]) })
			}
			wg.Wait()
		}
		first := outcome{failed: -1}
		stale := false
		for _, o := range outs {
			stale = stale || o.stale
			if o.gone != "" {
				// Deleted under us: look it up (and create it) afresh
				// on the next Deliver.
				delete(r.topics, o.gone)
			}
			switch {
			case o.failed < 0:
			case first.failed < 0 || o.failed < first.failed:
				first = o
			case o.failed == first.failed && !isRejection(o.err):
				// A retryable failure of the same event wins: retrying may
				// deliver it, rejecting would drop it.
				first = o
			}
		}
		if stale {
			r.reconnect()
		}
		if first.failed >= 0 {
			return first.failed, first.err
		}
		start = end
	}
	return 0, nil
}

// round takes messages from msgs[start:] while every partition's share
// fits in one produce request, and returns the shares and where the round
// ended. A record larger than batch_bytes travels alone.
func (r *Receiver) round(msgs []message, start int) ([]*stream, int) {
	type tp struct {
		topic     string
		partition int
	}
	type load struct {
		s     *stream
		bytes int
	}
	loads := map[tp]*load{}
	var streams []*stream
	end := start
	for ; end < len(msgs); end++ {
		m := &msgs[end]
		k := tp{m.topic, m.partition}
		l := loads[k]
		if l == nil {
			l = &load{s: &stream{topic: m.topic, partition: m.partition}}
			loads[k] = l
			streams = append(streams, l.s)
		} else if len(l.s.msgs)+1 > r.s.BatchSize || l.bytes+m.size > r.s.BatchBytes {
			break
		}
		l.s.msgs = append(l.s.msgs, m)
		l.bytes += m.size
	}
	return streams, end
}

// sendStream produces one partition's share of a round in one request.
func (r *Receiver) sendStream(ctx context.Context, s *stream) outcome {
	return r.sendChunk(ctx, s.topic, s.partition, s.msgs)
}

// sendChunk produces msgs to one partition. A chunk the broker refuses as
// too large or invalid is halved, first half first, until the refused
// record is alone; the halves after a failure are not sent.
func (r *Receiver) sendChunk(ctx context.Context, topic string, partition int, msgs []*message) outcome {
	err := r.produceRequest(ctx, topic, partition, msgs)
	if err == nil {
		return outcome{failed: -1}
	}
	switch classify(err) {
	case rejectRecord:
		if len(msgs) > 1 {
			half := len(msgs) / 2
			if o := r.sendChunk(ctx, topic, partition, msgs[:half]); o.failed >= 0 {
				return o
			}
			return r.sendChunk(ctx, topic, partition, msgs[half:])
		}
		fallthrough
	case rejectTopic:
		r.refusedMu.Lock()
		r.refused[topic] = struct{}{}
		r.refusedMu.Unlock()
		return outcome{failed: msgs[0].event, err: &rejection{r.produceError(err, topic, partition)}}
	}
	o := outcome{failed: msgs[0].event, err: r.produceError(err, topic, partition)}
	switch {
	case errors.Is(err, kafkago.UnknownTopicOrPartition), errors.Is(err, protocol.ErrNoTopic):
		o.gone, o.stale = topic, true
	case errors.Is(err, kafkago.NotLeaderForPartition), errors.Is(err, kafkago.LeaderNotAvailable),
		errors.Is(err, kafkago.FencedLeaderEpoch), errors.Is(err, kafkago.UnknownLeaderEpoch),
		errors.Is(err, protocol.ErrNoLeader):
		o.stale = true
	}
	return o
}

// produceRequest sends one produce request and waits for acks=all.
func (r *Receiver) produceRequest(ctx context.Context, topic string, partition int, msgs []*message) error {
	ctx, cancel := context.WithTimeout(ctx, r.s.Timeout)
	defer cancel()
	res, err := r.client.Produce(ctx, &kafkago.ProduceRequest{
		Topic:        topic,
		Partition:    partition,
		RequiredAcks: kafkago.RequireAll,
		Records:      &records{msgs: msgs},
		Compression:  r.s.compression,
	})
	if err != nil {
		return err
	}
	return res.Error
}

func (r *Receiver) produceError(err error, topic string, partition int) error {
	msg := fmt.Sprintf("kafka receiver %q: produce to %s partition %d: %v", r.name, topic, partition, err)
	if h := r.hint(err, topic); h != "" {
		msg += " (" + h + ")"
	}
	return &wrapped{msg: msg, err: err}
}

// wrapped is an error with a message of our own that still unwraps to the
// cause (errors.Is(err, kafka.MessageSizeTooLarge) works for callers).
type wrapped struct {
	msg string
	err error
}

func (e *wrapped) Error() string { return e.msg }
func (e *wrapped) Unwrap() error { return e.err }

func isRejection(err error) bool {
	_, ok := err.(*rejection)
	return ok
}

// records is a kafka-go RecordReader over messages; it can be read once.
type records struct {
	msgs       []*message
	i          int
	rec        kafkago.Record
	key, value bytesReader
}

func (r *records) ReadRecord() (*kafkago.Record, error) {
	if r.i >= len(r.msgs) {
		return nil, io.EOF
	}
	m := r.msgs[r.i]
	r.i++
	r.rec = kafkago.Record{Headers: m.headers}
	r.key.Reset(m.key)
	r.rec.Key = &r.key
	if m.value != nil { // nil stays nil: a tombstone
		r.value.Reset(m.value)
		r.rec.Value = &r.value
	}
	return &r.rec, nil
}

type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }
