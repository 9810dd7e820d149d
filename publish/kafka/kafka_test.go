package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/publish/publishtest"
	"github.com/os2sandbox/connector/publish/render"
	"github.com/os2sandbox/connector/testenv"
)

// lifecycle is a history with every operation: A updated twice, B deleted,
// C deleted and undeleted, D from a snapshot, E created, updated, deleted.
func lifecycle() []history.Event {
	steps := []struct {
		id, op  string
		version uint64
	}{
		{"A", history.OpCreate, 1}, {"B", history.OpCreate, 1}, {"C", history.OpCreate, 1},
		{"A", history.OpUpdate, 2}, {"D", history.OpSnapshot, 1}, {"B", history.OpDelete, 2},
		{"E", history.OpCreate, 1}, {"C", history.OpDelete, 2}, {"A", history.OpUpdate, 3},
		{"E", history.OpUpdate, 2}, {"C", history.OpUndelete, 3}, {"E", history.OpDelete, 3},
	}
	out := make([]history.Event, len(steps))
	for i, s := range steps {
		out[i] = publishtest.Event(uint64(100+i), "hr", "Employee", s.id, s.op, s.version)
	}
	return out
}

func sameJSON(t *testing.T, what string, want, got any) {
	t.Helper()
	a, _ := json.Marshal(want)
	b, _ := json.Marshal(got)
	if !bytes.Equal(a, b) {
		t.Errorf("%s:\nwant %s\ngot  %s", what, a, b)
	}
}

