package file

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/os2sandbox/connector/history"
)

// A torn last line (a crash between two writes of one batch) is cut off
// when the receiver opens the file again; the dispatcher resends it.
func TestOpenTrimsTornTail(t *testing.T) {
	for _, tc := range []struct{ name, content, want string }{
		{"clean", "{\"a\":1}\n{\"b\":2}\n", "{\"a\":1}\n{\"b\":2}\n"},
		{"torn", "{\"a\":1}\n{\"b\":", "{\"a\":1}\n"},
		{"only torn", "{\"b\":", ""},
		{"empty", "", ""},
		{"long torn tail", "{\"a\":1}\n" + strings.Repeat("x", 200<<10), "{\"a\":1}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := Open(Config{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Deliver(context.Background(), []history.Event{{EventID: "e", Sequence: 3}}); err != nil {
				t.Fatal(err)
			}
			r.Close()
			b, _ := os.ReadFile(path)
			if !strings.HasPrefix(string(b), tc.want) || strings.Count(string(b), "\n") != strings.Count(tc.want, "\n")+1 {
				t.Fatalf("got %q, want %q followed by one event", b, tc.want)
			}
			if !strings.Contains(string(b)[len(tc.want):], `"eventId":"e"`) {
				t.Fatalf("the new event does not follow the repaired tail: %q", b)
			}
		})
	}
}
