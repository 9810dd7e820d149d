package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// Check tests what Deliver will need (connector check): every configured
// broker answers (TLS and SASL included), the brokers' advertised
// addresses are reachable from here, and the topics exist or may be
// created. It changes nothing on the cluster.
func (r *Receiver) Check(ctx context.Context) error {
	r.mu.Lock() // not while a Deliver uses (or renews) the transport
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 3*r.s.Timeout)
	defer cancel()

	var md *kafkago.MetadataResponse
	var problems []string
	var errs []error
	for _, b := range r.s.Brokers {
		m, err := r.metadataFrom(ctx, b)
		if err != nil {
			problems = append(problems, r.explain("broker "+b, err, r.diagnose(ctx, b, err)))
			errs = append(errs, err)
			continue
		}
		if md == nil {
			md = m
		}
	}
	if md == nil {
		return &wrapped{msg: fmt.Sprintf("kafka receiver %q: no broker answered: %s", r.name, strings.Join(problems, "; ")), err: errors.Join(errs...)}
	}
	for _, p := range problems {
		r.log.Warn("kafka receiver: a bootstrap broker did not answer; the others did", "problem", p)
	}

	// Produce requests go to the addresses the brokers advertise, not to
	// the bootstrap list: a wrong advertised.listeners is a classic.
	for _, b := range md.Brokers {
		addr := net.JoinHostPort(b.Host, strconv.Itoa(b.Port))
		if _, err := r.metadataFrom(ctx, addr); err != nil {
			return fmt.Errorf("kafka receiver %q: broker %d advertises %s, which does not answer from here: %s; records are produced to that address, so fix the broker's advertised.listeners, or DNS and firewalls",
				r.name, b.ID, addr, r.explain("", err, r.diagnose(ctx, addr, err)))
		}
	}

	existing := map[string]bool{}
	for _, t := range md.Topics {
		if t.Error == nil {
			existing[t.Name] = true
		}
	}
	var create []creation
	for _, t := range []struct {
		template
		state bool
	}{{r.s.topic, false}, {r.s.stateTopic, true}} {
		if t.state && !r.s.hasStateTopic {
			continue
		}
		tc, err := r.checkTemplate(ctx, t.template, t.state, existing)
		if err != nil {
			return err
		}
		if tc != nil {
			create = append(create, creation{*tc, t.state})
		}
	}
	if len(create) > 0 {
		return r.validateCreate(ctx, create)
	}
	return nil
}

// metadataFrom reads the cluster metadata through broker addr alone.
func (r *Receiver) metadataFrom(ctx context.Context, addr string) (*kafkago.MetadataResponse, error) {
	c, done := r.freshClient(ctx, kafkago.TCP(addr))
	defer done()
	return c.Metadata(ctx, &kafkago.MetadataRequest{})
}

// checkTemplate checks the topics a template names: a fixed topic must
// exist or be creatable; for a template, creation rights are checked, or,
// with creation off, the topics that already match are listed. It returns
// the topic to validate creation of, if any.
func (r *Receiver) checkTemplate(ctx context.Context, t template, state bool, existing map[string]bool) (*kafkago.TopicConfig, error) {
	if t.static() {
		if existing[t.raw] {
			if state {
				r.checkCompacted(ctx, t.raw)
			}
			return nil, nil
		}
		if !r.s.createTopics {
			return nil, fmt.Errorf("kafka receiver %q: topic %q does not exist and create_topics.enabled is false; create it (%s), or set create_topics.enabled: true",
				r.name, t.raw, r.createCommand(t.raw, state))
		}
		tc := r.topicConfig(t.raw, state)
		return &tc, nil
	}
	if r.s.createTopics {
		tc := r.topicConfig(t.expand("check", "check"), state)
		return &tc, nil
	}
	re := t.regexp()
	var matching []string
	for name := range existing {
		if re.MatchString(name) {
			matching = append(matching, name)
		}
	}
	sort.Strings(matching)
	r.log.Info("kafka receiver: create_topics is off; a topic must exist before the first event for it",
		"template", t.raw, "existing", strings.Join(matching, ","),
		"create_with", r.createCommand(t.raw, state))
	return nil, nil
}

// creation is a topic Check would have the receiver create.
type creation struct {
	config kafkago.TopicConfig
	state  bool
}

// validateCreate asks the cluster whether it would create the topics as
// configured (CreateTopics with validate_only), without creating them.
func (r *Receiver) validateCreate(ctx context.Context, topics []creation) error {
	// kafka-go waits after every successful CreateTopics until the topics
	// show in its metadata, which after validate_only never happens: it
	// returns the answer when ctx ends. So: a client of our own and a
	// short deadline, ample for a cluster that has just answered metadata
	// requests.
	ctx, cancel := context.WithTimeout(ctx, min(r.s.Timeout, 2*time.Second))
	defer cancel()
	c, done := r.freshClient(ctx, r.addr)
	defer done()
	req := &kafkago.CreateTopicsRequest{ValidateOnly: true}
	for _, t := range topics {
		req.Topics = append(req.Topics, t.config)
	}
	res, err := c.CreateTopics(ctx, req)
	for _, t := range topics {
		if err == nil {
			err = res.Errors[t.config.Topic]
		}
		switch {
		case err == nil, errors.Is(err, kafkago.TopicAlreadyExists):
			continue
		case errors.Is(err, kafkago.TopicAuthorizationFailed), errors.Is(err, kafkago.ClusterAuthorizationFailed):
			return fmt.Errorf("kafka receiver %q: create_topics is on, but the cluster does not let this client create topics (%v); grant the client's principal CREATE, or create the topics yourself (e.g. %s) and set create_topics.enabled: false",
				r.name, err, r.createCommand(t.config.Topic, t.state))
		}
		return fmt.Errorf("kafka receiver %q: the cluster would not create topic %q as configured: %s", r.name, t.config.Topic,
			r.explain("", err, "", "check create_topics: partitions, replication_factor (at most the number of brokers), retention, configs"))
	}
	return nil
}

// explain renders err with what it is about and how to fix it: diagnosis
// when there is one, else the hint for err, else fallback.
func (r *Receiver) explain(about string, err error, diagnosis string, fallback ...string) string {
	msg := err.Error()
	if about != "" {
		msg = about + ": " + msg
	}
	h := diagnosis
	if h == "" {
		h = r.hint(err, "")
	}
	if h == "" && len(fallback) > 0 {
		h = fallback[0]
	}
	if h != "" {
		msg += " (" + h + ")"
	}
	return msg
}

// regexp matches the topic names t can produce.
func (t template) regexp() *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, p := range t.parts {
		if p == "{source}" || p == "{type}" {
			b.WriteString(`[a-z0-9._-]+`)
			continue
		}
		b.WriteString(regexp.QuoteMeta(p))
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}
