package file

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// snapshot is one full export: a directory of record files, or one file.
type snapshot struct {
	name  string // base name: "2026-01-05", "org.jsonl"
	isDir bool
	files []snapFile
	at    time.Time // Change.ChangedAt
}

// snapFile is one file of a snapshot as found on disk.
type snapFile struct {
	spec    *fileSpec
	path    string
	display string // in messages and positions: "2026-01-05/users.jsonl"
	format  string
	gz      bool
	stamp   stamp
}

// stamp is what a cheap stat tells about a file's content.
type stamp struct {
	Name  string `json:"name"`
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime"` // Unix nanoseconds
}

// entry is a candidate snapshot before its files are looked at.
type entry struct {
	name, path string
}

// errNotReady says a snapshot's files were modified within the settle time.
var errNotReady = errors.New("still being written")

// changingError says a snapshot's files changed while they were read (the
// exporter is writing them): not the content's fault, worth a retry.
type changingError struct{ err error }

func (e *changingError) Error() string { return e.err.Error() }
func (e *changingError) Unwrap() error { return e.err }

// entries lists the snapshots at the configured path in name order: the
// path itself (layout single), or its entries (layout dated). Hidden and
// in-progress names (".x", "_x", "x.tmp", "x.part") are skipped.
func (s *Source) entries() ([]entry, error) {
	if !s.cfg.dated {
		return []entry{{name: filepath.Base(filepath.Clean(s.cfg.path)), path: s.cfg.path}}, nil
	}
	des, err := os.ReadDir(s.cfg.path)
	if err != nil {
		return nil, s.pathError(err)
	}
	var out []entry
	for _, de := range des { // ReadDir sorts by name
		name := de.Name()
		if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
			strings.HasSuffix(name, ".tmp") || strings.HasSuffix(name, ".part") {
			continue
		}
		p := filepath.Join(s.cfg.path, name)
		fi, err := os.Stat(p) // follows symbolic links
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the listing, or a dangling link
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if fi.IsDir() != s.cfg.dirSnapshots {
			continue // files beside snapshot directories, or directories beside snapshot files
		}
		if !s.cfg.dirSnapshots && s.cfg.files[0].format == "" {
			if f, _ := formatOf(name); f == "" {
				s.warnOnce(name, "file source: skipping a file whose format is unknown; name it .jsonl, .csv, .tsv or .ldif, or set format",
					"file", p)
				continue
			}
		}
		out = append(out, entry{name: name, path: p})
	}
	return out, nil
}

func (s *Source) pathError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist; create it or fix path", s.cfg.path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s is not readable by this user; grant read access or fix path", s.cfg.path)
	}
	return err
}

// open looks at an entry's files: each configured file must exist.
func (s *Source) open(e entry) (*snapshot, error) {
	fi, err := os.Stat(e.path)
	if err != nil {
		if !s.cfg.dated {
			return nil, s.pathError(err)
		}
		return nil, err
	}
	snap := &snapshot{name: e.name, isDir: fi.IsDir()}
	switch {
	case s.cfg.dirSnapshots && !snap.isDir:
		return nil, fmt.Errorf("%s is a file, but records name files in a snapshot directory; point path at the directory, or drop file from the records", e.path)
	case !s.cfg.dirSnapshots && snap.isDir:
		return nil, fmt.Errorf("%s is a directory, but no record names its file; add file: to each record, or point path at the snapshot file", e.path)
	}
	for _, spec := range s.cfg.files {
		f := snapFile{spec: spec, path: e.path, display: e.name, format: spec.format}
		var gz bool
		if snap.isDir {
			f.path = filepath.Join(e.path, spec.rel)
			f.display = e.name + "/" + filepath.ToSlash(spec.rel)
			_, gz = formatOf(spec.rel)
		} else {
			var format string
			format, gz = formatOf(e.name)
			if f.format == "" {
				f.format = format
			}
			if f.format == "" {
				return nil, fmt.Errorf("%s: cannot tell the format from the name; name it .jsonl, .csv, .tsv or .ldif, or set format on the records", e.path)
			}
		}
		f.gz = gz
		fi, err := os.Stat(f.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%s is missing from snapshot %s; the snapshot was not applied — re-export it complete", spec.rel, e.path)
		case err != nil:
			return nil, err
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("%s is not a regular file", f.path)
		}
		f.stamp = stamp{Name: filepath.ToSlash(spec.rel), Size: fi.Size(), MTime: fi.ModTime().UnixNano()}
		if !snap.isDir {
			f.stamp.Name = e.name
		}
		snap.files = append(snap.files, f)
	}
	newest := time.Time{}
	for _, f := range snap.files {
		if t := time.Unix(0, f.stamp.MTime); t.After(newest) {
			newest = t
		}
	}
	switch s.cfg.changedAt {
	case "mtime":
		snap.at = newest.UTC().Truncate(time.Microsecond)
	case "name":
		t, ok := timeFromName(e.name, s.cfg.loc)
		if !ok {
			return nil, fmt.Errorf("snapshot %q has no date in its name; with changed_at: name every snapshot needs one (e.g. 2026-01-05); rename it, or set changed_at: mtime", e.name)
		}
		snap.at = t.UTC().Truncate(time.Microsecond)
	}
	return snap, nil
}

