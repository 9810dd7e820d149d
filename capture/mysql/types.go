package mysql

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/encoding/unicode/utf32"
)

// kind is how a column's value becomes a JSON-friendly Go value. The
// snapshot (binary protocol, results in the columns' own character sets)
// and the stream (row events) meet in the same conversion, so a row reads
// the same either way.
type kind uint8

const (
	kOther     kind = iota // unknown: text if valid UTF-8, else base64
	kInt                   // json.Number
	kUint                  // json.Number
	kDecimal               // json.Number, exact
	kFloat                 // json.Number, shortest form that reads back as the float32
	kDouble                // json.Number, shortest form of the float64
	kBit                   // json.Number of the bits as an unsigned integer
	kYear                  // json.Number
	kDate                  // "2006-01-02"
	kDateTime              // "2006-01-02T15:04:05.000000" (no zone: the column has none)
	kTimestamp             // "2006-01-02T15:04:05.000000Z" (UTC)
	kTime                  // "15:04:05[.ffffff]" to the column's precision; may be negative or past 24h
	kText                  // string, decoded from the column's character set
	kBytes                 // base64 (as postgres bytea)
	kEnum                  // the member's name
	kSet                   // sorted array of the members' names
	kJSON                  // the parsed document (numbers as json.Number); text if invalid
)

type colType struct {
	kind    kind
	charset string
	fsp     int
	fixed   int // BINARY(n): n (the binlog drops trailing zero bytes)
	names   []string
}

// snapshotType is a column's conversion as information_schema describes
// it.
func snapshotType(c colInfo) colType {
	ct := colType{charset: c.Charset, fsp: c.Fsp}
	unsigned := strings.Contains(strings.ToLower(c.ColumnType), "unsigned")
	switch c.DataType {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint":
		ct.kind = kInt
		if unsigned {
			ct.kind = kUint
		}
	case "decimal", "numeric":
		ct.kind = kDecimal
	case "float":
		ct.kind = kFloat
	case "double", "real", "double precision":
		ct.kind = kDouble
	case "bit":
		ct.kind = kBit
	case "year":
		ct.kind = kYear
	case "date":
		ct.kind = kDate
	case "datetime":
		ct.kind = kDateTime
	case "timestamp":
		ct.kind = kTimestamp
	case "time":
		ct.kind = kTime
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext":
		ct.kind = kText
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		ct.kind = kBytes
	case "enum":
		ct.kind = kEnum
	case "set":
		ct.kind = kSet
	case "json":
		ct.kind = kJSON
	}
	if c.JSON {
		ct.kind = kJSON
	}
	return ct
}

// fromSnapshot converts a value read with the binary protocol and
// character_set_results = binary.
func fromSnapshot(fv *gomysql.FieldValue, ct *colType) any {
	switch fv.Type {
	case gomysql.FieldValueTypeNull:
		return nil
	case gomysql.FieldValueTypeSigned:
		if ct.kind == kUint {
			return json.Number(strconv.FormatUint(fv.AsUint64(), 10))
		}
		return json.Number(strconv.FormatInt(fv.AsInt64(), 10))
	case gomysql.FieldValueTypeUnsigned:
		return json.Number(strconv.FormatUint(fv.AsUint64(), 10))
	case gomysql.FieldValueTypeFloat:
		if ct.kind == kFloat {
			return json.Number(strconv.FormatFloat(float64(float32(fv.AsFloat64())), 'g', -1, 32))
		}
		return json.Number(strconv.FormatFloat(fv.AsFloat64(), 'g', -1, 64))
	}
	raw := fv.AsString()
	switch ct.kind {
	case kBit:
		var u uint64
		for _, b := range raw {
			u = u<<8 | uint64(b)
		}
		return json.Number(strconv.FormatUint(u, 10))
	case kSet:
		if len(raw) == 0 {
			return []any{}
		}
		return sortedNames(strings.Split(decodeText(raw, ct.charset), ","))
	case kInt, kUint, kYear, kDecimal:
		return json.Number(string(raw))
	}
	return convertBytes(raw, ct)
}

