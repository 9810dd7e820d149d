package main

import (
	"context"
	"time"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/state"
)

// compactEvery compacts the log (retention.log) now and then until ctx is
// done: often enough that the log stays near its retention, rarely enough
// that re-reading the events it keeps costs little.
func (a *app) compactEvery(ctx context.Context) {
	if a.cfg.Retention.Log <= 0 {
		return
	}
	interval := min(max(a.cfg.Retention.Log/24, time.Minute), time.Hour)
	go every(ctx, interval, func() { a.compactLog(ctx) })
}

// compactLog runs one compaction pass; a failure is logged, and the next
// pass tries again (the log only grows meanwhile).
func (a *app) compactLog(ctx context.Context) {
	if a.cfg.Retention.Log <= 0 {
		return
	}
	start := time.Now()
	st, err := history.CompactLog(ctx, a.db, history.Compaction{
		Through: a.confirmedThrough,
		Before:  start.Add(-a.cfg.Retention.Log),
	})
	if err != nil {
		if ctx.Err() == nil {
			a.log.Error("log compaction failed; retrying at the next pass", "error", err)
		}
		return
	}
	if st.Removed > 0 {
		a.log.Info("log compacted", "removed", st.Removed, "scanned", st.Scanned, "first_sequence", st.First,
			"took", time.Since(start).Round(time.Millisecond))
	}
}

// confirmedThrough is the highest sequence every configured receiver has
// confirmed, as its stored cursor says (a running receiver may be further:
// what a crash would send again must stay).
func (a *app) confirmedThrough(tx *state.Tx) (uint64, error) {
	floor := publish.LastSequence(tx)
	for _, r := range a.receivers {
		c, ok, err := publish.LoadCursor(tx, r.Name)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, nil
		}
		floor = min(floor, c.Delivered)
	}
	return floor, nil
}
