package kafka

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/configs"
	"github.com/os2sandbox/connector/configs/tlsconf"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/render"
)

// Formats of the event topic's values.
const (
	FormatBinary     = "cloudevents-binary"
	FormatStructured = "cloudevents-structured"
	FormatDebezium   = "debezium"
)

// Defaults.
const (
	DefaultTopic      = "connector.{source}.{type}"
	DefaultStateTopic = "connector.{source}.{type}.state"
	DefaultBatchSize  = 10000
	// DefaultBatchBytes stays under Kafka's default message.max.bytes
	// (1048588), which the broker applies to a whole record batch.
	DefaultBatchBytes  = 1000000
	DefaultTimeout     = 10 * time.Second
	DefaultPartitions  = 6
	DefaultCompression = "lz4"
	DefaultClientID    = "connector"
)

// Config is the kafka receiver's YAML configuration. The dispatcher's keys
// (publish.CommonKeys) sit next to these in the same mapping.
type Config struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// Topic is the event topic template; {source} is the source's name and
	// {type} the object type, both lower-cased.
	Topic string `yaml:"topic"`
	// Format is cloudevents-binary (default), cloudevents-structured or
	// debezium.
	Format string `yaml:"format"`
	// TypePrefix starts every CloudEvents type.
	TypePrefix   string       `yaml:"type_prefix"`
	CreateTopics CreateTopics `yaml:"create_topics"`
	StateTopic   StateTopic   `yaml:"state_topic"`
	// Compression is none, gzip, snappy, lz4 (default) or zstd.
	Compression string `yaml:"compression"`
	// BatchSize and BatchBytes bound one produce request to one partition.
	BatchSize  int `yaml:"batch_size"`
	BatchBytes int `yaml:"batch_bytes"`
	// Linger is accepted only to explain that it does not apply (see
	// docs/receivers/kafka.md).
	Linger string `yaml:"linger"`
	// Timeout bounds each request to Kafka (connect, produce, metadata).
	Timeout  time.Duration `yaml:"timeout"`
	ClientID string        `yaml:"client_id"`
	TLS      *TLS          `yaml:"tls"`
	SASL     *SASL         `yaml:"sasl"`
}

// CreateTopics says whether and how the receiver creates missing topics.
type CreateTopics struct {
	Enabled           *bool  `yaml:"enabled"` // default true
	Partitions        int    `yaml:"partitions"`
	ReplicationFactor int    `yaml:"replication_factor"` // 0: the broker's default
	Retention         string `yaml:"retention"`          // a duration, "7d" or "forever"; "": broker default
	CleanupPolicy     string `yaml:"cleanup_policy"`     // delete (default), compact, or "compact,delete"
	// Configs are further topic configs, e.g. min.insync.replicas: "2".
	Configs map[string]string `yaml:"configs"`
}

// StateTopic configures the compacted current-state topic.
type StateTopic struct {
	Enabled bool   `yaml:"enabled"`
	Topic   string `yaml:"topic"`
}

// TLS configures TLS to the brokers; its presence turns TLS on.
type TLS = tlsconf.Config