// convertBytes converts the raw bytes of a string-shaped value.
func convertBytes(raw []byte, ct *colType) any {
	switch ct.kind {
	case kDecimal:
		return json.Number(string(raw))
	case kDate:
		return string(raw)
	case kDateTime:
		return isoDateTime(string(raw), "")
	case kTimestamp:
		return isoDateTime(string(raw), "Z")
	case kTime:
		return fracTo(string(raw), ct.fsp)
	case kText, kEnum:
		return decodeText(raw, ct.charset)
	case kBytes:
		if ct.fixed > len(raw) {
			padded := make([]byte, ct.fixed)
			copy(padded, raw)
			raw = padded
		}
		return base64.StdEncoding.EncodeToString(raw)
	case kJSON:
		text := decodeText(raw, ct.charset)
		d := json.NewDecoder(strings.NewReader(text))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil || d.More() {
			return text
		}
		return v
	}
	if utf8.Valid(raw) {
		return string(raw)
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// fromStream converts a value as go-mysql decodes it from a row event
// (ParseTime off, timestamps in UTC, decimals as strings).
func fromStream(v any, ct *colType) any {
	switch x := v.(type) {
	case nil:
		return nil
	case int8:
		if ct.kind == kUint {
			return json.Number(strconv.FormatUint(uint64(uint8(x)), 10))
		}
		return json.Number(strconv.FormatInt(int64(x), 10))
	case int16:
		if ct.kind == kUint {
			return json.Number(strconv.FormatUint(uint64(uint16(x)), 10))
		}
		return json.Number(strconv.FormatInt(int64(x), 10))
	case int32:
		if ct.kind == kUint {
			u := uint64(uint32(x))
			if ct.fixed == 3 { // MEDIUMINT, sign-extended by go-mysql
				u &= 0xFFFFFF
			}
			return json.Number(strconv.FormatUint(u, 10))
		}
		return json.Number(strconv.FormatInt(int64(x), 10))
	case int64:
		switch ct.kind {
		case kUint, kBit:
			return json.Number(strconv.FormatUint(uint64(x), 10))
		case kEnum:
			if x >= 1 && int(x) <= len(ct.names) {
				return decodeText([]byte(ct.names[x-1]), ct.charset)
			}
			return "" // the error value of an invalid ENUM
		case kSet:
			out := []string{}
			for i, n := range ct.names {
				if i < 64 && x&(1<<i) != 0 {
					out = append(out, decodeText([]byte(n), ct.charset))
				}
			}
			return sortedNames(out)
		}
		return json.Number(strconv.FormatInt(x, 10))
	case int:
		return json.Number(strconv.Itoa(x))
	case float32:
		return json.Number(strconv.FormatFloat(float64(x), 'g', -1, 32))
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Sprint(x)
		}
		return json.Number(strconv.FormatFloat(x, 'g', -1, 64))
	case string:
		return convertBytes([]byte(x), ct)
	case []byte:
		return convertBytes(x, ct)
	}
	return fmt.Sprint(v)
}

func sortedNames(names []string) []any {
	slices.Sort(names)
	out := make([]any, len(names))
	for i, n := range names {
		out[i] = n
	}
	return out
}

// isoDateTime rewrites "2006-01-02 15:04:05[.ffffff]" as
// "2006-01-02T15:04:05.ffffff"+zone; other shapes stay as they are.
func isoDateTime(b, zone string) string {
	if len(b) < 19 || b[10] != ' ' {
		return b
	}
	frac := ""
	if len(b) > 19 {
		if b[19] != '.' {
			return b
		}
		frac = b[20:]
	}
	if len(frac) > 6 {
		frac = frac[:6]
	}
	return b[:10] + "T" + b[11:19] + "." + frac + strings.Repeat("0", 6-len(frac)) + zone
}

// fracTo writes a TIME with exactly fsp fractional digits.
func fracTo(t string, fsp int) string {
	whole, frac, _ := strings.Cut(t, ".")
	if fsp <= 0 {
		return whole
	}
	if len(frac) > fsp {
		frac = frac[:fsp]
	}
	return whole + "." + frac + strings.Repeat("0", fsp-len(frac))
}

// decodeText turns a value in a MariaDB character set into a Go string.
func decodeText(raw []byte, charset string) string {
	switch charset {
	case "", "utf8mb4", "utf8mb3", "utf8", "ascii", "binary":
		return string(raw)
	}
	if enc := encodingOf(charset); enc != nil {
		if out, err := enc.NewDecoder().Bytes(raw); err == nil {
			return string(out)
		}
	}
	if utf8.Valid(raw) {
		return string(raw)
	}
	return strings.ToValidUTF8(string(raw), "\uFFFD")
}

// encodingOf maps MariaDB character set names to decoders (latin1 is
// Windows-1252 in MariaDB).
func encodingOf(charset string) encoding.Encoding {
	switch charset {
	case "latin1":
		return charmap.Windows1252
	case "latin2":
		return charmap.ISO8859_2
	case "latin5":
		return charmap.ISO8859_9
	case "latin7":
		return charmap.ISO8859_13
	case "greek":
		return charmap.ISO8859_7
	case "hebrew":
		return charmap.ISO8859_8
	case "cp1250":
		return charmap.Windows1250
	case "cp1251":
		return charmap.Windows1251
	case "cp1256":
		return charmap.Windows1256
	case "cp1257":
		return charmap.Windows1257
	case "cp850":
		return charmap.CodePage850
	case "cp852":
		return charmap.CodePage852
	case "cp866":
		return charmap.CodePage866
	case "koi8r":
		return charmap.KOI8R
	case "koi8u":
		return charmap.KOI8U
	case "macroman":
		return charmap.Macintosh
	case "ucs2", "utf16":
		return unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)
	case "utf16le":
		return unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)
	case "utf32":
		return utf32.UTF32(utf32.BigEndian, utf32.IgnoreBOM)
	case "sjis", "cp932":
		return japanese.ShiftJIS
	case "ujis", "eucjpms":
		return japanese.EUCJP
	case "euckr":
		return korean.EUCKR
	case "gbk", "gb2312":
		return simplifiedchinese.GBK
	case "gb18030":
		return simplifiedchinese.GB18030
	case "big5":
		return traditionalchinese.Big5
	}
	return nil
}

