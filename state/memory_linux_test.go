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
	if _, err := db.TrimMemory(0); err != nil { // a floor to measure from
		t.Fatal(err)
	}
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
	released, err := db.TrimMemory(8 << 20)
	if err != nil || !released {
		t.Fatalf("64 MB read, TrimMemory(8 MB) released %v (%v)", released, err)
	}
	after, _ := fileResident()
	if before-after < 32<<20 {
		t.Fatalf("file-backed resident memory %d MB before, %d MB after the release", before>>20, after>>20)
	}
	read() // still readable
}
