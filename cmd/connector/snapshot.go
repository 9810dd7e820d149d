package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/state"
)

func snapshotCmd() *cobra.Command {
	var path, source string
	var dryRun, allowDeletions bool
	c := &cobra.Command{
		Use:   "snapshot -c FILE --source NAME [--dry-run] [--allow-deletions]",
		Short: "Take a full snapshot now and apply only the drift",
		Long: `Snapshot reads the source in full now, compares it with the agent's current images and applies
only the drift, as events with emission "reconcile" (deletions with reason
reconciliation-missing). --dry-run prints what would change — counts per type and operation and
the first objects — and writes nothing. The deletion guard applies; --allow-deletions overrides it
for this snapshot. Receivers get the events on the agent's next delivery.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if source == "" {
				return usageErr("--source is required")
			}
			a, err := load(path, loadOptions{sources: true, once: true, stderr: c.ErrOrStderr(), override: allowDeletions})
			if err != nil {
				return err
			}
			defer a.close()
			s, err := a.source(source)
			if err != nil {
				return err
			}
			sn, ok := s.src.(capture.Snapshotter)
			if !ok {
				return usageErr("source %q (%s) cannot take a snapshot on demand", s.Name, s.Type)
			}
			if err := a.openState(false); err != nil {
				return err
			}
			a.trimMemory(c.Context())
			return a.snapshot(c.Context(), c.OutOrStdout(), s, sn, dryRun)
		},
	}
	configFlag(c, &path)
	c.Flags().StringVar(&source, "source", "", "source name")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change; write nothing")
	c.Flags().BoolVar(&allowDeletions, "allow-deletions", false, "apply even if the deletion guard trips")
	return c
}

func (a *app) snapshot(ctx context.Context, out io.Writer, s *sourceEntry, sn capture.Snapshotter, dryRun bool) error {
	sink := a.engine.Sink(s.info)
	if err := sink.Recover(ctx); err != nil {
		return err
	}
	start := time.Now()
	if dryRun {
		var d history.DryRun
		if err := sn.Snapshot(ctx, sink.DryRunSink(&d)); err != nil {
			return err
		}
		printDryRun(out, s.Name, &d)
		return nil
	}
	if err := sn.Snapshot(ctx, sink.ForReconcile()); err != nil {
		return err
	}
	a.summary(out)
	fmt.Fprintf(out, "snapshot of %s applied in %s\n", s.Name, time.Since(start).Round(time.Millisecond))
	return nil
}

func printDryRun(out io.Writer, source string, d *history.DryRun) {
	fmt.Fprintf(out, "dry run of a snapshot of %s: nothing was written\n", source)
	total := 0
	for _, ops := range d.Counts {
		for op, n := range ops {
			if op != "quarantine" {
				total += n
			}
		}
	}
	if total == 0 {
		fmt.Fprintln(out, "no changes: the snapshot matches the current state")
	} else {
		fmt.Fprintf(out, "changes: %d\n", total)
		printCounts(out, d.Counts)
	}
	fmt.Fprintf(out, "deletions: %d of %d live objects (guard limit %d)", d.Deletes, d.Live, d.Limit)
	if d.Tripped {
		fmt.Fprint(out, " — the deletion guard would REFUSE this snapshot")
	}
	fmt.Fprintln(out)
	ops := make([]string, 0, len(d.Examples))
	for op := range d.Examples {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		fmt.Fprintf(out, "first %s:\n", op)
		for _, ex := range d.Examples[op] {
			fmt.Fprintf(out, "  %s\n", ex)
		}
	}
}

func checkCmd() *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "check -c FILE",
		Short: "Validate the configuration and try every connection",
		Long: `Check validates the configuration (exit code 2 on an error), then tries the state file and each
source and receiver, printing one line each: ok, or the reason and the fix (exit code 1 if any
failed).`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			a, err := load(path, loadOptions{sources: true, once: true, stderr: c.ErrOrStderr()})
			if err != nil {
				return err
			}
			defer a.close()
			out := c.OutOrStdout()
			failed := 0
			line := func(kind, name, typ string, err error) {
				if err != nil {
					failed++
					fmt.Fprintf(out, "%-8s %-20s %-8s FAILED: %v\n", kind, name, typ, err)
					return
				}
				fmt.Fprintf(out, "%-8s %-20s %-8s ok\n", kind, name, typ)
			}
			fmt.Fprintf(out, "config   %-20s %-8s ok\n", path, "")
			line("state", a.cfg.State, "bbolt", checkState(a))
			ctx, cancel := context.WithTimeout(c.Context(), 30*time.Second)
			defer cancel()
			for _, s := range a.sources {
				var err error
				if ch, ok := s.src.(capture.Checker); ok {
					err = ch.Check(ctx)
				}
				line("source", s.Name, s.Type, err)
			}
			for _, re := range a.receivers {
				r, err := a.buildReceiver(re)
				if err == nil {
					if ch, ok := r.(publish.Checker); ok {
						err = ch.Check(ctx)
					}
					r.Close()
				}
				line("receiver", re.Name, re.Type, err)
			}
			if failed > 0 {
				return fmt.Errorf("%d checks failed", failed)
			}
			return nil
		},
	}
	configFlag(c, &path)
	return c
}

// checkState opens the state file (if it exists) and verifies it.
func checkState(a *app) error {
	db, err := state.Open(a.cfg.State, state.Options{ReadOnly: true, LockTimeout: 200 * time.Millisecond})
	switch {
	case err == nil:
		defer db.Close()
		return db.Check()
	case errIs(err, state.ErrNotFound):
		return nil // created on first run
	case errIs(err, state.ErrLocked):
		return nil // a running agent holds it: fine
	}
	return err
}
