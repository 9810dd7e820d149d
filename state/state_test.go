package state

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, path string, opt Options) *DB {
	t.Helper()
	db, err := Open(path, opt)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newFile creates a state file with some log entries and closes it.
func newFile(t *testing.T, entries int) (path, installation string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "state.db")
	db, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *Tx) error {
		for i := range entries {
			if err := tx.Put(Log, U64(uint64(i+1)), bytes.Repeat([]byte{'x'}, 200)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	installation = db.Installation()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path, installation
}

// boltEdit changes a file with plain bbolt, as another program (or an
// older or newer connector) would.
func boltEdit(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenInitialisesEmptyFile: an agent killed between bbolt creating the
// file and its first commit leaves an empty file (zero bytes, or bbolt's
// meta pages only); the next run must initialise it, not refuse it.
func TestOpenInitialisesEmptyFile(t *testing.T) {
	for name, create := range map[string]func(string){
		"zero bytes": func(path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"bbolt meta only": func(path string) { boltEdit(t, path, func(*bolt.Tx) error { return nil }) },
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			create(path)
			db := open(t, path, Options{})
			if _, err := uuid.Parse(db.Installation()); err != nil {
				t.Fatalf("installation %q: %v", db.Installation(), err)
			}
		})
	}
}

func TestOpenCreatesMeta(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "state.db")
	db := open(t, path, Options{})
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("state file not created: %v", err)
	}
	if db.Path() != path {
		t.Errorf("Path = %q, want %q", db.Path(), path)
	}
	id := db.Installation()
	if u, err := uuid.Parse(id); err != nil || u.Version() != 4 {
		t.Errorf("installation %q is not a random UUID: %v", id, err)
	}
	err := db.View(func(tx *Tx) error {
		if got := string(tx.Get(Meta, []byte(metaFormat))); got != fmt.Sprint(FormatVersion) {
			t.Errorf("meta format = %q, want %d", got, FormatVersion)
		}
		if got := string(tx.Get(Meta, []byte(metaInstallation))); got != id {
			t.Errorf("meta installation = %q, want %q", got, id)
		}
		if _, err := time.Parse(time.RFC3339, string(tx.Get(Meta, []byte(metaCreated)))); err != nil {
			t.Errorf("meta created: %v", err)
		}
		for _, b := range allBuckets {
			tx.Count(b) // panics if the bucket is missing
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if db.Size() <= 0 {
		t.Errorf("Size = %d", db.Size())
	}
	if err := db.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func TestReopenKeepsInstallation(t *testing.T) {
	path, id := newFile(t, 3000)
	for _, opt := range []Options{{}, {ReadOnly: true}} {
		db, err := Open(path, opt)
		if err != nil {
			t.Fatalf("reopen %+v: %v", opt, err)
		}
		if db.Installation() != id {
			t.Errorf("reopen %+v: installation %q, want %q", opt, db.Installation(), id)
		}
		var n int
		_ = db.View(func(tx *Tx) error { n = tx.Count(Log); return nil })
		if n != 3000 {
			t.Errorf("reopen %+v: %d log entries, want 3000", opt, n)
		}
		db.Close()
	}
}

// A file keeps the page size it was created with: files from releases
// that wrote 4 KiB pages open and grow as they are.
func TestPageSizeKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	for i, opt := range []Options{{PageSize: 4096, NoSync: true}, {NoSync: true}} {
		db, err := Open(path, opt)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *Tx) error {
			for n := range 3000 {
				if err := tx.Put(Log, U64(uint64(i*3000+n+1)), bytes.Repeat([]byte("e"), 700)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var n int
		_ = db.View(func(tx *Tx) error { n = tx.Count(Log); return nil })
		if n != (i+1)*3000 {
			t.Errorf("open %d: %d log entries, want %d", i, n, (i+1)*3000)
		}
		if ps := db.bolt.Info().PageSize; ps != 4096 {
			t.Errorf("open %d: page size %d, want the file's 4096", i, ps)
		}
		db.Close()
	}
	db, err := Open(filepath.Join(t.TempDir(), "new.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if ps := db.bolt.Info().PageSize; ps != DefaultPageSize {
		t.Errorf("new file: page size %d, want %d", ps, DefaultPageSize)
	}
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	path, _ := newFile(t, 1)
	db := open(t, path, Options{ReadOnly: true})
	if err := db.Update(func(tx *Tx) error { return tx.Put(Log, U64(9), []byte("x")) }); err == nil {
		t.Fatal("Update on a read-only state succeeded")
	}
}

func TestOpenRefuses(t *testing.T) {
	type check struct {
		is   error
		want []string // substrings of the message
	}
	corrupt := check{ErrCorrupt, []string{"restore it from a backup"}}
	tests := []struct {
		name string
		// setup returns the path to open.
		setup func(t *testing.T) string
		opt   Options
		want  check
	}{
		{
			name: "newer format",
			setup: func(t *testing.T) string {
				path, _ := newFile(t, 1)
				boltEdit(t, path, func(tx *bolt.Tx) error {
					return tx.Bucket([]byte(Meta)).Put([]byte(metaFormat), []byte(fmt.Sprint(FormatVersion+1)))
				})
				return path
			},
			want: check{ErrNewerFormat, []string{"upgrade connector", fmt.Sprintf("format %d", FormatVersion+1)}},
		},
		{
			name: "newer format read-only",
			setup: func(t *testing.T) string {
				path, _ := newFile(t, 1)
				boltEdit(t, path, func(tx *bolt.Tx) error {
					return tx.Bucket([]byte(Meta)).Put([]byte(metaFormat), []byte(fmt.Sprint(FormatVersion+1)))
				})
				return path
			},
			opt:  Options{ReadOnly: true},
			want: check{ErrNewerFormat, []string{"upgrade"}},
		},
		{
			name: "bad format version",
			setup: func(t *testing.T) string {
				path, _ := newFile(t, 1)
				boltEdit(t, path, func(tx *bolt.Tx) error {
					return tx.Bucket([]byte(Meta)).Put([]byte(metaFormat), []byte("one"))
				})
				return path
			},
			want: check{ErrCorrupt, []string{`bad format version "one"`}},
		},
		{
			name: "bad installation id",
			setup: func(t *testing.T) string {
				path, _ := newFile(t, 1)
				boltEdit(t, path, func(tx *bolt.Tx) error {
					return tx.Bucket([]byte(Meta)).Put([]byte(metaInstallation), []byte("not-a-uuid"))
				})
				return path
			},
			want: check{ErrCorrupt, []string{"installation id"}},
		},
		{
			name: "random bytes",
			setup: func(t *testing.T) string {
				path := filepath.Join(t.TempDir(), "state.db")
				b := make([]byte, 64<<10)
				rand.Read(b)
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
				return path
			},
			want: corrupt,
		},
		{
			name: "random bytes read-only",
			setup: func(t *testing.T) string {
				path := filepath.Join(t.TempDir(), "state.db")
				b := make([]byte, 64<<10)
				rand.Read(b)
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
				return path
			},
			opt:  Options{ReadOnly: true},
			want: corrupt,
		},
		{
			name: "text file",
			setup: func(t *testing.T) string {
				path := filepath.Join(t.TempDir(), "state.db")
				if err := os.WriteFile(path, []byte("state: /var/lib/connector\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				return path
			},
			want: corrupt,
		},
		{
			// Smaller than two of the file's pages: bbolt alone would say
			// only "file size too small".
			name: "garbage of two 4 KiB pages",
			setup: func(t *testing.T) string {
				path := filepath.Join(t.TempDir(), "state.db")
				if err := os.WriteFile(path, bytes.Repeat([]byte("garbage!"), 1024), 0o600); err != nil {
					t.Fatal(err)
				}
				return path
			},
			want: corrupt,
		},
		// Truncations at several points: inside the first meta page,
		// between the meta pages, and after both (where bbolt itself
		// would fault reading the missing pages).
		{name: "truncated to 100 bytes", setup: truncated(100), want: corrupt},
		{name: "truncated to one page", setup: truncated(DefaultPageSize), want: corrupt},
		{name: "truncated inside the second meta page", setup: truncated(DefaultPageSize + 1000), want: corrupt},
		{name: "truncated after the meta pages", setup: truncated(2 * DefaultPageSize), want: corrupt},
		{name: "truncated after a few pages", setup: truncated(5 * DefaultPageSize), want: corrupt},
		{name: "truncated to half", setup: truncated(-2), want: corrupt},
		{name: "truncated read-only", setup: truncated(3 * DefaultPageSize), opt: Options{ReadOnly: true}, want: corrupt},
		{
			name: "another program's bbolt file",
			setup: func(t *testing.T) string {
				path := filepath.Join(t.TempDir(), "other.db")
				boltEdit(t, path, func(tx *bolt.Tx) error {
					b, err := tx.CreateBucket([]byte("widgets"))
					if err != nil {
						return err
					}
					return b.Put([]byte("w1"), []byte("blue"))
				})
				return path
			},
			want: check{ErrCorrupt, []string{"another program's bbolt file"}},
		},
		{
			name: "another program's bbolt file read-only",
			setup: func(t *testing.T) string {
				path := filepath.Join(t.TempDir(), "other.db")
				boltEdit(t, path, func(tx *bolt.Tx) error {
					_, err := tx.CreateBucket([]byte("widgets"))
					return err
				})
				return path
			},
			opt:  Options{ReadOnly: true},
			want: check{ErrCorrupt, []string{"another program's bbolt file"}},
		},
		{
			name:  "read-only, missing",
			setup: func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope.db") },
			opt:   Options{ReadOnly: true},
			want:  check{ErrNotFound, []string{"nope.db", "connector run"}},
		},
		{
			// Killed between bbolt creating the file and the first commit:
			// status must not call that damage.
			name: "read-only, created but never initialised",
			setup: func(t *testing.T) string {
				path := filepath.Join(t.TempDir(), "state.db")
				boltEdit(t, path, func(*bolt.Tx) error { return nil })
				return path
			},
			opt:  Options{ReadOnly: true},
			want: check{ErrNotFound, []string{"exists but is empty", "connector run"}},
		},
		{
			name: "read-only, zero bytes",
			setup: func(t *testing.T) string {
				path := filepath.Join(t.TempDir(), "state.db")
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return path
			},
			opt:  Options{ReadOnly: true},
			want: check{ErrNotFound, []string{"exists but is empty"}},
		},
		{
			name:  "unwritable directory",
			setup: unwritableDir,
			want:  check{ErrUnwritable, []string{"writable"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.setup(t)
			tt.opt.LockTimeout = 100 * time.Millisecond
			db, err := Open(path, tt.opt)
			if err == nil {
				db.Close()
				t.Fatalf("Open succeeded, want %v", tt.want.is)
			}
			if !errors.Is(err, tt.want.is) {
				t.Fatalf("error %q is not %v", err, tt.want.is)
			}
			for _, s := range tt.want.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// truncated returns a setup that writes a state file of a few hundred KB
// and cuts it to size bytes (negative: to 1/-size of its length).
func truncated(size int64) func(t *testing.T) string {
	return func(t *testing.T) string {
		path, _ := newFile(t, 2000)
		size := size
		if size < 0 {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			// Cut inside the written pages, not in bbolt's preallocation.
			size = min(fi.Size(), 512<<10) / -size
		}
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		return path
	}
}

// unwritableDir returns a state path whose directory cannot be created.
// chmod does not stop root, so as root the parent is a regular file.
func unwritableDir(t *testing.T) string {
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		f := filepath.Join(dir, "file")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(f, "sub", "state.db")
	}
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(ro, 0o700) })
	return filepath.Join(ro, "sub", "state.db")
}

func TestOpenLocked(t *testing.T) {
	path, _ := newFile(t, 1)
	first := open(t, path, Options{})
	_ = first
	for _, opt := range []Options{
		{LockTimeout: 100 * time.Millisecond},
		{LockTimeout: 100 * time.Millisecond, ReadOnly: true},
	} {
		start := time.Now()
		db, err := Open(path, opt)
		if err == nil {
			db.Close()
			t.Fatalf("second Open %+v of a locked file succeeded", opt)
		}
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open %+v: %v, want ErrLocked", opt, err)
		}
		if !strings.Contains(err.Error(), "connector run") || !strings.Contains(err.Error(), path) {
			t.Errorf("error %q should name the file and `connector run`", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("LockTimeout 100ms took %v", d)
		}
	}
	// Once the holder closes, the file opens again.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, path, Options{LockTimeout: 100 * time.Millisecond})
}

func TestReadersShareTheLock(t *testing.T) {
	path, _ := newFile(t, 1)
	open(t, path, Options{ReadOnly: true})
	open(t, path, Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
}

// An empty bbolt file (e.g. a crash right after bbolt created it) is new,
// not foreign: Open initialises it.
func TestOpenEmptyBoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	boltEdit(t, path, func(*bolt.Tx) error { return nil })
	db := open(t, path, Options{})
	if _, err := uuid.Parse(db.Installation()); err != nil {
		t.Fatalf("installation %q: %v", db.Installation(), err)
	}
}

func TestUpdateAtomic(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true})
	if err := db.Update(func(tx *Tx) error { return tx.Put(Images, []byte("keep"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := db.Update(func(tx *Tx) error {
		for i := range 100 {
			if err := tx.Put(Log, U64(uint64(i)), []byte("event")); err != nil {
				return err
			}
		}
		if err := tx.Put(Cursors, []byte("r"), []byte("c")); err != nil {
			return err
		}
		if err := tx.Delete(Images, []byte("keep")); err != nil {
			return err
		}
		staged, err := tx.Staging("src", true)
		if err != nil {
			return err
		}
		if err := staged.Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		// Inside the transaction the writes are visible.
		if k, _ := tx.Last(Log); ParseU64(k) != 99 || tx.Get(Images, []byte("keep")) != nil {
			t.Error("writes not visible inside their own transaction")
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want the fn's error", err)
	}
	err = db.View(func(tx *Tx) error {
		if n := tx.Count(Log); n != 0 {
			t.Errorf("log has %d entries after a failed Update", n)
		}
		if v := tx.Get(Cursors, []byte("r")); v != nil {
			t.Errorf("cursor %q written by a failed Update", v)
		}
		if v := tx.Get(Images, []byte("keep")); string(v) != "1" {
			t.Errorf("delete of a failed Update took effect: %q", v)
		}
		if s, _ := tx.Staging("src", false); s != nil {
			t.Error("staging created by a failed Update")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestScan(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true})
	keys := [][]byte{
		Key("a", "1"), Key("a", "2"), Key("a", "3"),
		[]byte("ab"), Key("b", "1"), []byte("c"),
	}
	err := db.Update(func(tx *Tx) error {
		for _, k := range keys {
			if err := tx.Put(Images, k, append([]byte("v:"), k...)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	tests := []struct {
		name         string
		prefix, from []byte // from nil: Scan
		stopAfter    int    // return ErrStop after this many keys (0: never)
		failAfter    int    // return boom after this many keys
		want         [][]byte
		wantErr      error
	}{
		{name: "all", want: keys},
		{name: "prefix", prefix: Key("a", ""), want: keys[:3]},
		{name: "prefix without separator", prefix: []byte("a"), want: keys[:4]},
		{name: "no match", prefix: []byte("zz")},
		{name: "from inside", prefix: Key("a", ""), from: Key("a", "2"), want: keys[1:3]},
		{name: "from between keys", prefix: Key("a", ""), from: Key("a", "15"), want: keys[1:3]},
		{name: "from after prefix range", prefix: Key("a", ""), from: Key("a", "4")},
		{name: "from before prefix", prefix: Key("b", ""), from: []byte("a"), want: keys[4:5]},
		{name: "from with nil prefix", from: []byte("ab"), want: keys[3:]},
		{name: "stop", prefix: Key("a", ""), stopAfter: 2, want: keys[:2]},
		{name: "error", prefix: nil, failAfter: 1, want: keys[:1], wantErr: boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got [][]byte
			fn := func(k, v []byte) error {
				if !bytes.Equal(v, append([]byte("v:"), k...)) {
					t.Errorf("value of %q is %q", k, v)
				}
				got = append(got, bytes.Clone(k))
				if len(got) == tt.stopAfter {
					return fmt.Errorf("enough: %w", ErrStop)
				}
				if len(got) == tt.failAfter {
					return boom
				}
				return nil
			}
			var err error
			_ = db.View(func(tx *Tx) error {
				if tt.from == nil {
					err = tx.Scan(Images, tt.prefix, fn)
				} else {
					err = tx.ScanFrom(Images, tt.prefix, tt.from, fn)
				}
				return nil
			})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !slices.EqualFunc(got, tt.want, bytes.Equal) {
				t.Errorf("keys = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLastAndCount(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true})
	_ = db.View(func(tx *Tx) error {
		if k, v := tx.Last(Log); k != nil || v != nil {
			t.Errorf("Last of an empty bucket = %q, %q", k, v)
		}
		return nil
	})
	err := db.Update(func(tx *Tx) error {
		// Written out of order: Last is by key, not by insertion.
		for _, n := range []uint64{5, 300, 2, 256, 1} {
			if err := tx.Put(Log, U64(n), fmt.Appendf(nil, "e%d", n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *Tx) error {
		k, v := tx.Last(Log)
		if ParseU64(k) != 300 || string(v) != "e300" {
			t.Errorf("Last = %d, %q, want 300, e300", ParseU64(k), v)
		}
		if n := tx.Count(Log); n != 5 {
			t.Errorf("Count = %d, want 5", n)
		}
		return nil
	})
}

func TestStaging(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true})
	err := db.Update(func(tx *Tx) error {
		if s, err := tx.Staging("hr", false); s != nil || err != nil {
			t.Errorf("Staging(create=false) of a missing stage = %v, %v", s, err)
		}
		s, err := tx.Staging("hr", true)
		if err != nil || s == nil {
			t.Fatalf("Staging(create=true) = %v, %v", s, err)
		}
		for _, k := range []string{"o\x00b", "o\x00a", "m\x00x", "o\x00c"} {
			if err := s.Put([]byte(k), []byte(k)); err != nil {
				return err
			}
		}
		if err := s.Delete([]byte("o\x00c")); err != nil {
			return err
		}
		// Another source's stage is a separate key space.
		other, err := tx.Staging("ldap", true)
		if err != nil {
			return err
		}
		if other.Get([]byte("o\x00a")) != nil {
			t.Error("stages of two sources share keys")
		}
		return other.Put([]byte("o\x00z"), []byte("z"))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *Tx) error {
		s, err := tx.Staging("hr", false)
		if err != nil || s == nil {
			t.Fatalf("committed stage not found: %v", err)
		}
		if got := string(s.Get([]byte("o\x00a"))); got != "o\x00a" {
			t.Errorf("Get = %q", got)
		}
		var got []string
		if err := s.Scan([]byte("o"), []byte("o\x00b"), func(k, _ []byte) error {
			got = append(got, string(k))
			return nil
		}); err != nil {
			return err
		}
		if want := []string{"o\x00b"}; !slices.Equal(got, want) {
			t.Errorf("staged Scan = %q, want %q", got, want)
		}
		if err := tx.DropStaging("hr"); err != nil {
			return err
		}
		if s, _ := tx.Staging("hr", false); s != nil {
			t.Error("stage still there after DropStaging")
		}
		// Dropping what is not there is fine.
		if err := tx.DropStaging("hr"); err != nil {
			t.Errorf("second DropStaging: %v", err)
		}
		if err := tx.DropStaging("never"); err != nil {
			t.Errorf("DropStaging of an unknown source: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *Tx) error {
		s, _ := tx.Staging("ldap", false)
		if s == nil || string(s.Get([]byte("o\x00z"))) != "z" {
			t.Error("dropping one source's stage touched another's")
		}
		return nil
	})
}

func TestU64(t *testing.T) {
	nums := []uint64{0, 1, 2, 255, 256, 257, 65535, 65536, 1 << 32, 1<<63 + 5, ^uint64(0)}
	for i, n := range nums {
		b := U64(n)
		if len(b) != 8 {
			t.Fatalf("U64(%d) has %d bytes", n, len(b))
		}
		if got := ParseU64(b); got != n {
			t.Errorf("ParseU64(U64(%d)) = %d", n, got)
		}
		if i > 0 && bytes.Compare(U64(nums[i-1]), b) >= 0 {
			t.Errorf("U64(%d) does not sort before U64(%d)", nums[i-1], n)
		}
	}
	for _, b := range [][]byte{nil, {1}, make([]byte, 9)} {
		if got := ParseU64(b); got != 0 {
			t.Errorf("ParseU64(%v) = %d, want 0", b, got)
		}
	}
}

func TestKey(t *testing.T) {
	tests := []struct {
		parts []string
		want  string
	}{
		{nil, ""},
		{[]string{"a"}, "a"},
		{[]string{"user", "42"}, "user\x0042"},
		{[]string{"user", ""}, "user\x00"},
		{[]string{"", ""}, "\x00"},
		{[]string{"hr", "users", "k1"}, "hr\x00users\x00k1"},
	}
	for _, tt := range tests {
		if got := string(Key(tt.parts...)); got != tt.want {
			t.Errorf("Key(%q) = %q, want %q", tt.parts, got, tt.want)
		}
	}
	// The separator keeps one type's ids from running into a longer
	// type name's prefix.
	if bytes.HasPrefix(Key("userx", "1"), Key("user", "")) {
		t.Error("Key(userx,1) has the prefix of type user")
	}
}

// ReleaseMemory drops mapped pages and the data stays readable.
func TestReleaseMemory(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "s.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	val := bytes.Repeat([]byte("x"), 1000)
	if err := db.Update(func(tx *Tx) error {
		for i := range 5000 {
			if err := tx.Put(Log, U64(uint64(i+1)), val); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := db.ReleaseMemory(); err != nil {
			t.Fatal(err)
		}
		n := 0
		if err := db.View(func(tx *Tx) error {
			return tx.Scan(Log, nil, func(_, v []byte) error {
				if !bytes.Equal(v, val) {
					t.Fatal("value changed after ReleaseMemory")
				}
				n++
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		if n != 5000 {
			t.Fatalf("read %d values after ReleaseMemory", n)
		}
	}
}

// A file of an older format that this code still reads is raised to the
// current format when opened for writing (so older connectors refuse it
// afterwards), and left as it is when opened read-only.
func TestOlderFormatRaised(t *testing.T) {
	path, _ := newFile(t, 3)
	boltEdit(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(Meta)).Put([]byte(metaFormat), []byte("1"))
	})
	format := func() string {
		t.Helper()
		var f string
		b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		_ = b.View(func(tx *bolt.Tx) error { f = string(tx.Bucket([]byte(Meta)).Get([]byte(metaFormat))); return nil })
		return f
	}
	db, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if f := format(); f != "1" {
		t.Fatalf("read-only open changed the format to %s", f)
	}
	if db, err = Open(path, Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	n := 0
	_ = db.View(func(tx *Tx) error { n = tx.Count(Log); return nil })
	db.Close()
	if n != 3 {
		t.Errorf("%d log entries after the upgrade, want 3", n)
	}
	if f := format(); f != fmt.Sprint(FormatVersion) {
		t.Fatalf("format after a writable open = %s, want %d", f, FormatVersion)
	}
}
