package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// topicInfo is what the receiver pinned about a topic on first use.
type topicInfo struct {
	partitions []int // 0..n-1, for the balancer
}

// balancer places a key like Java's default partitioner (murmur2), so
// other producers of the same keys agree on the partition.
var balancer = kafkago.Murmur2Balancer{Consistent: true}

// partition returns the partition of key in topic, making sure the topic
// exists first. The partition count is read once per topic and kept for
// the receiver's life: if partitions are added while it runs, keys stay
// where they were until a restart (adding partitions moves keys, and
// with them per-object order; see docs/receivers/kafka.md).
func (r *Receiver) partition(ctx context.Context, topic string, state bool, key []byte) (int, error) {
	ti := r.topics[topic]
	if ti == nil {
		n, err := r.ensureTopic(ctx, topic, state)
		if err != nil {
			return 0, err
		}
		ti = &topicInfo{partitions: make([]int, n)}
		for i := range ti.partitions {
			ti.partitions[i] = i
		}
		r.topics[topic] = ti
	}
	return balancer.Balance(kafkago.Message{Key: key}, ti.partitions...), nil
}

// ensureTopic returns the partition count of topic, creating the topic
// when it is missing and creation is allowed.
func (r *Receiver) ensureTopic(ctx context.Context, topic string, state bool) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*r.s.Timeout)
	defer cancel()
	n, err := r.cachedPartitions(ctx, topic)
	if err == nil {
		if state {
			r.checkCompacted(ctx, topic)
		}
		return n, nil
	}
	if !errors.Is(err, kafkago.UnknownTopicOrPartition) {
		var kerr kafkago.Error
		if !errors.As(err, &kerr) {
			// Not the brokers' answer: kafka-go keeps the error of a
			// transport's first, failed metadata fetch (brokers down when
			// the agent started) as the answer to every metadata request
			// until its periodic refresh, up to 6 s after they are back.
			// A new transport asks again on the next attempt.
			r.reconnect()
		}
		return 0, r.topicError(topic, "read metadata of", err)
	}
	// The transport's metadata is a cache; ask the brokers before deciding
	// the topic is missing.
	exists, err := r.topicExists(ctx, topic)
	if err != nil {
		return 0, r.topicError(topic, "read metadata of", err)
	}
	if !exists {
		if !r.s.createTopics {
			return 0, fmt.Errorf("kafka receiver %q: topic %q does not exist and create_topics.enabled is false; create it (%s), or set create_topics.enabled: true",
				r.name, topic, r.createCommand(topic, state))
		}
		if err := r.createTopic(ctx, topic, state); err != nil {
			return 0, err
		}
	}
	return r.awaitTopic(ctx, topic)
}

// cachedPartitions reads topic's partition count from the transport's
// metadata cache.
func (r *Receiver) cachedPartitions(ctx context.Context, topic string) (int, error) {
	md, err := r.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return 0, t.Error
		}
		if len(t.Partitions) == 0 {
			return 0, kafkago.UnknownTopicOrPartition
		}
		return len(t.Partitions), nil
	}
	return 0, kafkago.UnknownTopicOrPartition
}

