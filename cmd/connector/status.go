package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
	"github.com/os2sandbox/connector/state"
)

// Report is what `connector status` shows.
type Report struct {
	State        string `json:"state"`
	Installation string `json:"installation"`
	SizeBytes    int64  `json:"sizeBytes"`
	LogLength    uint64 `json:"logLength"`
	// LogCompacted is how many events retention.log has removed.
	LogCompacted uint64           `json:"logCompacted"`
	Running      bool             `json:"running"`
	Sources      []SourceReport   `json:"sources"`
	Receivers    []ReceiverReport `json:"receivers"`
}

// SourceReport is one source's line.
type SourceReport struct {
	Name        string        `json:"name"`
	Type        string        `json:"type"`
	Epoch       uint64        `json:"epoch"`
	EpochReason string        `json:"epochReason,omitempty"`
	Position    string        `json:"position,omitempty"`
	LastChange  *history.Time `json:"lastChange,omitempty"`
	LastApplied *history.Time `json:"lastApplied,omitempty"`
	Events      uint64        `json:"events"`
	// Live counts the source's live objects, where the engine keeps the
	// count (a source with a change-feed deletion guard).
	Live             *int64 `json:"live,omitempty"`
	Quarantined      uint64 `json:"quarantined"`
	PendingReconcile bool   `json:"pendingReconcile"`
	SnapshotStaged   bool   `json:"snapshotStaged"`
}

// ReceiverReport is one receiver's line.
type ReceiverReport struct {
	Name        string        `json:"name"`
	Type        string        `json:"type"`
	Cursor      uint64        `json:"cursor"`
	LagEvents   uint64        `json:"lagEvents"`
	LagSeconds  float64       `json:"lagSeconds"`
	DeadLetters uint64        `json:"deadLetters"`
	DeliveredAt *history.Time `json:"deliveredAt,omitempty"`
	LastError   string        `json:"lastError,omitempty"`
}

