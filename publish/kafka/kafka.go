// Package kafka is the Kafka receiver: it produces the agent's events to
// Kafka topics with github.com/segmentio/kafka-go and says truthfully which
// of them Kafka confirmed.
//
// # Delivery and order
//
// Every event becomes one record on its event topic (and, with a state
// topic, one more record there), keyed by object type "/" object id and
// placed by the murmur2 hash of that key, as Java producers do, so all
// events of one object share a partition. Records are produced with
// acks=all. Deliver returns nil only when every record of the batch is
// confirmed.
//
// kafka-go's Writer is not used: it writes the batches of one partition
// independently and keeps writing in the background after its caller gave
// up, so after a failure a later event of an object can be on Kafka while
// an earlier one is not, and a retry would put them out of order. Deliver
// instead drives kafka-go's Client.Produce itself:
//
//   - The batch is cut into rounds; in a round each partition gets at most
//     one produce request (batch_size records, batch_bytes bytes), and the
//     partitions are produced concurrently. The next round starts only
//     when the whole round is confirmed.
//   - Each request is bounded by timeout and attempted once (no hidden
//     retries); Deliver returns only after every request it started has
//     been answered or has timed out.
//   - After a failure no further request is sent, so for every partition
//     the records on Kafka are a prefix of the records Deliver meant for it.
//     Deliver reports the events before the first failed one as confirmed
//     (a *publish.PartialError); the dispatcher redelivers the rest.
//
// Hence the first copy of each event on a partition is in sequence order;
// redelivery may add a second, identical copy (same ce_id) of events that
// other partitions had already taken. Consumers deduplicate on the event id.
//
// A broker that no longer leads a partition makes the receiver renew its
// cluster metadata at once, rather than when kafka-go's cache expires.
//
// A record the broker refuses for good (too large, invalid, topic not
// writable) turns into a *publish.RejectedError for its event, which the
// dispatcher dead-letters, so one bad event never stalls the receiver. A
// batch the broker refuses as too large is split in halves until the
// offending event is alone.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/render"
)

func init() { publish.Register("kafka", New) }

// Receiver produces events to Kafka. It implements publish.Receiver and
// publish.Checker.
type Receiver struct {
	name string
	s    *settings
	log  publish.Logger
	ce   render.CloudEvents

	addr      net.Addr
	tls       *tls.Config
	sasl      sasl.Mechanism
	transport *kafkago.Transport
	client    *kafkago.Client
	stop      context.CancelFunc // ends the transport's background work

	mu      sync.Mutex // one Deliver at a time; guards topics and names
	topics  map[string]*topicInfo
	refused map[string]struct{} // topics whose last produce was refused for good
	// refusedMu guards refused while a round's requests run concurrently.
	refusedMu sync.Mutex
	names     map[[2]string][2]string // (source name, object type) → (event topic, state topic)
	// diagnosed is when Deliver last probed the brokers to explain an error.
	diagnosed time.Time
	// built is what the records of the last build are made of; spare what
	// the next build may reuse (see release).
	built, spare *buffers
}

var (
	_ publish.Receiver = (*Receiver)(nil)
	_ publish.Checker  = (*Receiver)(nil)
)

// New builds a kafka receiver from its configuration node. It does not
// connect; the first Deliver or Check does.
func New(node *yaml.Node, opts publish.Options) (publish.Receiver, error) {
	s, err := decodeConfig(node, opts.File, opts.Name)
	if err != nil {
		return nil, err
	}
	return newReceiver(s, opts)
}

