package capture

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
)

// Transient marks err as worth a retry with backoff (the server is
// restarting, the network failed): a source's Run reconnects from its
// last durable checkpoint instead of stopping.
func Transient(err error) error { return transientError{err} }

// Permanent marks err as one a retry cannot cure (a certificate that does
// not verify) although it wraps a network error.
func Permanent(err error) error { return permanentError{err} }

type transientError struct{ error }

func (e transientError) Unwrap() error { return e.error }

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// Marked reports what Transient or Permanent said of err; marked is false
// when neither did, and the source's driver-specific rules decide.
func Marked(err error) (transient, marked bool) {
	var t transientError
	if errors.As(err, &t) {
		return true, true
	}
	var p permanentError
	if errors.As(err, &p) {
		return false, true
	}
	return false, false
}

// NetworkFailure reports whether err is a failed or broken connection,
// whatever the driver: a retry may well succeed.
func NetworkFailure(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed)
}

// NetReason says in a few words why a connection failed, for messages
// that go on to name the fix.
func NetReason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ENOENT):
		return "no such socket"
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout"):
		return "timed out"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "unknown host " + dnsErr.Name
	}
	return "network error"
}

// TLSReason is the certificate verifier's own words from a TLS failure
// (from "x509: " on), or the whole error.
func TLSReason(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "x509: "); i >= 0 {
		return msg[i:]
	}
	return msg
}
