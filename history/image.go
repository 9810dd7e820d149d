package history

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/os2sandbox/connector/state"
)

// An image is stored as a binary record. Its first fields are what scans
// need without the rest (snapshot comparison, deletion candidates,
// truncate): whose the object is, whether it is deleted, its content hash
// and valid time.
//
//	'I' | flags (bit 0: deleted, bit 1: head) | source | record | hash
//	    | 8 bytes virkningFra (µs) | version | 8 bytes registreringFra | eventId
//	    | open versions | keys JSON | fields JSON | row JSON
//	    [ head: sequence | operation | changeKind | 8 bytes virkningTil
//	    | virkningKilde | supersedes ]
//
// The newest version lives in its image (the head), not in the versions
// bucket: what it has beyond the image is a few small fields, and a
// change then writes one record for the object instead of two. It moves
// to the versions bucket when the next version registers. Images without
// the head bit (written before) have every version in the bucket.
//
// Strings and JSON are uvarint-length-prefixed; the JSON is canonical
// (AppendValue), so equal content is equal bytes. Images written before
// this format ('i': the header, then the whole Image as JSON) are still
// read.
type imageHead struct {
	Deleted bool
	Source  string
	Record  string
	Hash    string
	VirkFra int64
	rest    []byte // the record after these fields
	legacy  bool   // rest is the JSON of the whole image
	head    bool   // the newest version is in the record
}

const (
	imageMagic       = 'I'
	legacyImageMagic = 'i'

	flagDeleted = 1 << 0
	flagHead    = 1 << 1
)

var errImageFormat = errors.New("not an image record")

// encodeImage needs img's JSON parts in fieldsJSON, keysJSON and rowJSON
// (see setFields); the maps are not read.
func encodeImage(img *Image) []byte {
	size := 64 + len(img.Source) + len(img.Record) + len(img.Hash) + len(img.EventID) +
		len(img.keysJSON) + len(img.fieldsJSON) + len(img.rowJSON) + 10*len(img.Open)
	if h := img.head; h != nil {
		size += 32 + len(h.Operation) + len(h.ChangeKind) + len(h.VirkKilde) + 10*len(h.Supersedes)
	}
	b := make([]byte, 0, size)
	b = append(b, imageMagic, 0)
	if img.Deleted {
		b[1] |= flagDeleted
	}
	if img.head != nil {
		b[1] |= flagHead
	}
	b = appendStr(b, img.Source)
	b = appendStr(b, img.Record)
	b = appendStr(b, img.Hash)
	b = binary.BigEndian.AppendUint64(b, uint64(img.VirkFra.UnixMicro()))
	b = binary.AppendUvarint(b, img.Version)
	b = binary.BigEndian.AppendUint64(b, uint64(img.RegFra.UnixMicro()))
	b = appendStr(b, img.EventID)
	b = appendUvarints(b, img.Open)
	b = appendBytes(b, img.keysJSON)
	b = appendBytes(b, img.fieldsJSON)
	b = appendBytes(b, img.rowJSON)
	if h := img.head; h != nil {
		b = binary.AppendUvarint(b, h.Sequence)
		b = appendStr(b, h.Operation)
		b = appendStr(b, h.ChangeKind)
		b = appendMicros(b, h.VirkTil)
		b = appendStr(b, h.VirkKilde)
		b = appendUvarints(b, h.Supersedes)
	}
	return b
}

func peekImage(v []byte) (imageHead, error) {
	var h imageHead
	if len(v) < 2 || (v[0] != imageMagic && v[0] != legacyImageMagic) {
		return h, errImageFormat
	}
	h.legacy = v[0] == legacyImageMagic
	h.Deleted = v[1]&flagDeleted != 0
	h.head = !h.legacy && v[1]&flagHead != 0
	r := reader{p: v[2:]}
	h.Source, h.Record, h.Hash = r.str(), r.str(), r.str()
	if len(r.p) < 8 {
		r.fail()
	}
	if r.err != nil {
		return h, errImageFormat
	}
	h.VirkFra = int64(binary.BigEndian.Uint64(r.p))
	h.rest = r.p[8:]
	return h, nil
}

