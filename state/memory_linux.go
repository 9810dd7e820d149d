package state

import (
	"bytes"
	"os"
	"strconv"
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

// TrimMemory releases the mapped pages (ReleaseMemory) once the process's
// file-backed resident memory has grown by more than limit bytes since the
// last release, and reports whether it did. The check is one read of
// /proc/self/statm, cheap enough to make often, so RSS stays near limit
// however fast the work touches pages of a large file.
func (db *DB) TrimMemory(limit int64) (bool, error) {
	cur, err := fileResident()
	if err != nil {
		return false, err
	}
	if cur-db.trimFloor.Load() <= limit {
		return false, nil
	}
	if err := db.ReleaseMemory(); err != nil {
		return false, err
	}
	if cur, err = fileResident(); err == nil {
		db.trimFloor.Store(cur)
	}
	return true, err
}

// fileResident is the process's resident file-backed (and shared) memory:
// the third field of /proc/self/statm, in bytes.
func fileResident() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return 0, syscall.EINVAL
	}
	pages, err := strconv.ParseInt(string(f[2]), 10, 64)
	return pages * int64(os.Getpagesize()), err
}
