package kafka

import (
	"crypto/tls"
	"fmt"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/os2sandbox/connector/configs/tlsconf"
)

// tlsConfig builds the client TLS configuration; nil when TLS is off.
func tlsConfig(name string, t *TLS) (*tls.Config, error) {
	return tlsconf.Build(fmt.Sprintf("kafka receiver %q", name), "the brokers'", t)
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
