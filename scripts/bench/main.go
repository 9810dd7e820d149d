// Command bench measures the agent on a generated snapshot, against a raw
// baseline measured in the same run: reading and parsing the same files.
// It prints throughput as ratios to that baseline, and peak memory.
//
//	go run ./scripts/bench [-users 1000000] [-bin bin/connector]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/os2sandbox/connector/capture/file"
)

func main() {
	users := flag.Int("users", 1_000_000, "users in the generated snapshot")
	units := flag.Int("units", 1000, "units in the generated snapshot")
	drift := flag.Float64("drift", 0.01, "share of users changed in the second snapshot")
	bin := flag.String("bin", "bin/connector", "the connector binary")
	keep := flag.Bool("keep", false, "keep the work directory")
	flag.Parse()
	if err := run(*bin, *users, *units, *drift, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type phase struct {
	name    string
	n       int
	elapsed time.Duration
	rssKB   int64
}

func run(bin string, users, units int, drift float64, keep bool) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "connector-bench")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	day1, day2 := filepath.Join(dir, "day1"), filepath.Join(dir, "day2")
	fmt.Printf("generating %d users in %d units, and a %.0f%% drift (scripts/gensnapshot)...\n", users, units, drift*100)
	if out, err := exec.Command("go", "run", "./scripts/gensnapshot", "-users", fmt.Sprint(users), "-units", fmt.Sprint(units), "-out", day1).CombinedOutput(); err != nil {
		return fmt.Errorf("gensnapshot: %v\n%s", err, out)
	}
	if out, err := exec.Command("go", "run", "./scripts/gensnapshot", "-from", day1, "-drift", fmt.Sprint(drift), "-out", day2).CombinedOutput(); err != nil {
		return fmt.Errorf("gensnapshot drift: %v\n%s", err, out)
	}
	objects := users + units

	// Raw baseline: read and parse the same files, nothing else.
	start := time.Now()
	n := 0
	for _, f := range []struct{ name, format string }{{"units.csv", "csv"}, {"users.jsonl", "jsonl"}} {
		if err := file.ParseOnly(context.Background(), filepath.Join(day1, f.name), f.format, func(map[string]any) error { n++; return nil }); err != nil {
			return fmt.Errorf("parse baseline: %w", err)
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := phase{name: "raw baseline: read + parse", n: n, elapsed: time.Since(start), rssKB: int64(ms.Sys >> 10)}

	cfg := func(name, snap string, receiver bool) string {
		c := fmt.Sprintf(config, filepath.Join(dir, "state.db"), snap)
		if receiver {
			c += fmt.Sprintf(receiverConfig, filepath.Join(dir, "replay.jsonl"))
		} else {
			c += "receivers: []\n"
		}
		p := filepath.Join(dir, name)
		_ = os.WriteFile(p, []byte(c), 0o644)
		return p
	}
	first, err := timed(bin, "first load (snapshot diff into empty state)", objects, "run", "--once", "-c", cfg("c1.yaml", day1, false))
	if err != nil {
		return err
	}
	second, err := timed(bin, fmt.Sprintf("%.0f%% drift (full snapshot diff)", drift*100), objects, "run", "--once", "-c", cfg("c2.yaml", day2, false))
	if err != nil {
		return err
	}
	// Replay: a receiver that starts now, then the whole log again.
	c3 := cfg("c3.yaml", day2, true)
	if _, err := timed(bin, "", 0, "run", "--once", "-c", c3); err != nil {
		return err
	}
	events, err := logLength(bin, c3)
	if err != nil {
		return err
	}
	replay, err := timed(bin, "replay to a file receiver (fsync per batch)", events, "replay", "-c", c3, "--receiver", "out", "--from", "beginning")
	if err != nil {
		return err
	}
	st, _ := os.Stat(filepath.Join(dir, "state.db"))

	fmt.Printf("\n%-48s %10s %9s %12s %8s %10s\n", "phase", "items", "seconds", "items/s", "ratio", "peak RSS")
	for _, p := range []phase{base, first, second, replay} {
		rate := float64(p.n) / p.elapsed.Seconds()
		fmt.Printf("%-48s %10d %9.2f %12.0f %8.3f %8d MB\n", p.name, p.n, p.elapsed.Seconds(), rate, rate/(float64(base.n)/base.elapsed.Seconds()), p.rssKB>>10)
	}
	fmt.Printf("\nratio = items/s relative to the raw baseline measured in this run (%s, %s).\n", runtime.GOOS+"/"+runtime.GOARCH, cpuInfo())
	fmt.Printf("state file: %d MB for %d objects and %d events. Peak RSS includes the state file's mapped pages\n", st.Size()>>20, objects, events)
	fmt.Println("(page cache, reclaimable); the Go heap stays bounded by batch size (GODEBUG=gctrace=1 shows it).")
	return nil
}

// timed runs the binary and measures wall time and the child's peak RSS.
func timed(bin, name string, n int, args ...string) (phase, error) {
	cmd := exec.Command(bin, args...)
	var se bytes.Buffer
	cmd.Stderr = &se
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return phase{}, fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, se.String())
	}
	p := phase{name: name, n: n, elapsed: time.Since(start)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		p.rssKB = ru.Maxrss
	}
	return p, nil
}

func logLength(bin, cfg string) (int, error) {
	out, err := exec.Command(bin, "status", "-c", cfg, "--json").Output()
	if err != nil {
		return 0, fmt.Errorf("status: %w", err)
	}
	var rep struct {
		LogLength int `json:"logLength"`
	}
	return rep.LogLength, json.Unmarshal(out, &rep)
}

func cpuInfo() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return fmt.Sprintf("%d CPUs", runtime.NumCPU())
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			_, m, _ := strings.Cut(l, ":")
			return fmt.Sprintf("%d × %s", runtime.NumCPU(), strings.TrimSpace(m))
		}
	}
	return fmt.Sprintf("%d CPUs", runtime.NumCPU())
}

const config = `state: %s
log: {level: warn}
sources:
  - name: bench
    type: file
    path: %s
    records:
      units: {file: units.csv}
      users: {file: users.jsonl}
    deletion_guard: {max_share: 0.5, min_count: 100}
mappings:
  - type: OrganisationEnhed
    source: bench
    record: units
    id: id
    fields: {navn: navn, kortnavn: kortnavn, overordnet: {from: overordnet_id, relation: OrganisationEnhed}}
    valid_from: gyldig_fra
  - type: Bruger
    source: bench
    record: users
    id: id
    keys: {brugernavn: brugernavn}
    fields:
      brugernavn: brugernavn
      navn: navn
      email: email
      enhed: {from: enhed_id, relation: OrganisationEnhed}
      cpr: {from: cpr, classification: confidential}
    valid_from: gyldig_fra
`

const receiverConfig = `receivers:
  - name: out
    type: file
    path: %s
    start: now
    classification: confidential
    batch: 2000
`