// awaitTopic waits until a topic that exists shows in the cache, which
// kafka-go refreshes every few seconds.
func (r *Receiver) awaitTopic(ctx context.Context, topic string) (int, error) {
	for {
		n, err := r.cachedPartitions(ctx, topic)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, kafkago.UnknownTopicOrPartition) && !errors.Is(err, kafkago.LeaderNotAvailable) {
			return 0, r.topicError(topic, "read metadata of", err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("kafka receiver %q: topic %q exists but its metadata did not arrive in time: %w", r.name, topic, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// topicExists asks the brokers directly, through a transport of its own,
// whether topic exists. It never triggers the brokers' auto-creation.
func (r *Receiver) topicExists(ctx context.Context, topic string) (bool, error) {
	c, done := r.freshClient(ctx, r.addr)
	defer done()
	md, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return false, err
	}
	for _, t := range md.Topics {
		if t.Name == topic {
			if t.Error != nil {
				if errors.Is(t.Error, kafkago.UnknownTopicOrPartition) {
					return false, nil
				}
				return false, t.Error
			}
			return len(t.Partitions) > 0, nil
		}
	}
	return false, nil
}

// freshClient returns a client whose transport has no cached metadata;
// call done when finished with it.
func (r *Receiver) freshClient(ctx context.Context, addr net.Addr) (*kafkago.Client, func()) {
	tctx, cancel := context.WithCancel(context.Background())
	t := &kafkago.Transport{
		DialTimeout: r.transport.DialTimeout,
		ClientID:    r.transport.ClientID,
		TLS:         r.transport.TLS,
		SASL:        r.transport.SASL,
		Context:     tctx,
	}
	return &kafkago.Client{Addr: addr, Transport: t, Timeout: r.s.Timeout}, func() {
		cancel()
		t.CloseIdleConnections()
	}
}

// topicConfig is the configuration a created topic gets.
func (r *Receiver) topicConfig(topic string, state bool) kafkago.TopicConfig {
	ct := r.s.CreateTopics
	tc := kafkago.TopicConfig{Topic: topic, NumPartitions: r.s.partitions, ReplicationFactor: r.s.replication}
	for k, v := range ct.Configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafkago.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	if state {
		// The state topic holds current state: compaction, never deletion
		// by age.
		tc.ConfigEntries = append(tc.ConfigEntries, kafkago.ConfigEntry{ConfigName: "cleanup.policy", ConfigValue: "compact"})
		return tc
	}
	if ct.CleanupPolicy != "" {
		tc.ConfigEntries = append(tc.ConfigEntries, kafkago.ConfigEntry{ConfigName: "cleanup.policy", ConfigValue: ct.CleanupPolicy})
	}
	if r.s.retentionMs != "" {
		tc.ConfigEntries = append(tc.ConfigEntries, kafkago.ConfigEntry{ConfigName: "retention.ms", ConfigValue: r.s.retentionMs})
	}
	return tc
}

// createTopic creates topic; a topic someone else created meanwhile is fine.
func (r *Receiver) createTopic(ctx context.Context, topic string, state bool) error {
	tc := r.topicConfig(topic, state)
	res, err := r.client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{tc}})
	if err == nil {
		err = res.Errors[topic]
	}
	switch {
	case err == nil:
		r.log.Info("kafka receiver: created topic", "topic", topic,
			"partitions", tc.NumPartitions, "replication_factor", tc.ReplicationFactor, "configs", configString(tc.ConfigEntries))
		return nil
	case errors.Is(err, kafkago.TopicAlreadyExists):
		return nil
	case errors.Is(err, kafkago.TopicAuthorizationFailed), errors.Is(err, kafkago.ClusterAuthorizationFailed):
		// Refused for good, like a write to a topic the principal may not
		// write: reject the event rather than stall every other topic.
		return &rejection{&wrapped{err: err, msg: fmt.Sprintf(
			"kafka receiver %q: not allowed to create topic %q: %v; grant the client's principal CREATE, WRITE and DESCRIBE on it (kafka-acls.sh --add --allow-principal User:NAME --operation Create --operation Write --operation Describe --topic %s), or create the topic yourself (%s)",
			r.name, topic, err, topic, r.createCommand(topic, state))}}
	case errors.Is(err, kafkago.InvalidTopic):
		return &rejection{fmt.Errorf("kafka receiver %q: topic name %q is not valid: %w; change the topic template", r.name, topic, err)}
	}
	return r.topicError(topic, "create topic", fmt.Errorf("%w (check create_topics: partitions, replication_factor, retention, configs)", err))
}

// createCommand is the kafka-topics.sh line that creates topic as the
// receiver would.
func (r *Receiver) createCommand(topic string, state bool) string {
	tc := r.topicConfig(topic, state)
	var b strings.Builder
	fmt.Fprintf(&b, "kafka-topics.sh --bootstrap-server %s --create --topic %s --partitions %d", r.s.Brokers[0], topic, tc.NumPartitions)
	if tc.ReplicationFactor > 0 {
		fmt.Fprintf(&b, " --replication-factor %d", tc.ReplicationFactor)
	}
	for _, c := range tc.ConfigEntries {
		fmt.Fprintf(&b, " --config %s=%s", c.ConfigName, c.ConfigValue)
	}
	return b.String()
}

func configString(cs []kafkago.ConfigEntry) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.ConfigName + "=" + c.ConfigValue
	}
	return strings.Join(parts, ",")
}

// checkCompacted warns when an existing state topic is not compacted: it
// would lose current state to retention.
func (r *Receiver) checkCompacted(ctx context.Context, topic string) {
	res, err := r.client.DescribeConfigs(ctx, &kafkago.DescribeConfigsRequest{
		Resources: []kafkago.DescribeConfigRequestResource{{
			ResourceType: kafkago.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"cleanup.policy"},
		}},
	})
	if err != nil {
		r.log.Debug("kafka receiver: cannot read the state topic's cleanup.policy", "topic", topic, "err", err)
		return
	}
	for _, res := range res.Resources {
		for _, c := range res.ConfigEntries {
			if c.ConfigName == "cleanup.policy" && !strings.Contains(c.ConfigValue, "compact") {
				r.log.Warn("kafka receiver: the state topic is not compacted; it will lose current state to retention. Run kafka-configs.sh --alter --entity-type topics --entity-name "+topic+" --add-config cleanup.policy=compact",
					"topic", topic, "cleanup.policy", c.ConfigValue)
			}
		}
	}
}

// topicError wraps a failure about topic; a refusal to describe or write
// the topic is a rejection of the events bound for it.
func (r *Receiver) topicError(topic, doing string, err error) error {
	msg := fmt.Sprintf("kafka receiver %q: %s %s (brokers %s): %v", r.name, doing, topic, strings.Join(r.s.Brokers, ","), err)
	if h := r.hint(err, topic); h != "" {
		msg += " (" + h + ")"
	}
	w := &wrapped{msg: msg, err: err}
	if classify(err) == rejectTopic {
		return &rejection{w}
	}
	return w
}