func newReceiver(s *settings, opts publish.Options) (*Receiver, error) {
	if opts.InstallationID == "" {
		return nil, fmt.Errorf("kafka receiver %q: no installation id (the CloudEvents source needs it)", opts.Name)
	}
	tc, err := tlsConfig(opts.Name, s.TLS)
	if err != nil {
		return nil, err
	}
	mech, err := saslMechanism(opts.Name, s)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = nopLogger{}
	}
	if tc != nil && tc.InsecureSkipVerify {
		log.Warn("kafka receiver: TLS certificate verification is OFF (tls.insecure_skip_verify); anyone on the network path can read and alter events and credentials. Use tls.ca_file instead.")
	}
	if s.saslMechanism == "plain" && tc == nil {
		log.Warn("kafka receiver: SASL PLAIN without TLS sends the password in clear text; configure tls")
	}
	r := &Receiver{
		name:    opts.Name,
		s:       s,
		log:     log,
		ce:      render.CloudEvents{InstallationID: opts.InstallationID, TypePrefix: s.TypePrefix},
		addr:    kafkago.TCP(s.Brokers...),
		tls:     tc,
		sasl:    mech,
		topics:  map[string]*topicInfo{},
		refused: map[string]struct{}{},
		names:   map[[2]string][2]string{},
	}
	r.connect()
	log.Info("kafka receiver ready", "brokers", strings.Join(s.Brokers, ","),
		"topic", s.Topic, "format", s.Format, "state_topic", stateTopicLog(s),
		"compression", s.Compression, "tls", tc != nil, "sasl", s.saslMechanism)
	return r, nil
}

func stateTopicLog(s *settings) string {
	if !s.hasStateTopic {
		return "off"
	}
	return s.StateTopic.Topic
}

// connect sets up the transport: connections and the cluster metadata
// cache that routes each request to its partition's leader.
func (r *Receiver) connect() {
	ctx, stop := context.WithCancel(context.Background())
	r.transport = &kafkago.Transport{
		DialTimeout: min(r.s.Timeout, 10*time.Second),
		ClientID:    r.s.ClientID,
		TLS:         r.tls,
		SASL:        r.sasl,
		Context:     ctx,
	}
	r.client = &kafkago.Client{Addr: r.addr, Transport: r.transport, Timeout: r.s.Timeout}
	r.stop = stop
}

// reconnect replaces the transport, so that the next request starts from
// fresh cluster metadata. kafka-go refreshes its cache only every few
// seconds and not when a broker says it no longer leads a partition; a new
// transport asks at once.
func (r *Receiver) reconnect() {
	r.Close()
	r.connect()
}

// Close releases the connections. Deliver leaves nothing buffered.
// SendsJSON (publish.JSONSender): CloudEvents values are the events' JSON;
// the Debezium envelope and the state topic's values read the images.
func (r *Receiver) SendsJSON() bool {
	return r.s.Format != FormatDebezium && !r.s.hasStateTopic
}

func (r *Receiver) Close() error {
	r.stop()
	r.transport.CloseIdleConnections()
	return nil
}

// message is one Kafka record to produce and the event it belongs to.
type message struct {
	event     int // index in the Deliver batch
	topic     string
	partition int
	key       []byte
	value     []byte // nil: a tombstone
	headers   []kafkago.Header
	size      int // estimated bytes in a record batch
}

// Deliver produces events and returns nil once Kafka confirmed all of them;
// see the package documentation for what an error means.
func (r *Receiver) Deliver(ctx context.Context, events []history.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for start := 0; start < len(events); {
		msgs, end, stop := r.build(ctx, events, start, true)
		if len(msgs) > 0 {
			if failed, err := r.produce(ctx, msgs); err != nil {
				return r.failure(ctx, failed, err)
			}
		}
		r.release()
		if end == len(events) {
			return nil
		}
		if !errors.Is(stop, errRefusedBefore) {
			return r.failure(ctx, end, stop)
		}
		// events[end] is bound for a topic that refused the last event
		// sent to it. Probe with it alone: sending it in a round would
		// resend every later event of the batch each time the
		// dispatcher skips one refused event.
		msgs, _, stop = r.build(ctx, events[:end+1], end, false)
		if stop != nil {
			return r.failure(ctx, end, stop)
		}
		if failed, err := r.produce(ctx, msgs); err != nil {
			return r.failure(ctx, failed, err)
		}
		r.release()
		for _, m := range msgs {
			delete(r.refused, m.topic)
		}
		start = end + 1
	}
	return nil
}

