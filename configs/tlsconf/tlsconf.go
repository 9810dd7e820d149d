// Package tlsconf builds a client TLS configuration from a config's tls:
// block: the same for every receiver type, and the certificate files of
// the SQL sources.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Config is a receiver's tls: block; its presence turns TLS on.
type Config struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Build returns the client TLS configuration of t; nil when t is nil.
// Files are read now, so a missing or wrong file fails at startup with its
// name rather than at the first connection. what names the receiver in
// messages, e.g. `kafka receiver "events"`; peers names the servers, e.g.
// "the brokers'".
func Build(what, peers string, t *Config) (*tls.Config, error) {
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
			return nil, fmt.Errorf("%s: tls.ca_file: %w (give the path of the PEM file of the CA that signed %s certificates)", what, err, peers)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: tls.ca_file %s holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", what, t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: client certificate tls.cert_file %s / tls.key_file %s: %w", what, t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
