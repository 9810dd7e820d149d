package ldap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	"github.com/go-ldap/ldap/v3/gssapi"
	"github.com/jcmturner/gokrb5/v8/client"

	"github.com/os2sandbox/connector/capture"
)

// conn is a bound connection and what the server said about itself.
type conn struct {
	*goldap.Conn
	url    string
	nc     string // naming context holding base_dn
	schema schema

	// Active Directory
	invocationID string // of the DC we talk to (.NET GUID string)
	dsService    string // its NTDS Settings DN
	highestUSN   int64

	controls map[string]bool
	vendor   string
	stop     func() bool
}

func (c *conn) Close() {
	if c.stop != nil {
		c.stop()
	}
	c.Conn.Close()
}

// dial connects to the first server that answers and binds. Errors say
// what to fix; the password never appears in them.
func (s *Source) dial(ctx context.Context) (*conn, error) {
	tc, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, u := range s.cfg.urls {
		c, err := s.dialOne(ctx, u, tc)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if permanent(err) {
			return nil, err
		}
		errs = append(errs, err)
		s.log.Warn("ldap server unavailable, trying the next", "source", s.cfg.Name, "url", u, "err", err)
	}
	return nil, errors.Join(errs...)
}

func (s *Source) dialOne(ctx context.Context, u string, tc *tls.Config) (*conn, error) {
	pu, _ := url.Parse(u)
	cfg := tc.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = pu.Hostname()
	}
	d := &net.Dialer{Timeout: 15 * time.Second}
	lc, err := goldap.DialURL(u, goldap.DialWithDialer(d), goldap.DialWithTLSConfig(cfg))
	if err != nil {
		return nil, s.connError(u, err)
	}
	lc.SetTimeout(s.cfg.Timeout)
	// A blocked request must not outlive ctx.
	stop := context.AfterFunc(ctx, func() { lc.Close() })
	c := &conn{Conn: lc, url: u, stop: stop}
	if s.cfg.TLS.StartTLS && pu.Scheme == "ldap" {
		if err := lc.StartTLS(cfg); err != nil {
			c.Close()
			return nil, s.connError(u, err)
		}
	}
	switch {
	case s.cfg.SASL.Mechanism == "gssapi":
		err = s.kerberosBind(lc, pu.Hostname())
	case s.cfg.BindDN != "":
		err = lc.Bind(s.cfg.BindDN, s.cfg.Password)
	default:
		err = lc.UnauthenticatedBind("")
	}
	if err != nil {
		c.Close()
		return nil, s.bindError(u, err)
	}
	if err := s.inspect(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (s *Source) tlsConfig() (*tls.Config, error) {
	t := s.cfg.TLS
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, s.cfg.errorf("point tls.ca_file at a PEM file with the CA that signed the server's certificate", "tls.ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, s.cfg.errorf("the file must hold PEM certificates (-----BEGIN CERTIFICATE-----)", "tls.ca_file %s: no certificate found", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, s.cfg.errorf("set both tls.cert_file and tls.key_file to PEM files", "tls client certificate: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if t.InsecureSkipVerify {
		tc.InsecureSkipVerify = true
	}
	return tc, nil
}

// connError explains a failure to reach or talk TLS to a server.
func (s *Source) connError(u string, err error) error {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return &permanentError{s.cfg.errorf("configure tls.ca_file with the CA certificate (PEM) that signed the server's certificate; verification is never skipped silently",
			"%s: the server's TLS certificate is not trusted: %v", u, err)}
	case errors.As(err, &hn):
		return &permanentError{s.cfg.errorf("use the host name the certificate names in url, or set tls.server_name",
			"%s: the server's TLS certificate does not match the host: %v", u, err)}
	case errors.As(err, &ci):
		return &permanentError{s.cfg.errorf("renew the server certificate or fix the clock", "%s: the server's TLS certificate is invalid: %v", u, err)}
	}
	var ne net.Error
	if errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused") {
		return fmt.Errorf("ldap source %q: cannot reach %s: %w (is the server running and the url right?)", s.cfg.Name, u, err)
	}
	return fmt.Errorf("ldap source %q: %s: %w", s.cfg.Name, u, err)
}

