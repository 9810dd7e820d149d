package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/os2sandbox/connector/publish/file/filetest"
	"github.com/os2sandbox/connector/testenv"
)

// The tests here run the real binary with a kafka receiver against kfake
// (testenv.NewKafka): a Kafka wire-protocol broker in this test process on
// a loopback port. What is on Kafka is read back with a kafka-go consumer
// group and compared with the organisation file receiver, which has the
// same classification ceiling and no filter, so it sees the same events.

// kafkaTopics are the topics the receiver writes for the demo: its event
// topic template is "demo.{type}", its state topic "demo.{type}.state".
var kafkaTopics = []string{"demo.organisationenhed", "demo.bruger", "demo.organisationenhed.state", "demo.bruger.state"}

// withKafka adds a kafka receiver named "kafka" for the broker at addr to
// the demo config; extra are more lines of the receiver's entry.
func withKafka(addr string, extra ...string) func(string) string {
	return func(s string) string {
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += `  - name: kafka
    type: kafka
    brokers: [` + addr + `]
    topic: "demo.{type}"
    format: cloudevents-binary
    start: beginning
    classification: internal
    create_topics: {enabled: true, partitions: 4}
    state_topic: {enabled: true, topic: "demo.{type}.state"}
`
		for _, l := range extra {
			s += "    " + l + "\n"
		}
		return s
	}
}

// record is one Kafka record as a consumer saw it.
type record struct {
	topic     string
	partition int
	offset    int64
	key       string
	value     []byte // nil for a tombstone
	headers   []kafkago.Header
}

func (r record) header(name string) string {
	for _, h := range r.headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

func (r record) isState() bool { return strings.HasSuffix(r.topic, ".state") }

// readKafka reads every record of topics, from the first offset to the
// end offsets the broker reports when it is called, with a kafka-go
// consumer group. The result is in (topic, partition, offset) order.
func readKafka(t *testing.T, k *testenv.Kafka, topics []string) []record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &kafkago.Client{Addr: kafkago.TCP(k.Addr), Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		t.Fatalf("kafka metadata: %v", err)
	}
	type tp struct {
		topic     string
		partition int
	}
	req := map[string][]kafkago.OffsetRequest{}
	for _, top := range md.Topics {
		if top.Error != nil {
			t.Fatalf("topic %s: %v", top.Name, top.Error)
		}
		for _, p := range top.Partitions {
			req[top.Name] = append(req[top.Name], kafkago.LastOffsetOf(p.ID))
		}
	}
	if len(req) != len(topics) {
		t.Fatalf("the broker has %d of the topics %v", len(req), topics)
	}
	offs, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: req})
	if err != nil {
		t.Fatalf("kafka list offsets: %v", err)
	}
	end := map[tp]int64{}
	for topic, ps := range offs.Topics {
		for _, p := range ps {
			if p.Error != nil {
				t.Fatalf("offsets of %s/%d: %v", topic, p.Partition, p.Error)
			}
			if p.LastOffset > 0 {
				end[tp{topic, p.Partition}] = p.LastOffset
			}
		}
	}

	rd := kafkago.NewReader(k.ReaderConfig(fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()), topics))
	defer rd.Close()
	var out []record
	for len(end) > 0 {
		m, err := rd.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("consume %v: %v after %d records; partitions not read to the end: %v", topics, err, len(out), end)
		}
		out = append(out, record{topic: m.Topic, partition: m.Partition, offset: m.Offset, key: string(m.Key), value: m.Value, headers: m.Headers})
		k := tp{m.Topic, m.Partition}
		if e, ok := end[k]; ok && m.Offset >= e-1 {
			delete(end, k)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.topic != b.topic {
			return a.topic < b.topic
		}
		if a.partition != b.partition {
			return a.partition < b.partition
		}
		return a.offset < b.offset
	})
	return out
}

