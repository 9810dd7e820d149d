// Package state is the agent's persistence: one bbolt file holding the
// current images, the bitemporal versions, the event log, receiver cursors,
// source checkpoints, dead letters, staged snapshots and metadata.
//
// The package stores bytes; history owns what they mean. Its invariants:
//   - everything one batch changes is written in one bbolt write transaction
//     (Update), so a crash leaves all of it or none;
//   - the log is keyed by a sequence number (big-endian uint64), gap-free as
//     written; compaction (history.CompactLog) removes only events every
//     receiver has, and never the last;
//   - a file from a newer format, a corrupt file or a file locked by another
//     process is refused with a message that says what to do.
package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FormatVersion is the layout version this code writes. Bump it when a
// bucket's encoding changes, with a migration unless this code still reads
// the older records (then opening for writing just raises the number, so
// that older connectors refuse the file instead of misreading it).
//
//	1: the first layout.
//	2: an image record may hold its object's newest version (history).
const FormatVersion = 2

// Bucket names a top-level bucket.
type Bucket string

// The buckets. Keys are documented where history writes them.
const (
	Meta        Bucket = "meta"
	Images      Bucket = "images"      // type \x00 id → current image
	Rows        Bucket = "rows"        // source \x00 record \x00 key → raw row
	Versions    Bucket = "versions"    // type \x00 id \x00 be64(version) → version
	Log         Bucket = "log"         // be64(sequence) → event
	Cursors     Bucket = "cursors"     // receiver → cursor
	Checkpoints Bucket = "checkpoints" // source → checkpoint
	DeadLetters Bucket = "deadletters" // receiver \x00 be64(sequence) → reason
	Quarantine  Bucket = "quarantine"  // source \x00 position → change that failed to map
	Stage       Bucket = "stage"       // source → nested bucket of a staged snapshot
)

var allBuckets = []Bucket{Meta, Images, Rows, Versions, Log, Cursors, Checkpoints, DeadLetters, Quarantine, Stage}

// Meta keys.
const (
	metaFormat       = "format"
	metaInstallation = "installation"
	metaCreated      = "created"
)

// Errors callers may test for.
var (
	ErrLocked       = errors.New("state file is locked by another process")
	ErrNewerFormat  = errors.New("state file was written by a newer connector")
	ErrCorrupt      = errors.New("state file is corrupt or not a connector state")
	ErrNotFound     = errors.New("no state yet")
	ErrUnwritable   = errors.New("state file cannot be created")
	errFormatAbsent = errors.New("no format version")
)

// Options tune Open.
type Options struct {
	// ReadOnly opens the file with a shared lock and refuses writes.
	ReadOnly bool
	// LockTimeout is how long to wait for another process's lock; default 1s.
	LockTimeout time.Duration
	// NoSync skips fsync on commit. Only for tests and benchmarks that
	// measure something else: a crash may then lose committed batches.
	NoSync bool
	// PageSize is the page size of a new state file, default
	// DefaultPageSize; a file keeps the page size it was created with.
	PageSize int
}

// DefaultPageSize is the page size of new state files. Larger pages than
// the usual 4 KiB mean fewer pages to split, write and map per commit:
// the log appends about 1.5 KB per event. 16 KiB gave 8% more throughput
// from PostgreSQL, 12% on a first load and 40% on a 1% drift of 300,000
// objects, and a 5% smaller file; 64 KiB was slower again.
const DefaultPageSize = 16 << 10

// DB is an open state file.
type DB struct {
	bolt         *bolt.DB
	path         string
	installation string
	trimFloor    atomic.Int64 // file-backed resident bytes after the last TrimMemory release
}

