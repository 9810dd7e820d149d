package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// diagnose explains a connection that ended without an answer. Brokers
// often just close the connection (a wrong SASL password with some
// brokers, plaintext spoken to a TLS listener) or never answer (TLS spoken
// to a plaintext listener), and the client sees only EOF or a timeout. So
// diagnose asks addr for its API versions, which Kafka answers before any
// login: as configured but without SASL, then with TLS the other way
// round, and says what the answers mean. It returns "" when it has
// nothing better than hint.
func (r *Receiver) diagnose(ctx context.Context, addr string, err error) string {
	if !silent(err) {
		return ""
	}
	configured := r.transport.TLS
	if r.apiVersions(ctx, addr, configured) == nil {
		if r.s.SASL != nil {
			return "the broker answers at " + addr + " but closed the connection during the SASL " + r.s.saslMechanism +
				" login of user " + quote(r.s.SASL.Username) + ": the username or password is wrong, or the user does not exist; check sasl.username and sasl.password"
		}
		return "the broker answers at " + addr + " but closes connections after that; if it wants SASL, configure sasl"
	}
	if configured != nil {
		if r.apiVersions(ctx, addr, nil) == nil {
			return "the broker's listener at " + addr + " does not use TLS; remove tls, or use the broker's TLS listener"
		}
		return ""
	}
	// Only to see whether the port speaks TLS: no credentials or events
	// travel on this connection.
	probe := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a probe that sends nothing but ApiVersions
	perr := r.apiVersions(ctx, addr, probe)
	var op *net.OpError
	if perr == nil || errors.As(perr, &op) && op.Op == "remote error" { // a TLS alert: TLS is spoken
		return "the broker's listener at " + addr + " wants TLS; configure tls (ca_file, and cert_file/key_file if it wants a client certificate)"
	}
	return ""
}

// probeTimeout bounds each of diagnose's probes.
const probeTimeout = 2 * time.Second

// silent reports whether err is a connection that ended or timed out
// without a Kafka error.
func silent(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, context.DeadlineExceeded) || isTimeout(err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// apiVersions connects to addr (with tc when not nil, never with SASL) and
// asks for the API versions, giving up after probeTimeout.
func (r *Receiver) apiVersions(ctx context.Context, addr string, tc *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, min(r.s.Timeout, probeTimeout))
	defer cancel()
	d := &kafkago.Dialer{ClientID: r.s.ClientID, TLS: tc}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	_, err = conn.ApiVersions()
	return err
}