// deliveredLog is the log as the organisation file receiver got it:
// duplicates dropped (they must be identical), in sequence order, every
// sequence from 1 present.
func deliveredLog(t *testing.T, dir string) []line {
	t.Helper()
	raws, _ := filetest.Delivered(t, filepath.Join(dir, "demo-out", "events.jsonl"))
	out := make([]line, len(raws))
	for i, raw := range raws {
		out[i].raw = raw
		if err := json.Unmarshal([]byte(raw), &out[i].ev); err != nil {
			t.Fatal(err)
		}
	}
	if len(out) < 600 {
		t.Fatalf("the demo should have more than 600 events, the file receiver has %d", len(out))
	}
	return out
}

// wantHeaders derives the CloudEvents binary-mode headers of an event from
// its canonical JSON, as docs/receivers/kafka.md and EVENTS.md define them.
func wantHeaders(t *testing.T, raw, installation string) map[string]string {
	t.Helper()
	var e struct {
		EventID  string `json:"eventId"`
		Sequence uint64 `json:"sequence"`
		Emission string `json:"emission"`
		Source   struct {
			ID    string `json:"id"`
			Epoch uint64 `json:"epoch"`
		} `json:"source"`
		Object struct {
			Type    string `json:"type"`
			ID      string `json:"id"`
			Version uint64 `json:"version"`
		} `json:"object"`
		Operation  string `json:"operation"`
		Reason     string `json:"reason"`
		ChangeKind string `json:"changeKind"`
		Bitemporal struct {
			RegistreringFra string  `json:"registreringFra"`
			VirkningFra     string  `json:"virkningFra"`
			VirkningTil     *string `json:"virkningTil"`
		} `json:"bitemporal"`
		Classification struct {
			Dataclassification string   `json:"dataclassification"`
			Datacategory       string   `json:"datacategory"`
			Dataregulation     []string `json:"dataregulation"`
		} `json:"classification"`
		Trace struct {
			TransactionID string `json:"transactionId"`
			CorrelationID string `json:"correlationId"`
		} `json:"trace"`
		ObservedAt string `json:"observedAt"`
	}
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		t.Fatal(err)
	}
	key := e.Object.Type + "/" + e.Object.ID
	h := map[string]string{
		"ce_specversion":        "1.0",
		"ce_id":                 e.EventID,
		"ce_source":             "urn:connector:" + installation + ":" + e.Source.ID,
		"ce_type":               "dk.os2sandbox.connector." + strings.ToLower(e.Object.Type) + "." + e.Operation,
		"ce_subject":            key,
		"ce_partitionkey":       key,
		"ce_time":               e.Bitemporal.RegistreringFra,
		"ce_sequence":           fmt.Sprintf("%020d", e.Sequence),
		"ce_recordedtime":       e.ObservedAt,
		"ce_dataclassification": e.Classification.Dataclassification,
		"ce_datacategory":       e.Classification.Datacategory,
		"ce_dataregulation":     strings.Join(e.Classification.Dataregulation, ","),
		"ce_emission":           e.Emission,
		"ce_changekind":         e.ChangeKind,
		"ce_reason":             e.Reason,
		"ce_objectversion":      strconv.FormatUint(e.Object.Version, 10),
		"ce_virkningfra":        e.Bitemporal.VirkningFra,
		"ce_sourceepoch":        strconv.FormatUint(e.Source.Epoch, 10),
		"ce_transactionid":      e.Trace.TransactionID,
		"ce_correlationid":      e.Trace.CorrelationID,
		"content-type":          "application/json",
	}
	if e.Bitemporal.VirkningTil != nil {
		h["ce_virkningtil"] = *e.Bitemporal.VirkningTil
	}
	for k, v := range h {
		if v == "" { // an attribute without a value is left out
			delete(h, k)
		}
	}
	return h
}

func headerMap(t *testing.T, r record) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, h := range r.headers {
		if _, ok := m[h.Key]; ok {
			t.Fatalf("%s/%d@%d: header %s twice", r.topic, r.partition, r.offset, h.Key)
		}
		m[h.Key] = string(h.Value)
	}
	return m
}

