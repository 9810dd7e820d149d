package fordeler

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/testenv"
)

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

// batch is n events of objects o0… of type Employee, sequences from first.
func batch(first uint64, n int) []history.Event {
	out := make([]history.Event, n)
	for i := range out {
		seq := first + uint64(i)
		out[i] = publishtest.Event(seq, "hr", "Employee", fmt.Sprintf("o%d", seq), history.OpCreate, 1)
	}
	return out
}

// openReceiver builds a receiver through the registered factory, as the
// dispatcher does; a nil log is publishtest.NewLog(t).
func openReceiver(t testing.TB, log *capturetest.Log, config string) *Receiver {
	t.Helper()
	return publishtest.Open(t, "fordeler", "bf", log, config).(*Receiver)
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
	mq.Admin(t, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(ex, "topic", true, false, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return err
		}
		return ch.QueueBind(q, "#", ex, false, nil)
	})
	t.Cleanup(func() {
		mq.Admin(t, func(ch *amqp.Channel) error {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				return err
			}
			return ch.ExchangeDelete(ex, false, false)
		})
	})
	return ex, q
}