// diagnoseEvery limits how often Deliver probes the brokers.
const diagnoseEvery = 10 * time.Second

// errRefusedBefore stops a round before an event for a refusing topic.
var errRefusedBefore = errors.New("topic refused the previous event")

// build returns the records of events[start:] up to the first event that
// cannot be sent now, where it stopped and why. With probe set it stops
// before an event bound for a topic in r.refused.
func (r *Receiver) build(ctx context.Context, events []history.Event, start int, probe bool) ([]message, int, error) {
	per := 1
	if r.s.hasStateTopic {
		per = 2
	}
	b := r.spare
	if b == nil {
		b = new(buffers)
	}
	r.spare, r.built = nil, b
	n := len(events) - start
	b.msgs = slices.Grow(b.msgs[:0], per*n)[:per*n] // route sets each message whole
	msgs := b.msgs
	end, stop := len(events), error(nil)
	// Routing may ask the cluster about a new topic: in order, one by one.
	keys := slices.Grow(b.keys[:0], 48*n)
	for i := start; i < len(events); i++ {
		from := len(keys)
		keys = render.AppendKey(keys, &events[i])
		key := keys[from:len(keys):len(keys)]
		if err := r.route(ctx, msgs[(i-start)*per:(i-start+1)*per], i, &events[i], key, probe); err != nil {
			end, stop = i, err
			break
		}
	}
	b.keys = keys
	// Rendering is pure and most of Deliver's work: spread it over the cores.
	if failed, err := r.renderAll(b, events, start, end, per); err != nil {
		end, stop = failed, err
	}
	return msgs[:(end-start)*per], end, stop
}

// buffers are what a batch's records are made of: their structs, keys,
// header values, headers and values, in a few allocations rather than
// several per record. Records hold capacity-limited slices of them, which
// stay valid when a buffer grows.
type buffers struct {
	msgs   []message
	keys   []byte
	arenas []arena // one per render worker
}

// release lets the next build reuse the buffers of the last one, whose
// records Kafka has now answered for. After a failure they are not
// reused: a request that timed out may still be reading them.
func (r *Receiver) release() {
	if b := r.built; b != nil && b.size() <= maxSpare {
		r.spare = b
	}
	r.built = nil
}

// maxSpare bounds the buffers a receiver keeps between batches.
const maxSpare = 64 << 20

func (b *buffers) size() int {
	n := cap(b.msgs)*int(unsafe.Sizeof(message{})) + cap(b.keys)
	for _, a := range b.arenas {
		n += cap(a.buf) + cap(a.headers)*int(unsafe.Sizeof(kafkago.Header{})) + cap(a.values) + cap(a.scratch)
	}
	return n
}

// route fills in event i's records' topics, partitions and keys: ms[0] on
// the event topic, ms[1] on the state topic.
func (r *Receiver) route(ctx context.Context, ms []message, i int, e *history.Event, key []byte, probe bool) error {
	topic, stateTopic := r.topicNames(e)
	ms[0] = message{event: i, topic: topic, key: key}
	var err error
	if ms[0].partition, err = r.partition(ctx, topic, false, key); err != nil {
		return err
	}
	if len(ms) > 1 {
		ms[1] = message{event: i, topic: stateTopic, key: key}
		if ms[1].partition, err = r.partition(ctx, stateTopic, true, key); err != nil {
			return err
		}
	}
	if probe && len(r.refused) > 0 {
		for _, m := range ms {
			if _, ok := r.refused[m.topic]; ok {
				return errRefusedBefore
			}
		}
	}
	return nil
}

// renderChunk is the fewest events worth a goroutine of their own.
const renderChunk = 64

