package ldap

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/testenv"
)

// countSink counts what it is given and keeps nothing, so the benchmark
// measures the source, not an engine.
type countSink struct {
	n, batches int
}

func (c *countSink) Apply(_ context.Context, b capture.Batch) error {
	c.n += len(b.Changes)
	c.batches++
	return nil
}

// BenchmarkLDAPSnapshot100k: 100,000 users in 1,000 units in slapd. It
// times a plain go-ldap paged search of the users (the raw baseline), the
// source's first snapshot, and a reconcile after 1% drift, and reports
// entries/s, the ratios to the raw search (targets: 1.3 and 1.2) and the
// peak RSS of the process during the snapshots (target: under 200 MB).
//
//	go test -run '^$' -bench LDAPSnapshot100k -benchtime 1x ./capture/ldap
func BenchmarkLDAPSnapshot100k(b *testing.B) {
	const units, perUnit = 1000, 100
	srv := testenv.NewSlapd(b, testenv.SlapdOptions{})
	base := "ou=org," + srv.Suffix
	t0 := time.Now()
	load(b, srv, base, units, perUnit)
	b.Logf("loaded %d users in %d units in %v", units*perUnit, units, time.Since(t0).Round(time.Millisecond))

	attrs := []string{"uid", "cn", "sn", "givenName", "mail", "telephoneNumber", "title"}
	cfg := fmt.Sprintf(`
flavor: ldap
url: %s
bind_dn: %s
password: %s
base_dn: %s
page_size: 1000
batch_size: 2000
reconcile: 0s
records:
  users:
    filter: "(objectClass=inetOrgPerson)"
    attributes: [%s]
`, srv.URL, srv.RootDN, srv.RootPW, base, strings.Join(attrs, ", "))
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		raw := rawPaged(b, srv, base, attrs)

		resetPeakRSS()
		src := newTestSource(b, cfg, capture.Options{})
		sink := &countSink{}
		t0 := time.Now()
		if err := src.Snapshot(ctx, sink); err != nil {
			b.Fatal(err)
		}
		snap := time.Since(t0)
		if sink.n != units*perUnit {
			b.Fatalf("snapshot delivered %d", sink.n)
		}
		peak := peakRSS()

		drift(b, srv, base, units, perUnit)
		sink = &countSink{}
		t0 = time.Now()
		if err := src.Snapshot(ctx, sink); err != nil {
			b.Fatal(err)
		}
		rec := time.Since(t0)
		peak = max(peak, peakRSS())

		n := float64(units * perUnit)
		b.ReportMetric(n/raw.Seconds(), "raw-entries/s")
		b.ReportMetric(n/snap.Seconds(), "snapshot-entries/s")
		b.ReportMetric(snap.Seconds()/raw.Seconds(), "snapshot/raw")
		b.ReportMetric(rec.Seconds()/raw.Seconds(), "reconcile/raw")
		b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MB")
		b.Logf("raw %v, snapshot %v (%.2fx), reconcile %v (%.2fx), peak RSS %d MB",
			raw.Round(time.Millisecond), snap.Round(time.Millisecond), snap.Seconds()/raw.Seconds(),
			rec.Round(time.Millisecond), rec.Seconds()/raw.Seconds(), peak>>20)
	}
}

// load adds the units and users over four connections.
func load(b *testing.B, srv *testenv.Slapd, base string, units, perUnit int) {
	c, err := srv.Dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	add := func(c *goldap.Conn, dn string, attrs map[string][]string) {
		r := goldap.NewAddRequest(dn, nil)
		for k, v := range attrs {
			r.Attribute(k, v)
		}
		if err := c.Add(r); err != nil {
			b.Fatalf("add %s: %v", dn, err)
		}
	}
	add(c, base, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"org"}})
	for u := range units {
		add(c, fmt.Sprintf("ou=u%04d,%s", u, base), map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {fmt.Sprintf("u%04d", u)}})
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := srv.Dial()
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			for u := w; u < units; u += 4 {
				for i := range perUnit {
					uid := fmt.Sprintf("p%04d%03d", u, i)
					add(c, fmt.Sprintf("uid=%s,ou=u%04d,%s", uid, u, base), map[string][]string{
						"objectClass": {"inetOrgPerson"}, "uid": {uid}, "cn": {"Person " + uid}, "sn": {"P" + uid},
						"givenName": {"Given"}, "mail": {uid + "@example.org"}, "telephoneNumber": {"+45 1234 5678"}, "title": {"Sagsbehandler"},
					})
				}
			}
		}()
	}
	wg.Wait()
}

// drift changes 1% of the users.
func drift(b *testing.B, srv *testenv.Slapd, base string, units, perUnit int) {
	c, err := srv.Dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for u := range units {
		m := goldap.NewModifyRequest(fmt.Sprintf("uid=p%04d%03d,ou=u%04d,%s", u, 0, u, base), nil)
		m.Replace("title", []string{"Changed " + strconv.FormatInt(time.Now().UnixNano(), 36)})
		if err := c.Modify(m); err != nil {
			b.Fatal(err)
		}
	}
}

// rawPaged is the baseline: a plain paged search with go-ldap, one page
// in memory at a time, nothing converted.
func rawPaged(b *testing.B, srv *testenv.Slapd, base string, attrs []string) time.Duration {
	c, err := srv.Dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	paging := goldap.NewControlPaging(1000)
	n := 0
	for {
		res, err := c.Search(goldap.NewSearchRequest(base, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=inetOrgPerson)", append(attrs, "entryUUID", "entryCSN", "modifyTimestamp", "createTimestamp", "hasSubordinates"),
			[]goldap.Control{paging}))
		if err != nil {
			b.Fatal(err)
		}
		n += len(res.Entries)
		ctl, _ := goldap.FindControl(res.Controls, goldap.ControlTypePaging).(*goldap.ControlPaging)
		if ctl == nil || len(ctl.Cookie) == 0 {
			break
		}
		paging.SetCookie(ctl.Cookie)
	}
	if n == 0 {
		b.Fatal("raw search found nothing")
	}
	return time.Since(t0)
}

// resetPeakRSS resets the kernel's high-water mark of this process.
func resetPeakRSS() {
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSS is VmHWM in bytes.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
