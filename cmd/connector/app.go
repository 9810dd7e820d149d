package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/configs"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/mapping"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/state"
)

// app is a loaded configuration with everything built from it.
type app struct {
	cfg       *configs.File
	log       *slog.Logger
	maps      *mapping.Set
	sources   []*sourceEntry
	receivers []*receiverEntry
	db        *state.DB
	engine    *history.Engine
	// dispatcher is set while run delivers.
	dispatcher *publish.Dispatcher
}

type sourceEntry struct {
	configs.Entry
	common sourceCommon
	src    capture.Source
	info   history.SourceInfo
}

type sourceCommon struct {
	Name          string        `yaml:"name"`
	Type          string        `yaml:"type"`
	DeletionGuard history.Guard `yaml:"deletion_guard"`
	BatchSize     int           `yaml:"batch_size"`
}

type receiverEntry struct {
	configs.Entry
	cfg publish.Config
}

// loadOptions say what a command needs built.
type loadOptions struct {
	once     bool
	sources  bool // build source adapters
	stderr   io.Writer
	override bool // --allow-deletions
}

// load reads and checks the whole configuration. Every error it returns
// is a configs.Error (exit code 2).
func load(path string, opt loadOptions) (*app, error) {
	if path == "" {
		return nil, usageErr("-c FILE is required: the configuration file (configs/ has examples)")
	}
	cfg, err := configs.Load(path)
	if err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, log: newLogger(cfg.Log, opt.stderr)}
	// Mappings.
	var mcfgs []mapping.Config
	for _, n := range cfg.Mappings {
		var mc mapping.Config
		if err := configs.Decode(path, n, &mc); err != nil {
			return nil, err
		}
		mcfgs = append(mcfgs, mc)
	}
	names := map[string]bool{}
	for _, s := range cfg.Sources {
		names[s.Name] = true
	}
	maps, i, err := mapping.NewSet(mcfgs, names)
	if err != nil {
		return nil, configs.Errorf(path, cfg.Mappings[i], "see the mapping reference in README.md", "%v", err)
	}
	if len(mcfgs) == 0 {
		return nil, &configs.Error{File: path, Msg: "no mappings are configured", Hint: "add `mappings:` saying which records become which object types"}
	}
	a.maps = maps
	// Sources.
	for _, e := range cfg.Sources {
		se := &sourceEntry{Entry: e}
		if err := configs.DecodeTypes(path, e.Node, &se.common); err != nil {
			return nil, err
		}
		f, ok := capture.Lookup(e.Type)
		if !ok {
			return nil, configs.Errorf(path, e.Node, "known source types: "+strings.Join(capture.Types(), ", "), "source %q: unknown type %q", e.Name, e.Type)
		}
		if len(maps.Records(e.Name)) == 0 {
			return nil, configs.Errorf(path, e.Node, "add a mapping with `source: "+e.Name+"`, or remove the source", "source %q: no mapping uses it", e.Name)
		}
		g := se.common.DeletionGuard
		if g.MaxShare == 0 && g.MinCount == 0 {
			g.MaxShare, g.MinCount = history.DefaultGuard.MaxShare, history.DefaultGuard.MinCount
		}
		if g.Window == 0 && e.Type == "ldap" {
			// A directory's change feed is guarded too: a unit moved out
			// of scope by mistake must not delete the organisation
			// downstream (window: -1s turns it off).
			g.Window = time.Hour
		}
		if g.MaxShare < 0 || g.MaxShare > 1 || g.MinCount < 0 {
			return nil, configs.Errorf(path, e.Node, "max_share is a fraction between 0 and 1, min_count a count", "source %q: deletion_guard is out of range", e.Name)
		}
		g.Override = opt.override
		se.info = history.SourceInfo{Name: e.Name, Type: e.Type, ID: e.Type + "://" + e.Name, Guard: g}
		if opt.sources {
			src, err := f(e.Node, capture.Options{Name: e.Name, File: path, Records: maps.Records(e.Name), Once: opt.once,
				Log: a.log, State: stateReader{a}}) // adapters name themselves in what they log
			if err != nil {
				if ce := configErr(err, path); ce != nil {
					return nil, ce
				}
				return nil, configs.Errorf(path, e.Node, "", "source %q: %v", e.Name, err)
			}
			se.src = src
			if id, ok := src.(capture.Identity); ok {
				if v := id.ID(); v != "" { // empty when the server cannot be reached yet
					se.info.ID = v
				}
			}
			if rk, ok := src.(capture.RowKeeper); ok {
				se.info.KeepRows = rk.KeepsRows()
			}
			if ct, ok := src.(capture.ChangeTimer); ok {
				se.info.ChangeTime = ct.ChangeTime()
			}
		}
		a.sources = append(a.sources, se)
	}
	// Receivers.
	for _, e := range cfg.Receivers {
		re := &receiverEntry{Entry: e}
		var rc struct {
			publish.Config `yaml:",inline"`
			Rest           map[string]yaml.Node `yaml:",inline"`
		}
		if err := configs.DecodeTypes(path, e.Node, &rc); err != nil {
			return nil, err
		}
		re.cfg = rc.Config
		if _, ok := publish.Lookup(e.Type); !ok {
			return nil, configs.Errorf(path, e.Node, "known receiver types: "+strings.Join(publish.Types(), ", "), "receiver %q: unknown type %q", e.Name, e.Type)
		}
		switch re.cfg.Start {
		case "", "beginning", "now":
		default:
			return nil, configs.Errorf(path, e.Node, "use beginning or now", "receiver %q: start %q is unknown", e.Name, re.cfg.Start)
		}
		if c := re.cfg.Classification; c != "" && mapping.Level(c) < 0 {
			return nil, configs.Errorf(path, e.Node, "use one of "+strings.Join(mapping.Levels, ", "), "receiver %q: classification %q is unknown", e.Name, c)
		}
		for _, t := range re.cfg.Filter.Types {
			if maps.Type(t) == nil {
				return nil, configs.Errorf(path, e.Node, "mapped types: "+strings.Join(maps.Types(), ", "), "receiver %q: filter type %q is not mapped", e.Name, t)
			}
		}
		ops := []string{history.OpCreate, history.OpUpdate, history.OpDelete, history.OpUndelete, history.OpSnapshot}
		for _, o := range re.cfg.Filter.Operations {
			if !slices.Contains(ops, o) {
				return nil, configs.Errorf(path, e.Node, "operations: "+strings.Join(ops, ", "), "receiver %q: filter operation %q is unknown", e.Name, o)
			}
		}
		a.receivers = append(a.receivers, re)
	}
	return a, nil
}

