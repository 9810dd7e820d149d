package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// tlsConfig builds the client TLS configuration; nil when TLS is off.
// Files are read now, so a missing or wrong file fails at startup with its
// name rather than at the first connection.
func tlsConfig(name string, t *TLS) (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, warned about at startup
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka receiver %q: tls.ca_file: %w (give the path of the PEM file of the CA that signed the brokers' certificates)", name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka receiver %q: tls.ca_file %s holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", name, t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka receiver %q: client certificate tls.cert_file %s / tls.key_file %s: %w", name, t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// saslMechanism builds the SASL mechanism; nil when SASL is off.
func saslMechanism(name string, s *settings) (sasl.Mechanism, error) {
	if s.SASL == nil {
		return nil, nil
	}
	switch s.saslMechanism {
	case "plain":
		return plain.Mechanism{Username: s.SASL.Username, Password: s.SASL.Password}, nil
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if s.saslMechanism == "scram-sha-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, s.SASL.Username, s.SASL.Password)
		if err != nil {
			// Only a username or password that SASLprep refuses gets here;
			// never print them.
			return nil, fmt.Errorf("kafka receiver %q: sasl: username or password is not valid for SCRAM: %w", name, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("kafka receiver %q: unknown SASL mechanism %q", name, s.saslMechanism)
}