// decodeImage reads an image; with values false only the JSON bytes are
// kept (Fields, Keys and Row stay nil until decodeValues).
func decodeImage(v []byte, values bool) (*Image, error) {
	h, err := peekImage(v)
	if err != nil {
		return nil, err
	}
	img := &Image{Source: h.Source, Record: h.Record, Hash: h.Hash, Deleted: h.Deleted}
	if h.legacy {
		if err := unmarshalExact(h.rest, img); err != nil {
			return nil, err
		}
		img.fieldsJSON = appendCanonical(nil, img.Fields)
		img.keysJSON = appendCanonical(nil, img.Keys)
		img.rowJSON = appendCanonical(nil, img.Row)
		return img, nil
	}
	img.VirkFra = At(time.UnixMicro(h.VirkFra))
	// One copy (the record lives only as long as the transaction); the
	// JSON parts are slices of it.
	r := reader{p: clone(h.rest)}
	img.Version = r.uvarint()
	if t := r.micros(); t != nil {
		img.RegFra = *t
	}
	img.EventID = r.str()
	if img.Open = r.uvarints(); img.Open == nil {
		img.Open = []uint64{} // as the JSON form had it
	}
	img.keysJSON = r.bytes()
	img.fieldsJSON = r.bytes()
	img.rowJSON = r.bytes()
	if h.head {
		img.head = &Version{Version: img.Version, EventID: img.EventID, RegFra: img.RegFra, VirkFra: img.VirkFra,
			Deleted: img.Deleted, Hash: img.Hash}
		hv := img.head
		hv.Sequence = r.uvarint()
		hv.Operation, hv.ChangeKind = r.str(), r.str()
		hv.VirkTil = r.micros()
		hv.VirkKilde = r.str()
		hv.Supersedes = r.uvarints()
		if !hv.Deleted {
			hv.fieldsJSON = img.fieldsJSON
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if values {
		if err := img.decodeValues(); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// decodeValues fills Fields, Keys and Row from their JSON.
func (img *Image) decodeValues() error {
	var err error
	if img.Fields, err = decodeObject(img.fieldsJSON); err != nil {
		return fmt.Errorf("fields: %w", err)
	}
	if img.Row, err = decodeObject(img.rowJSON); err != nil {
		return fmt.Errorf("row: %w", err)
	}
	img.Keys = nil
	if len(img.keysJSON) > 0 && string(img.keysJSON) != "null" {
		if err := json.Unmarshal(img.keysJSON, &img.Keys); err != nil {
			return fmt.Errorf("keys: %w", err)
		}
	}
	return nil
}

// row returns the stored raw row, decoding it on first use.
func (img *Image) row() (map[string]any, error) {
	if img.Row == nil && len(img.rowJSON) > 0 {
		var err error
		if img.Row, err = decodeObject(img.rowJSON); err != nil {
			return nil, fmt.Errorf("stored row: %w", err)
		}
	}
	return img.Row, nil
}

func putImage(tx *state.Tx, typ, id string, img *Image) error {
	return tx.Put(state.Images, imageKey(typ, id), encodeImage(img))
}

// loadImage reads an object's image for the engine (JSON parts as bytes),
// or nil.
func loadImage(tx *state.Tx, typ, id string) (*Image, error) {
	return readImage(tx, typ, id, false)
}

func readImage(tx *state.Tx, typ, id string, values bool) (*Image, error) {
	v := tx.Get(state.Images, imageKey(typ, id))
	if v == nil {
		return nil, nil
	}
	img, err := decodeImage(v, values)
	if err != nil {
		return nil, fmt.Errorf("%w: image %s/%s: %v", state.ErrCorrupt, typ, id, err)
	}
	return img, nil
}

// peekAt reads an object's image header; ok is false if there is none.
func peekAt(tx *state.Tx, typ, id string) (h imageHead, ok bool, err error) {
	v := tx.Get(state.Images, imageKey(typ, id))
	if v == nil {
		return h, false, nil
	}
	if h, err = peekImage(v); err != nil {
		return h, false, fmt.Errorf("%w: image %s/%s: %v", state.ErrCorrupt, typ, id, err)
	}
	return h, true, nil
}

// LoadImage returns an object's current image with its values, or nil.
func LoadImage(tx *state.Tx, typ, id string) (*Image, error) { return readImage(tx, typ, id, true) }

// DecodeImage decodes a stored image value (for tools that scan images).
func DecodeImage(v []byte) (*Image, error) { return decodeImage(v, true) }

// decodeObject decodes canonical JSON of an object (or null) with exact
// numbers.
func decodeObject(b []byte) (map[string]any, error) {
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	d := newDecoder(b, false)
	if m := d.image(); d.err == nil {
		if d.ws(); d.p == len(b) && m != nil {
			return m, nil
		}
	}
	var m map[string]any // encoding/json says what is wrong
	if err := unmarshalExact(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
