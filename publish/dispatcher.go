package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/state"
)

// Config is what the dispatcher needs to know about a receiver.
type Config struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// Start is where a new receiver begins: "beginning" (the whole log)
	// or "now" (only events after it was added).
	Start string `yaml:"start"`
	// Classification is the receiver's ceiling: events of objects above
	// it are not sent, fields above it are removed (redacted).
	Classification string `yaml:"classification"`
	Filter         Filter `yaml:"filter"`
	Batch          int    `yaml:"batch"`
	Retry          Retry  `yaml:"retry"`
	// Rate caps delivery at this many events per second (0: no cap), to
	// spare a fragile receiver; the log absorbs the difference.
	Rate float64 `yaml:"rate"`
	// Timeout bounds one delivery (one batch); a receiver that hangs is
	// treated as failed and retried with backoff.
	Timeout time.Duration `yaml:"delivery_timeout"`
}

// Filter selects events by object type and operation (empty: all).
type Filter struct {
	Types      []string `yaml:"types"`
	Operations []string `yaml:"operations"`
}

// Retry is the backoff between failed deliveries.
type Retry struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

// Redactor removes fields above a classification ceiling from an image.
type Redactor interface {
	Redact(typ string, image map[string]any, ceiling string) (map[string]any, []string)
	// Hides reports whether Redact can remove anything from typ's images
	// at ceiling.
	Hides(typ, ceiling string) bool
	// Level is the classification label of an object type.
	Level(typ string) string
}

// Cursor is a receiver's durable position in the log.
type Cursor struct {
	// Delivered is the last sequence delivered (or filtered out).
	Delivered uint64 `json:"delivered"`
	// ReplayUntil: events up to here are re-deliveries (emission replay).
	ReplayUntil uint64 `json:"replayUntil,omitempty"`
	// DeliveredAt is when the cursor last moved.
	DeliveredAt *history.Time `json:"deliveredAt,omitempty"`
	// DeadLetters counts events refused for good.
	DeadLetters uint64 `json:"deadLetters"`
	// LastError is the most recent delivery failure, if any.
	LastError string `json:"lastError,omitempty"`
}

// LoadCursor reads a receiver's cursor; ok is false if it has none yet.
func LoadCursor(tx *state.Tx, name string) (c Cursor, ok bool, err error) {
	v := tx.Get(state.Cursors, []byte(name))
	if v == nil {
		return c, false, nil
	}
	if err := json.Unmarshal(v, &c); err != nil {
		return c, false, fmt.Errorf("%w: cursor of receiver %q: %v", state.ErrCorrupt, name, err)
	}
	return c, true, nil
}

// SaveCursor writes a receiver's cursor.
func SaveCursor(tx *state.Tx, name string, c Cursor) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return tx.Put(state.Cursors, []byte(name), b)
}

// LastSequence is the newest sequence in the log (0 if empty).
func LastSequence(tx *state.Tx) uint64 { return history.LastSequence(tx) }

// Dispatcher delivers the log to receivers.
type Dispatcher struct {
	db     *state.DB
	redact Redactor
	log    *slog.Logger
	outs   []*output
	cache  eventCache
	// allJSON: every receiver is a JSONSender.
	allJSON bool
	// saveEvery is cursorSaveEvery (tests change it).
	saveEvery time.Duration
}

// eventCache holds the log's recent events, decoded: those the engine
// has just committed (Committed), so that receivers keeping up deliver
// the log's tail without reading it back, and those one receiver read
// from the log when others may read them too. Each sequence has one slot
// (sequence mod eventCacheSize), and a slot holds the newest sequence
// put there. Cached events are never changed: prepare works on copies.
type eventCache struct {
	mu   sync.Mutex
	ring []*cachedEvent
}

// A cachedEvent is an event in the cache. The engine hands its events over
// with their images still JSON; where a receiver reads images, the first
// one to need them decodes them, once, rather than the engine's goroutine,
// which is the agent's one sequential stretch.
type cachedEvent struct {
	ev   *history.Event
	once sync.Once
	full *history.Event // ev with its images decoded
	err  error
}

// newCached wraps ev; decoded says its images are decoded already.
func newCached(ev *history.Event, decoded bool) *cachedEvent {
	c := &cachedEvent{ev: ev}
	if decoded {
		c.full = ev
	}
	return c
}

// event returns the cached event, with its images decoded unless json.
func (c *cachedEvent) event(json bool) (*history.Event, error) {
	if json {
		return c.ev, nil
	}
	c.once.Do(func() {
		if c.full == nil {
			e := *c.ev
			c.err = e.Images()
			c.full = &e
		}
	})
	return c.full, c.err
}