// kafkaCheck is what checkEvents found on the event topics.
type kafkaCheck struct {
	records    int            // records on the event topics
	duplicates int            // records whose (ce_id, ce_emission) came before
	byEmission map[string]int // first copies per (ce_id, ce_emission), by emission
}

// checkEvents checks the event-topic records of recs against the log: each
// record is an event of the log on its type's topic, keyed type/id, every
// key on one partition; its value is the event exactly as the file
// receiver wrote it, apart from the emission (the original or "replay");
// its headers are the event's CloudEvents context. Copies of one event
// with the same emission are identical (value and headers). A consumer
// that keeps the first record of each ce_id sees every event of the log
// exactly once and each key's events in sequence order.
func checkEvents(t *testing.T, recs []record, log []line, installation string) kafkaCheck {
	t.Helper()
	byID := map[string]line{}
	for _, l := range log {
		byID[l.ev.EventID] = l
	}
	type copyKey struct{ id, emission string }
	copies := map[copyKey]record{}
	firstByID := map[string]bool{}
	lastSeq := map[string]uint64{}
	partOf := map[string]int{}
	res := kafkaCheck{byEmission: map[string]int{}}
	for _, r := range recs {
		if r.isState() {
			continue
		}
		res.records++
		at := fmt.Sprintf("%s/%d@%d", r.topic, r.partition, r.offset)
		id := r.header("ce_id")
		l, ok := byID[id]
		if !ok {
			t.Fatalf("%s: ce_id %q is no event of the log", at, id)
		}
		key := l.ev.Object.Type + "/" + l.ev.Object.ID
		if r.key != key {
			t.Fatalf("%s: key %q, want %q", at, r.key, key)
		}
		if want := "demo." + strings.ToLower(l.ev.Object.Type); r.topic != want {
			t.Fatalf("%s: event of %s on topic %s, want %s", at, key, r.topic, want)
		}
		if p, ok := partOf[key]; ok && p != r.partition {
			t.Fatalf("key %s on partitions %d and %d", key, p, r.partition)
		}
		partOf[key] = r.partition
		em := r.header("ce_emission")
		ck := copyKey{id, em}
		if prev, ok := copies[ck]; ok {
			res.duplicates++
			if !bytes.Equal(prev.value, r.value) || !reflect.DeepEqual(prev.headers, r.headers) {
				t.Fatalf("%s: ce_id %s (%s) again with other content:\n%s %v\n%s %v", at, id, em, prev.value, prev.headers, r.value, r.headers)
			}
			continue
		}
		copies[ck] = r
		res.byEmission[em]++
		if em != l.ev.Emission && em != "replay" {
			t.Fatalf("%s: ce_emission %q, the event's is %q", at, em, l.ev.Emission)
		}
		value := strings.Replace(string(r.value), `"emission":"`+em+`"`, `"emission":"`+l.ev.Emission+`"`, 1)
		if value != l.raw {
			t.Fatalf("%s: the value differs from the file receiver's event (beyond the emission):\n%s\n%s", at, r.value, l.raw)
		}
		want := wantHeaders(t, string(r.value), installation)
		if got := headerMap(t, r); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: headers\n got %v\nwant %v", at, got, want)
		}
		// What a consumer deduplicating on ce_id keeps.
		if firstByID[id] {
			continue
		}
		firstByID[id] = true
		if l.ev.Sequence <= lastSeq[key] {
			t.Fatalf("%s: key %s: sequence %d after %d", at, key, l.ev.Sequence, lastSeq[key])
		}
		lastSeq[key] = l.ev.Sequence
	}
	if len(firstByID) != len(log) {
		for _, l := range log {
			if !firstByID[l.ev.EventID] {
				t.Fatalf("%d of %d events on Kafka; sequence %d (%s) is missing", len(firstByID), len(log), l.ev.Sequence, l.ev.EventID)
			}
		}
	}
	return res
}