func newLogger(c configs.Log, w io.Writer) *slog.Logger {
	if w == nil {
		w = os.Stderr
	}
	lvl := slog.LevelInfo
	switch c.Level {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	}
	o := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// openState opens the state file and builds the engine.
func (a *app) openState(readOnly bool) error {
	db, err := state.Open(a.cfg.State, state.Options{ReadOnly: readOnly})
	if err != nil {
		return err
	}
	a.db = db
	_ = db.ReleaseMemory() // what opening touched
	a.engine, err = history.New(db, a.maps, history.Options{Log: a.log})
	return err
}

// trimMemory keeps the state file's mapped pages from piling up in RSS
// until ctx ends: every 50 ms it checks how much file-backed memory the
// process holds, and hands the pages back once that grew by more than
// trimLimit, so RSS follows the work in hand rather than the file's size.
// (A fixed period is either too slow for random reads over a large file
// or, releasing pages still in use, costs time: on a 100k-object first
// load every 50 ms doubled it.)
func (a *app) trimMemory(ctx context.Context) {
	go every(ctx, 50*time.Millisecond, func() {
		if _, err := a.db.TrimMemory(trimLimit); err != nil {
			a.log.Debug("release mapped state pages", "error", err)
		}
	})
}

// every calls fn every d until ctx is done.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// trimLimit is how much of the state file may stay mapped in RSS.
const trimLimit = 32 << 20

func (a *app) close() {
	if a.db != nil {
		a.db.Close()
	}
}

// buildReceiver instantiates a receiver adapter.
func (a *app) buildReceiver(re *receiverEntry) (publish.Receiver, error) {
	f, _ := publish.Lookup(re.Type)
	// `check` builds receivers without opening the state, which may not
	// exist yet: the nil UUID stands in for the installation id there.
	inst := "00000000-0000-0000-0000-000000000000"
	if a.db != nil {
		inst = a.db.Installation()
	}
	r, err := f(re.Node, publish.Options{Name: re.Name, File: a.cfg.Path, InstallationID: inst, Log: a.log.With("receiver", re.Name)})
	if err != nil {
		if ce := configErr(err, a.cfg.Path); ce != nil {
			return nil, ce
		}
		return nil, fmt.Errorf("receiver %q: %w", re.Name, err)
	}
	return r, nil
}

func (a *app) source(name string) (*sourceEntry, error) {
	return byName(a, "source", name, a.sources, func(s *sourceEntry) string { return s.Name })
}

func (a *app) receiver(name string) (*receiverEntry, error) {
	return byName(a, "receiver", name, a.receivers, func(r *receiverEntry) string { return r.Name })
}

// byName finds a configured source or receiver; the error lists the names.
func byName[T any](a *app, kind, name string, list []T, nameOf func(T) string) (T, error) {
	var names []string
	for _, x := range list {
		if nameOf(x) == name {
			return x, nil
		}
		names = append(names, nameOf(x))
	}
	var zero T
	return zero, &configs.Error{File: a.cfg.Path, Msg: fmt.Sprintf("no %s named %q", kind, name), Hint: "configured: " + strings.Join(names, ", ")}
}

// stateReader gives sources read access to the engine's rows; the engine
// is built after the sources, so it is looked up at call time.
type stateReader struct{ a *app }

func (r stateReader) Row(ctx context.Context, source, record string, key map[string]any) (map[string]any, error) {
	if r.a.engine == nil {
		return nil, nil
	}
	return r.a.engine.Row(ctx, source, record, key)
}

func (r stateReader) Checkpoint(ctx context.Context, source string) ([]byte, error) {
	if r.a.engine == nil {
		return nil, nil
	}
	return r.a.engine.Checkpoint(ctx, source)
}

// redactor adapts the mapping set to publish.Redactor.
type redactor struct{ *mapping.Set }

func (r redactor) Level(typ string) string {
	if m := r.Type(typ); m != nil {
		return m.Classification
	}
	return "restricted"
}

// checkMappingChange compares each source's mapping fingerprint with the
// stored one: a change starts a new epoch and asks for a reconcile, so old
// and new mappings are never silently mixed.
func (a *app) checkMappingChange() error {
	return a.db.Update(func(tx *state.Tx) error {
		for _, s := range a.sources {
			h := history.MappingHash(a.maps, s.Name)
			ss, err := history.LoadSource(tx, s.Name)
			if err != nil {
				return err
			}
			if ss.MappingHash == h {
				continue
			}
			if ss.MappingHash != "" {
				ss.Epoch++
				ss.EpochReason = "mapping changed"
				ss.PendingReconcile = true
				a.log.Warn("the mapping of this source changed: new epoch, reconciling", "source", s.Name, "epoch", ss.Epoch)
			}
			ss.MappingHash = h
			if err := history.SaveSource(tx, s.Name, ss); err != nil {
				return err
			}
		}
		return nil
	})
}

// exitError carries an exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// exitCode maps an error to the process exit code: 2 for usage and
// configuration errors, 1 for everything else.
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if configs.IsConfigError(err) {
		return 2
	}
	return 1
}

// ctxErr reports whether err is only a cancellation.
func ctxErr(err error) bool {
	return errors.Is(err, context.Canceled)
}

func errIs(err, target error) bool { return errors.Is(err, target) }

// configErr returns err's configuration error with the file name filled
// in (adapters do not know it), or nil if err is not one.
func configErr(err error, path string) error {
	var ce *configs.Error
	if !errors.As(err, &ce) {
		return nil
	}
	if ce.File == "" {
		ce.File = path
	}
	return err
}
