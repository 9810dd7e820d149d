package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const minimal = `state: /tmp/state.db
sources:
  - name: hr
    type: file
`

// wantError checks that err is a *Error at line (0: any line) whose
// message contains every one of parts.
func wantError(t *testing.T, err error, file string, line int, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one at line %d mentioning %q", line, parts)
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %q (%T) is not a *configs.Error", err, err)
	}
	if !IsConfigError(err) || !IsConfigError(fmt.Errorf("wrapped: %w", err)) {
		t.Errorf("IsConfigError(%q) = false", err)
	}
	if ce.File != file {
		t.Errorf("error file = %q, want %q", ce.File, file)
	}
	if line > 0 && ce.Line != line {
		t.Errorf("error %q at line %d, want %d", err, ce.Line, line)
	}
	if line > 0 && !strings.HasPrefix(err.Error(), fmt.Sprintf("%s:%d: ", file, line)) {
		t.Errorf("message %q does not start with %s:%d", err, file, line)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		line  int
		parts []string
	}{
		{
			name: "unknown top-level key",
			yaml: "state: /tmp/s.db\nsorces:\n  - {name: hr, type: file}\n",
			line: 2,
			parts: []string{`unknown key "sorces"`, `did you mean "sources"?`,
				"known keys: control, log, mappings, metrics, receivers, retention, sources, state"},
		},
		{
			name:  "unknown key far from any",
			yaml:  "state: /tmp/s.db\nbananas: 3\n",
			line:  2,
			parts: []string{`unknown key "bananas"`, "known keys:"},
		},
		{
			name:  "unknown key inside log",
			yaml:  "state: /tmp/s.db\nlog:\n  level: info\n  formt: json\n" + minimal[len("state: /tmp/state.db\n"):],
			line:  4,
			parts: []string{`unknown key "formt"`, `did you mean "format"?`},
		},
		{
			name:  "wrong type for state",
			yaml:  "# comment\nstate: [1, 2]\nsources:\n  - {name: hr, type: file}\n",
			line:  2,
			parts: []string{"wrong type", "!!seq"},
		},
		{
			name:  "wrong type for sources",
			yaml:  "state: /tmp/s.db\nsources: hr\n",
			line:  2,
			parts: []string{"wrong type"},
		},
		{
			name:  "missing state",
			yaml:  "sources:\n  - {name: hr, type: file}\n",
			parts: []string{"`state`", "is missing", "state: /var/lib/connector/state.db"},
		},
		{
			name:  "no sources",
			yaml:  "state: /tmp/s.db\nreceivers:\n  - {name: out, type: file}\n",
			parts: []string{"no sources are configured", "sources:"},
		},
		{
			name:  "empty sources list",
			yaml:  "state: /tmp/s.db\nsources: []\n",
			parts: []string{"no sources are configured"},
		},
		{
			name:  "duplicate source name",
			yaml:  "state: /tmp/s.db\nsources:\n  - name: hr\n    type: file\n  - name: ad\n    type: ldap\n  - name: hr\n    type: postgres\n",
			line:  7,
			parts: []string{`source "hr" is defined twice`, "the first is at line 3"},
		},
		{
			name:  "duplicate receiver name",
			yaml:  minimal + "receivers:\n  - {name: out, type: file}\n  - {name: out, type: kafka}\n",
			line:  7,
			parts: []string{`receiver "out" is defined twice`, "the first is at line 6"},
		},
		{
			name:  "source without type",
			yaml:  "state: /tmp/s.db\nsources:\n  - name: hr\n    path: /data\n",
			line:  3,
			parts: []string{`source "hr" has no type`, "add `type: ...`"},
		},
		{
			name:  "source without name",
			yaml:  "state: /tmp/s.db\nsources:\n  - type: file\n",
			line:  3,
			parts: []string{"source 1 has no name", "add `name: ...`"},
		},
		{
			name:  "receiver not a mapping",
			yaml:  minimal + "receivers:\n  - out\n",
			line:  6,
			parts: []string{"receiver 1 is not a mapping"},
		},
		{
			name:  "bad log level",
			yaml:  "state: /tmp/s.db\nlog: {level: verbose}\n" + minimal[len("state: /tmp/state.db\n"):],
			parts: []string{`log.level "verbose" is unknown`, "debug, info, warn or error"},
		},
		{
			name:  "bad log format",
			yaml:  "state: /tmp/s.db\nlog: {format: xml}\n" + minimal[len("state: /tmp/state.db\n"):],
			parts: []string{`log.format "xml" is unknown`, "text or json"},
		},
		{
			name:  "invalid YAML",
			yaml:  "state: /tmp/s.db\nsources:\n  - name: hr\n    type: file: x\n",
			line:  4,
			parts: []string{"invalid YAML", "mapping values are not allowed", "check indentation and quoting"},
		},
		{
			// yaml.v3 reports the line where the enclosing block began
			// (2), not where the indentation went wrong (5).
			name:  "invalid YAML, bad indentation",
			yaml:  "state: /tmp/s.db\nsources:\n  - name: hr\n    type: file\n   bad: indentation\n",
			line:  2,
			parts: []string{"invalid YAML"},
		},
		{
			name:  "duplicate top-level key",
			yaml:  "state: /tmp/s.db\nstate: /x\n",
			line:  2,
			parts: []string{`"state" already defined at line 1`},
		},
		{
			name:  "invalid YAML, unclosed quote",
			yaml:  "state: \"/tmp/s.db\nsources: []\n",
			parts: []string{"invalid YAML"},
		},
		{
			name:  "negative retention",
			yaml:  "state: /tmp/s.db\nretention: {log: -1h}\nsources:\n  - name: hr\n    type: file\n",
			line:  2,
			parts: []string{"retention.log -1h0m0s is negative", "2160h"},
		},
		{
			name:  "retention not a duration",
			yaml:  "state: /tmp/s.db\nretention: {log: 90d}\nsources:\n  - name: hr\n    type: file\n",
			line:  2,
			parts: []string{"90d"},
		},
		{
			name:  "empty",
			yaml:  "",
			parts: []string{"the configuration is empty", "configs/demo.yaml"},
		},
		{
			name:  "only comments",
			yaml:  "# nothing here\n",
			parts: []string{"the configuration is empty"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("conf.yaml", []byte(tt.yaml))
			if f != nil {
				t.Errorf("Parse returned a file along with an error")
			}
			wantError(t, err, "conf.yaml", tt.line, tt.parts...)
		})
	}
}

