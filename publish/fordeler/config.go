package fordeler

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/configs"
	"github.com/os2sandbox/connector/configs/tlsconf"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/render"
)

// Transports and formats.
const (
	TransportAMQP = "amqp"
	TransportHTTP = "http"

	FormatHaendelsesbesked = "haendelsesbesked"
	FormatCloudEvents      = "cloudevents"

	// HTTP modes of the cloudevents format.
	ModeBinary     = "binary"
	ModeStructured = "structured"
	ModeBatch      = "batch"
)

// Defaults.
const (
	DefaultRoutingKey = "{type}.{operation}"
	DefaultTimeout    = 10 * time.Second
	DefaultMode       = ModeBinary
	// DefaultMaxBatchBytes bounds one HTTP batch request's body.
	DefaultMaxBatchBytes = 4 << 20
)

// Config is the fordeler receiver's YAML configuration. The dispatcher's
// keys (publish.CommonKeys) sit next to these in the same mapping.
type Config struct {
	// Transport is amqp or http.
	Transport string `yaml:"transport"`
	// Format is haendelsesbesked (default for amqp) or cloudevents
	// (default for http).
	Format string `yaml:"format"`
	// TypePrefix starts every CloudEvents type.
	TypePrefix string `yaml:"type_prefix"`
	// Timeout bounds connecting and each confirmation (AMQP) or request
	// (HTTP).
	Timeout          time.Duration     `yaml:"timeout"`
	AMQP             *AMQP             `yaml:"amqp"`
	HTTP             *HTTP             `yaml:"http"`
	TLS              *tlsconf.Config   `yaml:"tls"`
	Haendelsesbesked *Haendelsesbesked `yaml:"haendelsesbesked"`
}

// AMQP configures the AMQP 0-9-1 transport (RabbitMQ, the Beskedfordeler).
type AMQP struct {
	// URL is amqps://host:port/vhost (amqps when the scheme is left out).
	// A password belongs in Password, not here.
	URL      string `yaml:"url"`
	Username string `yaml:"username"`
	// Password, typically ${file:/etc/connector/amqp-password} or
	// ${env:AMQP_PASSWORD}; never logged.
	Password string `yaml:"password"`
	// Auth is plain (username and password, default) or external (the
	// client certificate is the login, as Serviceplatformen's).
	Auth string `yaml:"auth"`
	// Exchange to publish to; "" is the default exchange.
	Exchange string `yaml:"exchange"`
	// RoutingKey is a template: {source}, {type}, {operation}.
	RoutingKey string `yaml:"routing_key"`
	// Declare, when set, declares the exchange (and a queue bound to it)
	// at the first connection; otherwise they must exist.
	Declare *Declare `yaml:"declare"`
}

// Declare is what the AMQP transport declares.
type Declare struct {
	ExchangeType string `yaml:"exchange_type"` // default topic
	Queue        string `yaml:"queue"`         // optional, durable, bound with BindingKey
	BindingKey   string `yaml:"binding_key"`   // default "#"
}

// HTTP configures the HTTP push transport.
type HTTP struct {
	URL string `yaml:"url"`
	// Mode of the cloudevents format: binary (default), structured or batch.
	Mode string `yaml:"mode"`
	// BearerToken, typically ${file:...} or ${env:...}.
	BearerToken string `yaml:"bearer_token"`
	Username    string `yaml:"username"`
	Password    string `yaml:"password"`
	// Headers are sent with every request.
	Headers map[string]string `yaml:"headers"`
	// MaxBatchBytes bounds a batch request's body.
	MaxBatchBytes int `yaml:"max_batch_bytes"`
}

// Haendelsesbesked configures the envelope (see render.Besked).
type Haendelsesbesked struct {
	BeskedVersion            string            `yaml:"besked_version"`
	Beskedtype               map[string]string `yaml:"beskedtype"`
	BeskedAnsvarligAktoer    string            `yaml:"besked_ansvarlig_aktoer"`
	ObjektAnsvarligMyndighed string            `yaml:"objekt_ansvarlig_myndighed"`
	TilladtModtager          []string          `yaml:"tilladt_modtager"`
	ObjektType               map[string]string `yaml:"objekt_type"`
	ObjektHandling           map[string]string `yaml:"objekt_handling"`
	OpgaveEmne               map[string]string `yaml:"opgave_emne"`
	RelateretObjekt          []Related         `yaml:"relateret_objekt"`
	Kildesystem              string            `yaml:"kildesystem"`
}

