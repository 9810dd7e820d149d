package ldap

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// GUIDString renders a 16-byte AD objectGUID as .NET Guid(byte[]).ToString()
// does, lower case: the first three groups are little-endian.
func GUIDString(b []byte) (string, error) {
	if len(b) != 16 {
		return "", fmt.Errorf("objectGUID has %d bytes, want 16", len(b))
	}
	var o [16]byte
	o[0], o[1], o[2], o[3] = b[3], b[2], b[1], b[0]
	o[4], o[5] = b[5], b[4]
	o[6], o[7] = b[7], b[6]
	copy(o[8:], b[8:])
	h := hex.EncodeToString(o[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// GUIDBytes is the inverse of GUIDString. It accepts upper case and
// braces ({ABCD…}), as GUIDs stored in string attributes often have them.
func GUIDBytes(s string) ([]byte, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "{"), "}")
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return nil, fmt.Errorf("%q is not a GUID", s)
	}
	o, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("%q is not a GUID", s)
	}
	b := make([]byte, 16)
	b[0], b[1], b[2], b[3] = o[3], o[2], o[1], o[0]
	b[4], b[5] = o[5], o[4]
	b[6], b[7] = o[7], o[6]
	copy(b[8:], o[8:])
	return b, nil
}

// NormalizeGUID turns any accepted GUID spelling into the canonical form.
func NormalizeGUID(s string) (string, error) {
	b, err := GUIDBytes(s)
	if err != nil {
		return "", err
	}
	return GUIDString(b)
}

// guidFilter is an equality assertion on a binary GUID, every byte
// escaped as \hh (RFC 4515), so bytes below 0x10 keep two digits.
func guidFilter(attr string, b []byte) string {
	var sb strings.Builder
	sb.WriteString("(" + attr + "=")
	for _, x := range b {
		fmt.Fprintf(&sb, "\\%02x", x)
	}
	sb.WriteString(")")
	return sb.String()
}

// SIDString renders a binary security identifier as S-1-5-21-….
func SIDString(b []byte) (string, error) {
	if len(b) < 8 || int(b[1])*4+8 != len(b) {
		return "", errors.New("malformed SID")
	}
	var auth uint64
	for _, x := range b[2:8] {
		auth = auth<<8 | uint64(x)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "S-%d-%d", b[0], auth)
	for i := 0; i < int(b[1]); i++ {
		// sub-authorities are unsigned 32-bit little-endian (RIDs above
		// 2^31 must not turn negative)
		fmt.Fprintf(&sb, "-%d", binary.LittleEndian.Uint32(b[8+4*i:]))
	}
	return sb.String(), nil
}

// FILETIME (100 ns since 1601-01-01 UTC) values meaning "never".
const (
	filetimeNever = int64(0x7FFFFFFFFFFFFFFF)
	filetimeEpoch = 116444736000000000 // 1970-01-01 in FILETIME
)

// FiletimeValue converts an AD Integer8 time: 0 and 0x7FFFFFFFFFFFFFFF
// mean "never" (nil); otherwise an RFC 3339 UTC timestamp.
func FiletimeValue(s string) (any, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("FILETIME %q: %w", s, err)
	}
	if n == 0 || n == filetimeNever || n < 0 {
		return nil, nil
	}
	d := n - filetimeEpoch
	t := time.Unix(d/10_000_000, d%10_000_000*100)
	return formatTime(t), nil
}

