package capturetest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// Log is a capture.Logger (and a publish.Logger) that keeps its lines
// ("LEVEL msg k=v ...", an odd last argument appended as it is) for
// assertions. Debug lines are left out unless KeepDebug is set. With Echo
// set it also prints them to standard error, with T set it logs them
// through T.Log.
type Log struct {
	Echo      bool
	KeepDebug bool
	T         testing.TB

	mu    sync.Mutex
	lines []string
}

func (l *Log) add(level, msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	b.WriteString(level + " " + msg)
	for i := 0; i+1 < len(args); i += 2 {
		fmt.Fprintf(&b, " %v=%v", args[i], args[i+1])
	}
	if len(args)%2 == 1 {
		fmt.Fprintf(&b, " %v", args[len(args)-1])
	}
	line := b.String()
	l.lines = append(l.lines, line)
	if l.Echo {
		fmt.Fprintln(os.Stderr, line)
	}
	if l.T != nil {
		l.T.Log(line)
	}
}

func (l *Log) Info(msg string, args ...any)  { l.add("INFO", msg, args...) }
func (l *Log) Warn(msg string, args ...any)  { l.add("WARN", msg, args...) }
func (l *Log) Error(msg string, args ...any) { l.add("ERROR", msg, args...) }
func (l *Log) Debug(msg string, args ...any) {
	if l.KeepDebug {
		l.add("DEBUG", msg, args...)
	}
}

// Has says whether a kept line contains sub.
func (l *Log) Has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// Lines returns a copy of the kept lines.
func (l *Log) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}