// SASL configures SASL authentication.
type SASL struct {
	Mechanism string `yaml:"mechanism"` // plain, scram-sha-256, scram-sha-512
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// settings is the validated configuration.
type settings struct {
	Config
	createTopics  bool
	retentionMs   string // "" when the broker's default applies
	compression   kafkago.Compression
	topic         template
	stateTopic    template
	saslMechanism string
	hasStateTopic bool
	replication   int
	partitions    int
}

// decodeConfig decodes and validates the receiver's node from file.
// Errors are *configs.Error naming the line.
func decodeConfig(node *yaml.Node, file, name string) (*settings, error) {
	if file == "" {
		file = fmt.Sprintf("receiver %q", name) // keeps the line in messages
	}
	var cfg Config
	if err := configs.Decode(file, node, &cfg, publish.CommonKeys...); err != nil {
		return nil, err
	}
	at := func(path ...string) *yaml.Node { return configs.Value(node, path...) }
	bad := func(n *yaml.Node, hint, format string, args ...any) error {
		if n == nil {
			n = node
		}
		return configs.Errorf(file, n, hint, format, args...)
	}
	s := &settings{Config: cfg}

	if len(cfg.Brokers) == 0 {
		return nil, bad(nil, `e.g. brokers: ["kafka-1.example.org:9092"]`, "kafka receiver needs brokers")
	}
	for _, b := range cfg.Brokers {
		if _, port, ok := strings.Cut(b, ":"); !ok || port == "" {
			return nil, bad(at("brokers"), "write host:port, e.g. kafka-1.example.org:9092", "broker %q has no port", b)
		}
	}
	if s.Topic == "" {
		s.Topic = DefaultTopic
	}
	var err error
	if s.topic, err = parseTemplate(s.Topic); err != nil {
		return nil, bad(at("topic"), "placeholders are {source} and {type}; other characters must be a-z A-Z 0-9 . _ -", "topic: %v", err)
	}
	switch s.Format {
	case "":
		s.Format = FormatBinary
	case FormatBinary, FormatStructured, FormatDebezium:
	default:
		return nil, bad(at("format"), "use cloudevents-binary, cloudevents-structured or debezium", "unknown format %q", s.Format)
	}
	if s.TypePrefix == "" {
		s.TypePrefix = render.DefaultTypePrefix
	}
	for _, part := range strings.Split(s.TypePrefix, ".") {
		if part == "" || strings.ContainsAny(part, " /\t") {
			return nil, bad(at("type_prefix"), "a dotted reverse-DNS name, e.g. dk.example.hr", "type_prefix %q is not a dotted name", s.TypePrefix)
		}
	}

	ct := cfg.CreateTopics
	s.createTopics = ct.Enabled == nil || *ct.Enabled
	s.partitions = ct.Partitions
	if s.partitions == 0 {
		s.partitions = DefaultPartitions
	}
	if s.partitions < 0 {
		return nil, bad(at("create_topics", "partitions"), "a positive number", "create_topics.partitions is %d", ct.Partitions)
	}
	s.replication = ct.ReplicationFactor
	if s.replication == 0 {
		s.replication = -1 // the broker's default.replication.factor (Kafka 2.4+)
	}
	if s.replication < -1 {
		return nil, bad(at("create_topics", "replication_factor"), "a positive number, or leave it out for the broker's default", "create_topics.replication_factor is %d", ct.ReplicationFactor)
	}
	if s.retentionMs, err = retentionMs(ct.Retention); err != nil {
		return nil, bad(at("create_topics", "retention"), `a duration such as 168h or 30d, or "forever"`, "create_topics.retention: %v", err)
	}
	switch ct.CleanupPolicy {
	case "", "delete", "compact", "compact,delete", "delete,compact":
	default:
		return nil, bad(at("create_topics", "cleanup_policy"), `use delete, compact or "compact,delete"`, "unknown cleanup_policy %q", ct.CleanupPolicy)
	}
	for k := range ct.Configs {
		if k == "cleanup.policy" || k == "retention.ms" {
			return nil, bad(at("create_topics", "configs"), "use create_topics.cleanup_policy / retention", "create_topics.configs sets %s", k)
		}
	}

	if st := cfg.StateTopic; st.Enabled || st.Topic != "" {
		s.hasStateTopic = st.Enabled
		if st.Topic == "" {
			s.StateTopic.Topic = DefaultStateTopic
		}
		if s.stateTopic, err = parseTemplate(s.StateTopic.Topic); err != nil {
			return nil, bad(at("state_topic", "topic"), "placeholders are {source} and {type}", "state_topic.topic: %v", err)
		}
		if s.hasStateTopic && s.stateTopic.raw == s.topic.raw {
			return nil, bad(at("state_topic", "topic"), "the state topic is compacted and must not be the event topic", "state_topic.topic equals topic %q", s.Topic)
		}
	}

	if s.Compression == "" {
		s.Compression = DefaultCompression
	}
	if s.compression, err = compressionCodec(s.Compression); err != nil {
		return nil, bad(at("compression"), "use none, gzip, snappy, lz4 or zstd", "%v", err)
	}
	if s.BatchSize == 0 {
		s.BatchSize = DefaultBatchSize
	}
	if s.BatchBytes == 0 {
		s.BatchBytes = DefaultBatchBytes
	}
	if s.BatchSize < 0 || s.BatchBytes < 0 {
		return nil, bad(at("batch_size"), "positive numbers", "batch_size %d / batch_bytes %d", s.BatchSize, s.BatchBytes)
	}
	if s.Linger != "" {
		return nil, bad(at("linger"), "remove it; the dispatcher's batch setting decides how many events travel together",
			"linger does not apply to the kafka receiver: each batch is produced at once and confirmed with acks=all before the next")
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Timeout < 0 {
		return nil, bad(at("timeout"), "e.g. 10s", "timeout is negative")
	}
	if s.ClientID == "" {
		s.ClientID = DefaultClientID
	}
	if t := s.TLS; t != nil {
		if (t.CertFile == "") != (t.KeyFile == "") {
			return nil, bad(at("tls"), "a client certificate needs both cert_file and key_file", "tls: only one of cert_file and key_file is set")
		}
	}
	if a := s.SASL; a != nil {
		switch strings.ToLower(a.Mechanism) {
		case "plain", "scram-sha-256", "scram-sha-512":
			s.saslMechanism = strings.ToLower(a.Mechanism)
		default:
			return nil, bad(at("sasl", "mechanism"), "use plain, scram-sha-256 or scram-sha-512", "unknown SASL mechanism %q", a.Mechanism)
		}
		if a.Username == "" || a.Password == "" {
			return nil, bad(at("sasl"), "set sasl.username and sasl.password (e.g. password: ${env:KAFKA_PASSWORD})", "sasl needs a username and a password")
		}
	}
	return s, nil
}

func compressionCodec(name string) (kafkago.Compression, error) {
	switch strings.ToLower(name) {
	case "none":
		return 0, nil
	case "gzip":
		return kafkago.Gzip, nil
	case "snappy":
		return kafkago.Snappy, nil
	case "lz4":
		return kafkago.Lz4, nil
	case "zstd":
		return kafkago.Zstd, nil
	}
	return 0, fmt.Errorf("unknown compression %q", name)
}

// retentionMs turns "168h", "30d" or "forever" into retention.ms.
func retentionMs(s string) (string, error) {
	switch s {
	case "":
		return "", nil
	case "forever", "infinite", "-1":
		return "-1", nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return "", fmt.Errorf("%q is not a number of days", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return "", fmt.Errorf("%q is not a duration", s)
		}
	}
	if d < time.Millisecond {
		return "", fmt.Errorf("%q is too short", s)
	}
	return strconv.FormatInt(d.Milliseconds(), 10), nil
}

// template is a topic name template with {source} and {type}.
type template struct {
	raw   string
	parts []string // literal, placeholder, literal, ... (placeholders keep their braces)
}

func parseTemplate(raw string) (template, error) {
	parts, err := render.SplitTemplate(raw, "{source}", "{type}")
	t := template{raw: raw, parts: parts}
	if err != nil {
		return t, err
	}
	for _, p := range t.parts {
		if p == "{source}" || p == "{type}" {
			continue
		}
		for _, c := range p {
			if !legalTopicChar(c) {
				return t, fmt.Errorf("%q contains %q, which Kafka does not allow in topic names", raw, c)
			}
		}
	}
	if t.static() && (raw == "." || raw == "..") {
		return t, fmt.Errorf("%q is not a valid topic name", raw)
	}
	return t, nil
}

// static reports whether the template names one topic.
func (t template) static() bool { return !strings.ContainsRune(t.raw, '{') }

// expand fills in the placeholders: values are lower-cased, æ ø å folded
// to ae oe aa, and other characters Kafka does not allow become '_'.
func (t template) expand(source, typ string) string {
	if t.static() {
		return t.raw
	}
	var b strings.Builder
	for _, p := range t.parts {
		switch p {
		case "{source}":
			writeTopicPart(&b, source)
		case "{type}":
			writeTopicPart(&b, typ)
		default:
			b.WriteString(p)
		}
	}
	return b.String()
}

func writeTopicPart(b *strings.Builder, s string) {
	for _, c := range strings.ToLower(s) {
		switch {
		case legalTopicChar(c):
			b.WriteRune(c)
		case c == 'æ': // Danish letters folded as in the event's names
			b.WriteString("ae")
		case c == 'ø':
			b.WriteString("oe")
		case c == 'å':
			b.WriteString("aa")
		default:
			b.WriteByte('_')
		}
	}
}

func legalTopicChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}
