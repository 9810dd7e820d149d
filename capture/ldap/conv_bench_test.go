package ldap

import (
	"testing"

	goldap "github.com/go-ldap/ldap/v3"
)

// BenchmarkConvert measures the per-entry conversion (no server).
func BenchmarkConvert(b *testing.B) {
	s := &Source{cfg: &config{Config: Config{Flavor: FlavorLDAP}}, log: testLogger{b}}
	rd := &reader{s: s, c: &conn{schema: parseSchema([]string{
		"( 0.9.2342.19200300.100.1.1 NAME ( 'uid' 'userid' ) SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{256} )",
		"( 2.5.4.3 NAME ( 'cn' 'commonName' ) SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
		"( 0.9.2342.19200300.100.1.3 NAME ( 'mail' 'rfc822Mailbox' ) SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )",
		"( 2.5.18.2 NAME 'modifyTimestamp' SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 SINGLE-VALUE )",
	})}, conv: &converter{schema: schema{}, encoding: "base64"}, parents: map[string]parentRef{}, rawParents: map[string]any{}}
	rd.conv.schema = rd.c.schema
	rd.parents["ou=u0001,ou=org,dc=example,dc=org"] = parentRef{key: "x", found: true}
	base, err := goldap.ParseDN("ou=org,dc=example,dc=org")
	if err != nil {
		b.Fatal(err)
	}
	r := &record{name: "users", attrs: []string{"uid", "cn", "sn", "givenName", "mail", "telephoneNumber", "title"},
		baseDN: base.String(), base: base}
	e := goldap.NewEntry("uid=p0001001,ou=u0001,ou=org,dc=example,dc=org", map[string][]string{
		"uid": {"p0001001"}, "cn": {"Person p0001001"}, "sn": {"Pp0001001"}, "givenName": {"Given"},
		"mail": {"p0001001@example.org"}, "telephoneNumber": {"+45 1234 5678"}, "title": {"Sagsbehandler"},
		"entryUUID": {"1b4e0a26-7b0e-1041-8f3c-4d2a0e3c4b5a"}, "entryCSN": {"20261122210008.895632Z#000000#000#000000"},
		"modifyTimestamp": {"20261122210008Z"}, "createTimestamp": {"20261122210008Z"}, "hasSubordinates": {"FALSE"},
	})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rd.convert(r, e); err != nil {
			b.Fatal(err)
		}
	}
}