// eventCacheSize is the most events cached, two engine batches or so;
// it bounds the cache's memory at a few MB.
const eventCacheSize = 4096

// run appends to dst the cached events from seq on, in sequence order,
// up to max of them, stopping at the first not cached.
func (c *eventCache) run(seq uint64, max int, dst []*cachedEvent) []*cachedEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ; len(c.ring) > 0 && max > 0; seq, max = seq+1, max-1 {
		ce := c.ring[seq%eventCacheSize]
		if ce == nil || ce.ev.Sequence != seq {
			break
		}
		dst = append(dst, ce)
	}
	return dst
}

// put caches events, each unless its slot holds a newer one.
func (c *eventCache) put(evs ...*cachedEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ring == nil {
		c.ring = make([]*cachedEvent, eventCacheSize)
	}
	for _, ce := range evs {
		slot := &c.ring[ce.ev.Sequence%eventCacheSize]
		if *slot == nil || (*slot).ev.Sequence < ce.ev.Sequence {
			*slot = ce
		}
	}
}

type output struct {
	cfg  Config
	recv Receiver
	wake chan struct{}
	err  error

	// The receiver's cursor lives here while its loop runs, and is saved
	// to the state at most every cursorSaveEvery (a fifth of that when
	// idle), and at once when the loop stops, on a dead letter or on an
	// error: a durable commit per delivered batch would queue behind the
	// engine's. A crash only means the last second of confirmed events is
	// sent again.
	mu     sync.Mutex
	cur    Cursor
	loaded bool
	gen    uint64 // bumped by MoveCursor: a batch read before is not advanced over
	dirty  bool   // cur is ahead of the state
	saved  time.Time

	// events is read's buffer, reused by each read: the loop is its only
	// user and a receiver does not keep events after Deliver returns.
	events []history.Event
}

// cursorSaveEvery bounds how much confirmed delivery a crash forgets.
const cursorSaveEvery = time.Second

// NewDispatcher returns a dispatcher over db.
func NewDispatcher(db *state.DB, redact Redactor, log *slog.Logger) *Dispatcher {
	return &Dispatcher{db: db, redact: redact, log: log, saveEvery: cursorSaveEvery}
}

// Add registers a receiver. A receiver without a cursor gets one now, at
// the beginning of the log or at its end (start: now).
func (d *Dispatcher) Add(cfg Config, r Receiver) error {
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Retry.Initial <= 0 {
		cfg.Retry.Initial = 500 * time.Millisecond
	}
	if cfg.Retry.Max <= 0 {
		cfg.Retry.Max = time.Minute
	}
	if cfg.Classification == "" {
		cfg.Classification = "internal"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	err := d.db.Update(func(tx *state.Tx) error {
		if _, ok, err := LoadCursor(tx, cfg.Name); err != nil || ok {
			return err
		}
		c := Cursor{}
		if cfg.Start == "now" {
			c.Delivered = LastSequence(tx)
		}
		return SaveCursor(tx, cfg.Name, c)
	})
	if err != nil {
		return fmt.Errorf("receiver %q: %w", cfg.Name, err)
	}
	js, ok := r.(JSONSender)
	d.allJSON = (len(d.outs) == 0 || d.allJSON) && ok && js.SendsJSON()
	d.outs = append(d.outs, &output{cfg: cfg, recv: r, wake: make(chan struct{}, 1)})
	return nil
}

// Committed caches events the engine has just committed and wakes every
// receiver (history.Options.Committed). It takes the events over and never
// blocks for long: what receivers need decoded is decoded when they read.
func (d *Dispatcher) Committed(last uint64, logged []history.Event) {
	evs := make([]*cachedEvent, len(logged))
	for i := range logged {
		evs[i] = newCached(&logged[i], false)
	}
	d.cache.put(evs...)
	d.Notify(last)
}

// Notify wakes every receiver (new events were committed). It never blocks.
func (d *Dispatcher) Notify(uint64) {
	for _, o := range d.outs {
		o.wakeUp()
	}
}

// Run delivers until ctx is done or, once drain is closed, until each
// receiver has delivered everything the log held when it was closed. A
// nil drain never closes. One Run per dispatcher at a time: two would
// deliver the same events concurrently, out of order.
func (d *Dispatcher) Run(ctx context.Context, drain <-chan struct{}) error {
	var wg sync.WaitGroup
	for _, o := range d.outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.err = d.loop(ctx, o, drain)
		}()
	}
	wg.Wait()
	var errs []error
	for _, o := range d.outs {
		if o.err != nil && !errors.Is(o.err, context.Canceled) {
			errs = append(errs, fmt.Errorf("receiver %q: %w", o.cfg.Name, o.err))
		}
	}
	return errors.Join(errs...)
}

