package file

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/os2sandbox/connector/capture"
)

// Generated exports of a municipality's users, about 200 bytes a record.

func genJSONL(w io.Writer, n int) {
	for i := range n {
		fmt.Fprintf(w, `{"id":"u%07d","cpr":"%010d","givenName":"Søren","sn":"Ærøskøbing-%d","mail":"u%d@kommune.dk","unit":"ou-%d","title":"Sagsbehandler","salary":%d.50,"active":true,"phones":["+45 %08d"]}`+"\n",
			i, 1000000000+i, i, i, i%500, 30000+i%1000, 20000000+i)
	}
}

func genCSV(w io.Writer, n int) {
	fmt.Fprintln(w, "id,cpr,givenName,sn,mail,unit,title,salary,active,phone")
	for i := range n {
		fmt.Fprintf(w, "u%07d,%010d,Søren,\"Ærøskøbing, %d\",u%d@kommune.dk,ou-%d,Sagsbehandler,%d.50,true,+45 %08d\n",
			i, 1000000000+i, i, i, i%500, 30000+i%1000, 20000000+i)
	}
}

func genLDIF(w io.Writer, n int) {
	fmt.Fprintln(w, "version: 1")
	for i := range n {
		fmt.Fprintf(w, "\ndn: uid=u%07d,ou=people,dc=kommune,dc=dk\nobjectClass: top\nobjectClass: inetOrgPerson\nuid: u%07d\ngivenName: Søren\nsn: Ærøskøbing-%d\nmail: u%d@kommune.dk\nou: ou-%d\ntitle: Sagsbehandler\n",
			i, i, i, i, i%500)
	}
}

func genFile(tb testing.TB, dir, name string, n int, gen func(io.Writer, int)) (string, int64) {
	tb.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	gen(w, n)
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	fi, _ := os.Stat(path)
	return path, fi.Size()
}

// Memory must not grow with file size: a file several times larger than
// the bound passes through a source whose sink discards the batches.
func TestMemoryBounded(t *testing.T) {
	const lines = 300_000
	dir := t.TempDir()
	path, size := genFile(t, dir, "users.jsonl", lines, genJSONL)
	const bound = 24 << 20
	if size < 2*bound {
		t.Fatalf("the file (%d bytes) should be much larger than the bound", size)
	}
	s := newSource(t, fmt.Sprintf("{type: file, path: %q, interval: 0, records: {users: {}}}", path), capture.Options{})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	n, batches := 0, 0
	counting := sinkFunc(func(b capture.Batch) error {
		if batches%10 == 0 || b.Snapshot.End {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		batches++
		n += len(b.Changes)
		return nil
	})
	if err := s.Run(context.Background(), nil, counting); err != nil {
		t.Fatal(err)
	}
	if n != lines {
		t.Fatalf("delivered %d records, want %d", n, lines)
	}
	t.Logf("file %d MiB, heap in use %d MiB before, peak %d MiB", size>>20, base>>20, peak>>20)
	if peak > base+bound {
		t.Errorf("heap in use peaked at %d MiB over a %d MiB base; want under %d MiB more", peak>>20, base>>20, bound>>20)
	}
}

type sinkFunc func(capture.Batch) error

func (f sinkFunc) Apply(_ context.Context, b capture.Batch) error { return f(b) }

func benchParse(b *testing.B, name string, gen func(io.Writer, int)) {
	const records = 100_000
	path, size := genFile(b, b.TempDir(), name, records, gen)
	b.SetBytes(size)
	ctx := context.Background()
	for b.Loop() {
		n := 0
		if err := ParseOnly(ctx, path, "", func(map[string]any) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != records {
			b.Fatalf("parsed %d records, want %d", n, records)
		}
	}
	b.ReportMetric(float64(records*b.N)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkParseJSONL(b *testing.B) { benchParse(b, "users.jsonl", genJSONL) }
func BenchmarkParseCSV(b *testing.B)   { benchParse(b, "users.csv", genCSV) }
func BenchmarkParseLDIF(b *testing.B)  { benchParse(b, "users.ldif", genLDIF) }

// BenchmarkRunJSONL is the whole source (hash, parse, batches) into a sink
// that discards: its distance from BenchmarkParseJSONL is the source's own
// overhead.
func BenchmarkRunJSONL(b *testing.B) {
	const records = 100_000
	path, size := genFile(b, b.TempDir(), "users.jsonl", records, genJSONL)
	b.SetBytes(size)
	s, err := build(fmt.Sprintf("{type: file, path: %q, interval: 0, records: {users: {}}}", path), capture.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		n := 0
		sink := sinkFunc(func(b capture.Batch) error { n += len(b.Changes); return nil })
		if err := s.Run(context.Background(), nil, sink); err != nil {
			b.Fatal(err)
		}
		if n != records {
			b.Fatalf("delivered %d records", n)
		}
	}
	b.ReportMetric(float64(records*b.N)/b.Elapsed().Seconds(), "records/s")
}
