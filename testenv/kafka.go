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

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is a Kafka wire-protocol broker for tests: kfake
// (github.com/twmb/franz-go/pkg/kfake) in this process, one broker (or
// Brokers) on free loopback ports. There is no Kafka in Debian, so this is what
// integration tests produce to and consume from. It is an emulator: one
// broker, no replication (acks=all is acknowledged at once), compaction and
// retention simulated. Tests that rely on one of those say so.
//
// Stop and Start simulate a broker outage: Stop closes the listener and
// every client connection; Start brings the broker back on the same port
// with the topics, records and committed offsets it had (kept in Dir),
// unless the cluster is InMemory.
type Kafka struct {
	Addr  string   // 127.0.0.1:port of the first broker: the bootstrap address
	Port  int      // its port
	Addrs []string // every broker's address, Addrs[0] == Addr
	Dir   string   // persisted broker state; "" when InMemory

	opts  KafkaOptions
	mu    sync.Mutex
	c     *kfake.Cluster
	ports []int
	lns   map[string]net.Listener // listeners reserved for the first start
}

// KafkaOptions tunes the broker for a test.
type KafkaOptions struct {
	// Brokers is the number of brokers (default 1), for leader changes:
	// kfake's Cluster().MoveTopicPartition and ShufflePartitionLeaders.
	Brokers int
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
	opts.Brokers = max(opts.Brokers, 1)
	// Holding the listeners from here to kfake avoids a race with another
	// process taking a port we only probed.
	k := &Kafka{opts: opts, lns: map[string]net.Listener{}}
	for range opts.Brokers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			k.Close()
			return nil, fmt.Errorf("testenv: kafka: listen on a loopback port: %w", err)
		}
		k.lns[ln.Addr().String()] = ln
		k.Addrs = append(k.Addrs, ln.Addr().String())
		k.ports = append(k.ports, ln.Addr().(*net.TCPAddr).Port)
	}
	k.Addr, k.Port = k.Addrs[0], k.ports[0]
	if !opts.InMemory {
		var err error
		if k.Dir, err = os.MkdirTemp("", "testenv-kafka-"); err != nil {
			k.Close()
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
		kfake.Ports(k.ports...),
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
		return fmt.Errorf("testenv: kafka (kfake) on %v: %w", k.Addrs, err)
	}
	k.c = c
	return nil
}

// listen hands kfake the reserved listeners on the first start and listens
// on the same ports again after a Stop, waiting briefly if the kernel still
// holds one.
func (k *Kafka) listen(network, addr string) (net.Listener, error) {
	if ln, ok := k.lns[addr]; ok {
		delete(k.lns, addr)
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
	for addr, ln := range k.lns {
		ln.Close()
		delete(k.lns, addr)
	}
	if k.Dir != "" {
		os.RemoveAll(k.Dir)
	}
}

// ReaderConfig is a kafka-go consumer-group reader of topics from the
// beginning, with timeouts short enough for tests against this broker
// (joins, rebalances and empty fetches in milliseconds, not seconds).
func (k *Kafka) ReaderConfig(group string, topics []string) kafkago.ReaderConfig {
	return kafkago.ReaderConfig{
		Brokers:           []string{k.Addr},
		GroupID:           group,
		GroupTopics:       topics,
		StartOffset:       kafkago.FirstOffset,
		MaxBytes:          10 << 20,
		MaxWait:           200 * time.Millisecond,
		HeartbeatInterval: 500 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  2 * time.Second,
		JoinGroupBackoff:  200 * time.Millisecond,
		ReadBackoffMin:    20 * time.Millisecond,
		ReadBackoffMax:    200 * time.Millisecond,
	}
}
