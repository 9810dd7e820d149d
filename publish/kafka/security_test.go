package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/os2sandbox/connector/configs"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/testenv"
)

// TestSASL: kfake supports PLAIN and SCRAM-SHA-256/512; each mechanism
// logs in and delivers, and a wrong password is refused with a message
// naming the user and the fix (and never the password).
func TestSASL(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{Extra: []kfake.Opt{
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plain-user", "plain-secret"),
		kfake.Superuser("SCRAM-SHA-256", "scram256-user", "scram256-secret"),
		kfake.Superuser("SCRAM-SHA-512", "scram512-user", "scram512-secret"),
	}})
	tests := []struct {
		mechanism, user, password string
		client                    func() sasl.Mechanism
	}{
		{"plain", "plain-user", "plain-secret", func() sasl.Mechanism {
			return plain.Mechanism{Username: "plain-user", Password: "plain-secret"}
		}},
		{"scram-sha-256", "scram256-user", "scram256-secret", func() sasl.Mechanism {
			m, _ := scram.Mechanism(scram.SHA256, "scram256-user", "scram256-secret")
			return m
		}},
		{"SCRAM-SHA-512", "scram512-user", "scram512-secret", func() sasl.Mechanism {
			m, _ := scram.Mechanism(scram.SHA512, "scram512-user", "scram512-secret")
			return m
		}},
	}
	for _, tt := range tests {
		t.Run(tt.mechanism, func(t *testing.T) {
			topic := "sasl-" + strings.ToLower(tt.mechanism)
			r := openReceiver(t, nil, testConfig(k.Addr, "topic: "+topic,
				"sasl: {mechanism: "+tt.mechanism+", username: "+tt.user+", password: "+tt.password+"}"))
			if err := r.Check(context.Background()); err != nil {
				t.Fatalf("Check: %v", err)
			}
			events := lifecycle()
			if err := r.Deliver(context.Background(), events); err != nil {
				t.Fatal(err)
			}
			dialer := &kafkago.Dialer{Timeout: 5 * time.Second, SASLMechanism: tt.client()}
			checkDelivery(t, events, consumeWith(t, k, dialer, []string{topic}, haveIDs(events, ceID)))
		})
		t.Run(tt.mechanism+" wrong password", func(t *testing.T) {
			r := openReceiver(t, nil, testConfig(k.Addr,
				"sasl: {mechanism: "+tt.mechanism+", username: "+tt.user+", password: not-the-password}"))
			err := r.Check(context.Background())
			if err == nil {
				t.Fatal("Check with a wrong password succeeded")
			}
			for _, s := range []string{k.Addr, `user "` + tt.user + `"`, "check sasl.username and sasl.password"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Check error lacks %q: %v", s, err)
				}
			}
			err = r.Deliver(context.Background(), lifecycle())
			if err == nil || publish.Confirmed(err) != 0 {
				t.Fatalf("Deliver with a wrong password = %v", err)
			}
			var re *publish.RejectedError
			if errors.As(err, &re) {
				t.Fatalf("a login failure rejected an event; it must be retried: %v", err)
			}
			// kfake drops the connection on a failed login where Kafka
			// answers SASL_AUTHENTICATION_FAILED first (see
			// TestSASLAuthenticationFailed); both must read the same.
			if !strings.Contains(err.Error(), `user "`+tt.user+`"`) || !strings.Contains(err.Error(), "check sasl.username and sasl.password") {
				t.Errorf("Deliver error: %v", err)
			}
			if strings.Contains(err.Error(), "not-the-password") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

// TestSASLAuthenticationFailed: a broker that answers a login with
// SASL_AUTHENTICATION_FAILED, as Kafka does, gets the same clear message,
// and the error unwraps to kafka-go's.
func TestSASLAuthenticationFailed(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{Extra: []kfake.Opt{
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "u", "p"),
	}})
	k.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.SASLAuthenticate}, Err: kerr.SaslAuthenticationFailed, Count: -1})
	r := openReceiver(t, nil, testConfig(k.Addr, "sasl: {mechanism: scram-sha-256, username: u, password: p}"))
	for what, err := range map[string]error{"Check": r.Check(context.Background()), "Deliver": r.Deliver(context.Background(), lifecycle())} {
		if !errors.Is(err, kafkago.SASLAuthenticationFailed) || !strings.Contains(err.Error(), `login of user "u"; check sasl.username and sasl.password`) {
			t.Errorf("%s = %v", what, err)
		}
	}
}

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files.
type pki struct {
	dir                       string
	caFile, certFile, keyFile string // client side
	otherCA                   string // a CA that signed nothing here
	server                    tls.Certificate
	pool                      *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	caKey, caCert, caDER := makeCA(t, "test CA")
	p.pool = x509.NewCertPool()
	p.pool.AddCert(caCert)
	p.caFile = writePEM(t, p.dir, "ca.pem", "CERTIFICATE", caDER)
	_, _, otherDER := makeCA(t, "other CA")
	p.otherCA = writePEM(t, p.dir, "other-ca.pem", "CERTIFICATE", otherDER)

	srvKey, srvDER := makeLeaf(t, caKey, caCert, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	p.server = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	cliKey, cliDER := makeLeaf(t, caKey, caCert, "connector", x509.ExtKeyUsageClientAuth)
	p.certFile = writePEM(t, p.dir, "client.pem", "CERTIFICATE", cliDER)
	keyDER, err := x509.MarshalECPrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	p.keyFile = writePEM(t, p.dir, "client-key.pem", "EC PRIVATE KEY", keyDER)
	return p
}

func makeCA(t *testing.T, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func makeLeaf(t *testing.T, caKey *ecdsa.PrivateKey, ca *x509.Certificate, name string, usage x509.ExtKeyUsage) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTLS: kfake listens with TLS and wants a client certificate; the
// receiver verifies the broker against ca_file and presents its
// certificate. Each misconfiguration fails with a message saying what to
// change.
func TestTLS(t *testing.T) {
	p := newPKI(t)
	k := testenv.NewKafka(t, testenv.KafkaOptions{Extra: []kfake.Opt{kfake.TLS(&tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.pool,
		MinVersion:   tls.VersionTLS12,
	})}})
	client := "cert_file: " + p.certFile + ", key_file: " + p.keyFile

	t.Run("verified with client certificate", func(t *testing.T) {
		r := openReceiver(t, nil, testConfig(k.Addr, "tls: {ca_file: "+p.caFile+", "+client+"}"))
		if err := r.Check(context.Background()); err != nil {
			t.Fatalf("Check: %v", err)
		}
		events := lifecycle()
		if err := r.Deliver(context.Background(), events); err != nil {
			t.Fatal(err)
		}
		cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
		if err != nil {
			t.Fatal(err)
		}
		dialer := &kafkago.Dialer{Timeout: 5 * time.Second, TLS: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{cert}}}
		checkDelivery(t, events, consumeWith(t, k, dialer, []string{"connector.hr.employee"}, haveIDs(events, ceID)))
	})

	t.Run("insecure_skip_verify works and is warned about", func(t *testing.T) {
		log := publishtest.NewLog(t)
		r := openReceiver(t, log, testConfig(k.Addr, "tls: {insecure_skip_verify: true, "+client+"}"))
		if !log.Has("WARN") || !log.Has("verification is OFF") {
			t.Errorf("no loud warning about insecure_skip_verify: %v", log.Lines())
		}
		if err := r.Check(context.Background()); err != nil {
			t.Fatalf("Check: %v", err)
		}
	})

	failures := []struct {
		name   string
		config string
		want   []string
	}{
		{"CA that did not sign the broker", "tls: {ca_file: " + p.otherCA + ", " + client + "}", []string{"not signed by a CA this machine trusts", "tls.ca_file"}},
		{"no client certificate", "tls: {ca_file: " + p.caFile + "}", []string{k.Addr, "client certificate"}},
		{"no TLS against a TLS listener", "", []string{k.Addr, "TLS"}},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			r := openReceiver(t, nil, testConfig(k.Addr, "timeout: 3s", tt.config))
			err := r.Check(context.Background())
			if err == nil {
				t.Fatal("Check succeeded")
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q: %v", s, err)
				}
			}
		})
	}

	t.Run("TLS against a plaintext broker", func(t *testing.T) {
		plainK := testenv.NewKafka(t, testenv.KafkaOptions{InMemory: true})
		r := openReceiver(t, nil, testConfig(plainK.Addr, "timeout: 3s", "tls: {ca_file: "+p.caFile+"}"))
		err := r.Check(context.Background())
		if err == nil || !strings.Contains(err.Error(), "does not use TLS") {
			t.Fatalf("Check = %v", err)
		}
	})
}

