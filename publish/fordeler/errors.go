package fordeler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"
)

// hint says how to fix err, for an operator; "" when there is nothing
// better to say than the error itself.
func (r *Receiver) hint(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		notTLS    tls.RecordHeaderError
		invalid   x509.CertificateInvalidError
		amqpErr   *amqp.Error
		opErr     *net.OpError
	)
	server := "the server"
	if r.s.Transport == TransportAMQP {
		server = "the broker"
	}
	switch {
	case errors.Is(err, amqp.ErrCredentials):
		if r.s.AMQP.Auth == "external" {
			return "the broker refused the client certificate as login; is there a user named as the certificate's subject (ssl_cert_login_from), with rights on the vhost?"
		}
		return "the broker refused the login of user " + quote(r.s.AMQP.Username) + "; check amqp.username and amqp.password (or the secret it is substituted from)"
	case errors.Is(err, amqp.ErrSASL):
		return "the broker does not offer the " + strings.ToUpper(r.s.AMQP.Auth) + " mechanism; for external, enable the broker's rabbitmq_auth_mechanism_ssl plugin"
	case errors.Is(err, amqp.ErrVhost):
		return "the broker has no vhost " + quote(vhost(r)) + " or the user may not use it; fix the path of amqp.url (e.g. amqps://host:5671/BF) or grant the user access (rabbitmqctl set_permissions -p VHOST USER ...)"
	case errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound && strings.Contains(amqpErr.Reason, "exchange"):
		return "the exchange does not exist in vhost " + quote(vhost(r)) + "; check amqp.exchange, ask the broker's operator to create it, or set amqp.declare to have the receiver declare it"
	case errors.As(err, &amqpErr) && amqpErr.Code == amqp.AccessRefused:
		return "the user lacks a permission on the vhost (write to the exchange, or configure to declare); grant it (rabbitmqctl set_permissions) or ask the broker's operator"
	case errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotAllowed:
		return "the broker does not allow this (often: no such vhost " + quote(vhost(r)) + ", or no access to it)"
	case errors.As(err, &amqpErr) && amqpErr.Code == amqp.PreconditionFailed:
		return "the exchange or queue exists with other settings than amqp.declare asks for; match them, or remove declare"
	case errors.As(err, &unknownCA):
		return server + "'s certificate is not signed by a CA this machine trusts; set tls.ca_file to the CA certificate (PEM)"
	case errors.As(err, &hostname):
		return server + "'s certificate does not name the host in the url; use the name in the certificate or set tls.server_name"
	case errors.As(err, &invalid):
		return server + "'s certificate is not valid (expired or not for server use)"
	case errors.As(err, &notTLS):
		return server + " does not speak TLS on that port; use its TLS port, or amqp:// / http:// without TLS"
	case tlsAlert(err, "certificate required"):
		return server + " wants a client certificate; set tls.cert_file and tls.key_file"
	case tlsAlert(err, "bad certificate"), tlsAlert(err, "unknown certificate authority"), tlsAlert(err, "certificate expired"), tlsAlert(err, "unknown ca"):
		return server + " refused the client certificate (tls.cert_file); is it signed by a CA it trusts, and valid?"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens there: is " + server + " running, and are the url's host and port right?"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "no answer within timeout; " + server + " is down, unreachable or overloaded"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		tlsOn := r.s.TLS != nil || r.s.url.Scheme == "amqps" || r.s.url.Scheme == "https"
		switch {
		case !tlsOn:
			return server + " closed the connection; if its port wants TLS, use amqps:// or https://"
		case r.s.TLS == nil || r.s.TLS.CertFile == "":
			// With TLS 1.3 a refused client certificate can show as a
			// reset instead of the "certificate required" alert.
			return server + " closed the connection; if it wants a client certificate, set tls.cert_file and tls.key_file"
		}
		return server + " closed the connection"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return "cannot connect; check the url's host, DNS and firewalls"
	}
	return ""
}

func vhost(r *Receiver) string {
	v := strings.TrimPrefix(r.s.url.Path, "/")
	if v == "" {
		return "/"
	}
	return v
}

func quote(s string) string { return `"` + s + `"` }

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// tlsAlert reports whether err is the TLS alert the peer sent, e.g.
// "certificate required" (crypto/tls does not export the alert type).
func tlsAlert(err error, alert string) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return strings.HasSuffix(op.Err.Error(), "tls: "+alert)
	}
	return strings.Contains(err.Error(), "remote error: tls: "+alert)
}