func TestParse(t *testing.T) {
	src := `state: /var/lib/connector/state.db
control: /run/connector.sock
log: {level: debug, format: json}
sources:
  - name: hr
    type: file
    path: /data/hr
  - name: ad
    type: ldap
mappings:
  - type: Bruger
    source: hr
  - type: Enhed
    source: ad
receivers:
  - name: out
    type: file
    path: /tmp/out.jsonl
`
	f, err := Parse("c.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if f.Path != "c.yaml" || f.State != "/var/lib/connector/state.db" || f.Control != "/run/connector.sock" {
		t.Errorf("file = %+v", f)
	}
	if f.Log != (Log{Level: "debug", Format: "json"}) {
		t.Errorf("log = %+v", f.Log)
	}
	wantEntries := func(kind string, got []Entry, want ...string) {
		t.Helper()
		if len(got) != len(want)/3 {
			t.Fatalf("%s: %d entries, want %d", kind, len(got), len(want)/3)
		}
		for i, e := range got {
			if e.Name != want[3*i] || e.Type != want[3*i+1] || fmt.Sprint(e.Node.Line) != want[3*i+2] {
				t.Errorf("%s %d = %s/%s at line %d, want %v", kind, i, e.Name, e.Type, e.Node.Line, want[3*i:3*i+3])
			}
		}
	}
	wantEntries("sources", f.Sources, "hr", "file", "5", "ad", "ldap", "8")
	wantEntries("receivers", f.Receivers, "out", "file", "16")
	// Each entry keeps its whole node for the adapter's strict decode.
	var path struct {
		Path string `yaml:"path"`
	}
	if err := f.Sources[0].Node.Decode(&path); err != nil || path.Path != "/data/hr" {
		t.Errorf("source node decodes to %q, %v", path.Path, err)
	}
	if len(f.Mappings) != 2 || f.Mappings[1].Line != 13 {
		t.Fatalf("mappings = %d", len(f.Mappings))
	}
}

