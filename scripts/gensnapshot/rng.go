package main

import "math/rand/v2"

// rng is a seeded generator. It uses only the PCG source (whose output is
// fixed by its specification), not rand.Rand's helpers, so the committed
// demo files stay reproducible across Go releases.
type rng struct{ src *rand.PCG }

func newRNG(seed uint64) *rng { return &rng{rand.NewPCG(seed, 0x9e3779b97f4a7c15)} }

func (r *rng) uint64() uint64 { return r.src.Uint64() }

// intn returns a number in [0, n); the modulo bias is irrelevant here.
func (r *rng) intn(n int) int { return int(r.src.Uint64() % uint64(n)) }

// float returns a number in [0, 1).
func (r *rng) float() float64 { return float64(r.src.Uint64()>>11) / (1 << 53) }

func pick[T any](r *rng, s []T) T { return s[r.intn(len(s))] }

// shuffle permutes s in place (Fisher–Yates).
func shuffle[T any](r *rng, s []T) {
	for i := len(s) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		s[i], s[j] = s[j], s[i]
	}
}