// Related is one relateret_objekt entry.
type Related struct {
	Field      string `yaml:"field"`
	ObjektType string `yaml:"objekt_type"`
}

// settings is the validated configuration.
type settings struct {
	Config
	url        *url.URL
	routingKey template
	mode       string
}

// decodeConfig decodes and validates the receiver's node from file.
// Errors are *configs.Error naming the line.
func decodeConfig(node *yaml.Node, file, name string) (*settings, error) {
	if file == "" {
		file = fmt.Sprintf("receiver %q", name)
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
	switch s.Transport {
	case TransportAMQP:
		if s.AMQP == nil {
			return nil, bad(nil, "add amqp: {url: amqps://host:5671/vhost, exchange: ...}", "fordeler receiver with transport amqp needs an amqp: block")
		}
		if s.Format == "" {
			s.Format = FormatHaendelsesbesked
		}
	case TransportHTTP:
		if s.HTTP == nil {
			return nil, bad(nil, "add http: {url: https://...}", "fordeler receiver with transport http needs an http: block")
		}
		if s.Format == "" {
			s.Format = FormatCloudEvents
		}
	case "":
		return nil, bad(nil, "add transport: amqp or transport: http", "fordeler receiver needs a transport")
	default:
		return nil, bad(at("transport"), "use amqp or http", "unknown transport %q", s.Transport)
	}
	if s.AMQP != nil && s.Transport != TransportAMQP || s.HTTP != nil && s.Transport != TransportHTTP {
		return nil, bad(nil, "keep only the block of the transport in use", "transport is %s, but both amqp: and http: (or the other one) are set", s.Transport)
	}
	switch s.Format {
	case FormatHaendelsesbesked:
		if err := checkBesked(s.Haendelsesbesked, at, bad); err != nil {
			return nil, err
		}
	case FormatCloudEvents:
		if s.Haendelsesbesked != nil {
			return nil, bad(at("haendelsesbesked"), "remove it, or set format: haendelsesbesked", "haendelsesbesked: is set, but the format is cloudevents")
		}
	default:
		return nil, bad(at("format"), "use haendelsesbesked or cloudevents", "unknown format %q", s.Format)
	}
	if s.TypePrefix == "" {
		s.TypePrefix = render.DefaultTypePrefix
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Timeout < 0 {
		return nil, bad(at("timeout"), "e.g. 10s", "timeout is negative")
	}
	if t := s.TLS; t != nil && (t.CertFile == "") != (t.KeyFile == "") {
		return nil, bad(at("tls"), "a client certificate needs both cert_file and key_file", "tls: only one of cert_file and key_file is set")
	}
	var err error
	if s.Transport == TransportAMQP {
		err = s.checkAMQP(at, bad)
	} else {
		err = s.checkHTTP(at, bad)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

type badFunc func(n *yaml.Node, hint, format string, args ...any) error

func (s *settings) checkAMQP(at func(...string) *yaml.Node, bad badFunc) error {
	a := s.AMQP
	raw := a.URL
	if raw == "" {
		return bad(at("amqp"), "e.g. url: amqps://beskedfordeler.example.dk:5671/BF", "amqp.url is missing")
	}
	if !strings.Contains(raw, "://") {
		raw = "amqps://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad(at("amqp", "url"), "e.g. amqps://host:5671/vhost", "amqp.url: %v", redactErr(err, a.URL))
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return bad(at("amqp", "url"), "use amqps:// (or amqp:// without TLS)", "amqp.url has scheme %q", u.Scheme)
	}
	if _, ok := u.User.Password(); ok {
		return bad(at("amqp", "url"), "move the password to amqp.password, e.g. password: ${file:/etc/connector/amqp-password}, so it is never logged", "amqp.url holds a password")
	}
	if u.Scheme == "amqp" && s.TLS != nil {
		return bad(at("amqp", "url"), "use amqps:// for TLS, or remove tls", "amqp.url is amqp:// (no TLS), but tls: is set")
	}
	s.url = u
	switch strings.ToLower(a.Auth) {
	case "", "plain":
		a.Auth = "plain"
		if a.Username == "" && u.User != nil {
			a.Username = u.User.Username()
		}
		if a.Username == "" || a.Password == "" {
			return bad(at("amqp"), "set amqp.username and amqp.password (e.g. password: ${file:/etc/connector/amqp-password}), or auth: external with a client certificate", "amqp needs a username and a password")
		}
	case "external":
		a.Auth = "external"
		if s.TLS == nil || s.TLS.CertFile == "" {
			return bad(at("amqp", "auth"), "set tls.cert_file and tls.key_file: with auth external the client certificate is the login", "amqp.auth external needs a client certificate")
		}
	default:
		return bad(at("amqp", "auth"), "use plain or external", "unknown amqp.auth %q", a.Auth)
	}
	if a.RoutingKey == "" {
		a.RoutingKey = DefaultRoutingKey
	}
	if s.routingKey, err = parseTemplate(a.RoutingKey); err != nil {
		return bad(at("amqp", "routing_key"), "placeholders are {source}, {type} and {operation}", "amqp.routing_key: %v", err)
	}
	if d := a.Declare; d != nil {
		switch d.ExchangeType {
		case "":
			d.ExchangeType = "topic"
		case "direct", "fanout", "topic", "headers":
		default:
			return bad(at("amqp", "declare", "exchange_type"), "use direct, fanout, topic or headers", "unknown exchange_type %q", d.ExchangeType)
		}
		if a.Exchange == "" {
			return bad(at("amqp", "declare"), "set amqp.exchange, or remove declare", "declare needs an exchange name")
		}
		if d.BindingKey == "" {
			d.BindingKey = "#"
		}
	}
	return nil
}

func (s *settings) checkHTTP(at func(...string) *yaml.Node, bad badFunc) error {
	h := s.HTTP
	if h.URL == "" {
		return bad(at("http"), "e.g. url: https://receiver.example.dk/events", "http.url is missing")
	}
	u, err := url.Parse(h.URL)
	if err != nil {
		return bad(at("http", "url"), "an absolute https:// URL", "http.url: %s", redactErr(err, h.URL))
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return bad(at("http", "url"), "an absolute https:// URL", "http.url %q is not an http(s) URL", u.Redacted())
	}
	if u.User != nil {
		return bad(at("http", "url"), "use http.username and http.password, so the password is never logged", "http.url holds credentials")
	}
	s.url = u
	if h.BearerToken != "" && (h.Username != "" || h.Password != "") {
		return bad(at("http"), "use one of bearer_token and username/password", "http has both a bearer token and basic credentials")
	}
	if (h.Username == "") != (h.Password == "") {
		return bad(at("http"), "basic authentication needs both username and password", "http: only one of username and password is set")
	}
	s.mode = h.Mode
	switch {
	case s.Format == FormatHaendelsesbesked && h.Mode != "":
		return bad(at("http", "mode"), "remove it: a Haendelsesbesked is posted one per request as application/xml", "http.mode applies to format cloudevents only")
	case s.Format == FormatCloudEvents && h.Mode == "":
		s.mode = DefaultMode
	case s.Format == FormatCloudEvents:
		switch h.Mode {
		case ModeBinary, ModeStructured, ModeBatch:
		default:
			return bad(at("http", "mode"), "use binary, structured or batch", "unknown http.mode %q", h.Mode)
		}
	}
	if h.MaxBatchBytes == 0 {
		h.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if h.MaxBatchBytes < 0 {
		return bad(at("http", "max_batch_bytes"), "a positive number of bytes", "http.max_batch_bytes is negative")
	}
	return nil
}

func checkBesked(b *Haendelsesbesked, at func(...string) *yaml.Node, bad badFunc) error {
	if b == nil {
		return bad(nil, `add haendelsesbesked: {beskedtype: {"*": <UUID from the Beskedfordeler>}, besked_ansvarlig_aktoer: <UUID>, objekt_ansvarlig_myndighed: "urn:oio:cvr-nr:<CVR>"}, or set format: cloudevents`,
			"format haendelsesbesked needs a haendelsesbesked: block")
	}
	if len(b.Beskedtype) == 0 {
		return bad(at("haendelsesbesked"), `map "Type.operation", "Type" or "*" to the Beskedtype UUID the Beskedfordeler registered, e.g. beskedtype: {"*": 2b1d...}`, "haendelsesbesked.beskedtype is empty")
	}
	for k, v := range b.Beskedtype {
		if _, err := uuid.Parse(v); err != nil {
			return bad(at("haendelsesbesked", "beskedtype"), "a Beskedtype is the UUID the Beskedfordeler registered", "haendelsesbesked.beskedtype %q: %q is not a UUID", k, v)
		}
	}
	if b.BeskedAnsvarligAktoer == "" {
		return bad(at("haendelsesbesked"), "the UUID (or URN) of the organisation that answers for the messages", "haendelsesbesked.besked_ansvarlig_aktoer is missing")
	}
	if b.ObjektAnsvarligMyndighed == "" {
		return bad(at("haendelsesbesked"), `e.g. objekt_ansvarlig_myndighed: "urn:oio:cvr-nr:29189846"`, "haendelsesbesked.objekt_ansvarlig_myndighed is missing")
	}
	for _, r := range b.RelateretObjekt {
		if r.Field == "" || r.ObjektType == "" {
			return bad(at("haendelsesbesked", "relateret_objekt"), "each entry needs field (of the object) and objekt_type (an id)", "haendelsesbesked.relateret_objekt entry incomplete")
		}
	}
	return nil
}

// besked is the renderer configured by b.
func (b *Haendelsesbesked) besked(installation string) *render.Besked {
	rb := &render.Besked{
		InstallationID:           installation,
		Version:                  b.BeskedVersion,
		Beskedtype:               b.Beskedtype,
		BeskedAnsvarligAktoer:    b.BeskedAnsvarligAktoer,
		ObjektAnsvarligMyndighed: b.ObjektAnsvarligMyndighed,
		TilladtModtager:          b.TilladtModtager,
		ObjektType:               b.ObjektType,
		ObjektHandling:           b.ObjektHandling,
		OpgaveEmne:               b.OpgaveEmne,
		Kildesystem:              b.Kildesystem,
	}
	for _, r := range b.RelateretObjekt {
		rb.Related = append(rb.Related, render.Related{Field: r.Field, ObjektType: r.ObjektType})
	}
	return rb
}

// redactErr keeps a URL parse error from echoing a password.
func redactErr(err error, raw string) string {
	msg := err.Error()
	if u, perr := url.Parse(raw); perr == nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "***")
		}
	}
	return msg
}

// template is a routing key template with {source}, {type} and
// {operation}.
type template struct {
	raw   string
	parts []string // literals and placeholders (with braces)
}

func parseTemplate(raw string) (template, error) {
	parts, err := render.SplitTemplate(raw, "{source}", "{type}", "{operation}")
	t := template{raw: raw, parts: parts}
	if err != nil {
		return t, err
	}
	if len(raw) > 255 {
		return t, fmt.Errorf("%q is longer than AMQP's 255 bytes", raw)
	}
	return t, nil
}

// expand fills in the placeholders; a '.' in a value becomes '_', so the
// value stays one word of a topic exchange's routing key.
func (t template) expand(source, typ, operation string) string {
	var b strings.Builder
	for _, p := range t.parts {
		switch p {
		case "{source}":
			b.WriteString(strings.ReplaceAll(source, ".", "_"))
		case "{type}":
			b.WriteString(strings.ReplaceAll(typ, ".", "_"))
		case "{operation}":
			b.WriteString(operation)
		default:
			b.WriteString(p)
		}
	}
	return b.String()
}
