package history

import (
	"runtime"
	"sync/atomic"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/mapping"
)

// encoded is a mapped object's canonical JSON and hash: what the engine
// compares with and stores in the image.
type encoded struct {
	fieldsJSON, keysJSON, rowJSON []byte
	hash                          string
}

func encode(obj mapping.Object, row map[string]any, keepRow bool) *encoded {
	enc := &encoded{fieldsJSON: appendCanonical(make([]byte, 0, 256), obj.Fields), keysJSON: keysJSON(obj.Keys)}
	enc.hash = hashJSON(enc.fieldsJSON)
	if keepRow && row != nil {
		enc.rowJSON = appendCanonical(make([]byte, 0, len(enc.fieldsJSON)+64), row)
	}
	return enc
}

// A batch's changes are mapped and encoded ahead of the transaction that
// applies them, on another goroutine: that work needs no state, and the
// transaction, which does, is the agent's one sequential stretch. The
// transaction takes a change's preparation when it is done, and otherwise
// does the work itself.
type prepared struct {
	claim atomic.Int32 // prepFree, prepBusy, prepDone or prepTaken

	// What applyMapped would compute from the change's values.
	id     string
	idErr  error
	mapped bool // obj, ok and mapErr are set (not for deletes or rows with unchanged columns)
	obj    mapping.Object
	ok     bool
	mapErr error
	enc    *encoded
}

const (
	prepFree  = iota
	prepBusy  // the preparer is at it
	prepDone  // ready for the transaction
	prepTaken // the transaction does it itself
)

// minPrepare is the smallest batch worth a preparing goroutine.
const minPrepare = 32

// prepare starts preparing b's changes. stop ends it and returns once the
// preparing goroutine no longer reads the changes (the caller may reuse
// them after Apply). It returns nil when the batch is not worth it.
func (e *Engine) prepare(src *SourceInfo, changes []capture.Change) (preps []prepared, stop func()) {
	if len(changes) < minPrepare || runtime.GOMAXPROCS(0) < 2 {
		return nil, func() {}
	}
	preps = make([]prepared, len(changes))
	var stopped atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range changes {
			if stopped.Load() {
				return
			}
			p := &preps[i]
			if !p.claim.CompareAndSwap(prepFree, prepBusy) {
				continue
			}
			p.fill(e, src, &changes[i])
			p.claim.Store(prepDone)
		}
	}()
	return preps, func() {
		stopped.Store(true)
		<-done
	}
}

func (p *prepared) fill(e *Engine, src *SourceInfo, ch *capture.Change) {
	ms := e.maps.ForRecord(src.Name, ch.Record)
	if len(ms) != 1 || ch.Op == capture.OpTruncate {
		return // left to the transaction (id "" with no error is never used: see take)
	}
	m := ms[0]
	p.id, p.idErr = m.ObjectID(ch.Values)
	if ch.Op == capture.OpDelete || len(ch.Unchanged) > 0 || p.idErr != nil {
		return
	}
	p.mapped = true
	p.obj, p.ok, p.mapErr = m.Map(ch.Values)
	if p.ok && p.mapErr == nil {
		p.enc = encode(p.obj, ch.Values, src.KeepRows)
	}
}

// take returns the change's preparation, waiting if it is under way, or
// nil if the transaction is to do the work itself.
func (p *prepared) take() *prepared {
	if p == nil {
		return nil
	}
	for {
		switch p.claim.Load() {
		case prepDone:
			if p.id == "" && p.idErr == nil {
				return nil // not prepared (see fill)
			}
			return p
		case prepFree:
			if p.claim.CompareAndSwap(prepFree, prepTaken) {
				return nil
			}
		case prepBusy:
			runtime.Gosched()
		default:
			return nil
		}
	}
}
