package ldap

import (
	"context"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/testenv"
)

// One Samba DC per test binary: provisioning takes about 10 s. Tests that
// use it run one after another, each below its own OU.
var (
	sambaOnce sync.Once
	samba     *testenv.Samba
	sambaErr  error
)

func sharedSamba(t *testing.T) *testenv.Samba {
	t.Helper()
	sambaOnce.Do(func() { samba, sambaErr = testenv.StartSamba() })
	if sambaErr != nil {
		t.Fatal(sambaErr)
	}
	return samba
}

func TestMain(m *testing.M) {
	code := m.Run()
	if samba != nil {
		samba.Stop()
	}
	os.Exit(code)
}

// event is what the fake engine derived from a change.
type event struct {
	Op, Record, Key, Reason string
	Changed                 []string
}

func (e event) String() string {
	return fmt.Sprintf("%s %s/%s %s %v", e.Op, e.Record, e.Key, e.Reason, e.Changed)
}

// fakeSink is a small model of the engine: it keeps the current values per
// record and key, derives create/update/delete/undelete the way the engine
// does (ignoring the fields in ignore, as a mapping that does not map them
// would), stages snapshots until End and stores checkpoints.
type fakeSink struct {
	mu         sync.Mutex
	batches    []capture.Batch
	live       map[string]map[string]map[string]any // record → key → values
	deleted    map[string]map[string]bool
	events     []event
	checkpoint []byte
	staged     map[string]map[string]map[string]any
	stagedID   string
	ignore     map[string]bool
	// quarantined counts changes without a key, which the engine's
	// mapping cannot give an id (it quarantines them).
	quarantined []capture.Change
	// fail, when set, can refuse a batch (before anything is kept).
	fail func(b capture.Batch) error
}

func newFakeSink(ignore ...string) *fakeSink {
	f := &fakeSink{live: map[string]map[string]map[string]any{}, deleted: map[string]map[string]bool{}, ignore: map[string]bool{}}
	for _, i := range ignore {
		f.ignore[i] = true
	}
	return f
}

func keyOf(v map[string]any) string {
	if k, ok := v[FieldGUID].(string); ok {
		return k
	}
	k, _ := v[FieldUUID].(string)
	return k
}

func (f *fakeSink) Apply(ctx context.Context, b capture.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		if err := f.fail(b); err != nil {
			return err
		}
	}
	f.batches = append(f.batches, b)
	if b.Snapshot != nil {
		if b.Snapshot.Begin || b.Snapshot.ID != f.stagedID {
			f.staged, f.stagedID = map[string]map[string]map[string]any{}, b.Snapshot.ID
		}
		for _, ch := range b.Changes {
			if ch.Op != capture.OpSnapshot {
				return fmt.Errorf("snapshot batch with op %s", ch.Op)
			}
			if keyOf(ch.Values) == "" {
				f.quarantined = append(f.quarantined, ch)
				continue
			}
			if f.staged[ch.Record] == nil {
				f.staged[ch.Record] = map[string]map[string]any{}
			}
			f.staged[ch.Record][keyOf(ch.Values)] = ch.Values
		}
		if b.Snapshot.End {
			for _, rec := range b.Snapshot.Records {
				for k, v := range f.staged[rec] {
					f.upsert(rec, k, v, "")
				}
				for k := range f.live[rec] {
					if _, ok := f.staged[rec][k]; !ok {
						f.remove(rec, k, "reconciliation-missing")
					}
				}
			}
			f.staged, f.stagedID = nil, ""
		}
	} else {
		for _, ch := range b.Changes {
			k := keyOf(ch.Values)
			if k == "" {
				f.quarantined = append(f.quarantined, ch)
				continue
			}
			switch ch.Op {
			case capture.OpUpsert:
				f.upsert(ch.Record, k, ch.Values, ch.Reason)
			case capture.OpDelete:
				r := ch.Reason
				if r == "" {
					r = "deleted-in-source"
				}
				f.remove(ch.Record, k, r)
			default:
				return fmt.Errorf("unexpected op %s outside a snapshot", ch.Op)
			}
		}
	}
	if b.Checkpoint != nil {
		f.checkpoint = b.Checkpoint
	}
	return nil
}

func (f *fakeSink) upsert(rec, k string, v map[string]any, reason string) {
	if f.live[rec] == nil {
		f.live[rec] = map[string]map[string]any{}
	}
	old, ok := f.live[rec][k]
	f.live[rec][k] = v
	switch {
	case !ok && f.deleted[rec][k]:
		delete(f.deleted[rec], k)
		if reason == "" {
			reason = "restored"
		}
		f.events = append(f.events, event{Op: "undelete", Record: rec, Key: k, Reason: reason})
	case !ok:
		f.events = append(f.events, event{Op: "create", Record: rec, Key: k, Reason: reason})
	default:
		if ch := f.diff(old, v); len(ch) > 0 {
			f.events = append(f.events, event{Op: "update", Record: rec, Key: k, Changed: ch})
		}
	}
}

func (f *fakeSink) remove(rec, k, reason string) {
	if _, ok := f.live[rec][k]; !ok {
		return
	}
	delete(f.live[rec], k)
	if f.deleted[rec] == nil {
		f.deleted[rec] = map[string]bool{}
	}
	f.deleted[rec][k] = true
	f.events = append(f.events, event{Op: "delete", Record: rec, Key: k, Reason: reason})
}

