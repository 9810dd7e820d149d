// Package fordeler is the message-distributor receiver: it delivers the
// agent's events to a message distributor ("fordeler") that public-sector
// receivers subscribe through — the Danish Beskedfordeler over AMQP 0-9-1
// (github.com/rabbitmq/amqp091-go), or any HTTP endpoint — and says
// truthfully which events the far side confirmed.
//
// # Delivery
//
// Every event becomes one message: a Haendelsesbesked (the Beskedfordeler's
// XML envelope around the canonical event, render.Besked) or a CloudEvent
// (render.CloudEvents). Deliver returns nil only when every message of the
// batch is confirmed:
//
//   - AMQP: the channel is in confirm mode and every message is published
//     persistent and mandatory. A message counts as confirmed when the
//     broker acked it and did not return it as unroutable. Deliver reports
//     the leading confirmed messages of a batch (a *publish.PartialError)
//     after a nack, a return, a lost connection or no confirmation within
//     timeout; the dispatcher redelivers the rest. After a lost connection
//     or a timeout the connection is dropped and the next Deliver dials
//     again, so a broker restart costs a retry, not the receiver.
//     Messages are pipelined (up to 4096 before their confirmations are
//     awaited), so the messages after a returned or nacked one may already
//     be on their queues; the redelivery sends them again. Their first
//     copies then precede the first copy of the returned one: consumers
//     that need the order use the event's sequence or object version.
//   - HTTP: a 2xx answer confirms the request's events. 408, 425, 429 and
//     5xx are retried (the dispatcher's backoff, and no request before a
//     Retry-After the server gave); so are 401, 403, 404 and the like,
//     which are configuration errors of the receiver, not faults of one
//     event. Another 4xx refuses the event for good: a
//     *publish.RejectedError naming the status and an excerpt of the
//     answer, which the dispatcher dead-letters. Redirects are not
//     followed.
//
// Redelivery sends identical messages (same bytes, same message id or
// Idempotency-Key: the event id), so consumers deduplicate on the event id.
package fordeler

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/configs/tlsconf"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/render"
)

func init() { publish.Register("fordeler", New) }

// Receiver delivers events to a message distributor. It implements
// publish.Receiver, publish.Checker and publish.JSONSender.
type Receiver struct {
	name   string
	s      *settings
	log    publish.Logger
	ce     render.CloudEvents
	besked *render.Besked

	mu sync.Mutex // one Deliver or Check at a time
	t  transport
	// scratch is reused for the structured rendering's attribute values.
	scratch []byte
}

var (
	_ publish.Receiver   = (*Receiver)(nil)
	_ publish.Checker    = (*Receiver)(nil)
	_ publish.JSONSender = (*Receiver)(nil)
)

// transport carries rendered messages to the distributor.
type transport interface {
	// deliver sends msgs in order and returns how many leading ones the
	// far side confirmed; with an error, a *rejection refuses msgs[n].
	deliver(ctx context.Context, msgs []message) (int, error)
	check(ctx context.Context) error
	close() error
}

// message is one event rendered for the wire.
type message struct {
	eventID     string
	sequence    uint64
	routingKey  string // AMQP
	contentType string
	ceType      string
	timestamp   time.Time
	body        []byte
	headers     []render.Attribute // HTTP binary mode: ce-* headers
}