// Drain delivers everything the log holds now and returns.
func (d *Dispatcher) Drain(ctx context.Context) error {
	drain := make(chan struct{})
	close(drain)
	return d.Run(ctx, drain)
}

// Close closes every receiver.
func (d *Dispatcher) Close() error {
	var errs []error
	for _, o := range d.outs {
		if err := o.recv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("receiver %q: close: %w", o.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// loop is one receiver's goroutine: read a batch after the cursor,
// deliver, advance the cursor by what was confirmed, repeat.
func (d *Dispatcher) loop(ctx context.Context, o *output, drain <-chan struct{}) (err error) {
	if err := d.loadCursor(o); err != nil {
		return err
	}
	defer func() {
		if serr := d.saveCursor(o); serr != nil && err == nil {
			err = serr
		}
	}()
	backoff := o.cfg.Retry.Initial
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Seen before the read: everything committed before drain closed
		// is in it.
		draining := closed(drain)
		cur, gen := o.cursor()
		batch, err := d.read(o, cur)
		if err != nil {
			return err
		}
		if len(batch.events) == 0 && batch.through == cur.Delivered {
			if draining {
				return nil // the deferred save writes the cursor
			}
			wait, err := d.saveCursorIfDue(o)
			if err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-o.wake:
			case <-drain:
			case <-time.After(wait):
			}
			continue
		}
		derr := error(nil)
		if len(batch.events) > 0 {
			derr = d.deliver(ctx, o, batch.events)
		}
		if derr == nil {
			if err := d.advance(o, gen, batch.through, nil, ""); err != nil {
				return err
			}
			backoff = o.cfg.Retry.Initial
			if o.cfg.Rate > 0 && len(batch.events) > 0 {
				pause := time.Duration(float64(len(batch.events)) / o.cfg.Rate * float64(time.Second))
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(pause):
				}
			}
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Move over what was confirmed; dead-letter a refused event.
		// Clamped: an adapter that claims more than it was given must
		// not crash the agent.
		n := min(max(Confirmed(derr), 0), len(batch.events))
		var dead *history.Event
		var rej *RejectedError
		if errors.As(derr, &rej) && rej.Index >= 0 && rej.Index < len(batch.events) {
			dead = &batch.events[rej.Index]
		}
		if n > 0 || dead != nil {
			through := cur.Delivered
			if n > 0 {
				through = batch.events[n-1].Sequence
			}
			if dead != nil {
				through = dead.Sequence
			}
			if err := d.advance(o, gen, through, dead, derr.Error()); err != nil {
				return err
			}
			if dead != nil {
				d.log.Error("event dead-lettered: the receiver refuses it for good", "receiver", o.cfg.Name,
					"sequence", dead.Sequence, "eventId", dead.EventID, "error", derr)
				continue
			}
		}
		_ = d.setError(o, derr.Error())
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2 // jitter
		d.log.Warn("delivery failed; retrying", "receiver", o.cfg.Name, "confirmed", n, "retry_in", wait.Round(time.Millisecond), "error", derr)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(backoff*2, o.cfg.Retry.Max)
	}
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// deliver hands one batch to the receiver, bounded by its timeout.
func (d *Dispatcher) deliver(ctx context.Context, o *output, events []history.Event) error {
	dctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	err := o.recv.Deliver(dctx, events)
	if err != nil && ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("no confirmation within %s (delivery_timeout): %w", o.cfg.Timeout, err)
	}
	return err
}

type readBatch struct {
	events  []history.Event
	through uint64 // the last sequence looked at (delivered or filtered)
}

// read takes up to Batch events after cur, filtered and redacted: from
// the cache as far as it holds them, then from the log.
func (d *Dispatcher) read(o *output, cur Cursor) (readBatch, error) {
	if o.events == nil {
		o.events = make([]history.Event, 0, min(o.cfg.Batch, 512))
	}
	rb := readBatch{through: cur.Delivered, events: o.events[:0]}
	defer func() { o.events = rb.events[:0] }()
	looked := 0
	take := func(ce *cachedEvent) error {
		looked++
		ev, err := ce.event(d.allJSON)
		if err != nil {
			return fmt.Errorf("%w: log event %d: %v", state.ErrCorrupt, ce.ev.Sequence, err)
		}
		rb.through = ev.Sequence
		ev2, ok, err := d.prepare(o.cfg, *ev, cur)
		if err != nil {
			return fmt.Errorf("%w: log event %d: %v", state.ErrCorrupt, ev.Sequence, err)
		}
		if ok {
			rb.events = append(rb.events, ev2)
		}
		return nil
	}
	full := func() bool { return len(rb.events) == o.cfg.Batch || looked == 20*o.cfg.Batch }
	var cached [64]*cachedEvent
	for !full() {
		run := d.cache.run(rb.through+1, min(len(cached), o.cfg.Batch-len(rb.events), 20*o.cfg.Batch-looked), cached[:0])
		if len(run) == 0 {
			break
		}
		for _, ev := range run {
			if err := take(ev); err != nil {
				return rb, err
			}
		}
	}
	if full() {
		return rb, nil
	}
	err := d.db.View(func(tx *state.Tx) error {
		return tx.ScanFrom(state.Log, nil, state.U64(rb.through+1), func(k, v []byte) error {
			if full() {
				return state.ErrStop
			}
			seq := state.ParseU64(k)
			if hit := d.cache.run(seq, 1, cached[:0]); len(hit) == 1 {
				return take(hit[0])
			}
			ev := new(history.Event)
			// v lives only as long as the read transaction.
			raw := bytes.Clone(v)
			// Where every receiver sends JSON, images stay JSON until
			// redaction needs them (prepare); otherwise they are decoded
			// once here, for all receivers sharing the cache.
			decode := history.DecodeEvent
			if d.allJSON {
				decode = history.DecodeEventHead
			}
			if err := decode(raw, ev); err != nil {
				return fmt.Errorf("%w: log event %d: %v", state.ErrCorrupt, seq, err)
			}
			ev.Raw = raw
			if ev.Sequence != seq {
				return fmt.Errorf("%w: log event %d has sequence %d", state.ErrCorrupt, seq, ev.Sequence)
			}
			ce := newCached(ev, !d.allJSON)
			if len(d.outs) > 1 {
				d.cache.put(ce)
			}
			return take(ce)
		})
	})
	return rb, err
}

// prepare applies the receiver's filter and redaction; ok is false when
// the receiver does not get the event.
func (d *Dispatcher) prepare(cfg Config, ev history.Event, cur Cursor) (history.Event, bool, error) {
	if len(cfg.Filter.Types) > 0 && !slices.Contains(cfg.Filter.Types, ev.Object.Type) {
		return ev, false, nil
	}
	if len(cfg.Filter.Operations) > 0 && !slices.Contains(cfg.Filter.Operations, ev.Operation) {
		return ev, false, nil
	}
	if ev.Sequence <= cur.ReplayUntil {
		ev.Emission = history.EmissionReplay
		ev.Raw = nil // no longer what the log holds
	}
	// The event may be shared through the cache: give each delivery its
	// own top-level maps and slices, so an adapter that changes what it is
	// given cannot change another receiver's events, or its own retry.
	ev.Before, ev.After = maps.Clone(ev.Before), maps.Clone(ev.After)
	ev.Changed = slices.Clone(ev.Changed)
	ev.Object.Keys = maps.Clone(ev.Object.Keys)
	return Redact(d.redact, cfg.Classification, ev)
}

// Redact applies a classification ceiling to an event: ok is false if the
// object is above the ceiling, or if an update changed only fields the
// receiver may not see.
func Redact(r Redactor, ceiling string, ev history.Event) (history.Event, bool, error) {
	if r == nil {
		return ev, true, nil
	}
	if history.Level(r.Level(ev.Object.Type)) > history.Level(ceiling) {
		return ev, false, nil
	}
	if !r.Hides(ev.Object.Type, ceiling) {
		return ev, true, nil
	}
	// The images are changed below: they must be maps, not the JSON that
	// would otherwise be sent as it is.
	if err := ev.Images(); err != nil {
		return ev, false, err
	}
	var removed []string
	hidden := map[string]bool{}
	for _, side := range []struct {
		img  *map[string]any
		path string
	}{{&ev.Before, "/before/"}, {&ev.After, "/after/"}} {
		var gone []string
		*side.img, gone = r.Redact(ev.Object.Type, *side.img, ceiling)
		for _, f := range gone {
			removed = append(removed, side.path+f)
			hidden[f] = true
		}
	}
	if len(removed) == 0 {
		return ev, true, nil
	}
	ev.Raw = nil
	changed := make([]string, 0, len(ev.Changed))
	for _, f := range ev.Changed {
		if !hidden[f] {
			changed = append(changed, f)
		}
	}
	// An update that changed only what this receiver may not see would
	// tell it nothing but that something secret changed.
	if ev.Operation == history.OpUpdate && len(changed) == 0 && len(ev.Changed) > 0 {
		return ev, false, nil
	}
	ev.Changed = changed
	ev.Classification.Redacted = removed
	return ev, true, nil
}

func (d *Dispatcher) advance(o *output, gen, through uint64, dead *history.Event, reason string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if gen != o.gen {
		return nil // the cursor was moved meanwhile (a replay): it wins
	}
	c := &o.cur
	if through > c.Delivered {
		c.Delivered = through
	}
	c.DeliveredAt = history.Ptr(time.Now())
	c.LastError = ""
	o.dirty = true
	if dead == nil && time.Since(o.saved) < d.saveEvery {
		return nil
	}
	if dead == nil {
		return d.persist(o, nil)
	}
	c.DeadLetters++
	return d.persist(o, func(tx *state.Tx) error {
		b, _ := json.Marshal(map[string]any{"eventId": dead.EventID, "reason": reason, "at": history.At(time.Now())})
		return tx.Put(state.DeadLetters, append(state.Key(o.cfg.Name, ""), state.U64(dead.Sequence)...), b)
	})
}

func (d *Dispatcher) setError(o *output, msg string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cur.LastError = msg
	return d.persist(o, nil)
}

// persist writes the cursor, and with also what goes with it, in one
// transaction; o.mu is held.
func (d *Dispatcher) persist(o *output, also func(*state.Tx) error) error {
	err := d.db.Update(func(tx *state.Tx) error {
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		return SaveCursor(tx, o.cfg.Name, o.cur)
	})
	if err == nil {
		o.dirty, o.saved = false, time.Now()
	}
	return err
}

// saveCursorIfDue saves the cursor of an idle receiver if it changed and
// the last save is a fifth of saveEvery ago, and returns how long to wait
// at most before looking again. A receiver that keeps up goes idle after
// each of the engine's commits: a commit of its own each time would
// double the commits (and fsyncs), and queue behind the engine's; saving
// sooner than a busy receiver does keeps what a crash sends again small.
func (d *Dispatcher) saveCursorIfDue(o *output) (time.Duration, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.dirty {
		return time.Second, nil
	}
	if left := d.saveEvery/5 - time.Since(o.saved); left > 0 {
		return min(left, time.Second), nil
	}
	return time.Second, d.persist(o, nil)
}

// cursor returns the receiver's position and its generation.
func (o *output) cursor() (Cursor, uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cur, o.gen
}

// loadCursor takes the receiver's cursor from the state when its loop
// starts (the first time: later runs keep the one in memory, which is
// never behind the state's).
func (d *Dispatcher) loadCursor(o *output) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.loaded {
		return nil
	}
	return d.db.View(func(tx *state.Tx) error {
		c, _, err := LoadCursor(tx, o.cfg.Name)
		o.cur, o.loaded, o.saved = c, err == nil, time.Now()
		return err
	})
}

