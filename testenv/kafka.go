package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is a Kafka wire-protocol broker for tests: kfake
// (github.com/twmb/franz-go/pkg/kfake) in this process, one broker on a
// free loopback port. There is no Kafka in Debian, so this is what
// integration tests produce to and consume from. It is an emulator: one
// broker, no replication (acks=all is acknowledged at once), compaction and
// retention simulated. Tests that rely on one of those say so.
//
// Stop and Start simulate a broker outage: Stop closes the listener and
// every client connection; Start brings the broker back on the same port
// with the topics, records and committed offsets it had (kept in Dir),
// unless the cluster is InMemory.
type Kafka struct {
	Addr string // 127.0.0.1:port
	Port int
	Dir  string // persisted broker state; "" when InMemory

	opts KafkaOptions
	mu   sync.Mutex
	c    *kfake.Cluster
	ln   net.Listener // the listener reserved for the first start
}

// KafkaOptions tunes the broker for a test.
type KafkaOptions struct {
	// Partitions is the partition count of topics created without one
	// (auto-created or CreateTopics with -1); default 3.
	Partitions int
	// AutoCreateTopics lets a metadata request create a missing topic.
	AutoCreateTopics bool
	// InMemory keeps no state on disk: faster (benchmarks), but Start after
	// Stop begins empty.
	InMemory bool
	// Extra are more kfake options: SASL users, TLS, broker configs, ACLs.
	Extra []kfake.Opt
}

// NewKafka starts a broker for tb and removes it when tb ends.
func NewKafka(tb testing.TB, opts KafkaOptions) *Kafka {
	tb.Helper()
	k, err := StartKafka(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(k.Close)
	return k
}

// StartKafka starts a broker (for TestMain, where there is no testing.TB).
// The caller must call Close.
func StartKafka(opts KafkaOptions) (*Kafka, error) {
	if opts.Partitions <= 0 {
		opts.Partitions = 3
	}
	// Holding the listener from here to kfake avoids a race with another
	// process taking a port we only probed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testenv: kafka: listen on a loopback port: %w", err)
	}
	k := &Kafka{Addr: ln.Addr().String(), Port: ln.Addr().(*net.TCPAddr).Port, opts: opts, ln: ln}
	if !opts.InMemory {
		if k.Dir, err = os.MkdirTemp("", "testenv-kafka-"); err != nil {
			ln.Close()
			return nil, fmt.Errorf("testenv: kafka temp dir: %w", err)
		}
	}
	if err := k.Start(); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// Cluster is the running kfake cluster, for faults, controls and admin
// calls (Compact, ...). It is nil while the broker is stopped and a new
// value after each Start.
func (k *Kafka) Cluster() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c
}

// Start brings the broker up on its port; a no-op if it is running.
func (k *Kafka) Start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		return nil
	}
	opts := []kfake.Opt{
		kfake.Ports(k.Port),
		kfake.ListenFn(k.listen),
		kfake.DefaultNumPartitions(k.opts.Partitions),
		kfake.ClusterID("testenv"),
	}
	if k.opts.AutoCreateTopics {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if k.Dir != "" {
		opts = append(opts, kfake.DataDir(k.Dir))
	}
	opts = append(opts, k.opts.Extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("testenv: kafka (kfake) on %s: %w", k.Addr, err)
	}
	k.c = c
	return nil
}

// listen hands kfake the reserved listener on the first start and listens
// on the same port again after a Stop, waiting briefly if the kernel still
// holds it.
func (k *Kafka) listen(network, addr string) (net.Listener, error) {
	if ln := k.ln; ln != nil {
		k.ln = nil
		return ln, nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen(network, addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop takes the broker down: clients see connections refused until Start.
func (k *Kafka) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

// Close stops the broker and removes its state.
func (k *Kafka) Close() {
	k.Stop()
	if k.ln != nil {
		k.ln.Close()
		k.ln = nil
	}
	if k.Dir != "" {
		os.RemoveAll(k.Dir)
	}
}