// TestFormats delivers every kind of event in each format and reads the
// records back as a consumer would.
//
// Every other event carries Raw, as the dispatcher passes on the logged
// bytes; here they are indented, so that the test sees whether they are
// what travels. The others are encoded by the receiver.
func TestFormats(t *testing.T) {
	events := lifecycle()
	byID := map[string]history.Event{}
	for i := range events {
		if i%2 == 1 {
			canonical, err := history.AppendJSON(nil, &events[i])
			if err != nil {
				t.Fatal(err)
			}
			var raw bytes.Buffer
			json.Indent(&raw, canonical, "", " ")
			events[i].Raw = raw.Bytes()
		}
		byID[events[i].EventID] = events[i]
	}
	// wantData is the CloudEvents data of e, byte for byte.
	wantData := func(t *testing.T, e history.Event) []byte {
		if e.Raw != nil {
			return e.Raw
		}
		b, err := history.AppendJSON(nil, &e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ce := render.CloudEvents{InstallationID: publishtest.Installation}
	tests := []struct {
		format string
		id     func(kafkago.Message) string
		check  func(t *testing.T, m kafkago.Message)
	}{{
		format: "cloudevents-binary",
		id:     ceID,
		check: func(t *testing.T, m kafkago.Message) {
			e := byID[ceID(m)]
			want := map[string]string{
				"ce_specversion":        "1.0",
				"ce_source":             "urn:connector:" + publishtest.Installation + ":postgres://7301/hr",
				"ce_type":               "dk.os2sandbox.connector.employee." + e.Operation,
				"ce_subject":            "Employee/" + e.Object.ID,
				"ce_partitionkey":       "Employee/" + e.Object.ID,
				"ce_time":               e.Bitemporal.RegistreringFra.String(),
				"ce_recordedtime":       e.ObservedAt.String(),
				"ce_sequence":           render.Sequence(e.Sequence),
				"ce_dataclassification": "internal",
				"ce_changekind":         "aendring",
				"ce_virkningfra":        e.Bitemporal.VirkningFra.String(),
				"ce_sourceepoch":        "1",
				"ce_emission":           "live",
				"content-type":          "application/json",
			}
			for k, v := range want {
				if got := header(m, k); got != v {
					t.Errorf("event %d: header %s = %q, want %q", e.Sequence, k, got, v)
				}
			}
			if len(header(m, "ce_sequence")) != 20 {
				t.Errorf("ce_sequence %q is not 20 digits", header(m, "ce_sequence"))
			}
			// All headers, in order, as render.Binary names them.
			var got, all []string
			for _, h := range m.Headers {
				got = append(got, h.Key+"="+string(h.Value))
			}
			for _, a := range render.Binary(ce.Attributes(&e), "ce_") {
				all = append(all, a.Name+"="+a.Value)
			}
			if strings.Join(got, "\n") != strings.Join(all, "\n") {
				t.Errorf("event %d: headers\n%s\nwant\n%s", e.Sequence, strings.Join(got, "\n"), strings.Join(all, "\n"))
			}
			if !bytes.Equal(m.Value, wantData(t, e)) {
				t.Errorf("event %d: value\n%s\nwant\n%s", e.Sequence, m.Value, wantData(t, e))
			}
			var back history.Event
			if err := json.Unmarshal(m.Value, &back); err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "value", e, back)
		},
	}, {
		format: "cloudevents-structured",
		id: func(m kafkago.Message) string {
			var v struct{ ID string }
			json.Unmarshal(m.Value, &v)
			return v.ID
		},
		check: func(t *testing.T, m kafkago.Message) {
			if ct := header(m, "content-type"); ct != "application/cloudevents+json" {
				t.Errorf("content-type %q", ct)
			}
			if header(m, "ce_id") != "" {
				t.Error("structured mode carries ce_ headers")
			}
			var v map[string]json.RawMessage
			if err := json.Unmarshal(m.Value, &v); err != nil {
				t.Fatal(err)
			}
			var id string
			json.Unmarshal(v["id"], &id)
			e := byID[id]
			for _, a := range ce.Attributes(&e) {
				var got string
				json.Unmarshal(v[a.Name], &got)
				if got != a.Value {
					t.Errorf("event %d: %s = %q, want %q", e.Sequence, a.Name, got, a.Value)
				}
			}
			if !bytes.Equal(v["data"], wantData(t, e)) {
				t.Errorf("event %d: data\n%s\nwant\n%s", e.Sequence, v["data"], wantData(t, e))
			}
			var back history.Event
			if err := json.Unmarshal(v["data"], &back); err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "data", e, back)
		},
	}, {
		format: "debezium",
		id: func(m kafkago.Message) string {
			var v render.DebeziumEnvelope
			json.Unmarshal(m.Value, &v)
			return v.Connector.EventID
		},
		check: func(t *testing.T, m kafkago.Message) {
			var env render.DebeziumEnvelope
			if err := json.Unmarshal(m.Value, &env); err != nil {
				t.Fatal(err)
			}
			e := byID[env.Connector.EventID]
			op, _ := render.DebeziumOp(e.Operation)
			if env.Op != op || env.TsMs != e.ObservedAt.UnixMilli() || env.Source.Connector != "postgres" {
				t.Errorf("event %d: op %q ts_ms %d connector %q", e.Sequence, env.Op, env.TsMs, env.Source.Connector)
			}
			sameJSON(t, "reassembled event", e, env.Event())
		},
	}}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			k := testenv.NewKafka(t, testenv.KafkaOptions{})
			r := openReceiver(t, nil, testConfig(k.Addr, "format: "+tt.format))
			if err := r.Deliver(context.Background(), events); err != nil {
				t.Fatal(err)
			}
			got := consume(t, k, []string{"connector.hr.employee"}, haveIDs(events, tt.id))
			if len(got) != len(events) {
				t.Fatalf("%d records for %d events", len(got), len(events))
			}
			for _, m := range got {
				e := byID[tt.id(m)]
				if string(m.Key) != "Employee/"+e.Object.ID {
					t.Errorf("key %q", m.Key)
				}
				if len(m.Value) == 0 {
					t.Errorf("event %d (%s) has no value: a delete must carry data", e.Sequence, e.Operation)
				}
				tt.check(t, m)
			}
		})
	}
}