// saveCursor writes the cursor if it moved since it was last written.
func (d *Dispatcher) saveCursor(o *output) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.dirty {
		return nil
	}
	return d.persist(o, nil)
}

// Cursor returns a receiver's cursor as its running loop has it; ok is
// false if there is no such receiver or its loop has not started.
func (d *Dispatcher) Cursor(name string) (c Cursor, ok bool) {
	o := d.output(name)
	if o == nil {
		return c, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cur, o.loaded
}

// MoveCursor changes a receiver's cursor with fn in one transaction (a
// replay). A running loop of that receiver continues from the new
// position, and does not advance over a batch it read before. For a
// receiver this dispatcher does not have, only the state changes.
func (d *Dispatcher) MoveCursor(name string, fn func(tx *state.Tx, c *Cursor) error) error {
	o := d.output(name)
	if o != nil {
		o.mu.Lock()
		defer o.mu.Unlock()
	}
	var c Cursor
	err := d.db.Update(func(tx *state.Tx) error {
		if o != nil && o.loaded {
			c = o.cur // ahead of the state's
		} else {
			var err error
			if c, _, err = LoadCursor(tx, name); err != nil {
				return err
			}
		}
		if err := fn(tx, &c); err != nil {
			return err
		}
		return SaveCursor(tx, name, c)
	})
	if err != nil || o == nil {
		return err
	}
	o.cur, o.loaded, o.dirty, o.saved = c, true, false, time.Now()
	o.gen++
	o.wakeUp()
	return nil
}

func (d *Dispatcher) output(name string) *output {
	for _, o := range d.outs {
		if o.cfg.Name == name {
			return o
		}
	}
	return nil
}

// wakeUp wakes the receiver's loop if it waits; it never blocks.
func (o *output) wakeUp() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}
