package configs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// File is a parsed configuration file. Sources and receivers keep their
// YAML nodes: each adapter decodes its own keys strictly.
type File struct {
	Path    string
	State   string
	Log     Log
	Control string
	// Metrics is the listen address of the Prometheus endpoint (empty: off).
	Metrics   string
	Retention Retention
	Sources   []Entry
	Mappings  []*yaml.Node
	Receivers []Entry
}

// Log configures the agent's own logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Retention bounds what the state keeps.
type Retention struct {
	// Log is how long the event log keeps an event once every receiver
	// has it and a newer event of the same object exists (0: for ever).
	// The newest event of every live object stays, so replays and new
	// receivers still get the whole current state.
	Log time.Duration `yaml:"log"`
}

// Entry is one source or receiver: its name, type and whole node.
type Entry struct {
	Name string
	Type string
	Node *yaml.Node
}

type top struct {
	State     string      `yaml:"state"`
	Log       Log         `yaml:"log"`
	Control   string      `yaml:"control"`
	Metrics   string      `yaml:"metrics"`
	Retention Retention   `yaml:"retention"`
	Sources   []yaml.Node `yaml:"sources"`
	Mappings  []yaml.Node `yaml:"mappings"`
	Receivers []yaml.Node `yaml:"receivers"`
}

// Load reads and parses path: YAML syntax, secrets substitution, the
// top-level keys, and names and types of sources and receivers. The
// adapters' own keys and the mappings are checked by their owners.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		hint := "check the path given with -c"
		if errors.Is(err, fs.ErrNotExist) {
			hint = "give the path of an existing configuration file with -c; configs/ has examples"
		}
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read the configuration: %v", errors.Unwrap(err)), Hint: hint}
	}
	return Parse(path, data)
}

// Parse parses configuration text; path is used in messages.
func Parse(path string, data []byte) (*File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		line := 0
		if _, e := fmt.Sscanf(strings.TrimPrefix(msg, "yaml: "), "line %d:", &line); e == nil {
			msg = strings.TrimSpace(msg[strings.Index(msg, "line"):])
			msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
		}
		return nil, &Error{File: path, Line: line, Msg: "invalid YAML: " + msg, Hint: "check indentation and quoting"}
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: path, Msg: "the configuration is empty", Hint: "see configs/demo.yaml for a complete example"}
	}
	root := doc.Content[0]
	if err := substitute(path, root); err != nil {
		return nil, err
	}
	var t top
	if err := Decode(path, root, &t); err != nil {
		return nil, err
	}
	f := &File{Path: path, State: t.State, Log: t.Log, Control: t.Control, Metrics: t.Metrics, Retention: t.Retention}
	var err error
	if f.State == "" {
		return nil, Errorf(path, root, "add e.g. `state: /var/lib/connector/state.db`", "`state` (the path of the state file) is missing")
	}
	switch f.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		return nil, Errorf(path, root, "use debug, info, warn or error", "log.level %q is unknown", f.Log.Level)
	}
	switch f.Log.Format {
	case "", "text", "json":
	default:
		return nil, Errorf(path, root, "use text or json", "log.format %q is unknown", f.Log.Format)
	}
	if f.Metrics != "" {
		if _, port, err := net.SplitHostPort(f.Metrics); err != nil || port == "" {
			return nil, Errorf(path, keyNode(root, "metrics"), "give host:port, e.g. `metrics: 127.0.0.1:9464` (a loopback address unless the network is trusted)",
				"metrics %q is not a listen address", f.Metrics)
		}
	}
	if f.Retention.Log < 0 {
		return nil, Errorf(path, keyNode(root, "retention"), "give a positive duration such as 2160h (90 days), or leave it out to keep every event",
			"retention.log %v is negative", f.Retention.Log)
	}
	if len(t.Sources) == 0 {
		return nil, Errorf(path, root, "add at least one entry under `sources:`", "no sources are configured")
	}
	if f.Sources, err = entries(path, "source", t.Sources); err != nil {
		return nil, err
	}
	if f.Receivers, err = entries(path, "receiver", t.Receivers); err != nil {
		return nil, err
	}
	for i := range t.Mappings {
		f.Mappings = append(f.Mappings, &t.Mappings[i])
	}
	return f, nil
}

func entries(path, kind string, nodes []yaml.Node) ([]Entry, error) {
	var out []Entry
	seen := map[string]int{}
	for i := range nodes {
		n := &nodes[i]
		var head struct {
			Name string `yaml:"name"`
			Type string `yaml:"type"`
		}
		if n.Kind != yaml.MappingNode {
			return nil, Errorf(path, n, "each "+kind+" is a mapping with at least name and type", "%s %d is not a mapping", kind, i+1)
		}
		if err := n.Decode(&head); err != nil {
			return nil, Errorf(path, n, "", "%s %d: %v", kind, i+1, err)
		}
		if head.Name == "" {
			return nil, Errorf(path, n, "add `name: ...`", "%s %d has no name", kind, i+1)
		}
		if head.Type == "" {
			return nil, Errorf(path, n, "add `type: ...`", "%s %q has no type", kind, head.Name)
		}
		if line, dup := seen[head.Name]; dup {
			return nil, Errorf(path, n, fmt.Sprintf("the first is at line %d; names must be unique", line), "%s %q is defined twice", kind, head.Name)
		}
		seen[head.Name] = n.Line
		out = append(out, Entry{Name: head.Name, Type: head.Type, Node: n})
	}
	return out, nil
}

var secretRef = regexp.MustCompile(`\$\{(env|file):([^}]*)\}`)

// substitute replaces ${env:NAME} and ${file:PATH} in scalar values, so
// secrets stay out of the file. Values are never logged.
func substitute(path string, n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		var err error
		n.Value = secretRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			m := secretRef.FindStringSubmatch(ref)
			switch m[1] {
			case "env":
				v, ok := os.LookupEnv(m[2])
				if !ok && err == nil {
					err = Errorf(path, n, fmt.Sprintf("set it in the service's environment, e.g. `export %s=...`, or use ${file:PATH}", m[2]),
						"environment variable %s is not set", m[2])
				}
				return v
			default:
				b, rerr := os.ReadFile(m[2])
				if rerr != nil && err == nil {
					err = Errorf(path, n, "make the file readable by the service user", "cannot read secret file: %v", rerr)
				}
				return string(bytes.TrimRight(b, "\r\n"))
			}
		})
		if err != nil {
			return err
		}
		n.Tag = "!!str"
		n.Style = 0
	}
	for _, c := range n.Content {
		if err := substitute(path, c); err != nil {
			return err
		}
	}
	return nil
}

// Hash fingerprints a node's content (used for change detection).
func Hash(n *yaml.Node) string {
	b, _ := yaml.Marshal(n)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// keyNode returns the value node of key in a mapping node, or the mapping
// itself, for error positions.
func keyNode(m *yaml.Node, key string) *yaml.Node {
	if v := Value(m, key); v != nil {
		return v
	}
	return m
}
