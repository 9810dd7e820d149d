package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sort"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/state"
)

func runCmd() *cobra.Command {
	var path string
	var once, allowDeletions bool
	var cpuProfile string
	c := &cobra.Command{
		Use:   "run -c FILE [--once]",
		Short: "Run every source and receiver until SIGINT/SIGTERM",
		Long: `Run captures changes from every configured source, commits them to the state file and delivers
the event log to every receiver, until SIGINT or SIGTERM (then it finishes the batch in hand and
exits 0). With --once it takes what the sources have now, delivers it to every receiver, prints a
summary and exits.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			a, err := load(path, loadOptions{once: once, sources: true, stderr: c.ErrOrStderr(), override: allowDeletions})
			if err != nil {
				return err
			}
			defer a.close()
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			return a.run(c.Context(), once, c.OutOrStdout())
		},
	}
	configFlag(c, &path)
	c.Flags().BoolVar(&once, "once", false, "take what the sources have now, deliver it, and exit")
	c.Flags().BoolVar(&allowDeletions, "allow-deletions", false, "apply snapshots even if they trip the deletion guard")
	c.Flags().StringVar(&cpuProfile, "cpu-profile", "", "write a Go CPU profile to this file (for performance reports)")
	_ = c.Flags().MarkHidden("cpu-profile")
	return c
}

// startCPUProfile writes a pprof CPU profile until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// buildDispatcher opens every receiver (or only those named).
func (a *app) buildDispatcher(only ...string) (*publish.Dispatcher, error) {
	d := publish.NewDispatcher(a.db, redactor{a.maps}, a.log)
	for _, re := range a.receivers {
		if len(only) > 0 && re.Name != only[0] {
			continue
		}
		r, err := a.buildReceiver(re)
		if err != nil {
			d.Close()
			return nil, err
		}
		if err := d.Add(re.cfg, r); err != nil {
			r.Close()
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

func (a *app) run(ctx context.Context, once bool, out io.Writer) error {
	if err := a.openState(false); err != nil {
		return err
	}
	if err := a.checkMappingChange(); err != nil {
		return err
	}
	d, err := a.buildDispatcher()
	if err != nil {
		return err
	}
	defer d.Close()
	a.dispatcher = d
	engine, err := history.New(a.db, a.maps, history.Options{Log: a.log, Committed: d.Committed})
	if err != nil {
		return err
	}
	a.engine = engine
	stopControl, err := a.serveControl(ctx, d)
	if err != nil {
		return err
	}
	defer stopControl()
	stopMetrics, err := a.serveMetrics()
	if err != nil {
		return err
	}
	defer stopMetrics()
	trimCtx, stopTrim := context.WithCancel(context.Background())
	defer stopTrim()
	a.trimMemory(trimCtx)
	a.compactEvery(trimCtx)

	// Receivers run on their own context: on shutdown the sources stop
	// first, so everything they committed can still go out.
	// They deliver while the sources capture, with --once too; when the
	// sources are done, drain has them finish what was committed.
	dctx, stopDispatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDispatch()
	drain := make(chan struct{})
	dispatchDone := make(chan error, 1)
	go func() { dispatchDone <- d.Run(dctx, drain) }()
	a.log.Info("agent started", "state", a.cfg.State, "sources", len(a.sources), "receivers", len(a.receivers), "once", once)

	var wg sync.WaitGroup
	errs := make([]error, len(a.sources))
	for i, s := range a.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.runSource(ctx, s, once)
		}()
	}
	wg.Wait()
	srcErr := errors.Join(errs...)

	close(drain)
	dispErr := finishDelivery(ctx, once, dispatchDone, stopDispatch)
	if once {
		if dispErr == nil && srcErr == nil {
			a.compactLog(ctx)
		}
		a.summary(out)
	}
	a.log.Info("agent stopped")
	return errors.Join(srcErr, dispErr)
}

// finishDelivery waits for the draining receivers: with --once until they
// have everything, as a service (or once interrupted) for a few seconds,
// after which they stop and the rest goes out at the next start.
func finishDelivery(ctx context.Context, once bool, done <-chan error, stop func()) error {
	if once {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
		}
	}
	grace := time.NewTimer(drainGrace)
	defer grace.Stop()
	var err error
	select {
	case err = <-done:
	case <-grace.C:
		stop()
		err = <-done
	}
	if ctxErr(err) {
		return nil
	}
	return err
}

// drainGrace is how long a stopping agent gives its receivers to send
// what was just committed.
const drainGrace = 5 * time.Second

// runSource runs one source: finish an interrupted snapshot, reconcile if
// continuity broke, then stream. Failures are retried with backoff until
// ctx ends, except a tripped deletion guard, which stops the source.
func (a *app) runSource(ctx context.Context, s *sourceEntry, once bool) error {
	sink := a.engine.Sink(s.info)
	wait := time.Second
	for {
		err := a.runSourceOnce(ctx, s, sink)
		switch {
		case err == nil || ctx.Err() != nil:
			return nil
		case errors.Is(err, history.ErrDeletionGuard):
			a.log.Error("source stopped by the deletion guard", "source", s.Name, "error", err)
			return err
		case once:
			return err // adapters and the engine name the source
		}
		a.log.Error("source failed; restarting", "source", s.Name, "retry_in", wait, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Minute)
	}
}

func (a *app) runSourceOnce(ctx context.Context, s *sourceEntry, sink *history.Sink) error {
	if err := sink.Recover(ctx); err != nil {
		return err
	}
	ss, err := a.sourceState(s.Name)
	if err != nil {
		return err
	}
	if ss.PendingReconcile {
		if sn, ok := s.src.(capture.Snapshotter); ok && ss.Checkpoint != nil {
			a.log.Info("reconciling: a full snapshot; only drift is emitted", "source", s.Name, "epoch", ss.Epoch, "reason", ss.EpochReason)
			if err := sn.Snapshot(ctx, sink.ForReconcile()); err != nil {
				return err
			}
			if ss, err = a.sourceState(s.Name); err != nil {
				return err
			}
		}
	}
	return s.src.Run(ctx, ss.Checkpoint, sink)
}

func (a *app) sourceState(name string) (history.SourceState, error) {
	var ss history.SourceState
	err := a.db.View(func(tx *state.Tx) error {
		var err error
		ss, err = history.LoadSource(tx, name)
		return err
	})
	return ss, err
}

// summary prints the events this process committed, per type and operation.
func (a *app) summary(out io.Writer) {
	counts := a.engine.Counts()
	total := 0
	for _, ops := range counts {
		for _, n := range ops {
			total += n
		}
	}
	fmt.Fprintf(out, "events this run: %d\n", total)
	printCounts(out, counts)
}

func printCounts(out io.Writer, counts map[string]map[string]int) {
	types := make([]string, 0, len(counts))
	for t := range counts {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		fmt.Fprintf(out, "  %-24s", t)
		for _, op := range []string{history.OpSnapshot, history.OpCreate, history.OpUpdate, history.OpDelete, history.OpUndelete} {
			if n := counts[t][op]; n > 0 {
				fmt.Fprintf(out, " %s=%d", op, n)
			}
		}
		fmt.Fprintln(out)
	}
}