func TestParseDemo(t *testing.T) {
	data, err := os.ReadFile("demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("demo.yaml", data)
	if err != nil {
		t.Fatalf("the embedded demo does not parse: %v", err)
	}
	if len(f.Sources) == 0 || len(f.Mappings) == 0 || len(f.Receivers) == 0 {
		t.Errorf("demo: %d sources, %d mappings, %d receivers", len(f.Sources), len(f.Mappings), len(f.Receivers))
	}
}

func TestSubstitute(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cr3t value\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CONNECTOR_TEST_USER", "alice")
	t.Setenv("CONNECTOR_TEST_NULLISH", "null")
	t.Setenv("CONNECTOR_TEST_EMPTY", "")
	tests := []struct {
		name  string
		value string // the YAML scalar as written
		want  string
	}{
		{"env", "${env:CONNECTOR_TEST_USER}", "alice"},
		{"env inside text", "postgres://${env:CONNECTOR_TEST_USER}@db:5432/hr", "postgres://alice@db:5432/hr"},
		{"two refs", "${env:CONNECTOR_TEST_USER}:${file:" + secret + "}", "alice:s3cr3t value"},
		{"file, trailing newlines trimmed", "${file:" + secret + "}", "s3cr3t value"},
		{"set but empty", "x${env:CONNECTOR_TEST_EMPTY}y", "xy"},
		// A secret that looks like null stays that string.
		{"null-looking value stays a string", "${env:CONNECTOR_TEST_NULLISH}", "null"},
		{"quoted", `"${env:CONNECTOR_TEST_USER}"`, "alice"},
		{"no reference", "plain ${text}", "plain ${text}"},
		{"other scheme untouched", "${vault:x}", "${vault:x}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "state: /tmp/s.db\nsources:\n  - name: hr\n    type: file\n    secret: " + tt.value + "\n"
			f, err := Parse("c.yaml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			var v struct {
				Secret *string `yaml:"secret"`
			}
			if err := f.Sources[0].Node.Decode(&v); err != nil {
				t.Fatal(err)
			}
			if v.Secret == nil || *v.Secret != tt.want {
				t.Errorf("secret = %v, want %q", v.Secret, tt.want)
			}
		})
	}
	t.Run("state path", func(t *testing.T) {
		t.Setenv("CONNECTOR_TEST_DIR", "/srv/x")
		f, err := Parse("c.yaml", []byte("state: ${env:CONNECTOR_TEST_DIR}/state.db\n"+minimal[len("state: /tmp/state.db\n"):]))
		if err != nil {
			t.Fatal(err)
		}
		if f.State != "/srv/x/state.db" {
			t.Errorf("state = %q", f.State)
		}
	})
}

func TestSubstituteErrors(t *testing.T) {
	dir := t.TempDir()
	os.Unsetenv("CONNECTOR_TEST_MISSING")
	tests := []struct {
		name  string
		value string
		parts []string
	}{
		{"missing env var", "${env:CONNECTOR_TEST_MISSING}",
			[]string{"environment variable CONNECTOR_TEST_MISSING is not set", "export CONNECTOR_TEST_MISSING="}},
		{"missing file", "${file:" + filepath.Join(dir, "nope") + "}",
			[]string{"cannot read secret file", filepath.Join(dir, "nope"), "readable"}},
		{"file is a directory", "${file:" + dir + "}",
			[]string{"cannot read secret file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "state: /tmp/s.db\nsources:\n  - name: hr\n    type: file\n    password: " + tt.value + "\n"
			_, err := Parse("c.yaml", []byte(src))
			wantError(t, err, "c.yaml", 5, tt.parts...)
		})
	}
}

