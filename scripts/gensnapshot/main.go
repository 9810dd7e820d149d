// Command gensnapshot writes snapshot files for the file source: the
// committed demo data (configs/demo) and large synthetic snapshots for
// benchmarks. Output is deterministic for a given seed.
//
//	go run ./scripts/gensnapshot -demo configs/demo
//	go run ./scripts/gensnapshot -users 1000000 -units 1000 -out DIR
//	go run ./scripts/gensnapshot -drift 0.01 -from DIR -out DIR2
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gensnapshot:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gensnapshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	demo := fs.String("demo", "", "write the demo data set (three dated snapshots and README.md) into `DIR`, e.g. configs/demo")
	users := fs.Int("users", 1000, "number of users in a synthetic snapshot")
	units := fs.Int("units", 100, "number of units in a synthetic snapshot")
	out := fs.String("out", "", "output `DIR` for units.csv and users.jsonl")
	seed := fs.Uint64("seed", 1, "random seed")
	drift := fs.Float64("drift", 0, "with -from: the `share` of users to change (0.01 = 1%)")
	from := fs.String("from", "", "with -drift: the snapshot `DIR` to derive the drifted copy from")
	date := fs.String("date", "2026-02-01", "with -drift: gyldig_fra of changed and added users")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	usage := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s (see -h)", errUsage, fmt.Sprintf(format, a...))
	}
	start := time.Now()
	switch {
	case fs.NArg() > 0:
		return usage("unexpected argument %q", fs.Arg(0))
	case *demo != "":
		if len(set) > 1 {
			return usage("-demo takes no other flags")
		}
		return writeDemo(*demo)
	case *out == "":
		return usage("-out DIR is required (or -demo DIR)")
	case set["drift"] != set["from"]:
		return usage("-drift and -from go together")
	case set["drift"]:
		if set["users"] || set["units"] {
			return usage("-users and -units do not apply with -from; the counts come from %s", *from)
		}
		if *drift <= 0 || *drift > 1 {
			return usage("-drift must be in (0, 1], got %v", *drift)
		}
		if _, err := time.Parse(time.DateOnly, *date); err != nil {
			return usage("-date must be YYYY-MM-DD, got %q", *date)
		}
		st, err := writeDrift(*from, *out, *drift, *date, *seed)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "%s: %d users (%d moved, %d renamed, %d deleted, %d added) in %v\n",
			*out, st.users, st.moved, st.renamed, st.deleted, st.added, time.Since(start).Round(time.Millisecond))
		return nil
	default:
		if *users < 0 || *units < 1 {
			return usage("-units must be at least 1 and -users at least 0")
		}
		if err := writeSynthetic(*out, *units, *users, *seed); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "%s: %d units, %d users in %v\n", *out, *units, *users, time.Since(start).Round(time.Millisecond))
		return nil
	}
}
