package ldap

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/configs"
)

func TestGUIDString(t *testing.T) {
	// The raw objectGUID 23 7a d6 29 fd 18 bd 46 … is what Samba itself
	// renders as <GUID=29d67a23-18fd-46bd-84f6-3068d434558c> (and .NET's
	// new Guid(bytes).ToString() gives the same): the first three groups
	// are little-endian.
	cases := []struct{ hex, want string }{
		{"237ad629fd18bd4684f63068d434558c", "29d67a23-18fd-46bd-84f6-3068d434558c"},
		{"000102030405060708090a0b0c0d0e0f", "03020100-0504-0706-0809-0a0b0c0d0e0f"},
		{"ffffffffffffffffffffffffffffffff", "ffffffff-ffff-ffff-ffff-ffffffffffff"},
	}
	for _, c := range cases {
		b, _ := hex.DecodeString(c.hex)
		got, err := GUIDString(b)
		if err != nil || got != c.want {
			t.Errorf("GUIDString(%s) = %q, %v; want %q", c.hex, got, err, c.want)
		}
		back, err := GUIDBytes(strings.ToUpper("{" + got + "}"))
		if err != nil || hex.EncodeToString(back) != c.hex {
			t.Errorf("GUIDBytes(%q) = %x, %v", got, back, err)
		}
	}
	if _, err := GUIDString([]byte{1, 2, 3}); err == nil {
		t.Error("short GUID accepted")
	}
	if _, err := NormalizeGUID("not-a-guid"); err == nil {
		t.Error("bad GUID accepted")
	}
	if got, _ := NormalizeGUID("{237AD629-FD18-BD46-84F6-3068D434558C}"); got != "237ad629-fd18-bd46-84f6-3068d434558c" {
		t.Errorf("NormalizeGUID = %q", got)
	}
}

func TestGUIDFilterEscapesEveryByte(t *testing.T) {
	b, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	want := `(objectGUID=\00\01\02\03\04\05\06\07\08\09\0a\0b\0c\0d\0e\0f)`
	if got := guidFilter("objectGUID", b); got != want {
		t.Errorf("guidFilter = %s, want %s", got, want)
	}
}

func TestSIDString(t *testing.T) {
	cases := []struct{ hex, want string }{
		// S-1-5-21-2127219300-3117746706-2221325305-1104 (from Samba)
		{"01050000000000051500000064caca7e120ad5b9f9bb668450040000", "S-1-5-21-2127219300-3117746706-2221325305-1104"},
		// RID above 2^31 stays unsigned
		{"010200000000000515000000ffffffff", "S-1-5-21-4294967295"},
		{"010100000000000512000000", "S-1-5-18"},
	}
	for _, c := range cases {
		b, _ := hex.DecodeString(c.hex)
		got, err := SIDString(b)
		if err != nil || got != c.want {
			t.Errorf("SIDString(%s) = %q, %v; want %q", c.hex, got, err, c.want)
		}
	}
	if _, err := SIDString([]byte{1, 5, 0}); err == nil {
		t.Error("malformed SID accepted")
	}
}

