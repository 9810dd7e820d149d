package postgres

import (
	"encoding/json"
	"fmt"

	"github.com/jackc/pglogrepl"

	"github.com/os2sandbox/connector/capture/sqltable"
)

// checkpoint is the source's resume state, stored by the engine with every
// batch. LSNs are in PostgreSQL's text form ("0/16B3748").
type checkpoint struct {
	V        int    `json:"v"`
	SystemID string `json:"systemId"`
	Timeline int32  `json:"timeline"`
	Database string `json:"database"`
	Slot     string `json:"slot"`
	// LSN is where streaming resumes: every transaction whose commit
	// record lies before it is durable (the server skips them).
	LSN string `json:"lsn"`
	// Tx is the progress inside the transaction after LSN when a large
	// transaction was split into several batches.
	Tx *txProgress `json:"tx,omitempty"`
	// Snapshot is a snapshot run in progress.
	Snapshot *snapProgress `json:"snapshot,omitempty"`
	// Fences say which streamed changes a finished snapshot already
	// contains (see fence); dropped once the stream passes them.
	Fences []fence `json:"fences,omitempty"`
	// Captured lists the tables whose initial load is done.
	Captured []string `json:"captured,omitempty"`
	// Tables describes each table as last seen (snapshot or Relation
	// message), to report schema changes.
	Tables map[string][]colDesc `json:"tables,omitempty"`
}

type txProgress struct {
	Commit string `json:"commit"` // the transaction's commit LSN
	Next   int    `json:"next"`   // index of the first change not yet durable
}

// snapProgress is a snapshot run: tables read in order, each in key order,
// in one or more segments (a segment per exported snapshot: a crash loses
// the exported snapshot, the run goes on in a new one).
type snapProgress struct {
	ID       string    `json:"id"`
	Initial  bool      `json:"initial,omitempty"`
	Tables   []string  `json:"tables"`
	Segments []segment `json:"segments"`
	Table    int       `json:"table"`           // index of the table being read
	After    []*string `json:"after,omitempty"` // key (text) of the last row delivered in Tables[Table]
	Rows     int64     `json:"rows"`
	// Pending: the run's Begin has not been delivered (a run started
	// over after the engine dropped its staged rows).
	Pending bool `json:"pending,omitempty"`
}

// segment: rows from (Table, After) on were read in the snapshot
// consistent with LSN.
type segment struct {
	LSN   string    `json:"lsn"`
	Table int       `json:"table"`
	After []*string `json:"after,omitempty"`
}

// fence: the rows of Table with a key after After (all rows when nil) were
// read in a snapshot consistent with LSN, so a streamed change to them that
// committed before LSN is already in the engine's state and is skipped.
type fence struct {
	Table string    `json:"table"`
	After []*string `json:"after,omitempty"`
	LSN   string    `json:"lsn"`
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
	for _, l := range []string{cp.LSN} {
		if _, err := pglogrepl.ParseLSN(l); l != "" && err != nil {
			return cp, fmt.Errorf("stored checkpoint has a bad LSN %q", l)
		}
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

func (cp checkpoint) lsn() pglogrepl.LSN { return mustLSN(cp.LSN) }

func mustLSN(s string) pglogrepl.LSN {
	if s == "" {
		return 0
	}
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		panic(fmt.Sprintf("postgres: bad LSN %q", s))
	}
	return l
}

// fencesFor turns a finished run's segments into fences for a stream that
// resumes at p: segments consistent with p or earlier need none.
func fencesFor(sp *snapProgress, p pglogrepl.LSN) []fence {
	var out []fence
	for k, seg := range sp.Segments {
		if mustLSN(seg.LSN) <= p {
			continue
		}
		last := len(sp.Tables) - 1
		if k+1 < len(sp.Segments) {
			last = sp.Segments[k+1].Table
		}
		for ti := seg.Table; ti <= last && ti < len(sp.Tables); ti++ {
			f := fence{Table: sp.Tables[ti], LSN: seg.LSN}
			if ti == seg.Table {
				f.After = seg.After
			}
			out = append(out, f)
		}
	}
	return out
}

func maxFence(fs []fence) pglogrepl.LSN {
	var m pglogrepl.LSN
	for _, f := range fs {
		if l := mustLSN(f.LSN); l > m {
			m = l
		}
	}
	return m
}