// TestStateTopic: the compacted state topic, folded by key, holds exactly
// the live objects with their current images, before and after the
// broker compacts it (kfake simulates compaction).
func TestStateTopic(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr, "state_topic: {enabled: true}"))
	events := lifecycle()
	deliverAll(t, r, events, 5, 10*time.Second)

	want := map[string]map[string]any{}
	for _, e := range events {
		if e.After == nil {
			delete(want, "Employee/"+e.Object.ID)
		} else {
			want["Employee/"+e.Object.ID] = e.After
		}
	}
	if len(want) != 3 {
		t.Fatalf("test history has %d live objects, want 3 (A, C, D)", len(want))
	}
	bySeq := map[string]history.Event{}
	for _, e := range events {
		bySeq[render.Sequence(e.Sequence)] = e
	}
	const stateTopic = "connector.hr.employee.state"
	fold := func() int {
		got := consume(t, k, []string{stateTopic}, func([]kafkago.Message) bool { return true })
		state := map[string]map[string]any{}
		tombstones := 0
		for _, m := range got {
			// Each record names its event.
			e, ok := bySeq[header(m, "connector-sequence")]
			if !ok || header(m, "connector-event-id") != e.EventID || string(m.Key) != "Employee/"+e.Object.ID {
				t.Errorf("state record %s: connector-sequence %q, connector-event-id %q name no event of the key",
					m.Key, header(m, "connector-sequence"), header(m, "connector-event-id"))
			}
			if ct, want := header(m, "content-type"), map[bool]string{true: "", false: "application/json"}[m.Value == nil]; ct != want {
				t.Errorf("state record %s: content-type %q, want %q", m.Key, ct, want)
			}
			if m.Value == nil {
				tombstones++
				delete(state, string(m.Key))
				continue
			}
			var img map[string]any
			if err := json.Unmarshal(m.Value, &img); err != nil {
				t.Fatalf("state record %s: %v", m.Key, err)
			}
			state[string(m.Key)] = img
		}
		sameJSON(t, "folded state", want, state)
		return len(got)
	}
	before := fold()
	if before != len(events) {
		t.Errorf("%d state records for %d events", before, len(events))
	}
	k.Cluster().Compact()
	after := fold()
	t.Logf("state topic: %d records, %d after compaction", before, after)

	policy := topicConfig(t, k, stateTopic, "cleanup.policy")
	if policy != "compact" {
		t.Errorf("state topic cleanup.policy = %q", policy)
	}
	// The event topic keeps deletes as events with data, never tombstones.
	got := consume(t, k, []string{"connector.hr.employee"}, haveIDs(events, ceID))
	for _, m := range got {
		if len(m.Value) == 0 {
			t.Errorf("event topic holds a tombstone for %s", m.Key)
		}
	}
}

// topicConfig reads one config of topic from the broker.
func topicConfig(t *testing.T, k *testenv.Kafka, topic, name string) string {
	t.Helper()
	c := adminClient(t, k)
	res, err := c.DescribeConfigs(context.Background(), &kafkago.DescribeConfigsRequest{
		Resources: []kafkago.DescribeConfigRequestResource{{ResourceType: kafkago.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{name}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Resources {
		for _, c := range r.ConfigEntries {
			if c.ConfigName == name {
				return c.ConfigValue
			}
		}
	}
	return ""
}

func partitionCount(t *testing.T, k *testenv.Kafka, topic string) int {
	t.Helper()
	c := adminClient(t, k)
	md, err := c.Metadata(context.Background(), &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range md.Topics {
		if tp.Name == topic && tp.Error == nil {
			return len(tp.Partitions)
		}
	}
	return 0
}

// TestCreateTopics: missing topics are created as configured; the state
// topic always compacted.
func TestCreateTopics(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr,
		`create_topics: {partitions: 5, replication_factor: 1, retention: 3d, cleanup_policy: delete, configs: {max.message.bytes: "2000000"}}`,
		"state_topic: {enabled: true}"))
	if err := r.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := r.Deliver(context.Background(), lifecycle()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ topic, name, want string }{
		{"connector.hr.employee", "retention.ms", "259200000"},
		{"connector.hr.employee", "cleanup.policy", "delete"},
		{"connector.hr.employee", "max.message.bytes", "2000000"},
		{"connector.hr.employee.state", "cleanup.policy", "compact"},
	} {
		if got := topicConfig(t, k, tc.topic, tc.name); got != tc.want {
			t.Errorf("%s %s = %q, want %q", tc.topic, tc.name, got, tc.want)
		}
	}
	for _, topic := range []string{"connector.hr.employee", "connector.hr.employee.state"} {
		if n := partitionCount(t, k, topic); n != 5 {
			t.Errorf("%s has %d partitions, want 5", topic, n)
		}
	}
}

// TestCreateTopicsDisabled: with creation off a missing topic is a clear,
// retryable error saying how to create it; once it exists, delivery works.
func TestCreateTopicsDisabled(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{AutoCreateTopics: true})
	log := publishtest.NewLog(t)
	r := openReceiver(t, log, testConfig(k.Addr, "topic: hr-events", "create_topics: {enabled: false, partitions: 2}"))
	events := lifecycle()
	err := r.Deliver(context.Background(), events)
	if err == nil {
		t.Fatal("Deliver to a missing topic succeeded")
	}
	var pe *publish.PartialError
	var re *publish.RejectedError
	if errors.As(err, &pe) || errors.As(err, &re) {
		t.Fatalf("missing topic gave %T; want a plain, retryable error", err)
	}
	for _, s := range []string{`"hr-events" does not exist`, "create_topics.enabled", "kafka-topics.sh --bootstrap-server " + k.Addr + " --create --topic hr-events --partitions 2"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q: %v", s, err)
		}
	}
	if err := r.Check(context.Background()); err == nil || !strings.Contains(err.Error(), `"hr-events" does not exist`) {
		t.Errorf("Check = %v", err)
	}
	// The broker allows auto-creation, but the receiver's lookups must not
	// have triggered it.
	if n := partitionCount(t, k, "hr-events"); n != 0 {
		t.Fatalf("the receiver's existence check created the topic (%d partitions)", n)
	}

	c := adminClient(t, k)
	res, err := c.CreateTopics(context.Background(), &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{Topic: "hr-events", NumPartitions: 2, ReplicationFactor: 1}}})
	if err != nil || res.Errors["hr-events"] != nil {
		t.Fatal(err, res.Errors)
	}
	if err := r.Deliver(context.Background(), events); err != nil {
		t.Fatalf("after the topic was created: %v", err)
	}
	if err := r.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	checkDelivery(t, events, consume(t, k, []string{"hr-events"}, haveIDs(events, ceID)))
}

