package fordeler

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/os2sandbox/connector/publish/publishtest"
)

func TestDecodeConfigErrors(t *testing.T) {
	const head = "name: bf\ntype: fordeler\n"
	amqpOK := "transport: amqp\namqp: {url: amqps://bf.example.dk/BF, username: u, password: p, exchange: x}\n" + bfBlock + "\n"
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error; none: valid
	}{
		{"valid amqp", amqpOK, nil},
		{"valid http", "transport: http\nhttp: {url: https://x.example/e}\n", nil},
		{"no transport", "amqp: {url: x}\n", []string{"needs a transport", "transport: amqp"}},
		{"unknown transport", "transport: smtp\n", []string{`unknown transport "smtp"`, ":3:"}},
		{"amqp block missing", "transport: amqp\n", []string{"needs an amqp: block"}},
		{"both blocks", amqpOK + "http: {url: https://x.example}\n", []string{"keep only the block"}},
		{"no url", "transport: amqp\namqp: {username: u, password: p}\n" + bfBlock + "\n", []string{"amqp.url is missing"}},
		{"password in url", "transport: amqp\namqp: {url: \"amqps://u:hunter2@h/BF\", password: p}\n" + bfBlock + "\n", []string{"holds a password", "amqp.password"}},
		{"no password", "transport: amqp\namqp: {url: amqps://h/BF, username: u}\n" + bfBlock + "\n", []string{"username and a password", "${file:"}},
		{"external without certificate", "transport: amqp\namqp: {url: amqps://h/BF, auth: external}\n" + bfBlock + "\n", []string{"needs a client certificate"}},
		{"amqp with tls", "transport: amqp\namqp: {url: amqp://h/BF, username: u, password: p}\ntls: {}\n" + bfBlock + "\n", []string{"use amqps://"}},
		{"bad routing key", strings.Replace(amqpOK, "exchange: x", "exchange: x, routing_key: \"{kind}\"", 1), []string{"unknown placeholder {kind}"}},
		{"no besked block", "transport: amqp\namqp: {url: amqps://h/BF, username: u, password: p}\n", []string{"needs a haendelsesbesked: block", "format: cloudevents"}},
		{"beskedtype not a uuid", "transport: amqp\namqp: {url: amqps://h/BF, username: u, password: p}\nhaendelsesbesked: {beskedtype: {\"*\": nope}, besked_ansvarlig_aktoer: a, objekt_ansvarlig_myndighed: b}\n", []string{`"nope" is not a UUID`}},
		{"unknown format", "transport: http\nformat: soap\nhttp: {url: https://x.example}\n", []string{`unknown format "soap"`}},
		{"http mode with besked", "transport: http\nformat: haendelsesbesked\nhttp: {url: https://x.example, mode: batch}\n" + bfBlock + "\n", []string{"applies to format cloudevents only"}},
		{"unknown mode", "transport: http\nhttp: {url: https://x.example, mode: stream}\n", []string{`unknown http.mode "stream"`}},
		{"credentials in http url", "transport: http\nhttp: {url: \"https://u:p@x.example\"}\n", []string{"holds credentials"}},
		{"bearer and basic", "transport: http\nhttp: {url: https://x.example, bearer_token: t, username: u, password: p}\n", []string{"one of bearer_token"}},
		{"unparsable http url", "transport: http\nhttp: {url: \"https://x.example/%zz\"}\n", []string{"http.url: parse"}},
		{"relative http url", "transport: http\nhttp: {url: /events}\n", []string{"not an http(s) URL"}},
		{"half a certificate", "transport: http\nhttp: {url: https://x.example}\ntls: {cert_file: c.pem}\n", []string{"both cert_file and key_file"}},
		{"unknown key", "transport: http\nhttp: {url: https://x.example, urll: y}\n", []string{"urll"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := decodeConfig(publishtest.YAMLNode(t, head+tt.yaml), "connector.yaml", "bf")
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if s.Timeout != DefaultTimeout {
					t.Errorf("timeout %s", s.Timeout)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), "connector.yaml:") {
				t.Errorf("error does not name the file and line: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	s, err := decodeConfig(publishtest.YAMLNode(t, "name: bf\ntype: fordeler\ntransport: amqp\namqp: {url: bf.example.dk/BF, username: u, password: p}\n"+bfBlock+"\n"), "", "bf")
	if err != nil {
		t.Fatal(err)
	}
	if s.url.Scheme != "amqps" || s.Format != FormatHaendelsesbesked || s.AMQP.RoutingKey != DefaultRoutingKey {
		t.Errorf("defaults: scheme %s format %s routing key %s", s.url.Scheme, s.Format, s.AMQP.RoutingKey)
	}
	s, err = decodeConfig(publishtest.YAMLNode(t, "name: bf\ntype: fordeler\ntransport: http\nhttp: {url: https://x.example}\n"), "", "bf")
	if err != nil {
		t.Fatal(err)
	}
	if s.Format != FormatCloudEvents || s.mode != ModeBinary || s.HTTP.MaxBatchBytes != DefaultMaxBatchBytes {
		t.Errorf("http defaults: format %s mode %s", s.Format, s.mode)
	}
}

func TestRoutingKeyTemplate(t *testing.T) {
	tests := []struct{ tmpl, want string }{
		{"{type}.{operation}", "Bruger.update"},
		{"connector.{source}.{type}", "connector.ad_corp.Bruger"},
		{"fixed", "fixed"},
	}
	for _, tt := range tests {
		tp, err := parseTemplate(tt.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		if got := tp.expand("ad.corp", "Bruger", "update"); got != tt.want {
			t.Errorf("%s → %q, want %q", tt.tmpl, got, tt.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := mustTime("Mon, 23 Nov 2026 06:00:00 GMT")
	tests := []struct {
		v    string
		want string
		ok   bool
	}{
		{"", "0s", false},
		{"7", "7s", true},
		{"Mon, 23 Nov 2026 06:01:00 GMT", "1m0s", true},
		{"Mon, 23 Nov 2026 05:00:00 GMT", "0s", true},
		{"soon", "0s", false},
	}
	for _, tt := range tests {
		d, ok := retryAfter(tt.v, now)
		if ok != tt.ok || d.String() != tt.want {
			t.Errorf("retryAfter(%q) = %s, %v; want %s, %v", tt.v, d, ok, tt.want, tt.ok)
		}
	}
}

func mustTime(s string) time.Time {
	t, err := http.ParseTime(s)
	if err != nil {
		panic(err)
	}
	return t
}