func statusCmd() *cobra.Command {
	var path string
	var asJSON bool
	c := &cobra.Command{
		Use:   "status -c FILE [--json]",
		Short: "Show sources' positions and receivers' lag",
		Long: `Status shows, per source, its position, epoch and last change time, and per receiver its
cursor, lag (events and seconds) and dead letters, and the log's size. While ` + "`connector run`" + ` holds
the state file, status asks the running agent over its control socket.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			a, err := load(path, loadOptions{stderr: c.ErrOrStderr()})
			if err != nil {
				return err
			}
			defer a.close()
			rep, err := a.status(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printReport(c.OutOrStdout(), rep)
			return nil
		},
	}
	configFlag(c, &path)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// status reads the state directly, or asks the running agent.
func (a *app) status(ctx context.Context) (*Report, error) {
	db, err := state.Open(a.cfg.State, state.Options{ReadOnly: true, LockTimeout: 200 * time.Millisecond})
	if errors.Is(err, state.ErrLocked) {
		var rep Report
		if cerr := a.askAgent(ctx, http.MethodGet, "/status", &rep); cerr != nil {
			return nil, fmt.Errorf("%w; the control socket did not answer either: %v", err, cerr)
		}
		return &rep, nil
	}
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return a.report(db)
}

func (a *app) report(db *state.DB) (*Report, error) {
	rep := &Report{State: db.Path(), Installation: db.Installation(), SizeBytes: db.Size()}
	now := time.Now()
	err := db.View(func(tx *state.Tx) error {
		rep.LogLength = publish.LastSequence(tx)
		rep.LogCompacted = history.Compacted(tx)
		for _, s := range a.sources {
			ss, err := history.LoadSource(tx, s.Name)
			if err != nil {
				return err
			}
			st, err := tx.Staging(s.Name, false)
			if err != nil {
				return err
			}
			rep.Sources = append(rep.Sources, SourceReport{Name: s.Name, Type: s.Type, Epoch: ss.Epoch, EpochReason: ss.EpochReason,
				Position: ss.Position, LastChange: ss.LastChange, LastApplied: ss.LastApplied, Events: ss.Events,
				Quarantined: ss.Quarantined, PendingReconcile: ss.PendingReconcile, SnapshotStaged: st != nil, Live: ss.Live})
		}
		for _, r := range a.receivers {
			cur, ok, err := publish.LoadCursor(tx, r.Name)
			if err != nil {
				return err
			}
			if a.dispatcher != nil {
				// The running loop's cursor: the state's may be a second behind.
				if c, live := a.dispatcher.Cursor(r.Name); live {
					cur, ok = c, true
				}
			}
			rr := ReceiverReport{Name: r.Name, Type: r.Type}
			if ok {
				rr.Cursor, rr.DeadLetters, rr.DeliveredAt, rr.LastError = cur.Delivered, cur.DeadLetters, cur.DeliveredAt, cur.LastError
			}
			if rep.LogLength > rr.Cursor {
				rr.LagEvents = rep.LogLength - rr.Cursor
				var ev struct {
					ObservedAt history.Time `json:"observedAt"`
				}
				// The next event it will get (a compacted log has gaps).
				_ = tx.ScanFrom(state.Log, nil, state.U64(rr.Cursor+1), func(_, v []byte) error {
					if json.Unmarshal(v, &ev) == nil {
						rr.LagSeconds = now.Sub(ev.ObservedAt.Time).Round(time.Millisecond).Seconds()
					}
					return state.ErrStop
				})
			}
			rep.Receivers = append(rep.Receivers, rr)
		}
		return nil
	})
	return rep, err
}

func printReport(out io.Writer, r *Report) {
	run := ""
	if r.Running {
		run = " (agent running)"
	}
	logged := fmt.Sprintf("%d events in the log", r.LogLength)
	if r.LogCompacted > 0 {
		logged = fmt.Sprintf("%d events in the log (sequences up to %d; %d compacted away by retention.log)", r.LogLength-r.LogCompacted, r.LogLength, r.LogCompacted)
	}
	fmt.Fprintf(out, "state %s%s: %s, %.1f MiB\n\n", r.State, run, logged, float64(r.SizeBytes)/(1<<20))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tTYPE\tEPOCH\tEVENTS\tLIVE\tLAST CHANGE\tQUARANTINED\tPOSITION\tNOTE")
	for _, s := range r.Sources {
		note := ""
		if s.PendingReconcile {
			note = "reconcile pending (" + s.EpochReason + ")"
		} else if s.EpochReason != "" {
			note = "last epoch: " + s.EpochReason
		}
		if s.SnapshotStaged {
			note += " snapshot staged"
		}
		live := "-"
		if s.Live != nil {
			live = fmt.Sprint(*s.Live)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%d\t%s\t%s\n", s.Name, s.Type, s.Epoch, s.Events, live, timeOrDash(s.LastChange), s.Quarantined, s.Position, note)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "RECEIVER\tTYPE\tCURSOR\tLAG EVENTS\tLAG SECONDS\tDEAD LETTERS\tLAST ERROR")
	for _, rr := range r.Receivers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%d\t%s\n", rr.Name, rr.Type, rr.Cursor, rr.LagEvents, rr.LagSeconds, rr.DeadLetters, rr.LastError)
	}
	tw.Flush()
}

func timeOrDash(t *history.Time) string {
	if t == nil {
		return "-"
	}
	return t.String()
}

// controlPath is the unix socket a running agent answers on.
func (a *app) controlPath() string {
	if a.cfg.Control != "" {
		return a.cfg.Control
	}
	return a.cfg.State + ".sock"
}

// serveControl answers status (and replay) requests while the agent runs;
// the socket is only reachable by users who can reach the state file.
func (a *app) serveControl(ctx context.Context, d *publish.Dispatcher) (func(), error) {
	path := a.controlPath()
	_ = os.Remove(path) // a stale socket of a killed agent; the state lock proves we are alone
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w (set `control:` to a writable path)", path, err)
	}
	_ = os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		rep, err := a.report(a.db)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		rep.Running = true
		_ = json.NewEncoder(w).Encode(rep)
	})
	mux.HandleFunc("POST /replay", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		res, err := a.moveCursor(d, q.Get("receiver"), q.Get("from"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(res)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = os.Remove(path)
	}, nil
}

// askAgent calls the running agent's control socket.
func (a *app) askAgent(ctx context.Context, method, url string, out any) error {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", a.controlPath())
		},
	}}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("agent: %s", string(b))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
