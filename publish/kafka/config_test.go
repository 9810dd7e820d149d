package kafka

import (
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/os2sandbox/connector/configs"
	"github.com/os2sandbox/connector/publish/publishtest"
)

func TestConfigDefaults(t *testing.T) {
	// The dispatcher's own keys sit in the same mapping and are not ours.
	s, err := decodeConfig(publishtest.YAMLNode(t, `
name: events
type: kafka
start: earliest
filter: {types: [Employee]}
classification: internal
batch: {size: 500}
retry: {max: 1m}
brokers: [kafka-1:9092, kafka-2:9092]
`), "connector.yaml", "events")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"topic", s.Topic, "connector.{source}.{type}"},
		{"format", s.Format, FormatBinary},
		{"type_prefix", s.TypePrefix, "dk.os2sandbox.connector"},
		{"compression", s.compression, kafkago.Lz4},
		{"batch_size", s.BatchSize, 10000},
		{"batch_bytes", s.BatchBytes, 1000000},
		{"timeout", s.Timeout, 10 * time.Second},
		{"create_topics", s.createTopics, true},
		{"partitions", s.partitions, 6},
		{"replication_factor", s.replication, -1},
		{"state topic", s.hasStateTopic, false},
		{"client_id", s.ClientID, "connector"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the message
	}{
		{"no brokers", "topic: x", []string{`connector.yaml:1:`, "needs brokers"}},
		{"broker without port", "brokers: [kafka-1]", []string{":1:", `"kafka-1" has no port`}},
		{"misspelt key", "brokers: [k:9092]\ntopci: x", []string{":2:", `unknown key "topci"`, `did you mean "topic"?`}},
		{"nested misspelt key", "brokers: [k:9092]\ncreate_topics: {partitons: 3}", []string{":2:", `unknown key "partitons"`}},
		{"unknown format", "brokers: [k:9092]\nformat: avro", []string{":2:", `unknown format "avro"`, "cloudevents-binary"}},
		{"unknown placeholder", "brokers: [k:9092]\ntopic: cdc.{table}", []string{":2:", "unknown placeholder {table}"}},
		{"illegal topic character", "brokers: [k:9092]\ntopic: 'cdc/{type}'", []string{":2:", `'/'`}},
		{"unclosed placeholder", "brokers: [k:9092]\ntopic: cdc.{type", []string{"unclosed"}},
		{"state topic is the event topic", "brokers: [k:9092]\nstate_topic: {enabled: true, topic: 'connector.{source}.{type}'}", []string{"must not be the event topic"}},
		{"bad compression", "brokers: [k:9092]\ncompression: brotli", []string{":2:", `unknown compression "brotli"`}},
		{"bad retention", "brokers: [k:9092]\ncreate_topics: {retention: a week}", []string{":2:", `"a week" is not a duration`}},
		{"bad cleanup policy", "brokers: [k:9092]\ncreate_topics: {cleanup_policy: forever}", []string{"unknown cleanup_policy"}},
		{"cleanup policy among configs", "brokers: [k:9092]\ncreate_topics: {configs: {cleanup.policy: compact}}", []string{"create_topics.cleanup_policy"}},
		{"linger", "brokers: [k:9092]\nlinger: 5ms", []string{":2:", "linger does not apply", "batch"}},
		{"timeout not a duration", "brokers: [k:9092]\ntimeout: 10", []string{":2:", "wrong type"}},
		{"unknown SASL mechanism", "brokers: [k:9092]\nsasl: {mechanism: gssapi, username: u, password: p}", []string{`unknown SASL mechanism "gssapi"`, "scram-sha-512"}},
		{"SASL without password", "brokers: [k:9092]\nsasl: {mechanism: plain, username: u}", []string{"needs a username and a password"}},
		{"half a client certificate", "brokers: [k:9092]\ntls: {key_file: k.pem}", []string{"cert_file and key_file"}},
		{"bad type prefix", "brokers: [k:9092]\ntype_prefix: 'dk..x'", []string{"not a dotted name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeConfig(publishtest.YAMLNode(t, tt.yaml), "connector.yaml", "events")
			if err == nil {
				t.Fatal("no error")
			}
			if !configs.IsConfigError(err) {
				t.Errorf("%T is not a config error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

func TestRetention(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""}, {"forever", "-1"}, {"168h", "604800000"}, {"30d", "2592000000"}, {"90m", "5400000"},
	}
	for _, tt := range tests {
		got, err := retentionMs(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("retentionMs(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"7 days", "xd", "0s"} {
		if _, err := retentionMs(bad); err == nil {
			t.Errorf("retentionMs(%q) accepted", bad)
		}
	}
}

func TestTemplate(t *testing.T) {
	tests := []struct {
		template, source, typ, want string
	}{
		{"connector.{source}.{type}", "hr", "OrganisationEnhed", "connector.hr.organisationenhed"},
		{"connector.{source}.{type}.state", "HR-Prod", "employee", "connector.hr-prod.employee.state"},
		{"{type}", "hr", "Bruger med ÆØÅ/é", "bruger_med_aeoeaa__"},
		{"all-events", "hr", "Employee", "all-events"},
	}
	for _, tt := range tests {
		tpl, err := parseTemplate(tt.template)
		if err != nil {
			t.Fatal(err)
		}
		got := tpl.expand(tt.source, tt.typ)
		if got != tt.want {
			t.Errorf("%s with (%s, %s) = %q, want %q", tt.template, tt.source, tt.typ, got, tt.want)
		}
		if !tpl.regexp().MatchString(got) {
			t.Errorf("regexp of %s does not match %q", tt.template, got)
		}
	}
}
