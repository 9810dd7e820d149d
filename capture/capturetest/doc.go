// Package capturetest holds what the capture adapters' tests share: an
// in-memory engine (Sink) that checks the batches it is given, a Log that
// keeps lines for assertions, Run in the background (Start), row set
// comparison (SameRows), the connector binary built once per test process
// (Binary) and the process's peak memory for benchmarks (PeakRSS).
//
// It is a normal package so that every adapter can import it, but only
// tests (files ending in _test.go) may: production code must not.
package capturetest
