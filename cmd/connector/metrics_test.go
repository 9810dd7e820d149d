package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestMetrics runs the demo with the Prometheus endpoint on and scrapes
// it: the log's length, each receiver's cursor and lag, the sources'
// events, and the process's own memory.
func TestMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := demoDir(t, func(s string) string { return "metrics: " + addr + "\n" + s })
	cmd, se := startRun(t, dir)
	scrape := func(path string) string {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return ""
		}
		return string(b)
	}
	var body string
	waitFor(t, func() bool {
		body = scrape("/metrics")
		return strings.Contains(body, `connector_receiver_lag_events{receiver="organisation"} 0`) &&
			strings.Contains(body, `connector_receiver_lag_events{receiver="personale"} 0`) &&
			!strings.Contains(body, "connector_log_events 0\n")
	})
	for _, want := range []string{
		"connector_log_events ",
		"connector_log_compacted_total ",
		`connector_source_events_total{source="demokommune",type="file"}`,
		`connector_receiver_cursor{receiver="organisation",type="file"}`,
		`connector_receiver_dead_letters_total{receiver="organisation"} 0`,
		`connector_source_quarantined_total{source="demokommune"} 0`,
		"process_resident_memory_bytes ",
		"go_memstats_heap_alloc_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if h := scrape("/healthz"); strings.TrimSpace(h) != "ok" {
		t.Errorf("/healthz = %q", h)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, se.String())
	}
}
