//go:build !linux

package state

// ReleaseMemory is a no-op where madvise is not wired up.
func (db *DB) ReleaseMemory() error { return nil }