// A secret's value never appears in a config error, even when the
// error is about the value's line.
func TestSecretNotInErrors(t *testing.T) {
	t.Setenv("CONNECTOR_TEST_PW", "hunter2")
	src := "state: /tmp/s.db\nsources:\n  - name: hr\n    type: file\n    password: ${env:CONNECTOR_TEST_PW}\n  - name: hr\n    type: file\n"
	_, err := Parse("c.yaml", []byte(src))
	if err == nil {
		t.Fatal("duplicate name accepted")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q leaks the secret", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(dir, "nope.yaml")
		_, err := Load(path)
		wantError(t, err, path, 0, "cannot read the configuration", "no such file", "-c")
	})
	t.Run("directory", func(t *testing.T) {
		_, err := Load(dir)
		wantError(t, err, dir, 0, "cannot read the configuration", "-c")
	})
	t.Run("ok", func(t *testing.T) {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if f.Path != path || f.State != "/tmp/state.db" || len(f.Sources) != 1 {
			t.Errorf("Load = %+v", f)
		}
	})
	t.Run("error names the file", func(t *testing.T) {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte(minimal+"recievers: []\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		wantError(t, err, path, 5, `did you mean "receivers"?`)
	})
}

// adapter is a receiver config as an adapter would decode it.
type adapter struct {
	Name    string  `yaml:"name"`
	Path    string  `yaml:"path"`
	Port    int     `yaml:"port"`
	Topics  []topic `yaml:"topics"`
	Headers map[string]header
	Common  `yaml:",inline"`
	Raw     yaml.Node `yaml:"raw"`
	Skipped string    `yaml:"-"`
	//lint:ignore U1000 an unexported field must be ignored by Decode; the test needs one
	hidden string
}

type topic struct {
	Name       string `yaml:"name"`
	Partitions int    `yaml:"partitions"`
}

type header struct {
	Value string `yaml:"value"`
}

