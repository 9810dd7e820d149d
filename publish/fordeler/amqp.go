package fordeler

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// window is the most messages published before their confirmations are
// awaited; it also sizes the buffer of returned messages, so the client's
// reader never blocks on it.
const window = 4096

// amqpTransport publishes to an AMQP 0-9-1 broker with publisher
// confirms.
type amqpTransport struct {
	r   *Receiver
	tls *tls.Config

	conn     *amqp.Connection
	ch       *amqp.Channel
	returns  chan amqp.Return
	chClosed chan *amqp.Error
	blocked  chan amqp.Blocking // the broker's connection.blocked/unblocked
}

func (t *amqpTransport) config() amqp.Config {
	a := t.r.s.AMQP
	cfg := amqp.Config{
		TLSClientConfig: t.tls,
		Heartbeat:       10 * time.Second,
		Locale:          "en_US",
		Dial:            amqp.DefaultDial(t.r.s.Timeout),
		Properties:      amqp.Table{"connection_name": "connector receiver " + t.r.name, "product": "connector"},
	}
	if a.Auth == "external" {
		cfg.SASL = []amqp.Authentication{&amqp.ExternalAuth{}}
	} else {
		cfg.SASL = []amqp.Authentication{&amqp.PlainAuth{Username: a.Username, Password: a.Password}}
	}
	return cfg
}