// Open opens (or, unless read-only, creates) the state file at path.
func Open(path string, opt Options) (*DB, error) {
	if opt.LockTimeout == 0 {
		opt.LockTimeout = time.Second
	}
	if opt.PageSize == 0 {
		opt.PageSize = DefaultPageSize
	}
	if opt.ReadOnly {
		fi, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s (run `connector run` once to create it, or check `state:` in the config)", ErrNotFound, path)
		}
		if err == nil && fi.Size() == 0 {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, uninitialised(path))
		}
	} else if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("%w: %s: %v (make the directory writable by the service user, or set `state:` to a writable path)", ErrUnwritable, path, err)
		}
	}
	if err := checkLength(path); err != nil {
		return nil, fmt.Errorf("%w: %s: %v (restore it from a backup, or move it away to start afresh: sources are then re-read and receivers get a new epoch)", ErrCorrupt, path, err)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:  opt.LockTimeout,
		ReadOnly: opt.ReadOnly,
		NoSync:   opt.NoSync,
		// The freelist is persisted (bbolt's default): without it, every
		// open walks all pages of the file to rebuild it, which is slow for
		// a multi-GB state and maps the whole file into memory.
		FreelistType: bolt.FreelistMapType,
		// Address space, not memory: growing the mapping later means a
		// remap, which waits for every reader and stalls the commit in
		// hand (200–400 ms stalls in the first seconds of a stream).
		InitialMmapSize: 1 << 30,
		PageSize:        opt.PageSize,
	})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("%w: %s (is `connector run` already running with this state? stop it first; `connector status` asks a running agent instead)", ErrLocked, path)
		case errors.Is(err, fs.ErrPermission):
			return nil, fmt.Errorf("%w: %s: %v (make it readable and writable by the service user)", ErrUnwritable, path, err)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch),
			errors.Is(err, berrors.ErrInvalidMapping):
			return nil, fmt.Errorf("%w: %s: %v (restore it from a backup, or move it away to start afresh: sources are then re-read and receivers get a new epoch)", ErrCorrupt, path, err)
		}
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	db := &DB{bolt: bdb, path: path}
	if err := db.init(opt.ReadOnly); err != nil {
		bdb.Close()
		return nil, err
	}
	return db, nil
}

// checkLength refuses a bbolt file shorter than its newest valid meta page
// says it is. bbolt would map it, read past its end and kill the process
// with SIGBUS instead of returning an error. Files it cannot read or whose
// meta pages are invalid are left to bolt.Open to report.
func checkLength(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	const (
		magic   = 0xED0CDAED
		version = 2
		hdr     = 16 // page header before the meta
	)
	// Meta: magic, version, pageSize, flags u32; root bucket 16 bytes;
	// freelist, pgid (high water mark), txid, checksum u64.
	read := func(off int64) (pageSize uint32, pgid, txid uint64, ok bool) {
		var b [hdr + 64]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			return 0, 0, 0, false
		}
		m := b[hdr:]
		e := binary.NativeEndian
		h := fnv.New64a()
		h.Write(m[:56])
		if e.Uint32(m[0:]) != magic || e.Uint32(m[4:]) != version || e.Uint64(m[56:]) != h.Sum64() {
			return 0, 0, 0, false
		}
		return e.Uint32(m[8:]), e.Uint64(m[40:]), e.Uint64(m[48:]), true
	}
	ps, pgid, txid, ok := read(0)
	if !ok {
		// bbolt then looks for the second meta page at each page size it
		// supports; without one, it may fail with an error that does not
		// say the file is damaged.
		for pos := int64(1 << 10); pos <= 16<<20; pos <<= 1 {
			if _, _, _, ok := read(pos); ok {
				return nil
			}
		}
		if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
			return errors.New("no valid metadata page: it is not a state file, or it was overwritten")
		}
		return nil
	}
	if ps1, pgid1, txid1, ok1 := read(int64(ps)); ok1 && ps1 == ps && txid1 > txid {
		pgid = pgid1
	}
	// Stat after reading the meta: a running writer extends the file
	// before it writes a meta, so this is never a false alarm.
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	if need := int64(pgid) * int64(ps); fi.Size() < need {
		return fmt.Errorf("truncated: %d bytes, its metadata needs %d", fi.Size(), need)
	}
	return nil
}