// TestTLSConfigFiles: unusable files fail New with the file and the fix.
func TestTLSConfigFiles(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate\n"), 0o600)
	tests := []struct {
		name, tls string
		want      []string
	}{
		{"missing CA file", "{ca_file: /nonexistent/ca.pem}", []string{"tls.ca_file", "/nonexistent/ca.pem", "PEM"}},
		{"CA file without a certificate", "{ca_file: " + garbage + "}", []string{garbage, "no PEM certificate"}},
		{"key that is not a key", "{cert_file: " + p.certFile + ", key_file: " + garbage + "}", []string{"tls.cert_file", garbage}},
		{"certificate without key", "{cert_file: " + p.certFile + "}", []string{"cert_file and key_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := publish.Lookup("kafka")
			_, err := f(publishtest.YAMLNode(t, testConfig("127.0.0.1:9092", "tls: "+tt.tls)), publish.Options{Name: "events", InstallationID: publishtest.Installation})
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q: %v", s, err)
				}
			}
		})
	}
	// A config error (as opposed to a file error) is a *configs.Error.
	f, _ := publish.Lookup("kafka")
	_, err := f(publishtest.YAMLNode(t, testConfig("127.0.0.1:9092", "tls: {cert_file: x}")), publish.Options{Name: "events", InstallationID: publishtest.Installation})
	if !configs.IsConfigError(err) {
		t.Errorf("half a client certificate: %T %v, want a config error", err, err)
	}
}