// checkStateTopics folds the state topics (the last record per key; a
// tombstone removes the key) and compares the result with the live
// objects at the end of log: each object's after image, objects whose last
// event is a delete absent. It returns the number of live objects.
func checkStateTopics(t *testing.T, recs []record, log []line) int {
	t.Helper()
	last := map[string]line{}
	for _, l := range log {
		last[l.ev.Object.Type+"/"+l.ev.Object.ID] = l
	}
	type state struct {
		value     []byte
		eventID   string
		sequence  string
		partition int
	}
	folded := map[string]state{}
	byEvent := map[string]record{}
	n, dups := 0, 0
	for _, r := range recs {
		if !r.isState() {
			continue
		}
		n++
		l, ok := last[r.key]
		if !ok {
			t.Fatalf("%s: state record for unknown key %q", r.topic, r.key)
		}
		if want := "demo." + strings.ToLower(l.ev.Object.Type) + ".state"; r.topic != want {
			t.Fatalf("state record of %s on %s, want %s", r.key, r.topic, want)
		}
		if s, ok := folded[r.key]; ok && s.partition != r.partition {
			t.Fatalf("state key %s on partitions %d and %d", r.key, s.partition, r.partition)
		}
		// Every copy of one event's state record is the same.
		id := r.header("connector-event-id")
		if prev, ok := byEvent[id]; ok {
			dups++
			if !bytes.Equal(prev.value, r.value) || !reflect.DeepEqual(prev.headers, r.headers) {
				t.Fatalf("state record of event %s again with other content:\n%q %v\n%q %v", id, prev.value, prev.headers, r.value, r.headers)
			}
		}
		byEvent[id] = r
		folded[r.key] = state{r.value, r.header("connector-event-id"), r.header("connector-sequence"), r.partition}
	}
	live := 0
	for key, l := range last {
		s, ok := folded[key]
		if !ok {
			t.Fatalf("state topic has no record for %s", key)
		}
		if s.eventID != l.ev.EventID || s.sequence != fmt.Sprintf("%020d", l.ev.Sequence) {
			t.Fatalf("state of %s was written by event %s (sequence %s), its last event is %s (%d)", key, s.eventID, s.sequence, l.ev.EventID, l.ev.Sequence)
		}
		if l.ev.Operation == "delete" {
			if s.value != nil {
				t.Fatalf("%s is deleted; its state is %s, want a tombstone", key, s.value)
			}
			continue
		}
		live++
		var got map[string]any
		if err := json.Unmarshal(s.value, &got); err != nil {
			t.Fatalf("state of %s: %v: %q", key, err, s.value)
		}
		if !reflect.DeepEqual(got, l.ev.After) {
			t.Fatalf("state of %s:\n got %s\nwant %v", key, s.value, l.ev.After)
		}
	}
	t.Logf("state topics: %d records (%d copies of an event's record before) fold to %d keys, %d live objects", n, dups, len(folded), live)
	return live
}