func (db *DB) init(readOnly bool) error {
	var format int
	check := func(tx *bolt.Tx) error {
		m := tx.Bucket([]byte(Meta))
		if m == nil {
			return errFormatAbsent
		}
		f, err := strconv.Atoi(string(m.Get([]byte(metaFormat))))
		if err != nil {
			return fmt.Errorf("%w: %s: bad format version %q (restore it from a backup or move it away)", ErrCorrupt, db.path, m.Get([]byte(metaFormat)))
		}
		if f > FormatVersion {
			return fmt.Errorf("%w: %s has format %d, this connector reads up to %d (upgrade connector, or restore the state that matches this version)", ErrNewerFormat, db.path, f, FormatVersion)
		}
		format = f
		db.installation = string(m.Get([]byte(metaInstallation)))
		if _, err := uuid.Parse(db.installation); err != nil {
			return fmt.Errorf("%w: %s: bad installation id (restore it from a backup or move it away)", ErrCorrupt, db.path)
		}
		return nil
	}
	if readOnly {
		err := db.bolt.View(func(tx *bolt.Tx) error {
			err := check(tx)
			if errors.Is(err, errFormatAbsent) && isEmpty(tx) {
				return fmt.Errorf("%w: %s", ErrNotFound, uninitialised(db.path))
			}
			return err
		})
		if errors.Is(err, errFormatAbsent) {
			return fmt.Errorf("%w: %s has no connector metadata (is it another program's bbolt file?)", ErrCorrupt, db.path)
		}
		return err
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		err := check(tx)
		if err == nil && format < FormatVersion {
			// Older records are still read; what is written from now on
			// may not be by the connector that wrote them.
			return tx.Bucket([]byte(Meta)).Put([]byte(metaFormat), []byte(strconv.Itoa(FormatVersion)))
		}
		if !errors.Is(err, errFormatAbsent) {
			return err
		}
		// A file without metadata must be new and empty, never another
		// program's database that we would start writing into.
		if !isEmpty(tx) {
			return fmt.Errorf("%w: %s has no connector metadata (is it another program's bbolt file?)", ErrCorrupt, db.path)
		}
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		m := tx.Bucket([]byte(Meta))
		db.installation = uuid.NewString()
		for k, v := range map[string]string{
			metaFormat:       strconv.Itoa(FormatVersion),
			metaInstallation: db.installation,
			metaCreated:      time.Now().UTC().Format(time.RFC3339),
		} {
			if err := m.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
}

// isEmpty reports whether the file holds no bucket at all: bbolt created it
// and nothing was committed yet.
func isEmpty(tx *bolt.Tx) bool {
	empty := true
	_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
	return empty
}

// uninitialised describes a state file that exists but was never written:
// the agent stopped (or was killed) between creating it and its first
// commit. Not damage: the next `connector run` initialises it.
func uninitialised(path string) string {
	return path + " exists but is empty (the agent stopped before its first commit; `connector run` initialises it)"
}

// Path returns the file's path.
func (db *DB) Path() string { return db.path }

// Installation returns the installation id: the UUIDv5 namespace of event
// ids, created once with the file.
func (db *DB) Installation() string { return db.installation }

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

// Size returns the file size in bytes.
func (db *DB) Size() int64 {
	var n int64
	_ = db.bolt.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// Update runs fn in one write transaction: all of it commits, or none.
func (db *DB) Update(fn func(*Tx) error) error {
	return db.bolt.Update(func(btx *bolt.Tx) error { return fn(&Tx{btx: btx}) })
}

// View runs fn in a read transaction (a consistent snapshot).
func (db *DB) View(fn func(*Tx) error) error {
	return db.bolt.View(func(btx *bolt.Tx) error { return fn(&Tx{btx: btx}) })
}

// Check verifies the file's page structure (slow on large files).
func (db *DB) Check() error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, db.path, err)
		}
		return nil
	})
}

// Tx is a state transaction.
type Tx struct{ btx *bolt.Tx }

