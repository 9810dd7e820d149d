package file

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/configs"
)

// Config is a file source's configuration (docs/sources/file.md):
//
//	sources:
//	  - name: org
//	    type: file
//	    path: ./configs/demo/snapshots # the file, the snapshot directory, or (dated) the drop directory
//	    layout: dated                 # single (default) | dated
//	    records:                      # record name → where it is in a snapshot
//	      units: {file: units.csv}    # format from the extension, or format: csv|tsv|jsonl|ldif
//	      users: {file: users.jsonl}
//	    csv: {delimiter: ";", header: true}
//	    interval: 5m                  # poll interval; 0 reads once and returns
//	    changed_at: name              # name | mtime | none
//
// When no record names a file, every snapshot is one file holding all
// records (path is that file, or with layout dated each file in path is a
// snapshot); records sharing a file tell their lines apart with match.
type Config struct {
	// Path is the snapshot file or directory (layout single), or the
	// directory holding dated snapshots (layout dated).
	Path string `yaml:"path"`
	// Layout is "single" (default): path is the one snapshot, re-read when
	// its content changes; or "dated": every entry of path whose name sorts
	// after the last applied one is a snapshot, applied in name order.
	Layout  string                  `yaml:"layout"`
	Records map[string]RecordConfig `yaml:"records"`
	CSV     CSVConfig               `yaml:"csv"`
	// Encoding of text files: utf-8 (default), windows-1252, iso-8859-1.
	Encoding string `yaml:"encoding"`
	// Interval between polls ("5m"); "0" reads once and returns. Default 1m.
	Interval string `yaml:"interval"`
	// ChangedAt is where a snapshot's time comes from: "name" (a date or
	// time in the snapshot's name; default for dated), "mtime" (the newest
	// modification time of its files; default for single) or "none".
	ChangedAt string `yaml:"changed_at"`
	// TimeZone of times in names that carry no offset. Default UTC.
	TimeZone string `yaml:"time_zone"`
	// AllowEmpty accepts a snapshot with no records for a record name. By
	// default that is refused, as an empty export would delete everything.
	AllowEmpty bool `yaml:"allow_empty"`
	// FinalNewline is "required" (default): a CSV or LDIF file whose last
	// line has no line break is refused as possibly truncated; "optional"
	// accepts it for exporters that never write one.
	FinalNewline string `yaml:"final_newline"`
	// Settle leaves a snapshot alone until its files have not been modified
	// for this long ("30s"), so that a file still being written is not read.
	Settle string `yaml:"settle"`
	// BatchSize is the number of changes per batch. Default 2000.
	BatchSize int `yaml:"batch_size"`
}

// RecordConfig says where a record's lines are.
type RecordConfig struct {
	// File is the record's file within a snapshot directory (e.g.
	// "users.jsonl"). Empty when each snapshot is a single file.
	File string `yaml:"file"`
	// Format overrides the format derived from the file name.
	Format string `yaml:"format"`
	// Match selects the record's lines when several records share a file:
	// field → value, all must hold (for a multi-valued field: one of its
	// values). LDIF compares names and values case-insensitively. Lines
	// matching no record are skipped and counted in the log.
	Match map[string]string `yaml:"match"`
	// Columns names the fields of a CSV file without a header row.
	Columns []string `yaml:"columns"`
}

// CSVConfig sets how CSV and TSV files are read.
type CSVConfig struct {
	// Delimiter is one character; "tab" or "\t" for a tab. Default ","
	// (a tab for .tsv). Danish spreadsheet exports often use ";".
	Delimiter string `yaml:"delimiter"`
	// Header says the first row names the columns. Default true; false
	// needs columns on each CSV record.
	Header *bool `yaml:"header"`
	// Comment is a character that starts a comment line, e.g. "#".
	Comment string `yaml:"comment"`
	// LazyQuotes accepts quotes inside unquoted fields.
	LazyQuotes bool `yaml:"lazy_quotes"`
}

// settings is a validated Config.
type settings struct {
	path         string
	dated        bool
	dirSnapshots bool // a snapshot is a directory (records name files)
	files        []*fileSpec
	recordNames  []string
	interval     time.Duration
	changedAt    string
	loc          *time.Location
	allowEmpty   bool
	settle       time.Duration
	batchSize    int
	read         readOptions
}

// fileSpec is one file of a snapshot and the records it holds.
type fileSpec struct {
	rel     string // path within the snapshot directory; "" for file snapshots
	format  string // "" for file snapshots without format: from each file's name
	records []*recordSpec
}

type recordSpec struct {
	name    string
	match   []matchTerm
	columns []string
}

type matchTerm struct{ field, value string }

const (
	defaultInterval  = time.Minute
	defaultBatchSize = 2000
)

