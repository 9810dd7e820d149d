package ldap

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	"go.yaml.in/yaml/v3"

	"github.com/os2sandbox/connector/capture"
	"github.com/os2sandbox/connector/configs"
)

// Flavours.
const (
	FlavorAD   = "active-directory"
	FlavorLDAP = "ldap"
)

// Change tracking modes.
const (
	TrackDirSync  = "dirsync"  // AD DirSync control, cookie in the checkpoint
	TrackUSN      = "usn"      // AD uSNChanged polling pinned to one DC
	TrackSyncrepl = "syncrepl" // RFC 4533 refreshOnly with a cookie
	TrackPoll     = "poll"     // modifyTimestamp polling; deletions by reconcile
)

// Config is a source entry of type ldap.
type Config struct {
	Name           string            `yaml:"name"`
	Flavor         string            `yaml:"flavor"`
	URL            string            `yaml:"url"`
	URLs           []string          `yaml:"urls"`
	BindDN         string            `yaml:"bind_dn"`
	Password       string            `yaml:"password"`
	TLS            TLSConfig         `yaml:"tls"`
	BaseDN         string            `yaml:"base_dn"`
	Records        map[string]Record `yaml:"records"`
	ChangeTracking string            `yaml:"change_tracking"`
	PageSize       int               `yaml:"page_size"`
	RangeSize      int               `yaml:"range_size"`
	PollInterval   time.Duration     `yaml:"poll_interval"`
	Reconcile      *time.Duration    `yaml:"reconcile"`
	Timeout        time.Duration     `yaml:"timeout"`
	Binary         Binary            `yaml:"binary"`
	DisabledAs     string            `yaml:"disabled_as"`
	Noise          *[]string         `yaml:"noise_attributes"`
	// RefreshDescendants re-reads the entries below a renamed or moved
	// container so their stored DNs follow (default true).
	RefreshDescendants *bool `yaml:"refresh_descendants"`
	BatchSize          int   `yaml:"batch_size"`
	// DirSyncObjectSecurity sets DirSync's OBJECT_SECURITY flag: no
	// replication right needed, only what the account may read is seen.
	DirSyncObjectSecurity bool `yaml:"dirsync_object_security"`
	// SASL binds with Kerberos (GSSAPI) instead of a simple bind.
	SASL SASL `yaml:"sasl"`
	// Markers leave out fictive units (their children attach to the
	// grandparent) and blocked subtrees.
	Markers Markers `yaml:"markers"`
}

// TLSConfig configures ldaps:// and StartTLS. Verification is always on
// unless insecure_skip_verify says otherwise.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	StartTLS           bool   `yaml:"start_tls"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASL configures a Kerberos (GSSAPI) bind: the account gets a ticket
// from the KDC with its password (the source's password) or a keytab, and
// the DC never sees a password.
type SASL struct {
	Mechanism string `yaml:"mechanism"` // gssapi
	// Username and Realm name the account (svc-connector, KOMMUNE.DK);
	// from bind_dn when it is user@domain.
	Username string `yaml:"username"`
	Realm    string `yaml:"realm"`
	// Keytab is a keytab file with the account's keys, instead of a
	// password.
	Keytab string `yaml:"keytab_file"`
	// Krb5Conf locates the realm's KDCs (default /etc/krb5.conf).
	Krb5Conf string `yaml:"krb5_conf"`
	// SPN is the directory's service principal (default ldap/<url host>).
	SPN string `yaml:"spn"`
}

// Record is one configured record: the entries a filter selects below the
// base DN, with the attributes to read.
type Record struct {
	Filter     string   `yaml:"filter"`
	Attributes []string `yaml:"attributes"`
	// BaseDN narrows the source's base_dn for this record.
	BaseDN string `yaml:"base_dn"`
}

// Binary says how binary attribute values become strings.
type Binary struct {
	// Encoding is base64 (default) or sha256 for every binary attribute
	// not listed in Hash.
	Encoding string `yaml:"encoding"`
	// Hash lists attributes always reduced to "sha256:<hex>" (photos,
	// certificates), to bound event size. Default: thumbnailPhoto,
	// jpegPhoto, photo, userCertificate, userSMIMECertificate.
	Hash *[]string `yaml:"hash"`
}