// kerberosBind binds with SASL GSSAPI: a service ticket for the
// directory's SPN from the KDC, got with the password or the keytab. No
// SASL security layer is negotiated (go-ldap has none): protect the
// connection with TLS.
func (s *Source) kerberosBind(lc *goldap.Conn, host string) error {
	k := s.cfg.SASL
	var cl *gssapi.Client
	var err error
	if k.Keytab != "" {
		cl, err = gssapi.NewClientWithKeytab(k.Username, k.Realm, k.Keytab, k.Krb5Conf, client.DisablePAFXFAST(true))
	} else {
		cl, err = gssapi.NewClientWithPassword(k.Username, k.Realm, s.cfg.Password, k.Krb5Conf, client.DisablePAFXFAST(true))
	}
	if err != nil {
		return &kerberosError{err, true}
	}
	defer cl.Destroy()
	spn := k.SPN
	if spn == "" {
		spn = "ldap/" + host
	}
	if err := lc.GSSAPIBind(cl, spn, ""); err != nil {
		return &kerberosError{err, false}
	}
	return nil
}

// kerberosError is a failure to get or use a Kerberos ticket; setup: the
// krb5.conf or the keytab could not be used.
type kerberosError struct {
	err   error
	setup bool
}

func (e *kerberosError) Error() string { return e.err.Error() }
func (e *kerberosError) Unwrap() error { return e.err }

func (s *Source) bindError(u string, err error) error {
	var ke *kerberosError
	if errors.As(err, &ke) {
		k := s.cfg.SASL
		msg := err.Error()
		hint := ""
		switch {
		case strings.Contains(msg, "KDC_ERR_PREAUTH_FAILED"), strings.Contains(msg, "KDC_ERR_KEY_EXPIRED"):
			hint = "check the password or keytab of " + k.Username + "@" + k.Realm
		case strings.Contains(msg, "KDC_ERR_C_PRINCIPAL_UNKNOWN"):
			hint = "check sasl.username and sasl.realm"
		case strings.Contains(msg, "KDC_ERR_S_PRINCIPAL_UNKNOWN"):
			hint = "set sasl.spn to a service principal of the DC, e.g. ldap/<its DNS name> (Samba: HOST/<its DNS name>)"
		case strings.Contains(msg, "KRB_AP_ERR_SKEW"):
			hint = "the clocks of this host and the KDC differ by more than 5 minutes; sync them (NTP)"
		case ke.setup:
			hint = "check sasl.krb5_conf (the realm and its KDCs) and sasl.keytab_file"
		}
		if hint == "" {
			// The KDC may be down or unreachable: retried.
			return fmt.Errorf("ldap source %q: %s: Kerberos bind as %s@%s failed: %w", s.cfg.Name, u, k.Username, k.Realm, err)
		}
		return &permanentError{s.cfg.errorf(hint, "%s: Kerberos bind as %s@%s refused: %v", u, k.Username, k.Realm, err)}
	}
	switch {
	case goldap.IsErrorWithCode(err, goldap.LDAPResultInvalidCredentials):
		hint := "check bind_dn and password"
		if s.cfg.Flavor == FlavorAD {
			hint += " (AD also accepts user@domain as bind_dn)"
		}
		return &permanentError{s.cfg.errorf(hint, "%s: bind as %q refused: invalid credentials", u, s.cfg.BindDN)}
	case goldap.IsErrorAnyOf(err, goldap.LDAPResultStrongAuthRequired, goldap.LDAPResultConfidentialityRequired):
		return &permanentError{s.cfg.errorf("use an ldaps:// url or tls.start_tls: true; the server refuses simple binds in clear text",
			"%s: bind refused: the server requires a protected connection", u)}
	}
	return s.connError(u, err)
}