// streamType is a column's conversion as a TABLE_MAP event describes it
// (binlog_row_metadata = FULL gives signedness, character sets and the
// ENUM and SET members). json says the column holds JSON (MariaDB's JSON is
// a LONGTEXT, which the binlog cannot tell apart).
func streamType(colType0 byte, meta uint16, unsigned bool, charset string, names []string, json bool) colType {
	ct := colType{charset: charset}
	tp := colType0
	if tp == gomysql.MYSQL_TYPE_STRING && meta >= 256 {
		b0 := byte(meta >> 8)
		if b0 == gomysql.MYSQL_TYPE_ENUM || b0 == gomysql.MYSQL_TYPE_SET {
			tp = b0
		} else if b0&0x30 != 0x30 {
			ct.fixed = int(uint16(meta&0xFF) | uint16((b0&0x30)^0x30)<<4)
		} else {
			ct.fixed = int(meta & 0xFF)
		}
	} else if tp == gomysql.MYSQL_TYPE_STRING {
		ct.fixed = int(meta)
	}
	switch tp {
	case gomysql.MYSQL_TYPE_TINY, gomysql.MYSQL_TYPE_SHORT, gomysql.MYSQL_TYPE_INT24, gomysql.MYSQL_TYPE_LONG, gomysql.MYSQL_TYPE_LONGLONG:
		ct.kind = kInt
		if unsigned {
			ct.kind = kUint
		}
		if tp == gomysql.MYSQL_TYPE_INT24 {
			ct.fixed = 3
		}
	case gomysql.MYSQL_TYPE_NEWDECIMAL, gomysql.MYSQL_TYPE_DECIMAL:
		ct.kind = kDecimal
	case gomysql.MYSQL_TYPE_FLOAT:
		ct.kind = kFloat
	case gomysql.MYSQL_TYPE_DOUBLE:
		ct.kind = kDouble
	case gomysql.MYSQL_TYPE_BIT:
		ct.kind = kBit
	case gomysql.MYSQL_TYPE_YEAR:
		ct.kind = kYear
	case gomysql.MYSQL_TYPE_DATE, gomysql.MYSQL_TYPE_NEWDATE:
		ct.kind = kDate
	case gomysql.MYSQL_TYPE_DATETIME, gomysql.MYSQL_TYPE_DATETIME2:
		ct.kind = kDateTime
	case gomysql.MYSQL_TYPE_TIMESTAMP, gomysql.MYSQL_TYPE_TIMESTAMP2:
		ct.kind = kTimestamp
	case gomysql.MYSQL_TYPE_TIME, gomysql.MYSQL_TYPE_TIME2:
		ct.kind = kTime
		if tp == gomysql.MYSQL_TYPE_TIME2 {
			ct.fsp = int(meta)
		}
	case gomysql.MYSQL_TYPE_ENUM:
		ct.kind, ct.names = kEnum, names
	case gomysql.MYSQL_TYPE_SET:
		ct.kind, ct.names = kSet, names
	case gomysql.MYSQL_TYPE_JSON:
		ct.kind, ct.charset = kJSON, "utf8mb4"
	case gomysql.MYSQL_TYPE_STRING, gomysql.MYSQL_TYPE_VARCHAR, gomysql.MYSQL_TYPE_VAR_STRING, gomysql.MYSQL_TYPE_BLOB:
		ct.kind = kText
		if charset == "binary" {
			ct.kind = kBytes
		}
		if json {
			ct.kind = kJSON
		}
	default:
		ct.kind = kOther
	}
	if ct.kind != kBytes && tp != gomysql.MYSQL_TYPE_INT24 {
		ct.fixed = 0
	}
	return ct
}