// DefaultNoise are attributes that change without a business change
// (logons, replication bookkeeping). They never reach Values, so they
// never cause events; whenChanged/modifyTimestamp still set ChangedAt.
var DefaultNoise = []string{
	"lastLogon", "lastLogonTimestamp", "lastLogoff", "logonCount",
	"badPwdCount", "badPasswordTime", "uSNChanged", "uSNCreated",
	"whenChanged", "modifyTimestamp", "modifiersName", "entryCSN",
	"dSCorePropagationData", "replPropertyMetaData", "msDS-LastSuccessfulInteractiveLogonTime",
	"msDS-LastFailedInteractiveLogonTime", "msDS-FailedInteractiveLogonCount",
	"msDS-FailedInteractiveLogonCountAtLastSuccessfulLogon", "pwdFailureTime", "authTimestamp",
}

var defaultHash = []string{"thumbnailPhoto", "jpegPhoto", "photo", "userCertificate", "userSMIMECertificate"}

// config is the validated, normalised form the source works with.
type config struct {
	Config
	file       string
	urls       []string
	base       *goldap.DN
	records    []*record // sorted by name
	noise      map[string]bool
	hash       map[string]bool
	reconcile  time.Duration
	refreshDes bool
}

type record struct {
	name   string
	filter string
	attrs  []string // as configured; nil reads all user attributes
	baseDN string
	base   *goldap.DN
}

func decodeConfig(file string, node *yaml.Node) (*config, error) {
	var c Config
	// The engine's keys (name, type, deletion_guard, batch_size) are not
	// errors; name and batch_size are read here too.
	if err := configs.Decode(file, node, &c, capture.CommonKeys...); err != nil {
		return nil, err
	}
	return c.validate(file, node)
}

