package mysql

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/os2sandbox/connector/capture/capturetest"
	"github.com/os2sandbox/connector/publish/file/filetest"
)

// agentConfig is an agent's configuration for one table of e, mapped to
// typ with fields, and a file receiver writing ./events.jsonl.
func agentConfig(e *env, table, typ, fields string) string {
	return fmt.Sprintf(`state: ./state.db
sources:
  - name: my
    type: mysql
    host: 127.0.0.1
    port: %d
    user: root
    tables: [%s]
    heartbeat_interval: 1s
mappings:
  - type: %s
    source: my
    record: %s
    id: id
    fields: %s
    classification: internal
receivers:
  - name: out
    type: file
    path: ./events.jsonl
    start: beginning
    classification: internal
`, e.m.Port, table, typ, table, fields)
}

type event struct {
	EventID   string              `json:"eventId"`
	Sequence  uint64              `json:"sequence"`
	Operation string              `json:"operation"`
	Object    struct{ ID string } `json:"object"`
	Before    map[string]any      `json:"before"`
	After     map[string]any      `json:"after"`
}

func readEvents(t testing.TB, path string) []event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []event
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var x event
		if err := json.Unmarshal([]byte(line), &x); err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	return out
}

// Through the real agent (engine, state file, file receiver): a snapshot,
// then an insert, an update and a delete become one event each, with full
// before and after images.
func TestThroughAgent(t *testing.T) {
	bin := capturetest.Binary(t)
	e := newEnv(t, "CREATE TABLE person (id int PRIMARY KEY, name varchar(20), age int)", "INSERT INTO person VALUES (1, 'Anne', 40), (2, 'Bo', 31)")
	dir := t.TempDir()
	capturetest.WriteConfig(t, dir, agentConfig(e, e.table("person"), "Person", "{name: name, age: age}"))
	capturetest.RunOnce(t, bin, dir)
	e.exec("INSERT INTO person VALUES (3, 'Cai', 22)", "UPDATE person SET age = 41 WHERE id = 1", "DELETE FROM person WHERE id = 2")
	capturetest.RunOnce(t, bin, dir)
	evs := readEvents(t, filepath.Join(dir, "events.jsonl"))
	var got []string
	for _, x := range evs {
		got = append(got, x.Operation+" "+x.Object.ID)
	}
	if want := "snapshot 1,snapshot 2,create 3,update 1,delete 2"; strings.Join(got, ",") != want {
		t.Fatalf("events %v, want %s", got, want)
	}
	u := evs[3]
	if fmt.Sprint(u.Before["age"]) != "40" || fmt.Sprint(u.After["age"]) != "41" || u.After["name"] != "Anne" {
		t.Fatalf("update: before %v, after %v", u.Before, u.After)
	}
	if d := evs[4]; d.Before["name"] != "Bo" || d.After != nil {
		t.Fatalf("delete: before %v, after %v", d.Before, d.After)
	}
}

// TestKill9 runs `connector run` against MariaDB while a workload of
// inserts, updates and deletes runs, SIGKILLs it at 20 random moments and
// restarts it each time. At the end the receiver's file holds exactly one
// event per change (no sequence missing, duplicate deliveries only
// identical), and the images equal the table. MY_KILL_CHANGES scales the
// workload (default 20,000 changes).
func TestKill9(t *testing.T) {
	changes := 20_000
	if v, err := strconv.Atoi(os.Getenv("MY_KILL_CHANGES")); err == nil && v > 0 {
		changes = v
	}
	bin := capturetest.Binary(t)
	const seed = 1000
	e := newEnv(t, "CREATE TABLE person (id int PRIMARY KEY, name varchar(20), n int)",
		fmt.Sprintf("INSERT INTO person SELECT seq, CONCAT('p', seq), 0 FROM seq_1_to_%d", seed))
	dir := t.TempDir()
	capturetest.WriteConfig(t, dir, agentConfig(e, e.table("person"), "Person", "{name: name, n: n}"))
	capturetest.RunOnce(t, bin, dir)

	var inserted, updated, deleted int
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := e.m.Conn(e.db)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		rng := rand.New(rand.NewPCG(3, 4))
		next := seed + 1
		live := make([]int, 0, seed)
		for i := 1; i <= seed; i++ {
			live = append(live, i)
		}
		exec := func(q string) int {
			r, err := c.Execute(q)
			if err != nil {
				t.Error(q, err)
				return 0
			}
			return int(r.AffectedRows)
		}
		for inserted+updated+deleted < changes && !t.Failed() {
			exec("BEGIN")
			ins := 5 + rng.IntN(20)
			n := exec(fmt.Sprintf("INSERT INTO person SELECT seq, CONCAT('p', seq), 0 FROM seq_%d_to_%d", next, next+ins-1))
			for i := 0; i < ins; i++ {
				live = append(live, next+i)
			}
			next += ins
			var upd []string
			for i := 0; i < 10; i++ {
				upd = append(upd, strconv.Itoa(live[rng.IntN(len(live))]))
			}
			u := exec("UPDATE person SET n = n + 1 WHERE id IN (" + strings.Join(upd, ",") + ")")
			var del []string
			for i := 0; i < 3 && len(live) > 100; i++ {
				j := rng.IntN(len(live))
				del = append(del, strconv.Itoa(live[j]))
				live = append(live[:j], live[j+1:]...)
			}
			d := exec("DELETE FROM person WHERE id IN (" + strings.Join(del, ",") + ")")
			exec("COMMIT")
			inserted, updated, deleted = inserted+n, updated+u, deleted+d
			time.Sleep(time.Duration(15*time.Second) * 35 / time.Duration(changes))
		}
	}()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	kills := 0
	for kills < 20 {
		capturetest.RunAndKill(t, bin, dir, time.Duration(200+rng.IntN(1300))*time.Millisecond)
		kills++
	}
	<-done
	if t.Failed() {
		return
	}
	capturetest.RunOnce(t, bin, dir)

	want := seed + inserted + updated + deleted
	lines, dups := filetest.Delivered(t, filepath.Join(dir, "events.jsonl"))
	if len(lines) != want {
		t.Fatalf("%d events, want %d (%d snapshot + %d inserts + %d updates + %d deletes)",
			len(lines), want, seed, inserted, updated, deleted)
	}
	last := map[string]event{}
	for _, l := range lines {
		var x event
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatal(err)
		}
		last[x.Object.ID] = x
	}
	rows, err := query(e.conn, "SELECT id, n FROM person")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]string{}
	for _, r := range rows {
		table[str(r[0])] = str(r[1])
	}
	for id, x := range last {
		n, exists := table[id]
		if exists != (x.Operation != "delete") {
			t.Fatalf("object %s: last event %s, row exists %v", id, x.Operation, exists)
		}
		if exists && fmt.Sprint(x.After["n"]) != n {
			t.Fatalf("object %s: last event n=%v, table n=%s", id, x.After["n"], n)
		}
	}
	if len(table) != len(last)-deleted {
		t.Fatalf("table has %d rows, events describe %d live objects", len(table), len(last)-deleted)
	}
	t.Logf("%d kills; %d events (%d inserts, %d updates, %d deletes after a %d-row load); %d duplicate deliveries, all identical",
		kills, want, inserted, updated, deleted, seed, dups)
}