// inspect reads the root DSE, the schema and, on AD, the DC's
// invocationId.
func (s *Source) inspect(c *conn) error {
	res, err := c.Search(goldap.NewSearchRequest("", goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"namingContexts", "defaultNamingContext", "subschemaSubentry", "supportedControl",
			"dsServiceName", "highestCommittedUSN", "vendorName", "+"}, nil))
	if err != nil || len(res.Entries) == 0 {
		return fmt.Errorf("ldap source %q: %s: read the root DSE: %w", s.cfg.Name, c.url, err)
	}
	root := res.Entries[0]
	c.controls = map[string]bool{}
	for _, oid := range root.GetAttributeValues("supportedControl") {
		c.controls[oid] = true
	}
	c.vendor = root.GetAttributeValue("vendorName")
	// The naming context holding base_dn: the longest one above it.
	best := -1
	for _, nc := range root.GetAttributeValues("namingContexts") {
		d, err := goldap.ParseDN(nc)
		if err != nil {
			continue
		}
		if (d.EqualFold(s.cfg.base) || d.AncestorOfFold(s.cfg.base)) && len(d.RDNs) > best {
			best, c.nc = len(d.RDNs), nc
		}
	}
	if c.nc == "" {
		return &permanentError{s.cfg.errorf("base_dn must lie in one of the server's naming contexts: "+strings.Join(root.GetAttributeValues("namingContexts"), "; "),
			"%s: base_dn %q is in no naming context of the server", c.url, s.cfg.BaseDN)}
	}
	if sub := root.GetAttributeValue("subschemaSubentry"); sub != "" {
		sr, err := c.Search(goldap.NewSearchRequest(sub, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=*)", []string{"attributeTypes"}, nil))
		if err == nil && len(sr.Entries) == 1 {
			c.schema = parseSchema(sr.Entries[0].GetAttributeValues("attributeTypes"))
		} else {
			s.log.Warn("cannot read the schema; guessing value types from attribute names", "source", s.cfg.Name, "err", err)
		}
	}
	if c.schema == nil {
		c.schema = schema{}
	}
	if s.cfg.Flavor == FlavorAD {
		c.dsService = root.GetAttributeValue("dsServiceName")
		c.highestUSN, _ = strconv.ParseInt(root.GetAttributeValue("highestCommittedUSN"), 10, 64)
		if c.dsService == "" {
			return &permanentError{s.cfg.errorf("use flavor: ldap for a directory that is not Active Directory",
				"%s: the server has no dsServiceName; it is not an Active Directory domain controller", c.url)}
		}
		ir, err := c.Search(goldap.NewSearchRequest(c.dsService, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=*)", []string{"invocationId"}, nil))
		if err != nil || len(ir.Entries) == 0 {
			return fmt.Errorf("ldap source %q: %s: read the DC's invocationId from %s: %w", s.cfg.Name, c.url, c.dsService, err)
		}
		c.invocationID, err = GUIDString(ir.Entries[0].GetRawAttributeValue("invocationId"))
		if err != nil {
			return fmt.Errorf("ldap source %q: %s: invocationId: %w", s.cfg.Name, c.url, err)
		}
	}
	return nil
}

// readContextCSN reads OpenLDAP's contextCSN of the naming context (the
// syncprov state); nil when the server keeps none.
func (c *conn) readContextCSN() ([]string, error) {
	res, err := c.Search(goldap.NewSearchRequest(c.nc, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"contextCSN"}, nil))
	if err != nil {
		return nil, err
	}
	if len(res.Entries) == 0 {
		return nil, nil
	}
	return res.Entries[0].GetAttributeValues("contextCSN"), nil
}

// readHighestUSN reads the DC's highestCommittedUSN now.
func (c *conn) readHighestUSN() (int64, error) {
	res, err := c.Search(goldap.NewSearchRequest("", goldap.ScopeBaseObject, goldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"highestCommittedUSN"}, nil))
	if err != nil || len(res.Entries) == 0 {
		return 0, fmt.Errorf("read highestCommittedUSN: %w", err)
	}
	return strconv.ParseInt(res.Entries[0].GetAttributeValue("highestCommittedUSN"), 10, 64)
}

// permanentError marks errors that retrying cannot fix (credentials,
// trust, configuration).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// transient reports whether err is worth a retry on a new connection: the
// network failed, the server is busy or going away.
func transient(err error) bool {
	if err == nil || permanent(err) {
		return false
	}
	if errors.Is(err, capture.ErrNoRun) {
		return true // the engine dropped the staged run: read it again
	}
	if goldap.IsErrorAnyOf(err, goldap.ErrorNetwork, goldap.LDAPResultBusy, goldap.LDAPResultUnavailable,
		goldap.LDAPResultServerDown, goldap.LDAPResultTimeout, goldap.LDAPResultConnectError,
		goldap.LDAPResultTimeLimitExceeded, goldap.LDAPResultAdminLimitExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "connection closed") || strings.Contains(msg, "EOF") ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "timeout") || strings.Contains(msg, "cannot reach")
}