func (snap *snapshot) stamps() []stamp {
	out := make([]stamp, len(snap.files))
	for i, f := range snap.files {
		out[i] = f.stamp
	}
	return out
}

// restat reports whether any file's size or modification time differs from
// when the snapshot was opened.
func (snap *snapshot) restat() bool {
	for _, f := range snap.files {
		fi, err := os.Stat(f.path)
		if err != nil || fi.Size() != f.stamp.Size || fi.ModTime().UnixNano() != f.stamp.MTime {
			return true
		}
	}
	return false
}

// The content hash is SHA-256 over each file's name, size and bytes. It is
// computed before a run (for the snapshot id) and again while the run reads
// (to detect a file that changed in between).

// hashFile starts file f in h; f's bytes follow.
func hashFile(h hash.Hash, f snapFile) {
	io.WriteString(h, f.stamp.Name)
	var b [9]byte
	binary.BigEndian.PutUint64(b[1:], uint64(f.stamp.Size))
	h.Write(b[:])
}

// hashSnapshot reads the snapshot's files once to compute their hash.
func hashSnapshot(snap *snapshot) (string, error) {
	h := sha256.New()
	for _, f := range snap.files {
		hashFile(h, f)
		fh, err := os.Open(f.path)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", f.display, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Dates and times in names: 2026-01-05, 2026-01-05T10:00:00Z,
// 2026-01-05T10-00-00+01:00, 2026-01-05_1000, 20260105, 20260105T100000Z.
var (
	dashedTime  = regexp.MustCompile(`(?:^|[^0-9])(\d{4})-(\d{2})-(\d{2})(?:[T_ ](\d{2})[:\-.]?(\d{2})(?:[:\-.]?(\d{2})(?:[.,](\d{1,9}))?)?)?(Z|[+-]\d{2}:?\d{2})?(?:[^0-9]|$)`)
	compactTime = regexp.MustCompile(`(?:^|[^0-9])(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})?)?()(Z|[+-]\d{4})?(?:[^0-9]|$)`)
)

// timeFromName finds the first date or date-time in name; a time without
// offset is in loc.
func timeFromName(name string, loc *time.Location) (time.Time, bool) {
	for _, re := range []*regexp.Regexp{dashedTime, compactTime} {
		m := re.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
		nsec := 0
		if frac := m[7]; frac != "" {
			nsec, _ = strconv.Atoi((frac + "000000000")[:9])
		}
		zone := loc
		switch off := strings.ReplaceAll(m[8], ":", ""); {
		case off == "Z":
			zone = time.UTC
		case off != "":
			h, _ := strconv.Atoi(off[1:3])
			mi, _ := strconv.Atoi(off[3:5])
			secs := h*3600 + mi*60
			if off[0] == '-' {
				secs = -secs
			}
			zone = time.FixedZone(off, secs)
		}
		t := time.Date(n(1), time.Month(n(2)), n(3), n(4), n(5), n(6), nsec, zone)
		// time.Date normalises 2026-02-30 to March; such a name is no date.
		if t.Year() != n(1) || int(t.Month()) != n(2) || t.Day() != n(3) || n(4) > 23 || n(5) > 59 || n(6) > 59 {
			continue
		}
		return t, true
	}
	return time.Time{}, false
}

// sameStamps compares a snapshot's files with a checkpoint's.
func sameStamps(a, b []stamp) bool { return slices.Equal(a, b) }
