//go:build !linux

package state

// ReleaseMemory is a no-op where madvise is not wired up.
func (db *DB) ReleaseMemory() error { return nil }

// TrimMemory is a no-op where madvise is not wired up.
func (db *DB) TrimMemory(limit int64) (bool, error) { return false, nil }