func (c Config) validate(file string, node *yaml.Node) (*config, error) {
	name := c.Name
	if name == "" {
		name = "ldap"
	}
	bad := func(hint, format string, args ...any) error {
		return configs.Errorf(file, node, hint, "ldap source %q: "+format, append([]any{name}, args...)...)
	}
	out := &config{Config: c, file: file}
	switch c.Flavor {
	case FlavorAD, FlavorLDAP:
	case "":
		return nil, bad("add flavor: active-directory (objectGUID keys, DirSync) or flavor: ldap (entryUUID keys, syncrepl)", "flavor is missing")
	default:
		return nil, bad("use active-directory or ldap", "unknown flavor %q", c.Flavor)
	}
	if c.URL != "" {
		out.urls = append(out.urls, c.URL)
	}
	out.urls = append(out.urls, c.URLs...)
	if len(out.urls) == 0 {
		return nil, bad("add url: ldaps://dc1.example.org (or urls: [...] to fail over between servers)", "no url")
	}
	for _, u := range out.urls {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "ldap" && pu.Scheme != "ldaps") || pu.Host == "" {
			return nil, bad("write it as ldap://host:port or ldaps://host:port", "url %q is not an LDAP URL", u)
		}
	}
	if c.BaseDN == "" {
		return nil, bad("add base_dn: the subtree to sync, e.g. OU=Organisation,DC=example,DC=org", "base_dn is missing")
	}
	base, err := goldap.ParseDN(c.BaseDN)
	if err != nil || len(base.RDNs) == 0 {
		return nil, bad("escape , + \" \\ < > ; in names as RFC 4514 says (e.g. OU=Børn\\, 0-6 år)", "base_dn %q is not a valid DN: %v", c.BaseDN, err)
	}
	out.base = base
	if len(c.Records) == 0 {
		return nil, bad(`add records, e.g. records: {users: {filter: "(&(objectClass=user)(!(objectClass=computer)))"}}`, "no records")
	}
	for rn, r := range c.Records {
		if r.Filter == "" {
			return nil, bad("add filter: (objectClass=...) to the record", "record %q has no filter", rn)
		}
		if _, err := goldap.CompileFilter(r.Filter); err != nil {
			return nil, bad("check parentheses, and escape ( ) * \\ in values as \\28 \\29 \\2a \\5c (RFC 4515)", "record %q: filter %q: %v", rn, r.Filter, err)
		}
		rec := &record{name: rn, filter: r.Filter, attrs: r.Attributes, baseDN: c.BaseDN, base: base}
		if r.BaseDN != "" {
			rb, err := goldap.ParseDN(r.BaseDN)
			if err != nil {
				return nil, bad("escape special characters as RFC 4514 says", "record %q: base_dn %q is not a valid DN: %v", rn, r.BaseDN, err)
			}
			if !base.EqualFold(rb) && !base.AncestorOfFold(rb) {
				return nil, bad("a record's base_dn must lie within the source's base_dn", "record %q: base_dn %q is outside %q", rn, r.BaseDN, c.BaseDN)
			}
			rec.baseDN, rec.base = r.BaseDN, rb
		}
		out.records = append(out.records, rec)
	}
	sort.Slice(out.records, func(i, j int) bool { return out.records[i].name < out.records[j].name })

	if c.ChangeTracking == "" {
		out.ChangeTracking = TrackDirSync
		if c.Flavor == FlavorLDAP {
			out.ChangeTracking = TrackSyncrepl
		}
	}
	switch out.ChangeTracking {
	case TrackDirSync, TrackUSN:
		if c.Flavor != FlavorAD {
			return nil, bad("use syncrepl or poll with flavor: ldap", "change_tracking %q needs flavor: active-directory", out.ChangeTracking)
		}
	case TrackSyncrepl:
		if c.Flavor != FlavorLDAP {
			return nil, bad("use dirsync or usn with Active Directory", "change_tracking syncrepl needs flavor: ldap")
		}
	case TrackPoll:
	default:
		return nil, bad("use dirsync, usn, syncrepl or poll", "unknown change_tracking %q", out.ChangeTracking)
	}
	if c.DirSyncObjectSecurity && out.ChangeTracking != TrackDirSync {
		return nil, bad("remove dirsync_object_security, or use change_tracking: dirsync", "dirsync_object_security needs change_tracking: dirsync")
	}
	if out.PageSize == 0 {
		out.PageSize = 500
	}
	if out.PageSize < 1 || out.PageSize > 100000 {
		return nil, bad("use 1..100000 (AD caps pages at MaxPageSize, 1000 by default)", "page_size %d out of range", c.PageSize)
	}
	if out.RangeSize == 0 {
		out.RangeSize = 1500
	}
	if out.PollInterval == 0 {
		out.PollInterval = 30 * time.Second
	}
	if out.PollInterval < 0 {
		return nil, bad("use a duration such as 30s", "poll_interval is negative")
	}
	out.reconcile = 24 * time.Hour
	if c.Reconcile != nil {
		out.reconcile = *c.Reconcile // 0 turns scheduled reconciles off
	}
	if out.Timeout == 0 {
		out.Timeout = 2 * time.Minute
	}
	if out.BatchSize <= 0 {
		out.BatchSize = 1000
	}
	switch out.DisabledAs {
	case "":
		out.DisabledAs = "status"
	case "status", "delete":
	default:
		return nil, bad("use status (a disabled field) or delete (a delete with reason disabled)", "unknown disabled_as %q", c.DisabledAs)
	}
	switch out.Binary.Encoding {
	case "":
		out.Binary.Encoding = "base64"
	case "base64", "sha256":
	default:
		return nil, bad("use base64 or sha256", "unknown binary.encoding %q", c.Binary.Encoding)
	}
	out.hash = map[string]bool{}
	hash := defaultHash
	if c.Binary.Hash != nil {
		hash = *c.Binary.Hash
	}
	for _, a := range hash {
		out.hash[strings.ToLower(a)] = true
	}
	out.noise = map[string]bool{}
	noise := DefaultNoise
	if c.Noise != nil {
		noise = *c.Noise
	}
	for _, a := range noise {
		out.noise[strings.ToLower(a)] = true
	}
	for _, r := range out.records {
		for _, a := range r.attrs {
			if out.noise[strings.ToLower(a)] {
				return nil, bad("remove it from the record's attributes, or set noise_attributes without it to capture it", "record %q reads %q, which is a noise attribute", r.name, a)
			}
		}
	}
	out.refreshDes = true
	if c.RefreshDescendants != nil {
		out.refreshDes = *c.RefreshDescendants
	}
	for which, f := range map[string]string{"fictive": c.Markers.Fictive, "blocked": c.Markers.Blocked} {
		if f == "" {
			continue
		}
		if _, err := goldap.CompileFilter(f); err != nil {
			return nil, bad("check parentheses, and escape ( ) * \\ in values as \\28 \\29 \\2a \\5c (RFC 4515)", "markers.%s: filter %q: %v", which, f, err)
		}
	}
	switch strings.ToLower(c.SASL.Mechanism) {
	case "":
		if c.SASL != (SASL{}) {
			return nil, bad("add mechanism: gssapi, or remove sasl", "sasl has no mechanism")
		}
	case "gssapi":
		out.SASL.Mechanism = "gssapi"
		if out.SASL.Username == "" || out.SASL.Realm == "" {
			if user, domain, ok := strings.Cut(c.BindDN, "@"); ok && !strings.Contains(c.BindDN, "=") {
				if out.SASL.Username == "" {
					out.SASL.Username = user
				}
				if out.SASL.Realm == "" {
					out.SASL.Realm = strings.ToUpper(domain)
				}
			}
		}
		if out.SASL.Username == "" {
			return nil, bad("set sasl.username (the account name), or bind_dn: user@domain", "sasl: no Kerberos user")
		}
		if (out.SASL.Keytab == "") == (c.Password == "") {
			return nil, bad("give the account's password, or sasl.keytab_file, not both", "sasl: Kerberos needs a password or a keytab")
		}
		if out.SASL.Krb5Conf == "" {
			out.SASL.Krb5Conf = "/etc/krb5.conf"
		}
	default:
		return nil, bad("use gssapi (Kerberos)", "unknown sasl.mechanism %q", c.SASL.Mechanism)
	}
	if c.TLS.InsecureSkipVerify && c.TLS.CAFile != "" {
		return nil, bad("remove insecure_skip_verify: ca_file is enough", "tls: ca_file and insecure_skip_verify together")
	}
	return out, nil
}

