package history

import (
	"context"
	"fmt"
	"time"

	"github.com/os2sandbox/connector/state"
)

// Log compaction bounds the log the way a compacted Kafka topic is bounded:
// an event goes once every receiver has confirmed it, it is older than the
// retention, and a newer event of its object exists (or its object is
// deleted). The newest event of every live object stays for good, so a
// replay or a new receiver still gets the whole current state (what
// `replay --current-state` builds its events from), and the bitemporal
// history lives on in the versions, which compaction never touches.
//
// Sequences are never reused: the log's last event always stays (the
// engine numbers on from it), so the log has gaps only below what every
// receiver has already been sent.

// Compaction says what CompactLog may remove.
type Compaction struct {
	// Through returns, inside the deleting transaction, the highest
	// sequence every receiver has confirmed: nothing after it goes. It is
	// read again for each chunk, so a replay that moves a cursor back
	// meanwhile is honoured.
	Through func(tx *state.Tx) (uint64, error)
	// Before: events observed at or after it stay.
	Before time.Time
	// Chunk is how many events one write transaction removes (default
	// 2,000), so the engine's commits never wait long behind it.
	Chunk int
}

// CompactStats says what a compaction pass did.
type CompactStats struct {
	Scanned, Removed int
	// First is the log's first sequence afterwards (0: empty log).
	First uint64
}

// CompactLog removes the events c allows, in chunks; it stops at the first
// event too new or not yet confirmed everywhere.
func CompactLog(ctx context.Context, db *state.DB, c Compaction) (CompactStats, error) {
	if c.Chunk <= 0 {
		c.Chunk = 2000
	}
	var st CompactStats
	from := uint64(1)
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		// Choose in a read transaction, so the engine is not held up by
		// the scan; whether an event is superseded never reverts, so the
		// choice stays valid, and the floor is checked again below.
		var drop []uint64
		done, scanned := false, st.Scanned
		err := db.View(func(tx *state.Tx) error {
			floor, err := c.Through(tx)
			if err != nil {
				return err
			}
			last := LastSequence(tx)
			kept, err := deadLettered(tx)
			if err != nil {
				return err
			}
			limit := min(floor, last-min(last, 1)) // the last event always stays
			done = true
			return tx.ScanFrom(state.Log, nil, state.U64(from), func(k, v []byte) error {
				seq := state.ParseU64(k)
				if seq > limit {
					return state.ErrStop
				}
				var ev Event
				if err := DecodeEventHead(v, &ev); err != nil {
					return fmt.Errorf("%w: log event %d: %v", state.ErrCorrupt, seq, err)
				}
				if !ev.ObservedAt.Before(c.Before) {
					return state.ErrStop
				}
				st.Scanned++
				from = seq + 1
				img, err := loadImage(tx, ev.Object.Type, ev.Object.ID)
				if err != nil {
					return err
				}
				// Without an image the event's object is unknown to the
				// state (never expected): keep the event rather than guess.
				// Dead letters name their event by sequence: it stays, for
				// whoever looks into why it was refused.
				if img != nil && (img.Deleted || img.EventID != ev.EventID) && !kept[seq] {
					drop = append(drop, seq)
				}
				// Short read transactions too: a long one would hold up
				// bbolt's remapping when the engine grows the file.
				if len(drop) == c.Chunk || st.Scanned-scanned == 10*c.Chunk {
					done = false
					return state.ErrStop
				}
				return nil
			})
		})
		if err != nil {
			return st, err
		}
		if len(drop) > 0 {
			err = db.Update(func(tx *state.Tx) error {
				floor, err := c.Through(tx)
				if err != nil {
					return err
				}
				n := 0
				for _, seq := range drop {
					if seq > floor {
						done = true
						break
					}
					if err := tx.Delete(state.Log, state.U64(seq)); err != nil {
						return err
					}
					n++
				}
				st.Removed += n
				return tx.Put(state.Meta, metaCompacted, state.U64(Compacted(tx)+uint64(n)))
			})
			if err != nil {
				return st, err
			}
		}
		if done {
			break
		}
	}
	err := db.View(func(tx *state.Tx) error {
		st.First = FirstSequence(tx)
		return nil
	})
	return st, err
}

// metaCompacted counts the events compaction has removed, ever.
var metaCompacted = []byte("logCompacted")

// Compacted is how many events compaction has removed from the log.
func Compacted(tx *state.Tx) uint64 { return state.ParseU64(tx.Get(state.Meta, metaCompacted)) }

// FirstSequence is the oldest sequence the log still holds (0 if empty).
func FirstSequence(tx *state.Tx) uint64 {
	var first uint64
	_ = tx.Scan(state.Log, nil, func(k, _ []byte) error {
		first = state.ParseU64(k)
		return state.ErrStop
	})
	return first
}

// LastSequence is the newest sequence in the log (0 if empty); the engine
// numbers on from it.
func LastSequence(tx *state.Tx) uint64 {
	k, _ := tx.Last(state.Log)
	return state.ParseU64(k)
}

// deadLettered returns the sequences of every receiver's dead letters
// (keyed receiver, 0, be64 sequence).
func deadLettered(tx *state.Tx) (map[uint64]bool, error) {
	seqs := map[uint64]bool{}
	err := tx.Scan(state.DeadLetters, nil, func(k, _ []byte) error {
		if len(k) < 8 {
			return fmt.Errorf("%w: dead letter key %q", state.ErrCorrupt, k)
		}
		seqs[state.ParseU64(k[len(k)-8:])] = true
		return nil
	})
	return seqs, err
}
