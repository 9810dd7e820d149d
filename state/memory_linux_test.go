package state

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TrimMemory releases once reading a large file made the process's
// file-backed resident memory grow past the limit, and not before.
func TestTrimMemory(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "s.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	val := bytes.Repeat([]byte("x"), 4000)
	if err := db.Update(func(tx *Tx) error {
		for i := range 16000 { // 64 MB
			if err := tx.Put(Log, U64(uint64(i+1)), val); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	trimCycle := func(limit int64) bool {
		t.Helper()
		released := false
		for range trimParts {
			r, err := db.TrimMemory(limit)
			if err != nil {
				t.Fatal(err)
			}
			released = released || r
		}
		if db.trimPart.Load() != 0 {
			t.Fatalf("a cycle did not end after %d calls", trimParts)
		}
		return released
	}
	trimCycle(0) // a floor to measure from
	if released, err := db.TrimMemory(8 << 20); err != nil || released {
		t.Fatalf("nothing was read, yet TrimMemory released (%v, %v)", released, err)
	}
	read := func() {
		if err := db.View(func(tx *Tx) error {
			return tx.Scan(Log, nil, func(_, v []byte) error {
				if !bytes.Equal(v, val) {
					t.Fatal("value changed")
				}
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
	}
	read()
	before, err := fileResident()
	if err != nil {
		t.Fatal(err)
	}
	if !trimCycle(8 << 20) {
		t.Fatal("64 MB read, TrimMemory(8 MB) released nothing")
	}
	after, _ := fileResident()
	if before-after < 32<<20 {
		t.Fatalf("file-backed resident memory %d MB before, %d MB after the release", before>>20, after>>20)
	}
	read() // still readable

	// A growth between the limit and 1.5 times it is released a slice per
	// call, so that the pages in use fault back in a slice at a time.
	read()
	before, _ = fileResident()
	if released, err := db.TrimMemory(48 << 20); err != nil || !released || db.trimPart.Load() != 1 {
		t.Fatalf("64 MB read, TrimMemory(48 MB) = %v, %v, next slice %d: want the first of %d slices released",
			released, err, db.trimPart.Load(), trimParts)
	}
	for i := 1; i < trimParts; i++ {
		if released, err := db.TrimMemory(48 << 20); err != nil || !released {
			t.Fatalf("slice %d: %v, %v", i, released, err)
		}
	}
	after, _ = fileResident()
	if db.trimPart.Load() != 0 || before-after < 32<<20 {
		t.Fatalf("after a sliced cycle: next slice %d, resident %d MB before, %d MB after", db.trimPart.Load(), before>>20, after>>20)
	}
	read()
}
