package capturetest

import (
	"fmt"
	"os"
	"strings"
	"sync"
)

// Log is a capture.Logger that keeps its lines ("LEVEL msg k=v ...",
// Debug left out) for assertions. With Echo set it also prints them to
// standard error.
type Log struct {
	Echo bool

	mu    sync.Mutex
	lines []string
}

func (l *Log) add(level, msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := level + " " + msg
	for i := 0; i+1 < len(args); i += 2 {
		line += fmt.Sprintf(" %v=%v", args[i], args[i+1])
	}
	l.lines = append(l.lines, line)
	if l.Echo {
		fmt.Fprintln(os.Stderr, line)
	}
}

func (l *Log) Info(msg string, args ...any)  { l.add("INFO", msg, args...) }
func (l *Log) Warn(msg string, args ...any)  { l.add("WARN", msg, args...) }
func (l *Log) Error(msg string, args ...any) { l.add("ERROR", msg, args...) }
func (l *Log) Debug(msg string, args ...any) {}

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