func statusOf(t *testing.T, dir string) Report {
	t.Helper()
	rep, err := tryStatus(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// tryStatus is `connector status --json`, which may fail while the agent
// is starting.
func tryStatus(t *testing.T, dir string) (Report, error) {
	t.Helper()
	r := run(t, dir, "status", "-c", "demo.yaml", "--json")
	var rep Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		return rep, fmt.Errorf("status --json: exit %d: %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	return rep, nil
}

func receiverOf(t *testing.T, rep Report, name string) ReceiverReport {
	t.Helper()
	for _, r := range rep.Receivers {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("status has no receiver %q: %+v", name, rep.Receivers)
	return ReceiverReport{}
}

// TestKafkaDemo runs the demo with a kafka receiver (CloudEvents binary, a
// topic per type, created by the receiver, and compacted state topics) and
// reads everything back.
func TestKafkaDemo(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	dir := demoDir(t, withKafka(k.Addr))
	if r := run(t, dir, "run", "--once", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("run --once: exit %d\n%s", r.code, r.stderr)
	}
	rep := statusOf(t, dir)
	log := deliveredLog(t, dir)
	if rep.LogLength != uint64(len(log)) {
		t.Fatalf("log length %d, the file receiver has %d events", rep.LogLength, len(log))
	}
	if kr := receiverOf(t, rep, "kafka"); kr.Cursor != rep.LogLength || kr.LagEvents != 0 || kr.DeadLetters != 0 || kr.LastError != "" {
		t.Fatalf("kafka receiver after run --once: %+v", kr)
	}

	recs := readKafka(t, k, kafkaTopics)
	res := checkEvents(t, recs, log, rep.Installation)
	if res.records != len(log) || res.duplicates != 0 {
		t.Fatalf("%d records on the event topics for %d events (%d duplicates); an undisturbed run delivers each once", res.records, len(log), res.duplicates)
	}
	live := checkStateTopics(t, recs, log)

	// The featured user's state is its current registration, as
	// `connector history` shows it.
	const featured = "Bruger/fb9775ad-bc68-5ff4-a7ef-54ddf8970a87"
	var state []byte
	for _, rec := range recs {
		if rec.topic == "demo.bruger.state" && rec.key == featured {
			state = rec.value
		}
	}
	r := run(t, dir, "history", "-c", "demo.yaml", featured, "--json")
	var versions []struct {
		Fields map[string]any `json:"fields"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &versions); err != nil || len(versions) == 0 {
		t.Fatalf("history --json: %v\n%s", err, r.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal(state, &got); err != nil || !reflect.DeepEqual(got, versions[len(versions)-1].Fields) {
		t.Fatalf("state of %s: %s (%v), history says %v", featured, state, err, versions[len(versions)-1].Fields)
	}

	// The topics were created as configured: the event topics with 4
	// partitions, the state topics compacted.
	ctx := context.Background()
	client := &kafkago.Client{Addr: kafkago.TCP(k.Addr), Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: kafkaTopics})
	if err != nil {
		t.Fatal(err)
	}
	for _, top := range md.Topics {
		if !strings.HasSuffix(top.Name, ".state") && len(top.Partitions) != 4 {
			t.Errorf("topic %s has %d partitions, configured 4", top.Name, len(top.Partitions))
		}
	}
	for _, topic := range kafkaTopics {
		cres, err := client.DescribeConfigs(ctx, &kafkago.DescribeConfigsRequest{Resources: []kafkago.DescribeConfigRequestResource{{
			ResourceType: kafkago.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"cleanup.policy"},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		policy := ""
		for _, r := range cres.Resources {
			for _, e := range r.ConfigEntries {
				if e.ConfigName == "cleanup.policy" {
					policy = e.ConfigValue
				}
			}
		}
		want := "delete"
		if strings.HasSuffix(topic, ".state") {
			want = "compact"
		}
		if policy != want {
			t.Errorf("topic %s: cleanup.policy %q, want %q", topic, policy, want)
		}
	}
	t.Logf("%d events, %d records on the event topics, %d live objects", len(log), res.records, live)
}

// TestKafkaKill9 is TestKill9 with a slow kafka receiver: the agent is
// SIGKILLed at random moments, restarted each time, and finished with
// run --once. Kafka must then hold every event, duplicates only
// identical, each key's events in order once deduplicated on ce_id, and
// state topics that fold to the live objects.
func TestKafkaKill9(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	// A kill between Kafka's ack and the cursor's commit is what leaves a
	// duplicate, and that window is a few milliseconds: 20 kills rarely hit
	// it. So the broker also loses the ack of every 40th produce request
	// after appending it (REQUEST_TIMED_OUT, as a broker whose answer was
	// lost), and the identical-duplicates check has duplicates to check.
	var produces atomic.Int64
	lostAcks := k.Cluster().Fault(kfake.Fault{
		Keys:  []kmsg.Key{kmsg.Produce},
		Err:   kerr.RequestTimedOut,
		Count: -1,
		When:  func(kmsg.Request) bool { return produces.Add(1)%40 == 0 },
	})
	// Small batches at a capped rate keep the kafka receiver delivering
	// for several seconds in all, so most kills land mid-delivery.
	kafka := withKafka(k.Addr, "batch: 2", "rate: 150", "timeout: 3s", "retry: {initial: 50ms, max: 500ms}")
	dir := demoDir(t, withSmallOrgBatch(t, kafka))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	const kills = 20
	midDelivery := killDuringDelivery(t, dir, "kafka", kills, func(i int) time.Duration {
		// Every third kill early (start-up, capture, the receiver's first
		// produce), the others spread over delivery.
		if i%3 == 0 {
			return time.Duration(rng.IntN(300)) * time.Millisecond
		}
		return time.Duration(rng.IntN(1500)) * time.Millisecond
	})
	if r := run(t, dir, "run", "--once", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("final run: %s", r.stderr)
	}
	rep := statusOf(t, dir)
	log := deliveredLog(t, dir)
	if rep.LogLength != uint64(len(log)) {
		t.Fatalf("log length %d, the file receiver has %d events", rep.LogLength, len(log))
	}
	if kr := receiverOf(t, rep, "kafka"); kr.Cursor != rep.LogLength || kr.DeadLetters != 0 {
		t.Fatalf("kafka receiver after the final run: %+v", kr)
	}
	recs := readKafka(t, k, kafkaTopics)
	res := checkEvents(t, recs, log, rep.Installation)
	live := checkStateTopics(t, recs, log)
	if res.duplicates == 0 {
		t.Errorf("no duplicate on Kafka although %d produce acks were lost", lostAcks.Hits())
	}
	if midDelivery < 5 {
		t.Errorf("only %d of %d kills hit the kafka receiver mid-delivery; the test no longer tests what it says", midDelivery, kills)
	}
	t.Logf("%d kills (%d mid-delivery), %d lost produce acks; %d events; %d records, %d duplicates, all identical; %d live objects",
		kills, midDelivery, lostAcks.Hits(), len(log), res.records, res.duplicates, live)
}

// TestKafkaReplay re-publishes the log with `connector replay`: the same
// ce_ids flagged replay, so a consumer that deduplicates on ce_id sees
// each change once; --from SEQUENCE replays only the tail.
func TestKafkaReplay(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	dir := demoDir(t, withKafka(k.Addr))
	if r := run(t, dir, "run", "--once", "-c", "demo.yaml"); r.code != 0 {
		t.Fatalf("run --once: exit %d\n%s", r.code, r.stderr)
	}
	rep := statusOf(t, dir)
	log := deliveredLog(t, dir)

	r := run(t, dir, "replay", "-c", "demo.yaml", "--receiver", "kafka", "--from", "beginning")
	if r.code != 0 {
		t.Fatalf("replay --from beginning: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	recs := readKafka(t, k, kafkaTopics)
	res := checkEvents(t, recs, log, rep.Installation)
	if res.records != 2*len(log) || res.duplicates != 0 || res.byEmission["replay"] != len(log) {
		t.Fatalf("after a full replay: %d records (%d duplicates, %v by emission) for %d events; want each event once live and once replayed",
			res.records, res.duplicates, res.byEmission, len(log))
	}
	checkStateTopics(t, recs, log)
	// Where each partition ended before the second replay.
	ends := map[string]int64{}
	for _, rec := range recs {
		ends[fmt.Sprint(rec.topic, rec.partition)] = rec.offset + 1
	}

	from := len(log) - 40
	r = run(t, dir, "replay", "-c", "demo.yaml", "--receiver", "kafka", "--from", strconv.Itoa(from))
	if r.code != 0 {
		t.Fatalf("replay --from %d: exit %d\n%s\n%s", from, r.code, r.stdout, r.stderr)
	}
	recs = readKafka(t, k, kafkaTopics)
	checkEvents(t, recs, log, rep.Installation)
	checkStateTopics(t, recs, log)
	var tail []uint64
	for _, rec := range recs {
		if rec.isState() || rec.offset < ends[fmt.Sprint(rec.topic, rec.partition)] {
			continue
		}
		if em := rec.header("ce_emission"); em != "replay" {
			t.Fatalf("a record of the second replay has ce_emission %q", em)
		}
		seq, err := strconv.ParseUint(rec.header("ce_sequence"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		tail = append(tail, seq)
	}
	sort.Slice(tail, func(i, j int) bool { return tail[i] < tail[j] })
	if len(tail) != len(log)-from+1 || tail[0] != uint64(from) || tail[len(tail)-1] != uint64(len(log)) {
		t.Fatalf("replay --from %d of %d events put %d records on the event topics (sequences %v…)", from, len(log), len(tail), tail[:min(len(tail), 3)])
	}
	for i := 1; i < len(tail); i++ {
		if tail[i] != tail[i-1]+1 {
			t.Fatalf("replay --from %d: sequence %d followed by %d", from, tail[i-1], tail[i])
		}
	}
	t.Logf("%d events; full replay: %d records; replay --from %d: %d more", len(log), res.records, from, len(tail))
}

// TestKafkaBrokerDownDoesNotBlockCapture starts the agent while the broker
// is down: capture and the file receivers go on, status shows the kafka
// receiver lagging with the broker's address in its error, and once the
// broker is up the receiver catches up.
func TestKafkaBrokerDownDoesNotBlockCapture(t *testing.T) {
	k := testenv.NewKafka(t, testenv.KafkaOptions{})
	k.Stop()
	dir := demoDir(t, withKafka(k.Addr, "timeout: 2s", "retry: {initial: 100ms, max: 500ms}"))
	cmd, se := startRun(t, dir)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
	}()

	// All three snapshots applied and delivered to the file receivers,
	// nothing to kafka.
	var rep Report
	waitUntil(t, 30*time.Second, func() (bool, string) {
		var err error
		if rep, err = tryStatus(t, dir); err != nil {
			return false, err.Error()
		}
		// The last snapshot is dated 2026-03-02, local midnight.
		if len(rep.Sources) == 0 || rep.Sources[0].LastChange == nil || !strings.HasPrefix(rep.Sources[0].LastChange.String(), "2026-03-01T23:00:00") {
			return false, fmt.Sprintf("source %+v", rep.Sources)
		}
		org, kr := receiverOf(t, rep, "organisation"), receiverOf(t, rep, "kafka")
		return org.LagEvents == 0 && kr.LastError != "", fmt.Sprintf("organisation %+v, kafka %+v", org, kr)
	})
	if n := len(readLines(t, filepath.Join(dir, "demo-out", "events.jsonl"))); uint64(n) != rep.LogLength || n < 600 {
		t.Fatalf("the file receiver has %d events, the log %d", n, rep.LogLength)
	}
	kr := receiverOf(t, rep, "kafka")
	if kr.Cursor != 0 || kr.LagEvents != rep.LogLength || !strings.Contains(kr.LastError, k.Addr) {
		t.Fatalf("kafka receiver with the broker down: %+v (log %d); want nothing delivered and an error naming %s", kr, rep.LogLength, k.Addr)
	}
	t.Logf("broker down: log %d, kafka lag %d, lastError %q", rep.LogLength, kr.LagEvents, kr.LastError)

	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	waitUntil(t, 30*time.Second, func() (bool, string) {
		rep = statusOf(t, dir)
		kr = receiverOf(t, rep, "kafka")
		return kr.LagEvents == 0, fmt.Sprintf("kafka %+v", kr)
	})
	t.Logf("broker up: kafka lag 0 after %v", time.Since(started).Round(time.Millisecond))

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err // for the deferred wait
		if err != nil {
			t.Fatalf("graceful stop must exit 0: %v\n%s", err, se.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop on SIGINT")
	}
	log := deliveredLog(t, dir)
	recs := readKafka(t, k, kafkaTopics)
	res := checkEvents(t, recs, log, rep.Installation)
	checkStateTopics(t, recs, log)
	t.Logf("%d events, %d records on Kafka (%d duplicates)", len(log), res.records, res.duplicates)
}

// waitUntil polls cond until it holds; on timeout it fails with cond's
// last description of what it saw.
func waitUntil(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v; last seen: %s", timeout, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
