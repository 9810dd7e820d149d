package ldap

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	ber "github.com/go-asn1-ber/asn1-ber"
	goldap "github.com/go-ldap/ldap/v3"

	"github.com/os2sandbox/connector/capture"
)

// moreDataProxy forwards LDAP between the source and Samba. While armed it
// sets the "more data" flag on DirSync responses, which Samba never does
// (its dirsync.c always answers flags 0): the source's loop then runs
// against the DC's real cookies. It records the cookies it marked and the
// cookies the source asked with.
type moreDataProxy struct {
	url    string
	target string

	mu     sync.Mutex
	armed  int
	marked [][]byte
	asked  [][]byte
}

func newMoreDataProxy(t *testing.T, target string) *moreDataProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &moreDataProxy{url: "ldap://" + l.Addr().String(), target: target}
	var conns sync.WaitGroup
	t.Cleanup(func() { l.Close(); conns.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); p.pipe(up, c, p.request); up.Close() }()
			go func() { defer conns.Done(); p.pipe(c, up, p.response); c.Close() }()
		}
	}()
	return p
}

func (p *moreDataProxy) arm(n int) {
	p.mu.Lock()
	p.armed = n
	p.mu.Unlock()
}

func (p *moreDataProxy) cookies() (marked, asked [][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.marked...), append([][]byte(nil), p.asked...)
}

// pipe copies LDAP messages from src to dst, passing each through edit.
func (p *moreDataProxy) pipe(dst io.Writer, src io.Reader, edit func(*ber.Packet) *ber.Packet) {
	r := bufio.NewReader(src)
	for {
		pk, err := ber.ReadPacket(r)
		if err != nil {
			return
		}
		if _, err := dst.Write(edit(pk).Bytes()); err != nil {
			return
		}
	}
}

// dirSync finds the DirSync control of an LDAP message.
func dirSync(pk *ber.Packet) (int, *goldap.ControlDirSync) {
	if len(pk.Children) < 3 || pk.Children[2].ClassType != ber.ClassContext || pk.Children[2].Tag != 0 {
		return -1, nil
	}
	for i, c := range pk.Children[2].Children {
		if ctl, err := goldap.DecodeControl(c); err == nil {
			if ds, ok := ctl.(*goldap.ControlDirSync); ok {
				return i, ds
			}
		}
	}
	return -1, nil
}

func (p *moreDataProxy) request(pk *ber.Packet) *ber.Packet {
	if len(pk.Children) > 1 && pk.Children[1].Tag == goldap.ApplicationSearchRequest {
		if _, ds := dirSync(pk); ds != nil {
			p.mu.Lock()
			p.asked = append(p.asked, ds.Cookie)
			p.mu.Unlock()
		}
	}
	return pk
}

func (p *moreDataProxy) response(pk *ber.Packet) *ber.Packet {
	if len(pk.Children) < 2 || pk.Children[1].Tag != goldap.ApplicationSearchResultDone {
		return pk
	}
	i, ds := dirSync(pk)
	if ds == nil {
		return pk
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.armed == 0 {
		return pk
	}
	p.armed--
	p.marked = append(p.marked, ds.Cookie)
	ds.Flags |= dirSyncMoreData
	ctls := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "Controls")
	for j, c := range pk.Children[2].Children {
		if j == i {
			c = ds.Encode()
		}
		ctls.AppendChild(c)
	}
	out := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAP Response")
	out.AppendChild(pk.Children[0])
	out.AppendChild(pk.Children[1])
	out.AppendChild(ctls)
	return out
}

// TestADDirSyncMoreData: a DirSync response marked "more data" (by the
// proxy; Samba never sets it, DIRECTORY-CASES #34) makes the source commit
// that page, changes and cookie in one batch, and ask again with the
// cookie it got, until a response without the flag; nothing is lost or
// doubled.
func TestADDirSyncMoreData(t *testing.T) {
	f := newADFixture(t)
	px := newMoreDataProxy(t, strings.TrimPrefix(f.srv.URL, "ldap://"))
	cfg := strings.Replace(f.config(""), "url: "+f.srv.TLSURL, "url: "+px.url, 1)
	sink := newFakeSink(FieldDN)
	src := newTestSource(t, cfg, capture.Options{})
	runOnce(t, src, sink)
	sink.take()

	f.user("CN=M1,"+f.base, "m1"+f.base[3:8], nil)
	f.user("CN=M2,"+f.base, "m2"+f.base[3:8], nil)
	px.arm(2)
	n := len(sink.batches)
	runOnce(t, src, sink)
	wantEvents(t, sink.take(), event{Op: "create", Record: "users", Key: f.guid(t, "CN=M1,"+f.base)},
		event{Op: "create", Record: "users", Key: f.guid(t, "CN=M2,"+f.base)})

	marked, asked := px.cookies()
	if len(marked) != 2 {
		t.Fatalf("the proxy marked %d responses, want 2", len(marked))
	}
	for _, m := range marked {
		found := false
		for _, a := range asked {
			found = found || bytes.Equal(a, m)
		}
		if !found {
			t.Fatal("the source did not ask again with the cookie of a more-data response")
		}
	}
	var stored [][]byte
	changes := 0 // until the first page's cookie is stored
	for _, b := range sink.batches[n:] {
		if len(stored) == 0 {
			changes += len(b.Changes)
		}
		if b.Checkpoint != nil {
			cp, err := decodeCheckpoint(b.Checkpoint)
			if err != nil {
				t.Fatal(err)
			}
			stored = append(stored, cp.Cookie)
		}
	}
	// (Samba's cookie carries the time in seconds: the last may equal the
	// one before.)
	if len(stored) != 3 || !bytes.Equal(stored[0], marked[0]) || !bytes.Equal(stored[1], marked[1]) {
		t.Fatalf("want each page committed with its cookie, then the last one: %d checkpoints (%v %v)",
			len(stored), len(stored) > 0 && bytes.Equal(stored[0], marked[0]), len(stored) > 1 && bytes.Equal(stored[1], marked[1]))
	}
	if changes == 0 {
		t.Fatal("the first page's changes were not committed with (or before) its cookie")
	}
	// nothing new: one response, no event
	runOnce(t, src, sink)
	wantEvents(t, sink.take())
}
