package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/state"
)

// ReplayResult says what a replay set up.
type ReplayResult struct {
	Receiver string `json:"receiver"`
	From     uint64 `json:"from"`
	Until    uint64 `json:"until"`
}

func replayCmd() *cobra.Command {
	var path, receiver, from string
	var current bool
	c := &cobra.Command{
		Use:   "replay -c FILE --receiver NAME --from beginning|SEQUENCE|TIME",
		Short: "Re-deliver the log to a receiver from a point",
		Long: `Replay moves a receiver's cursor back and re-delivers the log from that point, with the same
event ids, flagged emission "replay". FROM is "beginning", a sequence number, or a time (RFC 3339
or a date): the first event registered at or after it. With --current-state it instead sends one
"backfill" event per live object (its current image) and moves the cursor to the end of the log.
If the agent is running, the replay is handed to it; otherwise this command delivers it and exits.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if receiver == "" {
				return usageErr("--receiver is required")
			}
			if (from == "") == !current {
				return usageErr("give either --from beginning|SEQUENCE|TIME or --current-state")
			}
			a, err := load(path, loadOptions{stderr: c.ErrOrStderr()})
			if err != nil {
				return err
			}
			defer a.close()
			if _, err := a.receiver(receiver); err != nil {
				return err
			}
			err = a.openState(false)
			if err == nil {
				a.trimMemory(c.Context())
			}
			if err != nil {
				if errors.Is(err, state.ErrLocked) && !current {
					var res ReplayResult
					q := url.Values{"receiver": {receiver}, "from": {from}}
					if cerr := a.askAgent(c.Context(), http.MethodPost, "/replay?"+q.Encode(), &res); cerr != nil {
						return fmt.Errorf("%w; the control socket did not answer either: %v", err, cerr)
					}
					fmt.Fprintf(c.OutOrStdout(), "the running agent replays sequences %d–%d to %s\n", res.From, res.Until, receiver)
					return nil
				}
				return err
			}
			if current {
				n, err := a.backfill(c.Context(), receiver)
				fmt.Fprintf(c.OutOrStdout(), "backfill: %d current objects sent to %s\n", n, receiver)
				return err
			}
			d, err := a.buildDispatcher(receiver)
			if err != nil {
				return err
			}
			defer d.Close()
			res, err := a.moveCursor(d, receiver, from)
			if err != nil {
				return err
			}
			if err := d.Drain(c.Context()); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "replayed sequences %d–%d to %s\n", res.From, res.Until, receiver)
			return nil
		},
	}
	configFlag(c, &path)
	c.Flags().StringVar(&receiver, "receiver", "", "receiver name")
	c.Flags().StringVar(&from, "from", "", "beginning, a sequence number, or a time")
	c.Flags().BoolVar(&current, "current-state", false, "send one backfill event per live object instead")
	return c
}

// moveCursor points a receiver's cursor before from and marks everything
// up to the end of the log as replay; d's loop for it, if running,
// continues from there.
func (a *app) moveCursor(d *publish.Dispatcher, receiver, from string) (ReplayResult, error) {
	res := ReplayResult{Receiver: receiver}
	if _, err := a.receiver(receiver); err != nil {
		return res, err
	}
	err := d.MoveCursor(receiver, func(tx *state.Tx, cur *publish.Cursor) error {
		last := publish.LastSequence(tx)
		seq, err := resolveFrom(tx, from, last)
		if err != nil {
			return err
		}
		cur.Delivered = seq - 1
		cur.ReplayUntil = last
		res.From, res.Until = seq, last
		return nil
	})
	return res, err
}

// resolveFrom turns beginning|SEQUENCE|TIME into a first sequence.
func resolveFrom(tx *state.Tx, from string, last uint64) (uint64, error) {
	if from == "beginning" {
		return 1, nil
	}
	if n, err := strconv.ParseUint(from, 10, 64); err == nil {
		if n == 0 || n > last+1 {
			return 0, usageErr("--from %d: the log holds sequences 1–%d", n, last)
		}
		return n, nil
	}
	t, err := parseTimeFlag("--from", from, time.Time{})
	if err != nil {
		return 0, usageErr("--from %q: give beginning, a sequence number, or a time (RFC 3339 or 2006-01-02)", from)
	}
	// Registration time grows with the sequence: binary search. A
	// compacted log has gaps; a sequence stands for the first event at or
	// after it.
	observed := func(seq uint64) time.Time {
		var ev struct {
			ObservedAt history.Time `json:"observedAt"`
		}
		_ = tx.ScanFrom(state.Log, nil, state.U64(seq), func(_, v []byte) error {
			_ = json.Unmarshal(v, &ev)
			return state.ErrStop
		})
		return ev.ObservedAt.Time
	}
	i := sort.Search(int(last), func(i int) bool { return !observed(uint64(i + 1)).Before(t) })
	return uint64(i + 1), nil
}

// backfill sends every live object's current image to a receiver as a
// backfill event, then moves its cursor to the end of the log read in the
// same transaction (so nothing is skipped or doubled).
func (a *app) backfill(ctx context.Context, name string) (int, error) {
	re, _ := a.receiver(name)
	cfg := re.cfg
	if cfg.Classification == "" {
		cfg.Classification = "internal"
	}
	r, err := a.buildReceiver(re)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	ns := uuid.MustParse(a.db.Installation())
	sent := 0
	var last uint64
	var batch []history.Event
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		for {
			err := r.Deliver(ctx, batch)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return err
			}
			a.log.Warn("backfill delivery failed; retrying", "receiver", name, "error", err)
			time.Sleep(time.Second)
		}
		sent += len(batch)
		batch = batch[:0]
		return nil
	}
	err = a.db.View(func(tx *state.Tx) error {
		last = publish.LastSequence(tx)
		return tx.Scan(state.Images, nil, func(k, v []byte) error {
			img, err := history.DecodeImage(v)
			if err != nil {
				return err
			}
			if img.Deleted {
				return nil
			}
			typ, id := splitKey(k)
			if len(cfg.Filter.Types) > 0 && !contains(cfg.Filter.Types, typ) {
				return nil
			}
			ev, err := backfillEvent(tx, ns, typ, id, img, a.sourceType(img.Source))
			if err != nil {
				return err
			}
			ev, ok, err := publish.Redact(redactor{a.maps}, cfg.Classification, ev)
			if err != nil || !ok {
				return err
			}
			batch = append(batch, ev)
			if len(batch) == 500 {
				return flush()
			}
			return nil
		})
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return sent, err
	}
	return sent, a.db.Update(func(tx *state.Tx) error {
		cur, _, err := publish.LoadCursor(tx, name)
		if err != nil {
			return err
		}
		cur.Delivered, cur.ReplayUntil = last, 0
		return publish.SaveCursor(tx, name, cur)
	})
}

func (a *app) sourceType(name string) string {
	for _, s := range a.sources {
		if s.Name == name {
			return s.Type
		}
	}
	return ""
}

func backfillEvent(tx *state.Tx, ns uuid.UUID, typ, id string, img *history.Image, srcType string) (history.Event, error) {
	var ev history.Event
	vs, err := history.Versions(tx, typ, id)
	if err != nil || len(vs) == 0 {
		return ev, fmt.Errorf("%w: %s/%s has an image but no versions", state.ErrCorrupt, typ, id)
	}
	v := vs[len(vs)-1]
	var orig history.Event
	if b := tx.Get(state.Log, state.U64(v.Sequence)); b != nil {
		_ = history.DecodeEvent(b, &orig)
	}
	ev = orig
	ev.EventID = uuid.NewSHA1(ns, []byte("backfill\x00"+typ+"\x00"+id+"\x00"+strconv.FormatUint(v.Version, 10))).String()
	ev.Emission = history.EmissionBackfill
	ev.Operation = history.OpSnapshot
	ev.Reason = ""
	ev.ChangeKind = history.KindUoplyst
	ev.Supersedes = nil
	ev.Before = nil
	ev.After = img.Fields
	ev.Changed = []string{}
	for k := range img.Fields {
		ev.Changed = append(ev.Changed, k)
	}
	sort.Strings(ev.Changed)
	ev.Integrity.PrevContentHash = ""
	ev.Source.Type = srcType
	return ev, nil
}

func splitKey(k []byte) (string, string) {
	for i, b := range k {
		if b == 0 {
			return string(k[:i]), string(k[i+1:])
		}
	}
	return string(k), ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
