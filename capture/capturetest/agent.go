package capturetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary builds cmd/connector once per test process and returns its path.
func Binary(t testing.TB) string {
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "connector-capture-e2e")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "connector")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/os2sandbox/connector/cmd/connector").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("build cmd/connector: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// WriteConfig writes cfg as dir's connector.yaml.
func WriteConfig(t testing.TB, dir, cfg string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "connector.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// RunOnce runs `connector run --once` with dir's connector.yaml.
func RunOnce(t testing.TB, bin, dir string) {
	t.Helper()
	cmd := exec.Command(bin, "run", "--once", "-c", "connector.yaml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("connector run --once: %v\n%s", err, out)
	}
}

// RunAndKill starts `connector run` with dir's connector.yaml, SIGKILLs it
// after the given time, and fails t if the agent logged an error before
// it died.
func RunAndKill(t testing.TB, bin, dir string, after time.Duration) {
	t.Helper()
	cmd := exec.Command(bin, "run", "-c", "connector.yaml")
	cmd.Dir = dir
	StartAndKill(t, cmd, after)
}

// StartAndKill starts the agent's command cmd, SIGKILLs it after the given
// time, and fails t if the agent logged an error before it died.
func StartAndKill(t testing.TB, cmd *exec.Cmd, after time.Duration) {
	t.Helper()
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(after)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if strings.Contains(se.String(), "level=ERROR") {
		t.Fatalf("agent reported an error before the kill after %v:\n%s", after, se.String())
	}
}

// PeakRSS is the process's peak resident set (VmHWM) in MiB, 0 where
// /proc does not say.
func PeakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return float64(kb) / 1024
		}
	}
	return 0
}
