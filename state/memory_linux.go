package state

import (
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// ReleaseMemory hands the state file's mapped pages back to the kernel.
//
// bbolt reads through a read-only shared mmap of the file; every page a
// transaction touched stays mapped and counts towards the process's RSS,
// which would then grow with the state file instead of the batch size.
// The pages are clean copies of the file, so dropping them loses nothing:
// the next read faults them in again from the page cache. It runs inside
// a read transaction, during which bbolt cannot remap the file, so the
// address range stays valid.
func (db *DB) ReleaseMemory() error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		data, size := db.bolt.Info().Data, uintptr(tx.Size())
		if data == 0 || size == 0 {
			return nil
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, data, size, syscall.MADV_DONTNEED); errno != 0 {
			return errno
		}
		return nil
	})
}
