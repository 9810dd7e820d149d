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
func (db *DB) ReleaseMemory() error { return db.release(0, 1) }

// release drops the mapped pages of slice part of parts of the file.
func (db *DB) release(part, parts int64) error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		data, size := db.bolt.Info().Data, tx.Size()
		if data == 0 || size == 0 {
			return nil
		}
		page := int64(os.Getpagesize())
		from := size * part / parts / page * page
		to := min(size, size*(part+1)/parts/page*page)
		if part == parts-1 {
			to = size
		}
		if to <= from {
			return nil
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, data+uintptr(from), uintptr(to-from), syscall.MADV_DONTNEED); errno != 0 {
			return errno
		}
		return nil
	})
}

// trimParts is how many slices of the file one TrimMemory cycle releases,
// a slice per call. Releasing the whole file at once makes the next
// transactions fault every page they use back in together: at a steady
// 5,000 changes/s that was a stall of about 100 ms (the p99 of
// commit-to-receiver latency; 10 ms in slices).
const trimParts = 8

// TrimMemory keeps the state file's mapped pages near limit bytes of the
// process's resident memory. Once the file-backed resident memory has
// grown by more than limit since the last cycle, it starts one: each call
// then releases the next slice of the file until all are released, or,
// when the work touches pages faster than that (over 1.5 times the limit),
// the rest at once. It reports whether it released anything. A check is
// one read of /proc/self/statm, cheap enough to make every few tens of
// milliseconds.
func (db *DB) TrimMemory(limit int64) (bool, error) {
	cur, err := fileResident()
	if err != nil {
		return false, err
	}
	part, over := db.trimPart.Load(), cur-db.trimFloor.Load()
	if part == 0 && over <= limit {
		return false, nil
	}
	to := part + 1
	if over > limit+limit/2 {
		to = trimParts
	}
	for ; part < to; part++ {
		if err := db.release(part, trimParts); err != nil {
			return false, err
		}
	}
	if part < trimParts {
		db.trimPart.Store(part)
		return true, nil
	}
	db.trimPart.Store(0)
	if cur, err = fileResident(); err != nil {
		return true, err
	}
	db.trimFloor.Store(cur)
	return true, nil
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