func TestFiletime(t *testing.T) {
	cases := []struct {
		in   string
		want any
	}{
		{"0", nil},
		{"9223372036854775807", nil},
		{"116444736000000000", "1970-01-01T00:00:00.000000Z"},
		// 2024-03-31 22:00:00 UTC = midnight in Copenhagen (CEST) on 1 April
		{"133563960000000000", "2024-03-31T22:00:00.000000Z"},
		{"133563960001234560", "2024-03-31T22:00:00.123456Z"},
	}
	for _, c := range cases {
		got, err := FiletimeValue(c.in)
		if err != nil || got != c.want {
			t.Errorf("FiletimeValue(%s) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	if _, err := FiletimeValue("x"); err == nil {
		t.Error("non-number accepted")
	}
}

func TestGeneralizedTime(t *testing.T) {
	for in, want := range map[string]string{
		"20240101120000.0Z":       "2024-01-01T12:00:00Z",
		"20240101120000Z":         "2024-01-01T12:00:00Z",
		"20240101140000+0200":     "2024-01-01T12:00:00Z",
		"20261122210008.895632Z":  "2026-11-22T21:00:08.895632Z",
		"20240101120000,5Z":       "2024-01-01T12:00:00.5Z",
		"202401011200Z":           "2024-01-01T12:00:00Z",
		"20240101120000.123-0100": "2024-01-01T13:00:00.123Z",
	} {
		got, err := GeneralizedTime(in)
		if err != nil || got.UTC().Format(time.RFC3339Nano) != want {
			t.Errorf("GeneralizedTime(%s) = %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := GeneralizedTime("yesterday"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestParseSchema(t *testing.T) {
	s := parseSchema([]string{
		"( 2.5.4.31 NAME 'member' SYNTAX '1.3.6.1.4.1.1466.115.121.1.12' )",
		"( 1.2.840.113556.1.4.159 NAME 'accountExpires' SYNTAX '1.2.840.113556.1.4.906' SINGLE-VALUE )",
		"( 1.2.840.113556.1.4.2 NAME 'objectGUID' SYNTAX '1.3.6.1.4.1.1466.115.121.1.40' SINGLE-VALUE NO-USER-MODIFICATION )",
		"( 2.5.4.41 NAME 'name' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{32768} )",
		"( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'RFC4519: common name(s) for which the entity is known by' SUP name )",
		"( 1.3.6.1.1.16.4 NAME 'entryUUID' DESC 'UUID of the entry' EQUALITY UUIDMatch SYNTAX 1.3.6.1.1.16.1 SINGLE-VALUE NO-USER-MODIFICATION USAGE directoryOperation )",
		"( 2.5.18.2 NAME 'modifyTimestamp' SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 SINGLE-VALUE NO-USER-MODIFICATION USAGE directoryOperation )",
		"( 1.2.840.113556.1.4.8 NAME 'userAccountControl' SYNTAX '1.3.6.1.4.1.1466.115.121.1.27' SINGLE-VALUE )",
	})
	cases := []struct {
		name   string
		single bool
		dn     bool
		kind   kind
	}{
		{"member", false, true, kString},
		{"accountExpires", true, false, kFiletime},
		{"objectGUID", true, false, kGUID},
		{"commonName", false, false, kString},
		{"CN", false, false, kString},
		{"entryUUID", true, false, kString},
		{"modifyTimestamp", true, false, kTime},
		{"userAccountControl", true, false, kInt},
	}
	for _, c := range cases {
		i := s.info(c.name)
		if i.single != c.single || i.dn != c.dn || i.kind != c.kind {
			t.Errorf("%s: %+v", c.name, i)
		}
	}
	if s.info("cn").name != "cn" {
		t.Errorf("canonical name %q", s.info("cn").name)
	}
	// without a schema, names still get sensible kinds
	var none schema
	if i := none.info("whenChanged"); i.kind != kTime || !i.single {
		t.Errorf("fallback whenChanged: %+v", i)
	}
	if i := none.info("thumbnailPhoto"); i.kind != kBinary {
		t.Errorf("fallback thumbnailPhoto: %+v", i)
	}
}

func TestConvertSetsAndBinary(t *testing.T) {
	c := &converter{schema: schema{}, encoding: "base64", hash: map[string]bool{"thumbnailphoto": true}}
	multi := attrInfo{name: "proxyAddresses"}
	a, _ := c.convert(multi, [][]byte{[]byte("b"), []byte("a")})
	b, _ := c.convert(multi, [][]byte{[]byte("a"), []byte("b")})
	if !slices.Equal(a.([]any), b.([]any)) {
		t.Errorf("order made a difference: %v vs %v", a, b)
	}
	n, _ := c.convert(attrInfo{name: "x", kind: kInt}, [][]byte{[]byte("10"), []byte("9")})
	if got := n.([]any); got[0] != json.Number("9") {
		t.Errorf("numbers not in numeric order: %v", got)
	}
	if v, _ := c.convert(multi, nil); v != nil {
		t.Errorf("no values = %v, want nil", v)
	}
	photo, _ := c.convert(attrInfo{name: "thumbnailPhoto", single: true, kind: kBinary}, [][]byte{{0xff, 0xd8}})
	if !strings.HasPrefix(photo.(string), "sha256:") {
		t.Errorf("photo = %v", photo)
	}
	raw, _ := c.convert(attrInfo{name: "msDS-Blob", single: true, kind: kBinary}, [][]byte{{0xff, 0xd8}})
	if raw != "/9g=" {
		t.Errorf("binary = %v", raw)
	}
	bad, _ := c.convert(attrInfo{name: "info", single: true}, [][]byte{{0xff, 0xfe}})
	if bad != "base64://4=" {
		t.Errorf("invalid UTF-8 = %v", bad)
	}
	if _, err := c.convert(attrInfo{name: "n", single: true, kind: kInt}, [][]byte{[]byte("x")}); err == nil {
		t.Error("bad integer accepted")
	}
}

func TestDecodeUAC(t *testing.T) {
	v := map[string]any{}
	if err := decodeUAC(v, "66050"); err != nil { // 0x10202: normal, disabled, don't expire
		t.Fatal(err)
	}
	if v["disabled"] != true || v["passwordNeverExpires"] != true || v["lockedOut"] != false {
		t.Errorf("%v", v)
	}
	decodeUAC(v, "512")
	if v["disabled"] != false {
		t.Errorf("%v", v)
	}
}

func TestFilterAttrs(t *testing.T) {
	got := filterAttrs(`(&(objectClass=user)(!(objectClass=computer))(|(department=IT*)(title>=a)(mail=*))(userAccountControl:1.2.840.113556.1.4.803:=2))`)
	want := []string{"objectClass", "objectClass", "department", "title", "mail", "userAccountControl"}
	if !slices.Equal(got, want) {
		t.Errorf("filterAttrs = %v, want %v", got, want)
	}
}

func TestParseRange(t *testing.T) {
	for in, want := range map[string][2]any{
		"member;range=0-1499":    {"member", 1499},
		"member;range=1500-*":    {"member", -1},
		"Member;Range=0-*":       {"Member", -1},
		"member;range=1500-2999": {"member", 2999},
	} {
		n, e, ok := parseRange(in)
		if !ok || n != want[0] || e != want[1] {
			t.Errorf("parseRange(%s) = %s %d %v", in, n, e, ok)
		}
	}
	if _, _, ok := parseRange("member"); ok {
		t.Error("no range accepted")
	}
}

func TestBehind(t *testing.T) {
	stored := []string{"20240101000000.000000Z#000000#000#000000"}
	if behind([]string{"20240101000000.000000Z#000000#000#000000"}, stored) {
		t.Error("equal counts as behind")
	}
	if !behind([]string{"20231231000000.000000Z#000000#000#000000"}, stored) {
		t.Error("older not behind")
	}
	if behind(nil, stored) {
		t.Error("no contextCSN counts as behind")
	}
}

func TestUniqueMoved(t *testing.T) {
	in := []moved{
		{dn: "ou=a,dc=x", key: "1"},
		{dn: "OU=b,OU=A,dc=x", key: "2"},
		{dn: "ou=a,dc=x", key: "1"},
		{dn: "ou=c,dc=x", key: "3"},
	}
	var keys []string
	for _, m := range uniqueMoved(in) {
		keys = append(keys, m.key)
	}
	if !slices.Equal(keys, []string{"1", "3"}) {
		t.Errorf("uniqueMoved = %v", keys)
	}
}

func TestConfigErrors(t *testing.T) {
	base := `
flavor: active-directory
url: ldaps://dc1.example.org
base_dn: OU=Org,DC=example,DC=org
records:
  users: {filter: "(objectClass=user)", attributes: [cn]}
`
	cases := []struct{ name, edit, want string }{
		{"ok", "", ""},
		{"unknown key", "pasword: x\n", `unknown key "pasword"`},
		{"no flavor", "flavor: ''\n", "flavor is missing"},
		{"bad flavor", "flavor: novell\n", `unknown flavor "novell"`},
		{"bad url", "url: http://x\n", "is not an LDAP URL"},
		{"bad base", "base_dn: 'OU=Org,DC'\n", "not a valid DN"},
		{"bad filter", "records: {users: {filter: '(objectClass=user'}}\n", "check parentheses"},
		{"tracking mismatch", "change_tracking: syncrepl\n", "needs flavor: ldap"},
		{"noise attribute", "records: {users: {filter: '(objectClass=user)', attributes: [lastLogonTimestamp]}}\n", "noise attribute"},
		{"record outside base", "records: {users: {filter: '(objectClass=user)', base_dn: 'OU=Other,DC=example,DC=org'}}\n", "outside"},
		{"disabled_as", "disabled_as: hide\n", `unknown disabled_as "hide"`},
		{"markers", "markers: {fictive: '(ou=a', blocked: '(ou=b)'}\n", "markers.fictive"},
		{"object security without dirsync", "change_tracking: usn\ndirsync_object_security: true\n", "needs change_tracking: dirsync"},
		{"sasl without mechanism", "sasl: {username: svc}\n", "sasl has no mechanism"},
		{"sasl mechanism", "sasl: {mechanism: digest-md5}\n", `unknown sasl.mechanism "digest-md5"`},
		{"sasl without user", "sasl: {mechanism: gssapi}\npassword: x\n", "no Kerberos user"},
		{"sasl password and keytab", "bind_dn: svc@example.org\npassword: x\nsasl: {mechanism: gssapi, keytab_file: /k}\n", "a password or a keytab"},
		{"sasl from bind_dn", "bind_dn: svc@example.org\npassword: x\nsasl: {mechanism: GSSAPI}\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var doc yaml.Node
			text := base
			if c.edit != "" {
				// later keys win in this test: rebuild the mapping
				var m map[string]any
				yaml.Unmarshal([]byte(base), &m)
				var e map[string]any
				yaml.Unmarshal([]byte(c.edit), &e)
				for k, v := range e {
					m[k] = v
				}
				out, _ := yaml.Marshal(m)
				text = string(out)
			}
			if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
				t.Fatal(err)
			}
			_, err := decodeConfig("cfg.yaml", doc.Content[0])
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want %q", err, c.want)
			case c.want != "" && !configs.IsConfigError(err):
				t.Fatalf("not a config error: %T", err)
			}
		})
	}
}

func TestNewChecksMappedRecords(t *testing.T) {
	var doc yaml.Node
	yaml.Unmarshal([]byte(`
flavor: ldap
url: ldap://127.0.0.1:1
base_dn: dc=example,dc=org
records:
  people: {filter: "(objectClass=person)"}
`), &doc)
	if _, err := New(doc.Content[0], capture.Options{Name: "d", Records: []string{"people"}}); err != nil {
		t.Fatal(err)
	}
	_, err := New(doc.Content[0], capture.Options{Name: "d", File: "agent.yaml", Records: []string{"users"}})
	if err == nil || !strings.Contains(err.Error(), `selects record "users"`) || !strings.HasPrefix(err.Error(), "agent.yaml:") || !configs.IsConfigError(err) {
		t.Fatalf("err = %v", err)
	}
}

func TestRDNCountAndAtBase(t *testing.T) {
	base, _ := goldap.ParseDN(`OU=Børn\, 0-6 år,DC=x`)
	r := &record{base: base}
	for _, tc := range []struct {
		dn   string
		n    int
		base bool
	}{
		{"", 0, false},
		{"DC=x", 1, false},
		{`OU=Børn\, 0-6 år,DC=x`, 2, true},
		{`ou=b\c3\b8rn\2C 0-6 \c3\a5r, dc=X`, 2, true}, // escapes, case, space
		{`OU=Dagpleje,OU=Børn\, 0-6 år,DC=x`, 3, false},
		{`OU=Andet,DC=x`, 2, false},
		{`CN=a\\,OU=b;DC=x`, 3, false}, // an escaped backslash, then a separator
	} {
		if got := rdnCount(tc.dn); got != tc.n {
			t.Errorf("rdnCount(%q) = %d, want %d", tc.dn, got, tc.n)
		}
		if got := atBase(r, tc.dn); got != tc.base {
			t.Errorf("atBase(%q) = %v, want %v", tc.dn, got, tc.base)
		}
	}
}

// TestOrder: upserts shallow before deep, then deletions deep before
// shallow; an object both upserted and deleted keeps its last change;
// otherwise the source's order stays.
func TestOrder(t *testing.T) {
	up := func(key, dn string) capture.Change {
		return capture.Change{Record: "r", Op: capture.OpUpsert, Values: map[string]any{FieldUUID: key, FieldDN: dn}}
	}
	del := func(key string) capture.Change {
		return capture.Change{Record: "r", Op: capture.OpDelete, Values: map[string]any{FieldUUID: key}}
	}
	stored := map[string]string{"old": "ou=old,dc=x", "oldchild": "cn=c,ou=old,dc=x", "gone": "ou=a,ou=b,ou=c,dc=x"}
	depth := func(ch *capture.Change) int {
		if dn, ok := ch.Values[FieldDN].(string); ok {
			return rdnCount(dn)
		}
		return rdnCount(stored[keyOf(ch.Values)])
	}
	nokey := capture.Change{Record: "r", Op: capture.OpUpsert, Values: map[string]any{FieldDN: "cn=n,ou=p,dc=x"}}
	in := []capture.Change{
		up("child", "cn=c,ou=p,dc=x"), del("old"), up("parent", "ou=p,dc=x"), del("oldchild"), nokey,
		up("x", "cn=x,ou=p,dc=x"), up("child", "cn=c2,ou=p,dc=x"), del("gone"), up("sib", "cn=s,ou=p,dc=x"), nokey,
		up("gone", "cn=g,ou=p,dc=x"), // deleted, then read again: the last wins
	}
	var got []string
	for _, ch := range order(in, depth) {
		got = append(got, fmt.Sprintf("%s:%s:%v", ch.Op, keyOf(ch.Values), ch.Values[FieldDN]))
	}
	want := []string{
		"upsert:parent:ou=p,dc=x",
		"upsert:child:cn=c,ou=p,dc=x", "upsert::cn=n,ou=p,dc=x", "upsert:x:cn=x,ou=p,dc=x", "upsert:child:cn=c2,ou=p,dc=x",
		"upsert:sib:cn=s,ou=p,dc=x", "upsert::cn=n,ou=p,dc=x", "upsert:gone:cn=g,ou=p,dc=x",
		"delete:oldchild:<nil>", "delete:old:<nil>",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("order:\n got  %q\n want %q", got, want)
	}
}

func TestSASLFromBindDN(t *testing.T) {
	var doc yaml.Node
	yaml.Unmarshal([]byte(`
flavor: active-directory
url: ldaps://dc1.example.org
bind_dn: svc-connector@kommune.dk
password: x
base_dn: OU=Org,DC=example,DC=org
sasl: {mechanism: GSSAPI}
records: {users: {filter: "(objectClass=user)"}}
`), &doc)
	c, err := decodeConfig("cfg.yaml", doc.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	if k := c.SASL; k.Mechanism != "gssapi" || k.Username != "svc-connector" || k.Realm != "KOMMUNE.DK" || k.Krb5Conf != "/etc/krb5.conf" {
		t.Fatalf("sasl = %+v", k)
	}
}
