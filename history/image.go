package history

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/os2sandbox/connector/state"
)

// An image is stored as a small binary header and the JSON of the whole
// Image. Scans that only need to know whose an object is, whether it is
// deleted and its content hash (snapshot comparison, deletion candidates,
// truncate) read the header and never decode the fields.
//
//	'i' | flags (bit 0: deleted) | uvarint len, source | uvarint len, record
//	    | uvarint len, hash | 8 bytes virkningFra (µs, big-endian) | JSON
type imageHead struct {
	Deleted bool
	Source  string
	Record  string
	Hash    string
	VirkFra int64
	json    []byte
}

const imageMagic = 'i'

var errImageFormat = errors.New("not an image record")

func encodeImage(img *Image) ([]byte, error) {
	js, err := json.Marshal(img)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(js)+len(img.Source)+len(img.Record)+len(img.Hash)+24)
	b = append(b, imageMagic, 0)
	if img.Deleted {
		b[1] = 1
	}
	for _, s := range []string{img.Source, img.Record, img.Hash} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(img.VirkFra.UnixMicro()))
	return append(b, js...), nil
}

func peekImage(v []byte) (imageHead, error) {
	var h imageHead
	if len(v) < 2 || v[0] != imageMagic {
		return h, errImageFormat
	}
	h.Deleted = v[1]&1 != 0
	p := v[2:]
	for _, dst := range []*string{&h.Source, &h.Record, &h.Hash} {
		n, w := binary.Uvarint(p)
		if w <= 0 || uint64(len(p)-w) < n {
			return h, errImageFormat
		}
		*dst = string(p[w : w+int(n)])
		p = p[w+int(n):]
	}
	if len(p) < 8 {
		return h, errImageFormat
	}
	h.VirkFra = int64(binary.BigEndian.Uint64(p))
	h.json = p[8:]
	return h, nil
}

func decodeImage(v []byte) (*Image, error) {
	h, err := peekImage(v)
	if err != nil {
		return nil, err
	}
	var img Image
	if err := json.Unmarshal(h.json, &img); err != nil {
		return nil, err
	}
	return &img, nil
}

func putImage(tx *state.Tx, typ, id string, img *Image) error {
	b, err := encodeImage(img)
	if err != nil {
		return err
	}
	return tx.Put(state.Images, imageKey(typ, id), b)
}

func loadImage(tx *state.Tx, typ, id string) (*Image, error) {
	v := tx.Get(state.Images, imageKey(typ, id))
	if v == nil {
		return nil, nil
	}
	img, err := decodeImage(v)
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

// DecodeImage decodes a stored image value (for tools that scan images).
func DecodeImage(v []byte) (*Image, error) { return decodeImage(v) }
