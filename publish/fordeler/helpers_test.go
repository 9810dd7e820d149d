package fordeler

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/testenv"
)

const installation = "0b6f1a52-5a0e-4c39-9d43-7f0c2a1e9b11"

var tBase = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// mq is the package's RabbitMQ node (with a TLS listener), started once in
// TestMain: a start takes 6–15 s on this machine.
var mq *testenv.RabbitMQ

func TestMain(m *testing.M) {
	var err error
	mq, err = testenv.StartRabbitMQ(testenv.RabbitMQOptions{TLS: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	mq.Close()
	os.Exit(code)
}

// ev builds a canonical event with sequence seq; its id derives from seq,
// so a redelivery carries the same id.
func ev(seq uint64, typ, id, op string) history.Event {
	at := tBase.Add(time.Duration(seq) * time.Millisecond)
	e := history.Event{
		SchemaVersion: history.SchemaVersion,
		EventID:       uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "hr/%d", seq)).String(),
		Sequence:      seq,
		Emission:      history.EmissionLive,
		Source:        history.SourceRef{Name: "hr", Type: "postgres", ID: "postgres://7301/hr", Epoch: 1},
		Object:        history.ObjectRef{Type: typ, ID: id, Version: 1},
		Operation:     op,
		ChangeKind:    history.KindAendring,
		Bitemporal: history.Bitemporal{
			RegistreringFra: history.At(at), Registreringsaktoer: "connector",
			VirkningFra: history.At(at), Virkningsaktoer: "hr", VirkningKilde: "commit-time",
		},
		Classification: history.Classification{Dataclassification: "internal"},
		Trace:          history.Trace{TransactionID: fmt.Sprintf("tx-%d", seq/10)},
		ObservedAt:     history.At(at.Add(time.Millisecond)),
		Integrity:      history.Integrity{ContentHash: fmt.Sprintf("h-%s", id)},
	}
	img := map[string]any{"id": id, "name": fmt.Sprintf("%s <&> %d", id, seq)}
	if op == history.OpDelete {
		e.Before, e.Reason = img, history.ReasonDeletedInSource
	} else {
		e.After = img
	}
	return e
}

// batch is n events of objects o0… of type Employee, sequences from first.
func batch(first uint64, n int) []history.Event {
	out := make([]history.Event, n)
	for i := range out {
		seq := first + uint64(i)
		out[i] = ev(seq, "Employee", fmt.Sprintf("o%d", seq), history.OpCreate)
	}
	return out
}

func yamlNode(t testing.TB, text string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("test config: %v", err)
	}
	return doc.Content[0]
}

// openReceiver builds a receiver through the registered factory, as the
// dispatcher does.
func openReceiver(t testing.TB, log *testLog, config string) *Receiver {
	t.Helper()
	f, ok := publish.Lookup("fordeler")
	if !ok {
		t.Fatal(`receiver type "fordeler" is not registered`)
	}
	if log == nil {
		log = &testLog{t: t}
	}
	r, err := f(yamlNode(t, config), publish.Options{Name: "bf", InstallationID: installation, Log: log})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r.(*Receiver)
}

const bfBlock = `haendelsesbesked:
  beskedtype: {"*": "2b1d7f4e-9a1c-4e7b-8d3f-5a6b7c8d9e0f"}
  besked_ansvarlig_aktoer: "7c2f1a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"
  objekt_ansvarlig_myndighed: "urn:oio:cvr-nr:29189846"`

// amqpConfig is a receiver config for the test node's plain listener,
// exchange ex, plus extra lines; the Haendelsesbesked block is added
// unless the format is cloudevents.
func amqpConfig(ex string, extra ...string) string {
	if !slices.Contains(extra, "format: cloudevents") && !slices.Contains(extra, bfBlock) {
		extra = append(extra, bfBlock)
	}
	return fmt.Sprintf("name: bf\ntype: fordeler\ntransport: amqp\ntimeout: 5s\namqp:\n  url: amqp://%s/\n  username: %s\n  password: %s\n  exchange: %s\n",
		mq.Addr(), mq.User, mq.Password, ex) + strings.Join(extra, "\n") + "\n"
}

// exchangeWithQueue declares a fresh topic exchange and a durable queue
// bound to it with "#", and returns their names; both are deleted when
// t ends.
func exchangeWithQueue(t testing.TB) (string, string) {
	t.Helper()
	name := strings.ReplaceAll(t.Name(), "/", "_")
	ex, q := "ex."+name, "q."+name
	admin(t, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(ex, "topic", true, false, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return err
		}
		return ch.QueueBind(q, "#", ex, false, nil)
	})
	t.Cleanup(func() {
		admin(t, func(ch *amqp.Channel) error {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				return err
			}
			return ch.ExchangeDelete(ex, false, false)
		})
	})
	return ex, q
}

// admin runs f on a channel of the test node.
func admin(t testing.TB, f func(*amqp.Channel) error) {
	t.Helper()
	c, err := amqp.Dial(mq.URL())
	if err != nil {
		t.Fatalf("admin connection: %v", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := f(ch); err != nil {
		t.Fatal(err)
	}
}

// drain reads every message in queue q (get without waiting).
func drain(t testing.TB, q string) []amqp.Delivery {
	t.Helper()
	var out []amqp.Delivery
	admin(t, func(ch *amqp.Channel) error {
		for {
			d, ok, err := ch.Get(q, true)
			if err != nil || !ok {
				return err
			}
			out = append(out, d)
		}
	})
	return out
}

// testLog is a publish.Logger that keeps what was logged.
type testLog struct {
	t     testing.TB
	mu    sync.Mutex
	lines []string
}

func (l *testLog) add(level, msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := level + " " + msg + " " + fmt.Sprint(args...)
	l.lines = append(l.lines, line)
}

func (l *testLog) Info(msg string, args ...any)  { l.add("INFO", msg, args...) }
func (l *testLog) Warn(msg string, args ...any)  { l.add("WARN", msg, args...) }
func (l *testLog) Error(msg string, args ...any) { l.add("ERROR", msg, args...) }
func (l *testLog) Debug(msg string, args ...any) { l.add("DEBUG", msg, args...) }

func (l *testLog) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