// parseConfig decodes and validates a source entry. Errors are
// *configs.Error naming the line.
func parseConfig(node *yaml.Node, opts capture.Options) (*settings, error) {
	var c Config
	file := opts.File
	if err := configs.Decode(file, node, &c, capture.CommonKeys...); err != nil {
		return nil, err
	}
	bad := func(hint string, key []string, format string, args ...any) error {
		return configs.Errorf(file, configs.Key(node, key...), hint, "file source %q: "+format, append([]any{opts.Name}, args...)...)
	}
	s := &settings{path: c.Path, batchSize: c.BatchSize, allowEmpty: c.AllowEmpty,
		read: readOptions{finalNewline: true, csv: csvOptions{header: true}}}
	if c.Path == "" {
		return nil, bad("path: ./exports/org.jsonl, a snapshot directory, or with layout: dated the drop directory", nil, "path is missing")
	}
	switch c.Layout {
	case "", "single":
	case "dated":
		s.dated = true
	default:
		return nil, bad("use single or dated", []string{"layout"}, "unknown layout %q", c.Layout)
	}
	if len(c.Records) == 0 {
		return nil, bad("e.g. records: {users: {file: users.jsonl}}", nil, "records is missing: name the records and where they are")
	}

	// Records, grouped by file in name order so that runs are deterministic.
	names := make([]string, 0, len(c.Records))
	for name := range c.Records {
		names = append(names, name)
	}
	sort.Strings(names)
	s.recordNames = names
	byFile := map[string]*fileSpec{}
	withFile := 0
	for _, name := range names {
		rc := c.Records[name]
		at := []string{"records", name}
		if rc.File != "" {
			withFile++
			if !filepath.IsLocal(rc.File) {
				return nil, bad("name the file relative to the snapshot directory", append(at, "file"), "record %q: file %q is outside the snapshot", name, rc.File)
			}
		}
		format := rc.Format
		switch format {
		case "", FormatJSONL, FormatCSV, FormatTSV, FormatLDIF:
		case "ndjson":
			format = FormatJSONL
		default:
			return nil, bad("use jsonl, csv, tsv or ldif", append(at, "format"), "record %q: unknown format %q", name, format)
		}
		if format == "" && rc.File != "" {
			if format, _ = formatOf(rc.File); format == "" {
				return nil, bad("name it .jsonl, .ndjson, .csv, .tsv or .ldif (optionally .gz), or set format", append(at, "file"),
					"record %q: cannot tell the format of %q from its name", name, rc.File)
			}
		}
		fs := byFile[rc.File]
		if fs == nil {
			fs = &fileSpec{rel: rc.File, format: format}
			byFile[rc.File] = fs
			s.files = append(s.files, fs)
		} else if format != "" && fs.format != "" && fs.format != format {
			return nil, bad("records sharing a file share its format", append(at, "format"), "record %q: format %s differs from %s of the other records in its file", name, format, fs.format)
		} else if fs.format == "" {
			fs.format = format
		}
		rs := &recordSpec{name: name, columns: rc.Columns}
		for field, value := range rc.Match {
			rs.match = append(rs.match, matchTerm{field, value})
		}
		slices.SortFunc(rs.match, func(a, b matchTerm) int { return strings.Compare(a.field, b.field) })
		fs.records = append(fs.records, rs)
	}
	switch {
	case withFile == len(names):
		s.dirSnapshots = true
	case withFile > 0:
		return nil, bad("either every record names its file in a snapshot directory, or none does (each snapshot is one file)", []string{"records"},
			"some records name a file and some do not")
	}
	sort.Slice(s.files, func(i, j int) bool { return s.files[i].rel < s.files[j].rel })
	for _, fs := range s.files {
		if len(fs.records) > 1 {
			for _, rs := range fs.records {
				if len(rs.match) == 0 {
					where := fs.rel
					if where == "" {
						where = "the snapshot file"
					}
					return nil, bad(`e.g. match: {type: unit}`, []string{"records", rs.name}, "record %q shares %s with other records and needs match to pick its lines", rs.name, where)
				}
			}
		}
	}

	// CSV.
	if h := c.CSV.Header; h != nil {
		s.read.csv.header = *h
	}
	var err error
	if s.read.csv.delimiter, err = oneChar(c.CSV.Delimiter, true); err != nil {
		return nil, bad(`one character, e.g. ";" or "tab"`, []string{"csv", "delimiter"}, "csv.delimiter: %v", err)
	}
	if s.read.csv.comment, err = oneChar(c.CSV.Comment, false); err != nil {
		return nil, bad(`one character, e.g. "#"`, []string{"csv", "comment"}, "csv.comment: %v", err)
	}
	s.read.csv.lazyQuotes = c.CSV.LazyQuotes
	for _, fs := range s.files {
		for _, rs := range fs.records {
			at := []string{"records", rs.name, "columns"}
			isCSV := fs.format == FormatCSV || fs.format == FormatTSV || fs.format == ""
			switch {
			case len(rs.columns) > 0 && s.read.csv.header:
				return nil, bad("columns is for CSV files without a header row; set csv.header: false or drop columns", at, "record %q: columns given but csv.header is true", rs.name)
			case len(rs.columns) > 0 && !isCSV:
				return nil, bad("columns is for CSV files", at, "record %q: columns given for a %s file", rs.name, fs.format)
			case len(rs.columns) == 0 && !s.read.csv.header && isCSV && fs.format != "":
				return nil, bad("e.g. columns: [id, name, parent]", []string{"records", rs.name}, "record %q: csv.header is false, so columns must name the fields", rs.name)
			}
			if dup := firstDuplicate(rs.columns); dup != "" {
				return nil, bad("column names must be unique", at, "record %q: column %q is listed twice", rs.name, dup)
			}
		}
		if len(fs.records) > 1 {
			// Records sharing a headerless CSV file must agree on its columns.
			for _, rs := range fs.records[1:] {
				if !slices.Equal(rs.columns, fs.records[0].columns) {
					return nil, bad("records sharing a file share its columns", []string{"records", rs.name, "columns"}, "record %q: columns differ from record %q's in the same file", rs.name, fs.records[0].name)
				}
			}
		}
	}

	switch strings.ToLower(c.Encoding) {
	case "", "utf-8", "utf8":
	case "windows-1252", "cp1252":
		s.read.encoding = "windows-1252"
	case "iso-8859-1", "latin1", "latin-1":
		s.read.encoding = "iso-8859-1"
	default:
		return nil, bad("use utf-8, windows-1252 or iso-8859-1", []string{"encoding"}, "unknown encoding %q", c.Encoding)
	}
	switch c.FinalNewline {
	case "", "required":
	case "optional":
		s.read.finalNewline = false
	default:
		return nil, bad("use required or optional", []string{"final_newline"}, "final_newline: unknown value %q", c.FinalNewline)
	}

	// Times.
	switch c.Interval {
	case "":
		s.interval = defaultInterval
	case "0":
	default:
		if s.interval, err = time.ParseDuration(c.Interval); err != nil || s.interval < 0 {
			return nil, bad(`a duration such as "30s" or "5m", or 0 to read once`, []string{"interval"}, "interval %q is not a duration", c.Interval)
		}
	}
	if c.Settle != "" && c.Settle != "0" {
		if s.settle, err = time.ParseDuration(c.Settle); err != nil || s.settle < 0 {
			return nil, bad(`a duration such as "30s"`, []string{"settle"}, "settle %q is not a duration", c.Settle)
		}
	}
	s.changedAt = c.ChangedAt
	if s.changedAt == "" {
		s.changedAt = "mtime"
		if s.dated {
			s.changedAt = "name"
		}
	}
	switch s.changedAt {
	case "name", "mtime", "none":
	default:
		return nil, bad("use name, mtime or none", []string{"changed_at"}, "changed_at: unknown value %q", c.ChangedAt)
	}
	s.loc = time.UTC
	if c.TimeZone != "" {
		if s.loc, err = time.LoadLocation(c.TimeZone); err != nil {
			return nil, bad(`an IANA zone such as "Europe/Copenhagen"`, []string{"time_zone"}, "time_zone: %v", err)
		}
	}
	if s.changedAt == "name" && !s.dated {
		if _, ok := timeFromName(filepath.Base(filepath.Clean(c.Path)), s.loc); !ok {
			return nil, bad("put a date in the name (org-2026-01-05.jsonl), or use changed_at: mtime", []string{"changed_at"},
				"changed_at is name, but %q holds no date", filepath.Base(c.Path))
		}
	}
	switch {
	case s.batchSize == 0:
		s.batchSize = defaultBatchSize
	case s.batchSize < 0:
		return nil, bad("a positive number of changes per batch", []string{"batch_size"}, "batch_size must be positive")
	}

	for _, r := range opts.Records {
		if !slices.Contains(names, r) {
			return nil, bad("add it under records, or fix the mapping", []string{"records"},
				"a mapping selects record %q, which this source does not define (it defines %s)", r, strings.Join(names, ", "))
		}
	}
	return s, nil
}

// oneChar parses a delimiter or comment character.
func oneChar(s string, delimiter bool) (rune, error) {
	switch s {
	case "":
		return 0, nil
	case "tab", `\t`:
		return '\t', nil
	}
	r, size := utf8.DecodeRuneInString(s)
	switch {
	case size != len(s):
		return 0, fmt.Errorf("%q is more than one character", s)
	case r == '"' || r == '\r' || r == '\n' || r == utf8.RuneError:
		return 0, fmt.Errorf("%q cannot be used", s)
	case delimiter && r == ' ':
		return ' ', nil
	}
	return r, nil
}

func firstDuplicate(list []string) string {
	seen := map[string]bool{}
	for _, s := range list {
		if seen[s] {
			return s
		}
		seen[s] = true
	}
	return ""
}