// hash identifies what the records read: when it changes (a new attribute,
// another filter or base), the stored position no longer covers what the
// mappings need, so the source starts a new epoch with a full reconcile.
func (c *config) hashRecords() string {
	type rec struct {
		Name, Filter, Base string
		Attrs              []string
	}
	var rs []rec
	for _, r := range c.records {
		attrs := append([]string(nil), r.attrs...)
		for i := range attrs {
			attrs[i] = strings.ToLower(attrs[i])
		}
		sort.Strings(attrs)
		rs = append(rs, rec{r.name, r.filter, strings.ToLower(r.base.String()), attrs})
	}
	b, _ := json.Marshal(struct {
		Flavor, Tracking, Base, Disabled, Binary string
		Records                                  []rec
		Markers                                  *Markers `json:",omitempty"`
		ObjectSecurity                           bool     `json:",omitempty"`
	}{c.Flavor, c.ChangeTracking, strings.ToLower(c.base.String()), c.DisabledAs, c.Binary.Encoding, rs, markersOrNil(c.Markers), c.DirSyncObjectSecurity})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// markersOrNil keeps the hash of a configuration without markers as it was
// before markers existed, so upgrading starts no new epoch.
func markersOrNil(m Markers) *Markers {
	if !m.any() {
		return nil
	}
	return &m
}

func (c *config) recordNames() []string {
	out := make([]string, len(c.records))
	for i, r := range c.records {
		out[i] = r.name
	}
	return out
}

// id is the register's stable URI: ldap://<domain>/<base DN>.
func (c *config) id() string {
	var dcs []string
	for _, rdn := range c.base.RDNs {
		for _, a := range rdn.Attributes {
			if strings.EqualFold(a.Type, "dc") {
				dcs = append(dcs, strings.ToLower(a.Value))
			}
		}
	}
	domain := strings.Join(dcs, ".")
	if domain == "" {
		if u, err := url.Parse(c.urls[0]); err == nil {
			domain = strings.ToLower(u.Hostname())
		}
	}
	base := dnText(c.base)
	if c.Flavor == FlavorAD {
		base = strings.ToLower(base) // AD names compare case-insensitively
	}
	// RFC 4516: the DN is the URL's path, percent-encoded where needed
	// (spaces, non-ASCII); commas and '=' stay readable.
	return "ldap://" + domain + "/" + strings.TrimPrefix((&url.URL{Path: "/" + base}).EscapedPath(), "/")
}

// dnText renders a DN per RFC 4514 with its UTF-8 text kept: attribute
// types lower case, values escaped only where RFC 4514 requires. (go-ldap's
// DN.String escapes every non-ASCII byte as \hh, so "Ærø" would become
// "\c3\86r\c3\b8", and lower-casing it would not fold Æ to æ.)
func dnText(d *goldap.DN) string {
	rdns := make([]string, len(d.RDNs))
	for i, rdn := range d.RDNs {
		avas := make([]string, len(rdn.Attributes))
		for j, a := range rdn.Attributes {
			avas[j] = strings.ToLower(a.Type) + "=" + goldap.EscapeDN(a.Value)
		}
		sort.Strings(avas)
		rdns[i] = strings.Join(avas, "+")
	}
	return strings.Join(rdns, ",")
}

func (c *config) errorf(hint, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if hint != "" {
		msg += " (" + hint + ")"
	}
	return fmt.Errorf("ldap source %q: %s", c.Name, msg)
}