// New builds a fordeler receiver from its configuration node. It does not
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
		return nil, fmt.Errorf("fordeler receiver %q: no installation id (the CloudEvents source and ObjektRegistreringId need it)", opts.Name)
	}
	log := opts.Log
	if log == nil {
		log = nopLogger{}
	}
	peers := "the " + s.Transport + " server's"
	tc, err := tlsconf.Build(fmt.Sprintf("fordeler receiver %q", opts.Name), peers, s.TLS)
	if err != nil {
		return nil, err
	}
	if tc != nil && tc.InsecureSkipVerify {
		log.Warn("fordeler receiver: TLS certificate verification is OFF (tls.insecure_skip_verify); anyone on the network path can read and alter events and credentials. Use tls.ca_file instead.")
	}
	r := &Receiver{
		name: opts.Name,
		s:    s,
		log:  log,
		ce:   render.CloudEvents{InstallationID: opts.InstallationID, TypePrefix: s.TypePrefix},
	}
	if s.Haendelsesbesked != nil {
		r.besked = s.Haendelsesbesked.besked(opts.InstallationID)
	}
	switch s.Transport {
	case TransportAMQP:
		if s.url.Scheme == "amqp" {
			log.Warn("fordeler receiver: amqp:// without TLS sends the password and the events in clear text; use amqps://")
		}
		if s.url.Scheme == "amqps" && tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12} // the system's CAs
		}
		r.t = &amqpTransport{r: r, tls: tc}
	case TransportHTTP:
		if s.url.Scheme == "http" && (s.HTTP.BearerToken != "" || s.HTTP.Password != "") {
			log.Warn("fordeler receiver: http:// sends the credentials and the events in clear text; use https://")
		}
		r.t = newHTTPTransport(r, tc)
	}
	log.Info("fordeler receiver ready", "transport", s.Transport, "url", s.url.Redacted(), "format", s.Format,
		"mode", s.mode, "tls", tc != nil)
	return r, nil
}

// SendsJSON (publish.JSONSender): every rendering carries the event's JSON;
// only relateret_objekt reads the images.
func (r *Receiver) SendsJSON() bool { return r.besked == nil || !r.besked.NeedsImages() }

// Close releases the connection. Deliver leaves nothing unconfirmed.
func (r *Receiver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.t.close()
}

// Check tests the connection and what Deliver needs (connector check). It
// sends no event.
func (r *Receiver) Check(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 3*r.s.Timeout)
	defer cancel()
	return r.t.check(ctx)
}

// Deliver sends events and returns nil once the distributor confirmed all
// of them; see the package documentation for what an error means.
func (r *Receiver) Deliver(ctx context.Context, events []history.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	msgs := make([]message, 0, len(events))
	var renderErr error
	for i := range events {
		m, err := r.render(&events[i])
		if err != nil {
			renderErr = fmt.Errorf("fordeler receiver %q: %w", r.name, err)
			break
		}
		msgs = append(msgs, m)
	}
	if len(msgs) > 0 {
		n, err := r.t.deliver(ctx, msgs)
		if err != nil {
			var rej *rejection
			if errors.As(err, &rej) {
				return &publish.RejectedError{Index: n, Err: err}
			}
			if n == 0 {
				return err
			}
			return &publish.PartialError{Confirmed: n, Err: err}
		}
	}
	if renderErr != nil {
		return &publish.RejectedError{Index: len(msgs), Err: renderErr}
	}
	return nil
}

// render turns e into its message.
func (r *Receiver) render(e *history.Event) (message, error) {
	m := message{
		eventID:   e.EventID,
		sequence:  e.Sequence,
		ceType:    r.ce.Type(e),
		timestamp: e.ObservedAt.Time,
	}
	if r.s.Transport == TransportAMQP {
		m.routingKey = r.s.routingKey.expand(e.Source.Name, e.Object.Type, e.Operation)
	}
	var err error
	switch {
	case r.s.Format == FormatHaendelsesbesked:
		m.contentType = render.ContentTypeXML
		m.body, err = r.besked.Haendelsesbesked(nil, e)
	case r.s.mode == ModeBinary:
		m.contentType = render.ContentTypeJSON
		if m.body, err = render.Data(e); err == nil {
			m.headers = render.Binary(r.ce.Attributes(e), "ce-")
		}
	default: // structured (AMQP, HTTP structured and batch)
		m.contentType = render.ContentTypeStructured
		var data []byte
		if data, err = render.Data(e); err == nil {
			m.body, r.scratch = r.ce.AppendStructured(nil, r.scratch, e, data)
		}
	}
	return m, err
}

// rejection marks an error that refuses one message for good.
type rejection struct{ err error }

func (e *rejection) Error() string { return e.err.Error() }
func (e *rejection) Unwrap() error { return e.err }

type nopLogger struct{}

func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}
func (nopLogger) Error(string, ...any) {}
func (nopLogger) Debug(string, ...any) {}
