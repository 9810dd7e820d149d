package ldap

import "testing"

// The register's URI keeps Danish letters as UTF-8 (percent-encoded), and
// on AD folds them like any other letter.
func TestSourceID(t *testing.T) {
	tests := []struct {
		flavor, url, base, want string
	}{
		{FlavorAD, "ldaps://dc1", "OU=T1-2,DC=example,DC=test", "ldap://example.test/ou=t1-2,dc=example,dc=test"},
		{FlavorAD, "ldaps://dc1", "OU=Ærø Kommune,DC=example,DC=test", "ldap://example.test/ou=%C3%A6r%C3%B8%20kommune,dc=example,dc=test"},
		{FlavorAD, "ldaps://dc1", "ou=ærø kommune, dc=Example,dc=TEST", "ldap://example.test/ou=%C3%A6r%C3%B8%20kommune,dc=example,dc=test"},
		{FlavorLDAP, "ldap://h", `ou=Børn\2C 0-6 år,dc=example,dc=org`, `ldap://example.org/ou=B%C3%B8rn%5C,%200-6%20%C3%A5r,dc=example,dc=org`},
		{FlavorLDAP, "ldaps://ldap.kommune.dk:636", "o=Kommune", "ldap://ldap.kommune.dk/o=Kommune"},
	}
	for _, tt := range tests {
		c, err := Config{Flavor: tt.flavor, URL: tt.url, BaseDN: tt.base,
			Records: map[string]Record{"users": {Filter: "(objectClass=person)"}}}.validate("test.yaml", nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.base, err)
		}
		if got := c.id(); got != tt.want {
			t.Errorf("%s: id %s, want %s", tt.base, got, tt.want)
		}
	}
}
