package history

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// Images and versions are stored as small binary records whose fields
// (the mapped image, keys, raw row) are canonical JSON kept as bytes: the
// engine copies, hashes and compares those bytes and never decodes them on
// the hot path. Only readers that need values (history queries, replay,
// TOAST fill) decode them.

var errShort = errors.New("record is truncated")

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendMicros writes a time as µs since the epoch; nil as MinInt64.
func appendMicros(b []byte, t *Time) []byte {
	v := int64(math.MinInt64)
	if t != nil {
		v = t.UnixMicro()
	}
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

// reader decodes a binary record; the first error sticks.
type reader struct {
	p   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errShort
	}
	r.p = nil
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.p)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.p = r.p[n:]
	return v
}

// bytes returns the next length-prefixed bytes, aliasing the record.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if uint64(len(r.p)) < n {
		r.fail()
		return nil
	}
	s := r.p[:n:n]
	r.p = r.p[n:]
	return s
}

func (r *reader) str() string { return string(r.bytes()) }

// appendUvarints writes a count, then the numbers.
func appendUvarints(b []byte, ns []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(ns)))
	for _, n := range ns {
		b = binary.AppendUvarint(b, n)
	}
	return b
}

// uvarints reads what appendUvarints wrote; none is nil.
func (r *reader) uvarints() []uint64 {
	n := r.uvarint()
	if n == 0 {
		return nil
	}
	if n > uint64(len(r.p)) { // each number takes a byte at least
		r.fail()
		return nil
	}
	ns := make([]uint64, n)
	for i := range ns {
		ns[i] = r.uvarint()
	}
	return ns
}

func (r *reader) micros() *Time {
	if len(r.p) < 8 {
		r.fail()
		return nil
	}
	v := int64(binary.BigEndian.Uint64(r.p))
	r.p = r.p[8:]
	if v == math.MinInt64 {
		return nil
	}
	t := At(time.UnixMicro(v))
	return &t
}
