package fordeler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/publish/render"
)

// endpoint is a receiving HTTP server with scripted answers.
type endpoint struct {
	mu      sync.Mutex
	script  []func(w http.ResponseWriter) bool // consumed in order; true: answered
	got     []*http.Request
	bodies  [][]byte
	srv     *httptest.Server
	caFile  string
	clients []*x509.Certificate
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	var step func(http.ResponseWriter) bool
	if len(e.script) > 0 {
		step, e.script = e.script[0], e.script[1:]
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		e.clients = append(e.clients, r.TLS.PeerCertificates[0])
	}
	e.mu.Unlock()
	if step != nil && step(w) {
		return
	}
	e.mu.Lock()
	e.got = append(e.got, r)
	e.bodies = append(e.bodies, body)
	e.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func status(code int, headers ...string) func(http.ResponseWriter) bool {
	return func(w http.ResponseWriter) bool {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "answer %d\n<b>"+strings.Repeat("x", 1000), code)
		return true
	}
}

// newEndpoint starts an HTTPS endpoint and writes its CA certificate.
func newEndpoint(t *testing.T, mtls bool) *endpoint {
	e := &endpoint{}
	e.srv = httptest.NewUnstartedServer(e)
	e.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	if mtls {
		e.srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	}
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	e.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw})
	if err := os.WriteFile(e.caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *endpoint) then(steps ...func(http.ResponseWriter) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.script = append(e.script, steps...)
}

func (e *endpoint) received() ([]*http.Request, [][]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.got, e.bodies
}

func httpConfig(e *endpoint, extra ...string) string {
	return fmt.Sprintf("name: bf\ntype: fordeler\ntransport: http\ntimeout: 5s\nhttp:\n  url: %s/events\n  bearer_token: tok-Secret-7\n", e.srv.URL) +
		strings.Join(extra, "\n") + "\ntls: {ca_file: " + e.caFile + "}\n"
}

func TestHTTPDeliverModes(t *testing.T) {
	tests := []struct {
		mode        string
		format      string
		requests    int
		contentType string
	}{
		{ModeBinary, "", 4, render.ContentTypeJSON},
		{ModeStructured, "", 4, render.ContentTypeStructured},
		{ModeBatch, "", 1, ContentTypeBatch},
		{"", FormatHaendelsesbesked, 4, "application/xml; charset=utf-8"},
	}
	for _, tt := range tests {
		t.Run(tt.mode+tt.format, func(t *testing.T) {
			e := newEndpoint(t, false)
			extra := []string{}
			if tt.mode != "" {
				extra = append(extra, "  mode: "+tt.mode)
			}
			if tt.format != "" {
				extra = append(extra, "format: "+tt.format, bfBlock)
			}
			r := openReceiver(t, nil, httpConfig(e, extra...))
			events := batch(1, 4)
			if err := r.Deliver(context.Background(), events); err != nil {
				t.Fatal(err)
			}
			reqs, bodies := e.received()
			if len(reqs) != tt.requests {
				t.Fatalf("%d requests, want %d", len(reqs), tt.requests)
			}
			for i, req := range reqs {
				if req.Method != http.MethodPost || req.URL.Path != "/events" {
					t.Errorf("request %d: %s %s", i, req.Method, req.URL.Path)
				}
				if got := req.Header.Get("Content-Type"); got != tt.contentType {
					t.Errorf("request %d: content type %q, want %q", i, got, tt.contentType)
				}
				if got := req.Header.Get("Authorization"); got != "Bearer tok-Secret-7" {
					t.Errorf("request %d: authorization %q", i, got)
				}
				wantKey := events[i].EventID
				if tt.mode == ModeBatch {
					wantKey += "+3"
				}
				if got := req.Header.Get("Idempotency-Key"); got != wantKey {
					t.Errorf("request %d: Idempotency-Key %q, want %q", i, got, wantKey)
				}
			}
			var ids []string
			switch {
			case tt.mode == ModeBinary:
				for i, req := range reqs {
					if req.Header.Get("Ce-Id") != events[i].EventID || req.Header.Get("Ce-Specversion") != "1.0" || req.Header.Get("Ce-Type") != "dk.os2sandbox.connector.employee.create" {
						t.Errorf("request %d: ce headers %v", i, req.Header)
					}
					var ev history.Event
					if err := json.Unmarshal(bodies[i], &ev); err != nil {
						t.Fatal(err)
					}
					ids = append(ids, ev.EventID)
				}
			case tt.mode == ModeStructured:
				for _, b := range bodies {
					_, ev := structuredEvent(t, b)
					ids = append(ids, ev.EventID)
				}
			case tt.mode == ModeBatch:
				var docs []json.RawMessage
				if err := json.Unmarshal(bodies[0], &docs); err != nil {
					t.Fatalf("batch body: %v", err)
				}
				for _, d := range docs {
					_, ev := structuredEvent(t, d)
					ids = append(ids, ev.EventID)
				}
			default:
				for _, b := range bodies {
					ids = append(ids, beskeddata(t, b).EventID)
				}
			}
			for i := range events {
				if i >= len(ids) || ids[i] != events[i].EventID {
					t.Fatalf("events delivered %v, want %d in order", ids, len(events))
				}
			}
		})
	}
}

