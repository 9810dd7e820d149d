package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/state"
)

func historyCmd() *cobra.Command {
	var path, asOf, validAt string
	var asJSON, reveal bool
	c := &cobra.Command{
		Use:   "history -c FILE TYPE/ID [--as-of TIME] [--valid-at TIME] [--json]",
		Short: "Show an object's bitemporal history",
		Long: `History prints every registration of an object: version, operation, change kind, registration
time (registreringFra/Til), valid time (virkningFra/Til) and the fields. With --as-of and/or
--valid-at it prints the single version known at registration time --as-of for valid time
--valid-at (each defaults to now). TIME is RFC 3339 or a date (2006-01-02, UTC midnight).`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 || !strings.Contains(args[0], "/") {
				return usageErr("give exactly one object as TYPE/ID, e.g. Bruger/6f1c…")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			a, err := load(path, loadOptions{stderr: c.ErrOrStderr()})
			if err != nil {
				return err
			}
			typ, id, _ := strings.Cut(args[0], "/")
			m := a.maps.Type(typ)
			if m == nil {
				return usageErr("type %q is not mapped (mapped: %s)", typ, strings.Join(a.maps.Types(), ", "))
			}
			loc, _ := time.LoadLocation(m.Timezone)
			if loc == nil {
				loc, _ = time.LoadLocation("Europe/Copenhagen")
			}
			var r, v time.Time
			now := time.Now()
			if r, err = parseTimeIn("--as-of", asOf, now, loc); err != nil {
				return err
			}
			if v, err = parseTimeIn("--valid-at", validAt, now, loc); err != nil {
				return err
			}
			db, err := openForRead(c, a)
			if err != nil {
				return err
			}
			defer db.Close()
			var versions []*history.Version
			if err := db.View(func(tx *state.Tx) error {
				versions, err = history.Versions(tx, typ, id)
				return err
			}); err != nil {
				return err
			}
			if len(versions) == 0 {
				return fmt.Errorf("no object %s/%s in the state", typ, id)
			}
			if !reveal {
				for _, ver := range versions {
					ver.Fields, _ = a.maps.Redact(typ, ver.Fields, "internal")
				}
			}
			out := c.OutOrStdout()
			if asOf != "" || validAt != "" {
				ver := history.AsOf(versions, r, v)
				if asJSON {
					return writeJSON(out, ver)
				}
				if ver == nil {
					fmt.Fprintf(out, "%s/%s did not exist at valid time %s as registered at %s\n", typ, id, v.UTC().Format(time.RFC3339), r.UTC().Format(time.RFC3339))
					return nil
				}
				fmt.Fprintf(out, "%s/%s version %d (%s, %s), valid from %s until %s\n", typ, id, ver.Version, ver.Operation, ver.ChangeKind,
					ver.VirkFra.In(loc).Format(dateTime), timeIn(ver.VirkTil, loc))
				fmt.Fprintf(out, "registered %s\n", ver.RegFra.In(loc).Format(dateTime))
				printFields(out, ver.Fields)
				return nil
			}
			if asJSON {
				return writeJSON(out, versions)
			}
			printTimeline(out, typ, id, versions, loc)
			if !reveal && m.MaxLevel() > m.Level() {
				fmt.Fprintln(out, "(fields classified above internal are hidden; --reveal shows them)")
			}
			return nil
		},
	}
	configFlag(c, &path)
	c.Flags().StringVar(&asOf, "as-of", "", "registration time: what was known then")
	c.Flags().StringVar(&validAt, "valid-at", "", "valid time: the state of the object then")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&reveal, "reveal", false, "show fields classified above internal (e.g. CPR)")
	return c
}

const dateTime = "2006-01-02 15:04 MST"

// parseTimeIn is parseTimeFlag with dates read in loc.
func parseTimeIn(name, s string, def time.Time, loc *time.Location) (time.Time, error) {
	if t, err := time.ParseInLocation("2006-01-02", s, loc); err == nil {
		return t, nil
	}
	return parseTimeFlag(name, s, def)
}

func timeIn(t *history.Time, loc *time.Location) string {
	if t == nil {
		return "open"
	}
	return t.In(loc).Format(dateTime)
}

func parseTimeFlag(name, s string, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usageErr("%s %q: give an RFC 3339 time (2026-02-01T10:00:00Z) or a date (2026-02-01)", name, s)
}

// openForRead opens the state read-only; if the agent holds it, the
// message says how to proceed.
func openForRead(_ *cobra.Command, a *app) (*state.DB, error) {
	return state.Open(a.cfg.State, state.Options{ReadOnly: true, LockTimeout: 500 * time.Millisecond})
}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func printTimeline(out io.Writer, typ, id string, versions []*history.Version, loc *time.Location) {
	fmt.Fprintf(out, "%s/%s: %d versions\n", typ, id, len(versions))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "V\tOPERATION\tKIND\tVIRKNING FRA\tVIRKNING TIL\tREGISTRERING\tSUPERSEDES\tCHANGED")
	var prev map[string]any
	for _, v := range versions {
		reg := "current"
		if v.RegTil != nil {
			reg = "closed"
		}
		sup := "-"
		if len(v.Supersedes) > 0 {
			sup = fmt.Sprint(v.Supersedes)
		}
		changed := strings.Join(diffNames(prev, v.Fields), ",")
		if v.Deleted {
			changed = "(deleted)"
		} else {
			prev = v.Fields
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Version, v.Operation, v.ChangeKind,
			v.VirkFra.In(loc).Format("2006-01-02"), dateOrOpen(v.VirkTil, loc), reg, sup, changed)
	}
	tw.Flush()
	if last := versions[len(versions)-1]; !last.Deleted {
		fmt.Fprintln(out, "current fields:")
		printFields(out, last.Fields)
	}
}

func dateOrOpen(t *history.Time, loc *time.Location) string {
	if t == nil {
		return "-"
	}
	return t.In(loc).Format("2006-01-02")
}

func diffNames(a, b map[string]any) []string {
	var out []string
	for k, v := range b {
		if av, ok := a[k]; !ok || fmt.Sprint(av) != fmt.Sprint(v) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func printFields(out io.Writer, f map[string]any) {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "  %-12s %v\n", k, f[k])
	}
}
