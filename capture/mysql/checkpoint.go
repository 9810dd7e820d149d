package mysql

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/os2sandbox/connector/capture/sqltable"
)

// checkpoint is the source's resume state, stored by the engine with every
// batch.
type checkpoint struct {
	V int `json:"v"`
	// Server identifies the server the position belongs to (see
	// server.identity).
	Server string `json:"server"`
	// GTID is where streaming resumes: the GTID position (MariaDB's
	// gtid_binlog_pos form, one domain-server-seq per domain) after the
	// last transaction that is durable.
	GTID string `json:"gtid"`
	// File and Pos are the binlog coordinates of GTID, for diagnostics.
	File string `json:"file,omitempty"`
	Pos  uint32 `json:"pos,omitempty"`
	// Tx is the progress inside the transaction after GTID when a large
	// transaction was split into several batches.
	Tx *txProgress `json:"tx,omitempty"`
	// Snapshot is a snapshot run in progress.
	Snapshot *snapProgress `json:"snapshot,omitempty"`
	// Fences: a table read by a snapshot at GTID position At already holds
	// every change of the transactions At contains; the stream skips them.
	Fences []fence `json:"fences,omitempty"`
	// Captured lists the tables whose initial load is done.
	Captured []string `json:"captured,omitempty"`
	// Tables describes each table as last seen, to report schema changes.
	Tables map[string][]colDesc `json:"tables,omitempty"`
}

type txProgress struct {
	GTID string `json:"gtid"` // the transaction's GTID
	Next int    `json:"next"` // index of the first change not yet durable
}

// snapProgress is a snapshot run in progress. A run interrupted by a crash
// is started over (its consistent snapshot died with the connection).
type snapProgress struct {
	ID      string   `json:"id"`
	Initial bool     `json:"initial,omitempty"`
	Tables  []string `json:"tables"`
}

type fence struct {
	Table string `json:"table"`
	At    string `json:"at"`
}

type colDesc = sqltable.Column

const checkpointVersion = 1

func decodeCheckpoint(b []byte) (checkpoint, error) {
	var cp checkpoint
	if len(b) == 0 {
		return cp, nil
	}
	if err := json.Unmarshal(b, &cp); err != nil {
		return cp, fmt.Errorf("stored checkpoint is not readable (%v); it was not written by this source type", err)
	}
	if cp.V != checkpointVersion {
		return cp, fmt.Errorf("stored checkpoint has version %d, this agent reads version %d; run the agent version that wrote it, or reset the source", cp.V, checkpointVersion)
	}
	if _, err := parsePos(cp.GTID); err != nil {
		return cp, fmt.Errorf("stored checkpoint has a bad GTID position %q: %v", cp.GTID, err)
	}
	return cp, nil
}

func (cp checkpoint) encode() []byte {
	cp.V = checkpointVersion
	b, err := json.Marshal(cp)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return b
}

// gtid is one MariaDB GTID, domain-server-seq.
type gtid struct {
	Domain, Server uint32
	Seq            uint64
}

func (g gtid) String() string { return fmt.Sprintf("%d-%d-%d", g.Domain, g.Server, g.Seq) }

func parseGTID(s string) (gtid, error) {
	parts := strings.Split(strings.TrimSpace(s), "-")
	if len(parts) != 3 {
		return gtid{}, fmt.Errorf("GTID %q is not domain-server-sequence", s)
	}
	d, err1 := strconv.ParseUint(parts[0], 10, 32)
	sv, err2 := strconv.ParseUint(parts[1], 10, 32)
	n, err3 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return gtid{}, fmt.Errorf("GTID %q is not domain-server-sequence", s)
	}
	return gtid{uint32(d), uint32(sv), n}, nil
}

// pos is a GTID position: the last GTID of each replication domain, as in
// MariaDB's gtid_binlog_pos and gtid_slave_pos.
type pos map[uint32]gtid

func parsePos(s string) (pos, error) {
	p := pos{}
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		g, err := parseGTID(part)
		if err != nil {
			return nil, err
		}
		if old, ok := p[g.Domain]; !ok || g.Seq > old.Seq {
			p[g.Domain] = g
		}
	}
	return p, nil
}

func mustPos(s string) pos {
	p, err := parsePos(s)
	if err != nil {
		panic(fmt.Sprintf("mysql: bad GTID position %q", s))
	}
	return p
}

func (p pos) String() string {
	domains := make([]uint32, 0, len(p))
	for d := range p {
		domains = append(domains, d)
	}
	slices.Sort(domains)
	parts := make([]string, len(domains))
	for i, d := range domains {
		parts[i] = p[d].String()
	}
	return strings.Join(parts, ",")
}

// contains reports whether transaction g is at or before p.
func (p pos) contains(g gtid) bool {
	have, ok := p[g.Domain]
	return ok && have.Seq >= g.Seq
}

// covers reports whether every transaction before q is before p too.
func (p pos) covers(q pos) bool {
	for _, g := range q {
		if !p.contains(g) {
			return false
		}
	}
	return true
}