// TestHTTPFailures scripts the endpoint's answers to a batch of three
// binary-mode events and checks what Deliver reports.
func TestHTTPFailures(t *testing.T) {
	tests := []struct {
		name      string
		script    []func(http.ResponseWriter) bool
		confirmed int
		rejected  bool
		want      []string
	}{
		{"500 then success on retry", []func(http.ResponseWriter) bool{nil, status(500)}, 1, false, []string{"500 Internal Server Error", "retrying", `answer 500`}},
		{"429 with Retry-After", []func(http.ResponseWriter) bool{status(429, "Retry-After", "1")}, 0, false, []string{"429", "retrying after 1s (Retry-After)"}},
		{"400 is a dead letter", []func(http.ResponseWriter) bool{nil, nil, status(400)}, 2, true, []string{"400 Bad Request", "dead-lettered", "<b>xxx"}},
		{"401 waits", []func(http.ResponseWriter) bool{status(401)}, 0, false, []string{"401", "http.bearer_token"}},
		{"redirect not followed", []func(http.ResponseWriter) bool{status(307, "Location", "https://elsewhere.example/x")}, 0, false, []string{"redirects are not followed", "https://elsewhere.example/x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEndpoint(t, false)
			for _, s := range tt.script {
				if s == nil {
					s = func(http.ResponseWriter) bool { return false } // the normal 202
				}
				e.then(s)
			}
			tlog := publishtest.NewLog(t)
			r := openReceiver(t, tlog, httpConfig(e))
			events := batch(1, 3)
			err := r.Deliver(context.Background(), events)
			if err == nil {
				t.Fatal("Deliver succeeded")
			}
			t.Log(err)
			var rej *publish.RejectedError
			if errors.As(err, &rej) != tt.rejected {
				t.Errorf("rejected = %v, want %v", !tt.rejected, tt.rejected)
			}
			if got := publish.Confirmed(err); got != tt.confirmed {
				t.Errorf("confirmed %d, want %d", got, tt.confirmed)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q", w)
				}
			}
			if len(err.Error()) > 800 {
				t.Errorf("error of %d bytes: the body excerpt is not bounded", len(err.Error()))
			}
			if strings.Contains(err.Error(), "tok-Secret-7") || tlog.Has("tok-Secret-7") {
				t.Error("the bearer token shows in the error or the log")
			}
			if tt.rejected {
				return
			}
			// The dispatcher redelivers the rest, and the endpoint now
			// takes it; a Retry-After holds the request back.
			start := time.Now()
			if err := r.Deliver(context.Background(), events[publish.Confirmed(err):]); err != nil {
				t.Fatalf("redelivery: %v", err)
			}
			if strings.Contains(tt.name, "Retry-After") && time.Since(start) < 900*time.Millisecond {
				t.Errorf("redelivered %s after a Retry-After of 1s", time.Since(start))
			}
			if reqs, _ := e.received(); len(reqs) != 3 {
				t.Errorf("%d events arrived, want 3", len(reqs))
			}
		})
	}
}

func TestHTTPBatchRefusedFindsTheEvent(t *testing.T) {
	e := newEndpoint(t, false)
	e.then(status(422), nil, status(422))
	r := openReceiver(t, nil, httpConfig(e, "  mode: batch"))
	err := r.Deliver(context.Background(), batch(1, 3))
	var rej *publish.RejectedError
	if !errors.As(err, &rej) || rej.Index != 1 {
		t.Fatalf("Deliver = %v, want event 1 refused", err)
	}
}

func TestHTTPTLS(t *testing.T) {
	t.Run("unknown CA", func(t *testing.T) {
		e := newEndpoint(t, false)
		cfg := strings.Replace(httpConfig(e), "ca_file: "+e.caFile, "ca_file: "+mq.OtherCAFile, 1)
		r := openReceiver(t, nil, cfg)
		for _, err := range []error{r.Check(context.Background()), r.Deliver(context.Background(), batch(1, 1))} {
			if err == nil || !strings.Contains(err.Error(), "not signed by a CA this machine trusts; set tls.ca_file") {
				t.Errorf("error = %v", err)
			}
		}
		if reqs, _ := e.received(); len(reqs) != 0 {
			t.Error("events reached an unverified server")
		}
	})
	t.Run("client certificate", func(t *testing.T) {
		e := newEndpoint(t, true)
		cfg := strings.Replace(httpConfig(e), "ca_file: "+e.caFile, fmt.Sprintf("ca_file: %s, cert_file: %s, key_file: %s", e.caFile, mq.ClientCertFile, mq.ClientKeyFile), 1)
		r := openReceiver(t, nil, cfg)
		if err := r.Check(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := r.Deliver(context.Background(), batch(1, 2)); err != nil {
			t.Fatal(err)
		}
		if len(e.clients) == 0 || e.clients[0].Subject.CommonName != mq.CertUser {
			t.Errorf("the server saw no client certificate")
		}
	})
}

func TestHTTPCheck(t *testing.T) {
	e := newEndpoint(t, false)
	r := openReceiver(t, nil, httpConfig(e))
	if err := r.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.then(status(403))
	if err := r.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "http.bearer_token") {
		t.Fatalf("Check = %v", err)
	}
}
