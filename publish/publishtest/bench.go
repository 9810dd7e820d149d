package publishtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/history"
	"github.com/os2sandbox/connector/publish"
)

// BenchImage is a realistic image of employee id (about 20 fields) for
// event i of a benchmark's stream over 1,000 objects.
func BenchImage(i int, id string) map[string]any {
	return map[string]any{
		"id": id, "givenName": "Karen", "surname": fmt.Sprintf("Jensen-%d", i%977), "displayName": "Karen Jensen",
		"mail": fmt.Sprintf("kj%d@kommune.example.dk", i%1000), "phone": "+45 33 12 34 56",
		"title": "Sagsbehandler", "department": "Borgerservice", "unit": fmt.Sprintf("OU-%d", i%37),
		"manager": "00000042-aaaa-4bbb-8ccc-000000000042", "employeeNumber": fmt.Sprintf("E%06d", i%1000),
		"startDate": "2019-08-01", "costCenter": "4711", "location": "Rådhuset, 2. sal",
		"groups": []any{"alle-ansatte", "borgerservice", "sagsbehandlere"}, "enabled": true,
	}
}

// RawBatch returns events from..from+n (event(i) each) as the dispatcher
// hands them over: each carries the canonical JSON the log holds (Raw),
// since the events are neither redacted nor replayed.
func RawBatch(b testing.TB, from, n int, event func(i int) history.Event) []history.Event {
	out := make([]history.Event, n)
	for i := range out {
		out[i] = event(from + i)
		raw, err := history.AppendJSON(nil, &out[i])
		if err != nil {
			b.Fatal(err)
		}
		out[i].Raw = raw
	}
	return out
}

// ReportRates reports a benchmark's b.N runs of events events (mb MB in
// each) through the receiver in receiver and through the bare client in
// baseline: both rates, their ratio and the process's peak memory.
func ReportRates(b *testing.B, events int, mb float64, receiver, baseline time.Duration) {
	n := float64(b.N * events)
	mb *= float64(b.N)
	b.ReportMetric(n/receiver.Seconds(), "events/s")
	b.ReportMetric(mb/receiver.Seconds(), "MB/s")
	b.ReportMetric(n/baseline.Seconds(), "baseline-events/s")
	b.ReportMetric(mb/baseline.Seconds(), "baseline-MB/s")
	b.ReportMetric(baseline.Seconds()/receiver.Seconds(), "ratio")
	if rss := capturetest.PeakRSS(); rss > 0 {
		b.ReportMetric(rss, "peak-RSS-MB")
	}
}

// Timed runs events from..from+n through run, batch at a time, each batch
// made by prepare outside the clock, and returns the time run took.
func Timed[T any](from, n, batch int, prepare func(from, n int) T, run func(T)) time.Duration {
	var d time.Duration
	for i := from; i < from+n; i += batch {
		x := prepare(i, min(batch, from+n-i))
		start := time.Now()
		run(x)
		d += time.Since(start)
	}
	return d
}

// TimedDeliver is Timed with r.Deliver, failing b on an error.
func TimedDeliver(b testing.TB, r publish.Receiver, from, n, batch int, events func(from, n int) []history.Event) time.Duration {
	return Timed(from, n, batch, events, func(evs []history.Event) {
		if err := r.Deliver(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
	})
}