func (f *fakeSink) diff(a, b map[string]any) []string {
	var out []string
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	for k := range keys {
		if f.ignore[k] {
			continue
		}
		if !reflect.DeepEqual(a[k], b[k]) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// take returns the events since the last take.
func (f *fakeSink) take() []event {
	f.mu.Lock()
	defer f.mu.Unlock()
	ev := f.events
	f.events = nil
	return ev
}

// Row gives the source the stored values, as the engine's StateReader.
func (f *fakeSink) Row(_ context.Context, _, rec string, key map[string]any) (map[string]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.live[rec][keyOf(key)]), nil
}

func (f *fakeSink) get(rec, key string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[rec][key]
}

func (f *fakeSink) count(rec string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live[rec])
}

// byDN finds a live record's key by its dn.
func (f *fakeSink) byDN(rec, dn string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	want, _ := goldap.ParseDN(dn)
	for k, v := range f.live[rec] {
		d, _ := goldap.ParseDN(v[FieldDN].(string))
		if d != nil && want != nil && d.EqualFold(want) {
			return k
		}
	}
	return ""
}

// eventsFor filters events of one key.
func eventsFor(ev []event, key string) []event {
	var out []event
	for _, e := range ev {
		if e.Key == key {
			out = append(out, e)
		}
	}
	return out
}

// newTestSource builds a source from YAML text.
func newTestSource(t testing.TB, text string, opts capture.Options) *Source {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	if opts.Name == "" {
		opts.Name = "dir"
	}
	opts.Once = true
	if opts.Log == nil {
		opts.Log = testLogger{t}
	}
	s, err := New(doc.Content[0], opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.retry = 50 * time.Millisecond
	return s
}

// runOnce runs one cycle from the sink's checkpoint.
func runOnce(t testing.TB, s *Source, sink *fakeSink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Run(ctx, sink.checkpoint, sink); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

type testLogger struct{ t testing.TB }

func (l testLogger) log(level, msg string, args ...any) {
	var b strings.Builder
	b.WriteString(level + " " + msg)
	for i := 0; i+1 < len(args); i += 2 {
		fmt.Fprintf(&b, " %v=%v", args[i], args[i+1])
	}
	l.t.Log(b.String())
}
func (l testLogger) Info(msg string, args ...any)  { l.log("INFO", msg, args...) }
func (l testLogger) Warn(msg string, args ...any)  { l.log("WARN", msg, args...) }
func (l testLogger) Error(msg string, args ...any) { l.log("ERROR", msg, args...) }
func (l testLogger) Debug(msg string, args ...any) {}

// warnings records the warnings a source logs.
type warnings struct {
	testLogger
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Warn(msg string, args ...any) {
	w.mu.Lock()
	w.msgs = append(w.msgs, msg)
	w.mu.Unlock()
	w.testLogger.Warn(msg, args...)
}

func (w *warnings) saw(part string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.msgs {
		if strings.Contains(m, part) {
			return true
		}
	}
	return false
}

// dirOps are test helpers that change the directory.
type dirOps struct {
	t testing.TB
	c *goldap.Conn
}

func (d dirOps) add(dn string, attrs map[string][]string) {
	d.t.Helper()
	r := goldap.NewAddRequest(dn, nil)
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		r.Attribute(k, attrs[k])
	}
	if err := d.c.Add(r); err != nil {
		d.t.Fatalf("add %s: %v", dn, err)
	}
}

func (d dirOps) replace(dn, attr string, vals ...string) {
	d.t.Helper()
	m := goldap.NewModifyRequest(dn, nil)
	m.Replace(attr, vals)
	if err := d.c.Modify(m); err != nil {
		d.t.Fatalf("modify %s: %v", dn, err)
	}
}

func (d dirOps) clear(dn, attr string) {
	d.t.Helper()
	m := goldap.NewModifyRequest(dn, nil)
	m.Delete(attr, nil)
	if err := d.c.Modify(m); err != nil {
		d.t.Fatalf("clear %s %s: %v", dn, attr, err)
	}
}

func (d dirOps) rename(dn, newRDN, newSuperior string) {
	d.t.Helper()
	if err := d.c.ModifyDN(goldap.NewModifyDNRequest(dn, newRDN, true, newSuperior)); err != nil {
		d.t.Fatalf("rename %s: %v", dn, err)
	}
}

func (d dirOps) del(dn string) {
	d.t.Helper()
	if err := d.c.Del(goldap.NewDelRequest(dn, nil)); err != nil {
		d.t.Fatalf("delete %s: %v", dn, err)
	}
}

// wantEvents compares events ignoring order.
func wantEvents(t testing.TB, got []event, want ...event) {
	t.Helper()
	norm := func(ev []event) []string {
		var out []string
		for _, e := range ev {
			out = append(out, e.String())
		}
		sort.Strings(out)
		return out
	}
	g, w := norm(got), norm(want)
	if !slices.Equal(g, w) {
		t.Fatalf("events:\n got  %q\n want %q", g, w)
	}
}