// GeneralizedTime parses an LDAP generalized time (20240101120000.0Z,
// 20240101120000Z, with offsets or fractions).
func GeneralizedTime(s string) (time.Time, error) {
	layouts := []string{"20060102150405Z0700", "20060102150405.999999999Z0700", "200601021504Z0700", "2006010215Z0700"}
	for _, l := range layouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	// AD writes ".0Z"; Go accepts fractions only with the layout above, so
	// try the comma form RFC 4517 also allows.
	if t, err := time.Parse("20060102150405,999999999Z0700", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not a generalized time", s)
}

func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

// userAccountControl bits (MS-ADTS 2.2.16).
const (
	uacDisabled             = 0x2
	uacLockout              = 0x10
	uacPasswordNeverExpires = 0x10000
)

// syntax OIDs (RFC 4517, MS-ADTS)
const (
	synBoolean  = "1.3.6.1.4.1.1466.115.121.1.7"
	synInteger  = "1.3.6.1.4.1.1466.115.121.1.27"
	synGenTime  = "1.3.6.1.4.1.1466.115.121.1.24"
	synUTCTime  = "1.3.6.1.4.1.1466.115.121.1.53"
	synDN       = "1.3.6.1.4.1.1466.115.121.1.12"
	synOctet    = "1.3.6.1.4.1.1466.115.121.1.40"
	synBinary   = "1.3.6.1.4.1.1466.115.121.1.5"
	synCert     = "1.3.6.1.4.1.1466.115.121.1.8"
	synCertList = "1.3.6.1.4.1.1466.115.121.1.9"
	synCertPair = "1.3.6.1.4.1.1466.115.121.1.10"
	synJPEG     = "1.3.6.1.4.1.1466.115.121.1.28"
	synInteger8 = "1.2.840.113556.1.4.906"
	synSecDesc  = "1.2.840.113556.1.4.907"
)

// kind is how an attribute's values are converted.
type kind uint8

const (
	kString kind = iota
	kBool
	kInt
	kTime     // generalized time
	kFiletime // AD Integer8 holding a FILETIME
	kGUID     // 16-byte GUID → .NET string
	kSID      // binary SID → S-1-5-…
	kBinary   // base64 or hash
)

// FILETIME attributes among the Integer8 ones (the rest are counts).
var filetimeAttrs = map[string]bool{
	"accountexpires": true, "pwdlastset": true, "lockouttime": true,
	"lastlogon": true, "lastlogontimestamp": true, "lastlogoff": true,
	"badpasswordtime": true, "msds-userpasswordexpirytimecomputed": true,
	"ms-mcs-admpwdexpirationtime": true,
}

var sidAttrs = map[string]bool{
	"objectsid": true, "sidhistory": true, "tokengroups": true,
	"securityidentifier": true, "ms-ds-creatorsid": true,
}

// attrInfo is what the schema says about an attribute.
type attrInfo struct {
	name   string // canonical spelling
	single bool
	dn     bool // DN syntax: AD may cap its values per read (range retrieval)
	kind   kind
}

// schema maps lower-case attribute names to their info.
type schema map[string]attrInfo

// parseSchema reads RFC 4512 attributeTypes descriptions, as both AD
// (CN=Aggregate) and OpenLDAP (cn=Subschema) publish them. Syntax is
// inherited through SUP where a type has none.
func parseSchema(descs []string) schema {
	type raw struct {
		names  []string
		syntax string
		sup    string
		single bool
	}
	byName := map[string]*raw{}
	var all []*raw
	for _, d := range descs {
		r := &raw{}
		toks := tokenize(d)
		for i := 0; i < len(toks); i++ {
			switch toks[i] {
			case "NAME":
				if i+1 < len(toks) && toks[i+1] == "(" {
					for i += 2; i < len(toks) && toks[i] != ")"; i++ {
						r.names = append(r.names, strings.Trim(toks[i], "'"))
					}
				} else if i+1 < len(toks) {
					r.names = append(r.names, strings.Trim(toks[i+1], "'"))
					i++
				}
			case "SYNTAX":
				if i+1 < len(toks) {
					s := strings.Trim(toks[i+1], "'")
					if j := strings.IndexByte(s, '{'); j >= 0 {
						s = s[:j]
					}
					r.syntax = s
					i++
				}
			case "SUP":
				if i+1 < len(toks) {
					r.sup = strings.ToLower(strings.Trim(toks[i+1], "'"))
					i++
				}
			case "SINGLE-VALUE":
				r.single = true
			}
		}
		for _, n := range r.names {
			byName[strings.ToLower(n)] = r
		}
		all = append(all, r)
	}
	out := schema{}
	for _, r := range all {
		syn := r.syntax
		for sup, depth := r.sup, 0; syn == "" && sup != "" && depth < 10; depth++ {
			p := byName[sup]
			if p == nil {
				break
			}
			syn, sup = p.syntax, p.sup
		}
		for _, n := range r.names {
			out[strings.ToLower(n)] = attrInfo{name: n, single: r.single, dn: syn == synDN, kind: kindOf(n, syn)}
		}
	}
	return out
}

func kindOf(name, syntax string) kind {
	l := strings.ToLower(name)
	switch {
	case sidAttrs[l]:
		return kSID
	case l == "objectguid" || l == "parentguid" || l == "invocationid" || l == "msexchmailboxguid" || l == "ms-ds-consistencyguid" || l == "msds-consistencyguid":
		return kGUID
	}
	switch syntax {
	case synBoolean:
		return kBool
	case synInteger:
		return kInt
	case synInteger8:
		if filetimeAttrs[l] {
			return kFiletime
		}
		return kInt
	case synGenTime, synUTCTime:
		return kTime
	case synOctet, synBinary, synCert, synCertList, synCertPair, synJPEG, synSecDesc:
		return kBinary
	}
	return kString
}

// info returns what is known about an attribute, with fallbacks for a
// server whose schema could not be read.
func (s schema) info(name string) attrInfo {
	l := strings.ToLower(name)
	if i, ok := s[l]; ok {
		return i
	}
	i := attrInfo{name: name, kind: kindOf(name, "")}
	switch {
	case filetimeAttrs[l]:
		i.kind, i.single = kFiletime, true
	case l == "whenchanged" || l == "whencreated" || l == "createtimestamp" || l == "modifytimestamp":
		i.kind, i.single = kTime, true
	case l == "useraccountcontrol" || l == "usnchanged" || l == "usncreated":
		i.kind, i.single = kInt, true
	case l == "objectguid" || l == "objectsid" || l == "entryuuid" || l == "isdeleted":
		i.single = true
		if l == "isdeleted" {
			i.kind = kBool
		}
	case l == "thumbnailphoto" || l == "jpegphoto" || l == "photo" || strings.HasSuffix(l, ";binary"):
		i.kind = kBinary
	}
	return i
}

// tokenize splits an RFC 4512 description into words, quoted strings and
// parentheses.
func tokenize(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '(' || c == ')':
			out = append(out, string(c))
			i++
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				out = append(out, s[i:])
				return out
			}
			out = append(out, s[i:i+j+2])
			i += j + 2
		default:
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '(' && s[j] != ')' {
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

// converter turns raw attribute values into JSON-friendly values.
type converter struct {
	schema   schema
	encoding string          // base64 or sha256
	hash     map[string]bool // lower-case names always hashed
}

// convert returns the value of one attribute: a scalar for single-valued
// attributes, a sorted []any for multi-valued ones (order never makes a
// change), nil when there are no values.
func (c *converter) convert(info attrInfo, raw [][]byte) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	vals := make([]any, 0, len(raw))
	for _, b := range raw {
		v, err := c.one(info, b)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", info.name, err)
		}
		vals = append(vals, v)
	}
	if info.single && len(vals) == 1 {
		return vals[0], nil
	}
	sort.Slice(vals, func(i, j int) bool { return sortKey(vals[i]) < sortKey(vals[j]) })
	return vals, nil
}