// TestStateTopicNotCompacted: an existing state topic without compaction
// is used, with a warning saying how to fix it.
func TestStateTopicNotCompacted(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	c := adminClient(t, k)
	res, err := c.CreateTopics(context.Background(), &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{
		{Topic: "connector.hr.employee.state", NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: []kafkago.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "delete"}}},
	}})
	if err != nil || res.Errors["connector.hr.employee.state"] != nil {
		t.Fatal(err, res.Errors)
	}
	log := publishtest.NewLog(t)
	r := openReceiver(t, log, testConfig(k.Addr, "state_topic: {enabled: true}"))
	if err := r.Deliver(context.Background(), lifecycle()); err != nil {
		t.Fatal(err)
	}
	if !log.Has("not compacted") || !log.Has("cleanup.policy=compact") {
		t.Errorf("no warning about the uncompacted state topic; log: %v", log.Lines())
	}
}

// TestCheckCreateRights: Check asks the cluster (validate only) whether it
// would create the topics as configured; kfake has one broker, so a
// replication factor of 3 is refused, naming the setting.
func TestCheckCreateRights(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr, "create_topics: {replication_factor: 3}"))
	err := r.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "replication_factor") {
		t.Fatalf("Check = %v", err)
	}
	if n := partitionCount(t, k, "connector.check.check"); n != 0 {
		t.Fatal("Check created a topic")
	}
	t.Log(err)
}

// TestTopicDeleted: a topic deleted while the receiver runs is looked up
// again and, creation being on, created again; the dispatcher's retries
// carry delivery over the gap.
func TestTopicDeleted(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	r := openReceiver(t, nil, testConfig(k.Addr, "create_topics: {partitions: 2}"))
	events := lifecycle()
	if err := r.Deliver(context.Background(), events[:6]); err != nil {
		t.Fatal(err)
	}
	c := adminClient(t, k)
	res, err := c.DeleteTopics(context.Background(), &kafkago.DeleteTopicsRequest{Topics: []string{"connector.hr.employee"}})
	if err != nil || res.Errors["connector.hr.employee"] != nil {
		t.Fatal(err, res.Errors)
	}
	errs := deliverAll(t, r, events[6:], 3, 30*time.Second)
	t.Logf("%d failed Deliver calls until the topic was back", errs)
	if n := partitionCount(t, k, "connector.hr.employee"); n != 2 {
		t.Fatalf("recreated topic has %d partitions", n)
	}
	checkDelivery(t, events[6:], consume(t, k, []string{"connector.hr.employee"}, haveIDs(events[6:], ceID)))
}

// adminClient is a kafka-go client with a transport of its own: the
// default transport is shared and caches metadata for seconds.
func adminClient(t *testing.T, k *testenv.Kafka) *kafkago.Client {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &kafkago.Transport{Context: ctx}
	t.Cleanup(func() {
		cancel()
		tr.CloseIdleConnections()
	})
	return &kafkago.Client{Addr: kafkago.TCP(k.Addr), Timeout: 5 * time.Second, Transport: tr}
}