// renderAll renders events[start:end] into msgs, concurrently in chunks.
// It returns the index of the first event that cannot be rendered, and
// why.
func (r *Receiver) renderAll(b *buffers, events []history.Event, start, end, per int) (int, error) {
	n := end - start
	workers := max(1, min(runtime.GOMAXPROCS(0), n/renderChunk))
	for len(b.arenas) < workers {
		b.arenas = append(b.arenas, arena{})
	}
	msgs := b.msgs
	if workers == 1 {
		return r.renderRange(&b.arenas[0], events, msgs, start, start, end, per)
	}
	type result struct {
		failed int
		err    error
	}
	results := make([]result, workers)
	var wg sync.WaitGroup
	for w := range workers {
		from, to := start+n*w/workers, start+n*(w+1)/workers
		work := func() {
			failed, err := r.renderRange(&b.arenas[w], events, msgs, start, from, to, per)
			results[w] = result{failed, err}
		}
		if w == workers-1 {
			work() // the last share here: one goroutine fewer to start and wait for
		} else {
			wg.Go(work)
		}
	}
	wg.Wait()
	for _, res := range results { // in event order: the first failure wins
		if res.err != nil {
			return res.failed, res.err
		}
	}
	return 0, nil
}

// renderRange renders events[from:to]; their records start at
// msgs[(from-start)*per].
func (r *Receiver) renderRange(a *arena, events []history.Event, msgs []message, start, from, to, per int) (int, error) {
	a.reset()
	for i := from; i < to; i++ {
		if err := r.render(a, msgs[(i-start)*per:(i-start+1)*per], &events[i]); err != nil {
			return i, err
		}
		if i == from && to-from > 1 {
			a.reserve(to - from)
		}
	}
	return 0, nil
}

// arena holds the header values, headers and values of a range of
// events' records.
type arena struct {
	buf     []byte // header values
	headers []kafkago.Header
	values  []byte // values not taken from the event as they are
	scratch []byte // structured mode's attribute values
}

// reset empties a for reuse.
func (a *arena) reset() {
	clear(a.headers) // no stale pointers for the garbage collector to follow
	a.buf, a.headers, a.values, a.scratch = a.buf[:0], a.headers[:0], a.values[:0], a.scratch[:0]
}

// reserve makes room for n events like the one rendered so far.
func (a *arena) reserve(n int) {
	more := func(used int) int { return used*(n-1) + used*n/8 } // and an eighth to spare
	a.buf = slices.Grow(a.buf, more(len(a.buf)))
	a.headers = slices.Grow(a.headers, more(len(a.headers)))
	a.values = slices.Grow(a.values, more(len(a.values)))
}

// header appends a header whose value is v and returns the arena's
// headers from start, capacity-limited.
func (a *arena) header(start int, key string, v []byte) []kafkago.Header {
	a.headers = append(a.headers, kafkago.Header{Key: key, Value: v})
	return a.headers[start:len(a.headers):len(a.headers)]
}

// constant header values, shared by all records (kafka-go only reads them).
var (
	contentTypeJSON       = []byte(render.ContentTypeJSON)
	contentTypeStructured = []byte(render.ContentTypeStructured)
)

// failure turns the first failed event index and its cause into the
// error the dispatcher understands.
func (r *Receiver) failure(ctx context.Context, index int, err error) error {
	var rej *rejection
	if errors.As(err, &rej) {
		return &publish.RejectedError{Index: index, Err: err}
	}
	// A connection that just ended says nothing; find out why, at most
	// every diagnoseEvery (not for timeouts: probing a silent broker would
	// stretch Deliver).
	if silent(err) && !isTimeout(err) && !errors.Is(err, context.DeadlineExceeded) && time.Since(r.diagnosed) > diagnoseEvery {
		r.diagnosed = time.Now()
		for _, b := range r.s.Brokers {
			if d := r.diagnose(ctx, b, err); d != "" {
				err = &wrapped{msg: err.Error() + " (" + d + ")", err: err}
				break
			}
		}
	}
	if index == 0 {
		return err
	}
	return &publish.PartialError{Confirmed: index, Err: err}
}