type Common struct {
	Timeout string `yaml:"timeout"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name   string
		yaml   string
		ignore []string
		line   int // 0: no error
		parts  []string
		check  func(t *testing.T, a adapter)
	}{
		{
			name: "all kinds of field",
			yaml: "name: out\npath: /x\nport: 9092\ntopics:\n  - {name: a, partitions: 3}\nheaders:\n  h1: {value: v}\ntimeout: 5s\nraw: {anything: [1, 2], goes: here}\n",
			check: func(t *testing.T, a adapter) {
				if a.Name != "out" || a.Port != 9092 || len(a.Topics) != 1 || a.Topics[0].Partitions != 3 ||
					a.Headers["h1"].Value != "v" || a.Timeout != "5s" || a.Raw.Kind != yaml.MappingNode {
					t.Errorf("decoded %+v", a)
				}
			},
		},
		{
			name:   "ignored keys",
			yaml:   "name: out\ntype: file\nstart: now\nfilter: {types: [A]}\n",
			ignore: []string{"type", "start", "filter"},
			check: func(t *testing.T, a adapter) {
				if a.Name != "out" {
					t.Errorf("name = %q", a.Name)
				}
			},
		},
		{
			name:  "ignore is not inherited by nested structs",
			yaml:  "topics:\n  - name: a\n    type: x\n",
			line:  3,
			parts: []string{`unknown key "type"`, "known keys: name, partitions"},
		},
		{
			name:  "unknown key without ignore",
			yaml:  "name: out\ntype: file\n",
			line:  2,
			parts: []string{`unknown key "type"`},
		},
		{
			name:  "nested unknown key in a list of structs",
			yaml:  "name: out\ntopics:\n  - name: a\n    partitions: 1\n  - name: b\n    partitons: 2\n",
			line:  6,
			parts: []string{`unknown key "partitons"`, `did you mean "partitions"?`},
		},
		{
			name:  "unknown key in a map of structs",
			yaml:  "headers:\n  h1:\n    value: v\n    valu: w\n",
			line:  4,
			parts: []string{`unknown key "valu"`, `did you mean "value"?`},
		},
		{
			name:  "inline fields are known",
			yaml:  "timeot: 5s\n",
			line:  1,
			parts: []string{`did you mean "timeout"?`},
		},
		{
			name:  "yaml:- and unexported fields are not keys",
			yaml:  "skipped: x\n",
			line:  1,
			parts: []string{`unknown key "skipped"`},
		},
		{
			name:  "wrong type names the line",
			yaml:  "name: out\n\nport: ninety\n",
			line:  3,
			parts: []string{"wrong type", "ninety", "int"},
		},
		{
			name:  "wrong type in a nested struct",
			yaml:  "topics:\n  - name: a\n    partitions: many\n",
			line:  3,
			parts: []string{"wrong type"},
		},
		{
			name:  "map where a list is expected",
			yaml:  "topics:\n  name: a\n",
			line:  2,
			parts: []string{"wrong type"},
		},
		{
			name: "anchors and aliases",
			yaml: "topics:\n  - &t {name: a, partitions: 2}\n  - *t\n",
			check: func(t *testing.T, a adapter) {
				if len(a.Topics) != 2 || a.Topics[1].Partitions != 2 {
					t.Errorf("topics = %+v", a.Topics)
				}
			},
		},
		{
			name:   "unknown key behind an alias",
			yaml:   "x: &t {name: a, partitons: 2}\ntopics:\n  - *t\n",
			ignore: []string{"x"},
			line:   1,
			parts:  []string{`unknown key "partitons"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(tt.yaml), &doc); err != nil {
				t.Fatal(err)
			}
			var a adapter
			err := Decode("r.yaml", doc.Content[0], &a, tt.ignore...)
			if tt.line == 0 {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, a)
				return
			}
			wantError(t, err, "r.yaml", tt.line, tt.parts...)
		})
	}
}

func TestDecodeNil(t *testing.T) {
	var a adapter
	if err := Decode("r.yaml", nil, &a); err != nil {
		t.Errorf("Decode(nil node) = %v", err)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{Msg: "m"}, "m"},
		{Error{File: "f.yaml", Msg: "m"}, "f.yaml: m"},
		{Error{File: "f.yaml", Line: 3, Msg: "m", Hint: "h"}, "f.yaml:3: m (h)"},
		{Error{Msg: "m", Hint: "h"}, "m (h)"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.err, got, tt.want)
		}
	}
	if IsConfigError(errors.New("x")) || IsConfigError(nil) {
		t.Error("IsConfigError true for a plain error")
	}
}

func TestNearest(t *testing.T) {
	known := []string{"receivers", "sources", "state", "log"}
	tests := []struct{ in, want string }{
		{"sorces", "sources"},
		{"recievers", "receivers"},
		{"stat", "state"},
		{"States", "state"}, // two edits
		{"lgo", "log"},
		{"mappings", ""},
		{"xyz", ""},
	}
	for _, tt := range tests {
		if got := nearest(tt.in, known); got != tt.want {
			t.Errorf("nearest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"", "abc", 3}, {"kitten", "sitting", 3}, {"abc", "abc", 0}, {"ab", "ba", 2}} {
		if got := distance(tt.a, tt.b); got != tt.d {
			t.Errorf("distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.d)
		}
	}
}

func TestHash(t *testing.T) {
	node := func(s string) *yaml.Node {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(s), &doc); err != nil {
			t.Fatal(err)
		}
		return doc.Content[0]
	}
	a := Hash(node("type: A\nfields: {x: y}\n"))
	if len(a) != 64 {
		t.Errorf("hash %q is not hex sha256", a)
	}
	if b := Hash(node("type: A\nfields: {x: y}\n")); a != b {
		t.Error("the same content hashes differently")
	}
	if c := Hash(node("type: A\nfields: {x: z}\n")); a == c {
		t.Error("different content hashes the same")
	}
}