func sortKey(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		// numeric order for non-negative integers of any length
		s := string(x)
		if !strings.HasPrefix(s, "-") {
			return fmt.Sprintf("%030s", s)
		}
		return s
	default:
		return fmt.Sprint(x)
	}
}

func (c *converter) one(info attrInfo, b []byte) (any, error) {
	switch info.kind {
	case kBool:
		switch strings.ToUpper(string(b)) {
		case "TRUE":
			return true, nil
		case "FALSE":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not a boolean", b)
	case kInt:
		s := string(b)
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			if _, err := strconv.ParseUint(s, 10, 64); err != nil {
				return nil, fmt.Errorf("%q is not an integer", s)
			}
		}
		return json.Number(s), nil
	case kFiletime:
		return FiletimeValue(string(b))
	case kTime:
		t, err := GeneralizedTime(string(b))
		if err != nil {
			return nil, err
		}
		return formatTime(t), nil
	case kGUID:
		if len(b) == 16 {
			return GUIDString(b)
		}
		return NormalizeGUID(string(b))
	case kSID:
		return SIDString(b)
	case kBinary:
		if c.encoding == "sha256" || c.hash[strings.ToLower(info.name)] {
			sum := sha256.Sum256(b)
			return "sha256:" + hex.EncodeToString(sum[:]), nil
		}
		return base64.StdEncoding.EncodeToString(b), nil
	}
	if !utf8.Valid(b) {
		// a string attribute holding bytes: keep it lossless
		return "base64:" + base64.StdEncoding.EncodeToString(b), nil
	}
	return string(b), nil
}

// decodeUAC adds the userAccountControl flags a mapping needs as fields.
func decodeUAC(values map[string]any, uac string) error {
	n, err := strconv.ParseInt(uac, 10, 64)
	if err != nil {
		return fmt.Errorf("userAccountControl %q: %w", uac, err)
	}
	values["disabled"] = n&uacDisabled != 0
	values["lockedOut"] = n&uacLockout != 0
	values["passwordNeverExpires"] = n&uacPasswordNeverExpires != 0
	return nil
}