// rejection marks an error that refuses an event for good.
type rejection struct{ err error }

func (e *rejection) Error() string { return e.err.Error() }
func (e *rejection) Unwrap() error { return e.err }

// render fills in the values and headers of e's routed records, made in
// a.
func (r *Receiver) render(a *arena, ms []message, e *history.Event) error {
	m := &ms[0]
	var err error
	switch r.s.Format {
	case FormatBinary:
		if m.value, err = a.data(e); err == nil {
			start := len(a.headers)
			a.buf = r.ce.AppendBinary(a.buf, e, "ce_", func(name string, v []byte) {
				a.headers = append(a.headers, kafkago.Header{Key: name, Value: v})
			})
			m.headers = a.headers[start:len(a.headers):len(a.headers)]
		}
	case FormatStructured:
		var data []byte
		if data, err = a.data(e); err == nil {
			from := len(a.values)
			a.values, a.scratch = r.ce.AppendStructured(a.values, a.scratch, e, data)
			m.value = a.values[from:len(a.values):len(a.values)]
			m.headers = a.header(len(a.headers), "content-type", contentTypeStructured)
		}
	case FormatDebezium:
		if m.value, err = render.DebeziumJSON(e); err == nil {
			m.headers = a.header(len(a.headers), "content-type", contentTypeJSON)
		}
	}
	if err != nil {
		return &rejection{fmt.Errorf("kafka receiver %q: %w", r.name, err)}
	}
	m.size = recordSize(m)
	if len(ms) == 1 {
		return nil
	}
	// The state topic: the current image, or a tombstone once the object
	// is gone.
	s := &ms[1]
	start := len(a.headers)
	from := len(a.buf)
	a.buf = append(a.buf, e.EventID...)
	a.header(start, "connector-event-id", a.buf[from:len(a.buf):len(a.buf)])
	from = len(a.buf)
	a.buf = render.AppendSequence(a.buf, e.Sequence)
	s.headers = a.header(start, "connector-sequence", a.buf[from:len(a.buf):len(a.buf)])
	if e.Operation != history.OpDelete && e.After != nil {
		from := len(a.values)
		values, err := history.AppendValue(a.values, e.After)
		if err != nil {
			return &rejection{fmt.Errorf("kafka receiver %q: state of %s: %w", r.name, render.Key(e), err)}
		}
		a.values = values
		s.value = a.values[from:len(a.values):len(a.values)]
		s.headers = a.header(start, "content-type", contentTypeJSON)
	}
	s.size = recordSize(s)
	return nil
}

// data returns the CloudEvents data of e: the logged bytes when the
// dispatcher passed them on, else the event encoded into the arena.
func (a *arena) data(e *history.Event) ([]byte, error) {
	if e.Raw != nil {
		return e.Raw, nil
	}
	from := len(a.values)
	values, err := render.AppendData(a.values, e)
	if err != nil {
		return nil, err
	}
	a.values = values
	return a.values[from:len(a.values):len(a.values)], nil
}

// topicNames returns the event and state topic of e, cached per source
// and type.
func (r *Receiver) topicNames(e *history.Event) (string, string) {
	k := [2]string{e.Source.Name, e.Object.Type}
	if n, ok := r.names[k]; ok {
		return n[0], n[1]
	}
	n := [2]string{r.s.topic.expand(k[0], k[1]), ""}
	if r.s.hasStateTopic {
		n[1] = r.s.stateTopic.expand(k[0], k[1])
	}
	r.names[k] = n
	return n[0], n[1]
}

// recordSize estimates a record's bytes in a v2 record batch: the
// payload plus varint lengths and attributes.
func recordSize(m *message) int {
	n := 16 + len(m.key) + len(m.value)
	for _, h := range m.headers {
		n += 4 + len(h.Key) + len(h.Value)
	}
	return n
}

type nopLogger struct{}

func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}
func (nopLogger) Error(string, ...any) {}
func (nopLogger) Debug(string, ...any) {}