func (t *Tx) bucket(b Bucket) *bolt.Bucket {
	bk := t.btx.Bucket([]byte(b))
	if bk == nil {
		// Every bucket is created with the file; a missing one is damage.
		panic(fmt.Sprintf("state: bucket %q missing", b))
	}
	switch b {
	case Log:
		// Sequence keys only ever append: fill pages completely instead
		// of bbolt's default half, halving the log's size on disk.
		bk.FillPercent = 1.0
	case Images, Versions:
		// Mostly inserts in random key order; bbolt's default of 0.5
		// left pages a third full.
		bk.FillPercent = 0.9
	}
	return bk
}

// Get returns the value at key, or nil. The slice is valid only during
// the transaction.
func (t *Tx) Get(b Bucket, key []byte) []byte { return t.bucket(b).Get(key) }

// Put stores value at key.
func (t *Tx) Put(b Bucket, key, value []byte) error { return t.bucket(b).Put(key, value) }

// Delete removes key.
func (t *Tx) Delete(b Bucket, key []byte) error { return t.bucket(b).Delete(key) }

// Scan calls fn for each key with the prefix, in key order, until fn
// returns an error (ErrStop ends the scan without error).
func (t *Tx) Scan(b Bucket, prefix []byte, fn func(k, v []byte) error) error {
	return scan(t.bucket(b).Cursor(), prefix, prefix, fn)
}

// ScanFrom calls fn for each key ≥ from with the prefix, in key order.
func (t *Tx) ScanFrom(b Bucket, prefix, from []byte, fn func(k, v []byte) error) error {
	return scan(t.bucket(b).Cursor(), prefix, from, fn)
}

// Last returns the last key and value of a bucket, or nils.
func (t *Tx) Last(b Bucket) ([]byte, []byte) { return t.bucket(b).Cursor().Last() }

// Count returns the number of keys in a bucket as committed before this
// transaction began: bbolt's page statistics do not see the transaction's
// own uncommitted writes.
func (t *Tx) Count(b Bucket) int { return t.bucket(b).Stats().KeyN }

// ErrStop ends a Scan early without an error.
var ErrStop = errors.New("stop scan")

func scan(c *bolt.Cursor, prefix, from []byte, fn func(k, v []byte) error) error {
	if bytes.Compare(from, prefix) < 0 {
		from = prefix // keys before the prefix cannot have it
	}
	for k, v := c.Seek(from); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

// Staging returns the staged-snapshot bucket of a source, creating it if
// create is set; nil if absent.
func (t *Tx) Staging(source string, create bool) (*Staged, error) {
	st := t.bucket(Stage)
	if b := st.Bucket([]byte(source)); b != nil {
		return &Staged{b: b}, nil
	}
	if !create {
		return nil, nil
	}
	b, err := st.CreateBucket([]byte(source))
	if err != nil {
		return nil, err
	}
	return &Staged{b: b}, nil
}

// DropStaging removes a source's staged snapshot.
func (t *Tx) DropStaging(source string) error {
	err := t.bucket(Stage).DeleteBucket([]byte(source))
	if errors.Is(err, berrors.ErrBucketNotFound) {
		return nil
	}
	return err
}

// Staged is a source's staged snapshot: its own key space.
type Staged struct{ b *bolt.Bucket }

// Get returns the value at key, or nil.
func (s *Staged) Get(key []byte) []byte { return s.b.Get(key) }

// Put stores value at key.
func (s *Staged) Put(key, value []byte) error { return s.b.Put(key, value) }

// Delete removes key.
func (s *Staged) Delete(key []byte) error { return s.b.Delete(key) }

// Scan calls fn for each key with the prefix, from key from, in order.
func (s *Staged) Scan(prefix, from []byte, fn func(k, v []byte) error) error {
	return scan(s.b.Cursor(), prefix, from, fn)
}

// U64 encodes n big-endian, so keys sort numerically.
func U64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

// ParseU64 decodes U64.
func ParseU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// Key joins parts with NUL, the separator of composite keys.
func Key(parts ...string) []byte {
	n := len(parts)
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}
