package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"syscall"

	kafkago "github.com/segmentio/kafka-go"
)

// fate says what a failed produce means for the events it carried.
type fate int

const (
	// retry: transient (broker down, leader moving, timeout); the same
	// events may succeed later.
	retry fate = iota
	// rejectRecord: the broker refuses something in this batch for good
	// (too large, invalid record); a batch of one names the event.
	rejectRecord
	// rejectTopic: the topic refuses every event (not authorised to write,
	// invalid name); the first event of the batch is refused.
	rejectTopic
)

func classify(err error) fate {
	switch {
	case errors.Is(err, kafkago.MessageSizeTooLarge),
		errors.Is(err, kafkago.RecordListTooLarge),
		errors.Is(err, kafkago.InvalidRecord):
		return rejectRecord
	case errors.Is(err, kafkago.TopicAuthorizationFailed),
		errors.Is(err, kafkago.InvalidTopic):
		return rejectTopic
	}
	return retry
}

// hint says how to fix err, for an operator; "" when there is nothing
// better to say than the error itself.
func (r *Receiver) hint(err error, topic string) string {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		notTLS    tls.RecordHeaderError
		invalid   x509.CertificateInvalidError
		opErr     *net.OpError
	)
	switch {
	case errors.Is(err, kafkago.SASLAuthenticationFailed):
		return "the broker refused the SASL " + r.s.saslMechanism + " login of user " + quote(r.s.SASL.Username) + "; check sasl.username and sasl.password"
	case errors.Is(err, kafkago.UnsupportedSASLMechanism):
		return "the broker does not offer SASL " + r.s.saslMechanism + "; set sasl.mechanism to one in the broker's sasl.enabled.mechanisms"
	case errors.Is(err, kafkago.IllegalSASLState):
		return "the broker does not expect SASL on this listener; remove sasl or use the broker's SASL listener"
	case errors.Is(err, kafkago.TopicAuthorizationFailed):
		return "the client's principal may not write topic " + quote(topic) + "; grant it WRITE and DESCRIBE (kafka-acls.sh --add --allow-principal User:NAME --operation Write --operation Describe --topic " + topic + ")"
	case errors.Is(err, kafkago.ClusterAuthorizationFailed):
		return "the client's principal lacks a cluster permission (CREATE to create topics); grant it, or create the topics yourself and set create_topics.enabled: false"
	case errors.Is(err, kafkago.MessageSizeTooLarge), errors.Is(err, kafkago.RecordListTooLarge):
		return "the event is larger than topic " + quote(topic) + " accepts; raise the topic's max.message.bytes (and the brokers' message.max.bytes), or leave large fields out in the mapping"
	case errors.As(err, &unknownCA):
		return "the broker's certificate is not signed by a CA this machine trusts; set tls.ca_file to the CA certificate (PEM)"
	case errors.As(err, &hostname):
		return "the broker's certificate does not name the host in brokers; use the name in the certificate or set tls.server_name"
	case errors.As(err, &invalid):
		return "the broker's certificate is not valid (expired or not for server use)"
	case errors.As(err, &notTLS):
		return "the broker's listener does not use TLS; remove tls, or use the broker's TLS listener"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens there: is the broker running, and are brokers host:port right?"
	case tlsAlert(err, "certificate required"):
		return "the broker wants a client certificate; set tls.cert_file and tls.key_file"
	case tlsAlert(err, "bad certificate"), tlsAlert(err, "unknown certificate authority"), tlsAlert(err, "certificate expired"):
		return "the broker refused the client certificate (tls.cert_file); is it signed by a CA the broker trusts, and valid?"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "no answer within timeout; the broker is down, unreachable or overloaded"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return "cannot connect; check brokers, DNS and firewalls"
	}
	return ""
}

func quote(s string) string { return `"` + s + `"` }

// tlsAlert reports whether err is the TLS alert the peer sent, e.g.
// "certificate required" (crypto/tls does not export the alert type).
func tlsAlert(err error, alert string) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" && strings.HasSuffix(op.Err.Error(), "tls: "+alert)
}
