package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveMetrics exposes the agent's figures for Prometheus on the
// configured address: what `connector status` shows, read from the state
// at scrape time, plus the Go runtime's and the process's own (memory,
// CPU, open files). /healthz answers 200 while the agent runs.
func (a *app) serveMetrics() (stop func(), err error) {
	if a.cfg.Metrics == "" {
		return func() {}, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), statusCollector{a})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{a}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	ln, err := net.Listen("tcp", a.cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w (change `metrics:` in %s)", a.cfg.Metrics, err, a.cfg.Path)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics endpoint stopped", "error", err)
		}
	}()
	a.log.Info("metrics endpoint listening", "address", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

type slogPrinter struct{ a *app }

func (p slogPrinter) Println(v ...any) { p.a.log.Warn("metrics", "error", fmt.Sprint(v...)) }

var (
	descLog          = prometheus.NewDesc("connector_log_events", "Events in the agent's log (the last sequence number).", nil, nil)
	descCompacted    = prometheus.NewDesc("connector_log_compacted_total", "Events removed from the log by retention.log.", nil, nil)
	descStateBytes   = prometheus.NewDesc("connector_state_bytes", "Size of the state file.", nil, nil)
	descSrcEvents    = prometheus.NewDesc("connector_source_events_total", "Events derived from a source's changes.", []string{"source", "type"}, nil)
	descSrcLive      = prometheus.NewDesc("connector_source_live_objects", "A source's live objects, where the engine counts them (sources with a change-feed deletion guard).", []string{"source"}, nil)
	descSrcQuar      = prometheus.NewDesc("connector_source_quarantined_total", "Changes of a source that could not be mapped (see connector status).", []string{"source"}, nil)
	descSrcEpoch     = prometheus.NewDesc("connector_source_epoch", "A source's epoch; it grows when continuity with the register broke.", []string{"source"}, nil)
	descSrcChange    = prometheus.NewDesc("connector_source_last_change_timestamp_seconds", "When the register committed the last change the agent applied.", []string{"source"}, nil)
	descSrcApplied   = prometheus.NewDesc("connector_source_last_applied_timestamp_seconds", "When the agent last committed a batch of the source.", []string{"source"}, nil)
	descSrcReconcile = prometheus.NewDesc("connector_source_reconcile_pending", "1 while a source owes a reconcile (after an epoch break).", []string{"source"}, nil)
	descRcvCursor    = prometheus.NewDesc("connector_receiver_cursor", "The last sequence a receiver confirmed.", []string{"receiver", "type"}, nil)
	descRcvLag       = prometheus.NewDesc("connector_receiver_lag_events", "Events in the log a receiver has not confirmed yet.", []string{"receiver"}, nil)
	descRcvLagSec    = prometheus.NewDesc("connector_receiver_lag_seconds", "Age of the oldest event a receiver has not confirmed.", []string{"receiver"}, nil)
	descRcvDead      = prometheus.NewDesc("connector_receiver_dead_letters_total", "Events a receiver refused for good.", []string{"receiver"}, nil)
	descRcvFailing   = prometheus.NewDesc("connector_receiver_failing", "1 while a receiver's last delivery failed.", []string{"receiver"}, nil)
)

// statusCollector turns the status report into metrics at scrape time.
type statusCollector struct{ a *app }

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLog, descCompacted, descStateBytes, descSrcEvents, descSrcLive, descSrcQuar, descSrcEpoch, descSrcChange,
		descSrcApplied, descSrcReconcile, descRcvCursor, descRcvLag, descRcvLagSec, descRcvDead, descRcvFailing} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	rep, err := c.a.report(c.a.db)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descLog, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	bit := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	gauge(descLog, float64(rep.LogLength))
	ch <- prometheus.MustNewConstMetric(descCompacted, prometheus.CounterValue, float64(rep.LogCompacted))
	gauge(descStateBytes, float64(rep.SizeBytes))
	for _, s := range rep.Sources {
		counter(descSrcEvents, float64(s.Events), s.Name, s.Type)
		counter(descSrcQuar, float64(s.Quarantined), s.Name)
		gauge(descSrcEpoch, float64(s.Epoch), s.Name)
		gauge(descSrcReconcile, bit(s.PendingReconcile), s.Name)
		if s.Live != nil {
			gauge(descSrcLive, float64(*s.Live), s.Name)
		}
		if s.LastChange != nil {
			gauge(descSrcChange, float64(s.LastChange.UnixMicro())/1e6, s.Name)
		}
		if s.LastApplied != nil {
			gauge(descSrcApplied, float64(s.LastApplied.UnixMicro())/1e6, s.Name)
		}
	}
	for _, r := range rep.Receivers {
		gauge(descRcvCursor, float64(r.Cursor), r.Name, r.Type)
		gauge(descRcvLag, float64(r.LagEvents), r.Name)
		gauge(descRcvLagSec, r.LagSeconds, r.Name)
		counter(descRcvDead, float64(r.DeadLetters), r.Name)
		gauge(descRcvFailing, bit(r.LastError != ""), r.Name)
	}
}