// dial opens a connection and a channel; the caller closes the connection.
func (t *amqpTransport) dial(ctx context.Context) (*amqp.Connection, *amqp.Channel, error) {
	u := *t.r.s.url
	u.User = nil // credentials travel in the SASL exchange, never in a logged URL
	type result struct {
		c   *amqp.Connection
		err error
	}
	// DialConfig takes no context; the handshake is bounded by Dial's
	// timeout (connect) and by this (TLS, login, open).
	done := make(chan result, 1)
	go func() {
		c, err := amqp.DialConfig(u.String(), t.config())
		done <- result{c, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		go func() {
			if res := <-done; res.c != nil {
				closeConn(res.c)
			}
		}()
		return nil, nil, ctx.Err()
	case <-time.After(2 * t.r.s.Timeout):
		go func() {
			if res := <-done; res.c != nil {
				closeConn(res.c)
			}
		}()
		return nil, nil, fmt.Errorf("no answer within %s: %w", 2*t.r.s.Timeout, context.DeadlineExceeded)
	}
	if res.err != nil {
		return nil, nil, res.err
	}
	ch, err := res.c.Channel()
	if err != nil {
		closeConn(res.c)
		return nil, nil, err
	}
	return res.c, ch, nil
}

// connect makes sure there is a channel in confirm mode.
func (t *amqpTransport) connect(ctx context.Context) error {
	if t.ch != nil && !t.ch.IsClosed() {
		return nil
	}
	t.drop()
	conn, ch, err := t.dial(ctx)
	if err != nil {
		return t.r.explain("connect to "+t.r.s.url.Redacted(), err)
	}
	if err := t.declare(ch); err != nil {
		closeConn(conn)
		return err
	}
	if err := ch.Confirm(false); err != nil {
		closeConn(conn)
		return t.r.explain("confirm mode", err)
	}
	t.conn, t.ch = conn, ch
	t.returns = ch.NotifyReturn(make(chan amqp.Return, window))
	t.chClosed = ch.NotifyClose(make(chan *amqp.Error, 1))
	t.blocked = conn.NotifyBlocked(make(chan amqp.Blocking, 16))
	t.r.log.Info("fordeler receiver: connected", "url", t.r.s.url.Redacted(), "exchange", t.r.s.AMQP.Exchange)
	return nil
}

// declare declares the exchange and queue when configured to.
func (t *amqpTransport) declare(ch *amqp.Channel) error {
	a := t.r.s.AMQP
	d := a.Declare
	if d == nil {
		return nil
	}
	if err := ch.ExchangeDeclare(a.Exchange, d.ExchangeType, true, false, false, false, nil); err != nil {
		return t.r.explain(fmt.Sprintf("declare exchange %q (%s)", a.Exchange, d.ExchangeType), err)
	}
	if d.Queue == "" {
		return nil
	}
	if _, err := ch.QueueDeclare(d.Queue, true, false, false, false, nil); err != nil {
		return t.r.explain(fmt.Sprintf("declare queue %q", d.Queue), err)
	}
	if err := ch.QueueBind(d.Queue, d.BindingKey, a.Exchange, false, nil); err != nil {
		return t.r.explain(fmt.Sprintf("bind queue %q to exchange %q with %q", d.Queue, a.Exchange, d.BindingKey), err)
	}
	return nil
}

// closeWait bounds closing a connection: a broker that blocks publishers
// (a memory or disk alarm) reads nothing, not even the close.
const closeWait = 2 * time.Second

// closeConn closes c, waiting at most closeWait for the broker's answer.
func closeConn(c *amqp.Connection) {
	_ = c.CloseDeadline(time.Now().Add(closeWait))
}

// drop closes the connection; the next deliver dials again.
func (t *amqpTransport) drop() {
	if t.conn != nil {
		closeConn(t.conn)
	}
	t.conn, t.ch, t.returns, t.chClosed, t.blocked = nil, nil, nil, nil, nil
}

func (t *amqpTransport) close() error {
	t.drop()
	return nil
}

func (t *amqpTransport) deliver(ctx context.Context, msgs []message) (int, error) {
	if err := t.connect(ctx); err != nil {
		return 0, err
	}
	for start := 0; start < len(msgs); start += window {
		end := min(start+window, len(msgs))
		n, err := t.publish(ctx, msgs[start:end])
		if err != nil {
			return start + n, err
		}
	}
	return len(msgs), nil
}

// publish sends msgs (at most window of them) and waits for their
// confirmations in order. It returns how many leading ones were acked and
// not returned.
func (t *amqpTransport) publish(ctx context.Context, msgs []message) (int, error) {
	a := t.r.s.AMQP
	confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	var pubErr error
	for i := range msgs {
		m := &msgs[i]
		dc, err := t.ch.PublishWithDeferredConfirmWithContext(ctx, a.Exchange, m.routingKey, true, false, amqp.Publishing{
			ContentType:  m.contentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    m.eventID,
			Timestamp:    m.timestamp,
			Type:         m.ceType,
			AppId:        "connector",
			Body:         m.body,
		})
		if err != nil {
			pubErr = err
			break
		}
		confirms = append(confirms, dc)
	}
	wait, cancel := context.WithTimeout(ctx, t.r.s.Timeout)
	defer cancel()
	returned := map[string]amqp.Return{}
	for i, dc := range confirms {
		acked, err := dc.WaitContext(wait)
		// A return comes before its ack, so it is in the buffer by now.
		t.drainReturns(returned)
		if ret, ok := returned[msgs[i].eventID]; ok {
			t.settle(wait, confirms[i+1:])
			return i, t.unroutable(ret)
		}
		switch {
		case err != nil:
			what := fmt.Sprintf("no publisher confirmation for event %d (sequence %d) within timeout %s", i, msgs[i].sequence, t.r.s.Timeout)
			if b := t.isBlocked(); b != "" {
				what += "; the broker blocks publishers (" + b + "): a memory or disk alarm, see rabbitmqctl status or ask the broker's operator"
			}
			t.drop() // unknown what the broker has; start afresh
			return i, t.r.explain(what, err)
		case !acked:
			if cerr := t.closeReason(); cerr != nil {
				return i, cerr
			}
			t.settle(wait, confirms[i+1:])
			return i, fmt.Errorf("fordeler receiver %q: the broker refused (nack) event %s (sequence %d); it is retried (a queue's overflow=reject-publish or a broker problem, see the broker's log)",
				t.r.name, msgs[i].eventID, msgs[i].sequence)
		}
	}
	if pubErr != nil {
		if cerr := t.closeReason(); cerr != nil {
			return len(confirms), cerr
		}
		t.drop()
		return len(confirms), t.r.explain("publish", pubErr)
	}
	return len(confirms), nil
}

// settle waits (until ctx ends) for the confirmations of the rest of a
// window that Deliver gives up on, and discards their returns: a later
// Deliver must not take them for returns of its own messages, which have
// the same ids. Should ctx end first, the connection is dropped instead.
func (t *amqpTransport) settle(ctx context.Context, rest []*amqp.DeferredConfirmation) {
	for _, dc := range rest {
		if _, err := dc.WaitContext(ctx); err != nil {
			t.drop()
			return
		}
	}
	t.drainReturns(map[string]amqp.Return{})
}

func (t *amqpTransport) drainReturns(into map[string]amqp.Return) {
	for {
		select {
		case ret, ok := <-t.returns:
			if !ok {
				return
			}
			into[ret.MessageId] = ret
		default:
			return
		}
	}
}

// isBlocked returns the reason the broker gave when it last blocked the
// connection and has not unblocked it since; "" when it is not blocked.
func (t *amqpTransport) isBlocked() string {
	reason := ""
	for {
		select {
		case b, ok := <-t.blocked:
			if !ok {
				return reason
			}
			reason = ""
			if b.Active {
				reason = b.Reason
			}
		default:
			return reason
		}
	}
}

// closeReason explains a channel or connection the broker closed, and
// drops it; nil when it is open.
func (t *amqpTransport) closeReason() error {
	if t.ch == nil || !t.ch.IsClosed() {
		return nil
	}
	var reason *amqp.Error
	select {
	case reason = <-t.chClosed:
	case <-time.After(100 * time.Millisecond):
	}
	t.drop()
	if reason == nil {
		return fmt.Errorf("fordeler receiver %q: the connection to %s was lost; it is dialled again: %w", t.r.name, t.r.s.url.Redacted(), amqp.ErrClosed)
	}
	return t.r.explain("the broker closed the channel", reason)
}

func (t *amqpTransport) unroutable(ret amqp.Return) error {
	ex := t.r.s.AMQP.Exchange
	if ex == "" {
		ex = "(default exchange)"
	}
	return fmt.Errorf("fordeler receiver %q: exchange %q routed event %s with routing key %q to no queue (%d %s), so it is retried, not dropped; bind a queue to the exchange for that key (rabbitmqadmin declare binding source=%s destination=QUEUE routing_key=%s), or fix amqp.routing_key",
		t.r.name, ex, ret.MessageId, ret.RoutingKey, ret.ReplyCode, ret.ReplyText, t.r.s.AMQP.Exchange, ret.RoutingKey)
}

// check connects as Deliver does and checks that the exchange exists.
func (t *amqpTransport) check(ctx context.Context) error {
	conn, ch, err := t.dial(ctx)
	if err != nil {
		return t.r.explain("connect to "+t.r.s.url.Redacted(), err)
	}
	defer closeConn(conn)
	a := t.r.s.AMQP
	if a.Exchange == "" {
		return nil // the default exchange always exists
	}
	if a.Declare != nil {
		return t.declare(ch)
	}
	// A passive declare fails (and closes the channel) when the exchange
	// is missing; the kind is not compared.
	if err := ch.ExchangeDeclarePassive(a.Exchange, "topic", true, false, false, false, nil); err != nil {
		return t.r.explain(fmt.Sprintf("exchange %q", a.Exchange), err)
	}
	return nil
}

// explain wraps err with what failed, the receiver's name and, where
// known, the fix.
func (r *Receiver) explain(what string, err error) error {
	msg := fmt.Sprintf("fordeler receiver %q: %s: %v", r.name, what, err)
	if h := r.hint(err); h != "" {
		msg += " (" + h + ")"
	}
	return &wrapped{msg: msg, err: err}
}

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }
