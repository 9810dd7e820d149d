package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
)

func TestErrorClassification(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name                       string
		err                        error
		transient, marked, network bool
		reason                     string
	}{
		{name: "marked transient", err: Transient(errors.New("too many connections")), transient: true, marked: true, reason: "network error"},
		{name: "permanent wins over a network error", err: Permanent(fmt.Errorf("tls: %w", refused)), marked: true, network: true, reason: "connection refused"},
		{name: "wrapped mark", err: fmt.Errorf("source: %w", Transient(io.EOF)), transient: true, marked: true, network: true, reason: "network error"},
		{name: "refused", err: refused, network: true, reason: "connection refused"},
		{name: "reset", err: fmt.Errorf("read: %w", syscall.ECONNRESET), network: true, reason: "network error"},
		{name: "no socket", err: &net.OpError{Op: "dial", Net: "unix", Err: syscall.ENOENT}, network: true, reason: "no such socket"},
		{name: "timeout", err: context.DeadlineExceeded, network: true, reason: "timed out"}, // it is a net.Error
		{name: "unknown host", err: &net.DNSError{Name: "db.example", Err: "no such host"}, network: true, reason: "unknown host db.example"},
		{name: "other", err: errors.New("syntax error"), reason: "network error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			transient, marked := Marked(tt.err)
			if transient != tt.transient || marked != tt.marked {
				t.Errorf("Marked = %v, %v; want %v, %v", transient, marked, tt.transient, tt.marked)
			}
			if got := NetworkFailure(tt.err); got != tt.network {
				t.Errorf("NetworkFailure = %v, want %v", got, tt.network)
			}
			if got := NetReason(tt.err); got != tt.reason {
				t.Errorf("NetReason = %q, want %q", got, tt.reason)
			}
		})
	}
	if got := TLSReason(errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority")); got != "x509: certificate signed by unknown authority" {
		t.Errorf("TLSReason = %q", got)
	}
}
