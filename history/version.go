package history

import (
	"encoding/binary"
	"fmt"

	"github.com/os2sandbox/connector/state"
)

// A version is stored as a binary record (older states hold JSON, which is
// still read):
//
//	'V' | flags (bit 0: deleted) | version | sequence | eventId | operation
//	    | changeKind | 8 bytes each: registreringFra, registreringTil,
//	    virkningFra, virkningTil (µs; MinInt64 for none) | virkningKilde
//	    | contentHash | supersedes | fields JSON
const versionMagic = 'V'

func encodeVersion(v *Version) []byte {
	b := make([]byte, 0, 96+len(v.EventID)+len(v.Operation)+len(v.ChangeKind)+len(v.VirkKilde)+len(v.Hash)+len(v.fieldsJSON))
	b = append(b, versionMagic, 0)
	if v.Deleted {
		b[1] = 1
	}
	b = binary.AppendUvarint(b, v.Version)
	b = binary.AppendUvarint(b, v.Sequence)
	b = appendStr(b, v.EventID)
	b = appendStr(b, v.Operation)
	b = appendStr(b, v.ChangeKind)
	b = appendMicros(b, &v.RegFra)
	b = appendMicros(b, v.RegTil)
	b = appendMicros(b, &v.VirkFra)
	b = appendMicros(b, v.VirkTil)
	b = appendStr(b, v.VirkKilde)
	b = appendStr(b, v.Hash)
	b = appendUvarints(b, v.Supersedes)
	return appendBytes(b, v.fieldsJSON)
}

// decodeVersion reads a version; with values false Fields stays nil and
// only its JSON is kept.
func decodeVersion(b []byte, values bool) (*Version, error) {
	v := new(Version)
	if len(b) > 0 && b[0] == '{' {
		if err := unmarshalExact(b, v); err != nil {
			return nil, err
		}
		v.fieldsJSON = appendCanonical(nil, v.Fields)
		return v, nil
	}
	if len(b) < 2 || b[0] != versionMagic {
		return nil, fmt.Errorf("not a version record")
	}
	v.Deleted = b[1]&1 != 0
	r := reader{p: b[2:]}
	v.Version, v.Sequence = r.uvarint(), r.uvarint()
	v.EventID, v.Operation, v.ChangeKind = r.str(), r.str(), r.str()
	if t := r.micros(); t != nil {
		v.RegFra = *t
	}
	v.RegTil = r.micros()
	if t := r.micros(); t != nil {
		v.VirkFra = *t
	}
	v.VirkTil = r.micros()
	v.VirkKilde, v.Hash = r.str(), r.str()
	v.Supersedes = r.uvarints()
	v.fieldsJSON = clone(r.bytes())
	if r.err != nil {
		return nil, r.err
	}
	if values {
		var err error
		if v.Fields, err = decodeObject(v.fieldsJSON); err != nil {
			return nil, fmt.Errorf("fields: %w", err)
		}
	}
	return v, nil
}

func versionKey(typ, id string, v uint64) []byte {
	return append(state.Key(typ, id, ""), state.U64(v)...)
}

func putVersion(tx *state.Tx, typ, id string, v *Version) error {
	return tx.Put(state.Versions, versionKey(typ, id, v.Version), encodeVersion(v))
}

// loadVersion reads one version for the engine (fields as JSON only).
func loadVersion(tx *state.Tx, typ, id string, n uint64) (*Version, error) {
	b := tx.Get(state.Versions, versionKey(typ, id, n))
	if b == nil {
		return nil, fmt.Errorf("%w: version %d of %s/%s missing", state.ErrCorrupt, n, typ, id)
	}
	v, err := decodeVersion(b, false)
	if err != nil {
		return nil, fmt.Errorf("%w: version %d of %s/%s: %v", state.ErrCorrupt, n, typ, id, err)
	}
	return v, nil
}

// Versions returns an object's versions in order, with their fields: the
// versions bucket's, then the head its image holds.
func Versions(tx *state.Tx, typ, id string) ([]*Version, error) {
	var out []*Version
	err := tx.Scan(state.Versions, state.Key(typ, id, ""), func(_, b []byte) error {
		v, err := decodeVersion(b, true)
		if err != nil {
			return fmt.Errorf("%w: versions of %s/%s: %v", state.ErrCorrupt, typ, id, err)
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	img, err := loadImage(tx, typ, id)
	if err != nil || img == nil || img.head == nil {
		return out, err
	}
	h := img.head
	if len(out) > 0 && out[len(out)-1].Version >= h.Version {
		return nil, fmt.Errorf("%w: versions of %s/%s: version %d is both in the image and after it", state.ErrCorrupt, typ, id, h.Version)
	}
	if h.Fields, err = decodeObject(h.fieldsJSON); err != nil {
		return nil, fmt.Errorf("%w: versions of %s/%s: fields: %v", state.ErrCorrupt, typ, id, err)
	}
	return append(out, h), nil
}