// TestACL: with kfake's ACLs, a principal may write the employee topics
// but not the secret ones. The refused topic's events are rejected with
// the fix (dead-lettered by the dispatcher), the others delivered.
func TestACL(t *testing.T) {
	allow := func(name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: name, Pattern: kmsg.ACLResourcePatternTypePrefixed, Operation: op, Allow: true}
	}
	k := testenv.NewKafka(t, testenv.KafkaOptions{Extra: []kfake.Opt{
		kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("SCRAM-SHA-256", "admin", "admin-pw"),
		kfake.User("SCRAM-SHA-256", "writer", "writer-pw",
			allow("connector.hr.employee", kmsg.ACLOperationWrite),
			allow("connector.hr.employee", kmsg.ACLOperationDescribe),
			allow("connector.hr.employee", kmsg.ACLOperationCreate)),
	}})
	r := openReceiver(t, nil, testConfig(k.Addr, "sasl: {mechanism: scram-sha-256, username: writer, password: writer-pw}"))
	var events []history.Event
	for i := range 12 {
		typ := "Employee"
		if i%3 == 1 {
			typ = "Secret"
		}
		events = append(events, publishtest.Event(uint64(i+1), "hr", typ, "x"+itoa(i%4), history.OpCreate, 1))
	}
	var rejected []int
	for next := 0; next < len(events); {
		err := r.Deliver(context.Background(), events[next:])
		if err == nil {
			break
		}
		var re *publish.RejectedError
		if !errors.As(err, &re) {
			t.Fatalf("Deliver = %v, want only rejections", err)
		}
		if !errors.Is(err, kafkago.TopicAuthorizationFailed) || !strings.Contains(err.Error(), "connector.hr.secret") || !strings.Contains(err.Error(), "kafka-acls.sh") {
			t.Errorf("rejection lacks the cause, topic or fix: %v", err)
		}
		rejected = append(rejected, next+re.Index)
		next += re.Index + 1
	}
	var employees []history.Event
	var want []int
	for i, e := range events {
		if e.Object.Type == "Secret" {
			want = append(want, i)
		} else {
			employees = append(employees, e)
		}
	}
	if itoaSlice(rejected) != itoaSlice(want) {
		t.Fatalf("rejected %v, want %v", rejected, want)
	}
	m, _ := scram.Mechanism(scram.SHA256, "admin", "admin-pw")
	dialer := &kafkago.Dialer{Timeout: 5 * time.Second, SASLMechanism: m}
	checkDelivery(t, employees, consumeWith(t, k, dialer, []string{"connector.hr.employee"}, haveIDs(employees, ceID)))
}
