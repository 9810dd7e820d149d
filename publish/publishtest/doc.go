// Package publishtest holds what the receivers' tests share: canonical
// test events (Event), a receiver opened through its registered factory as
// the dispatcher opens it (Open), a dispatcher-like delivery loop in the
// background (Feed), and the plumbing of the benchmarks that compare a
// receiver with a bare client (BenchImage, RawBatch, ReportRates).
//
// It is a normal package so that every receiver can import it, but only
// tests (files ending in _test.go) may: production code must not.
package publishtest
