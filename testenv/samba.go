package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"golang.org/x/sys/unix"
)

// Samba is a throwaway Samba Active Directory domain controller (realm
// EXAMPLE.TEST), provisioned into a temp dir.
//
// Samba's AD LDAP ports are hard-coded (389/636) and the DC also wants 53,
// 88, 135, 445, … So samba runs in a private network namespace (unshare -n:
// only a loopback interface, nothing leaves it), and this process bridges a
// free host loopback port to 389, others to 636 and 88 inside that namespace
// (it dials from a thread that joined the namespace). That needs root.
type Samba struct {
	URL      string // ldap://127.0.0.1:PORT (plain LDAP, simple binds allowed)
	TLSURL   string // ldaps://127.0.0.1:PORT (certificate signed by CAFile)
	CAFile   string // PEM of the test CA that signed the DC's certificate
	BaseDN   string // DC=example,DC=test
	Domain   string // example.test
	AdminDN  string // CN=Administrator,CN=Users,DC=example,DC=test
	AdminUPN string // Administrator@example.test
	AdminPW  string
	Dir      string
	// Krb5Conf is a krb5.conf for the realm, its KDC (Kerberos over TCP)
	// bridged to a free loopback port like LDAP. The DC's service
	// principal is HOST/dc1.example.test (Samba registers no ldap/ SPN).
	Krb5Conf string

	conf string
	cmd  *exec.Cmd
	done chan error
	ns   string // /proc/<pid>/ns/net of samba

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[net.Conn]struct{}
}

// NewSamba provisions and starts a Samba AD DC for tb and stops it when tb
// ends. Provisioning takes about 10 s: share one DC per test binary
// (StartSamba in TestMain) where the tests allow it.
func NewSamba(tb testing.TB) *Samba {
	tb.Helper()
	s, err := StartSamba()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// StartSamba provisions and starts a DC. The caller must call Stop.
func StartSamba() (*Samba, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("testenv: Samba AD needs root (samba runs as root, and unshare -n needs CAP_SYS_ADMIN); run the tests as root")
	}
	for _, bin := range []string{"samba", "samba-tool", "unshare", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("testenv: %s not found; install the Debian packages samba samba-ad-dc samba-ad-provision python3-samba winbind krb5-user iproute2 util-linux (testenv/install-deps.sh)", bin)
		}
	}
	dir, err := os.MkdirTemp("", "testenv-samba-")
	if err != nil {
		return nil, fmt.Errorf("testenv: samba temp dir: %w", err)
	}
	s := &Samba{
		BaseDN:   "DC=example,DC=test",
		Domain:   "example.test",
		AdminDN:  "CN=Administrator,CN=Users,DC=example,DC=test",
		AdminUPN: "Administrator@example.test",
		AdminPW:  "Admin-Passw0rd!",
		Dir:      dir,
		conns:    map[net.Conn]struct{}{},
	}
	if err := s.provision(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Samba) provision() error {
	dc := filepath.Join(s.Dir, "dc")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "samba-tool", "domain", "provision",
		"--realm=EXAMPLE.TEST", "--domain=EXAMPLE", "--server-role=dc",
		"--dns-backend=SAMBA_INTERNAL", "--adminpass="+s.AdminPW,
		"--targetdir="+dc, "--use-rfc2307", "--host-name=dc1", "--host-ip=127.0.0.1",
		"--option=interfaces=lo", "--option=bind interfaces only=yes")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: samba-tool domain provision: %w: %s", err, sambaTail(out, 2000))
	}
	for _, d := range []string{"tls", "run", "log", "cache"} {
		if err := os.MkdirAll(filepath.Join(dc, d), 0o755); err != nil {
			return err
		}
	}
	// Our own certificate: Go rejects the one Samba generates (negative
	// serial number).
	if err := s.writeCerts(filepath.Join(dc, "tls")); err != nil {
		return err
	}
	s.conf = filepath.Join(dc, "etc", "smb.conf")
	raw, err := os.ReadFile(s.conf)
	if err != nil {
		return fmt.Errorf("testenv: read provisioned smb.conf: %w", err)
	}
	conf := strings.Replace(string(raw), "\tlog file = /var/log/samba/log.%m\n", "", 1)
	extra := fmt.Sprintf(`	ldap server require strong auth = no
	tls enabled = yes
	tls keyfile = %[1]s/tls/key.pem
	tls certfile = %[1]s/tls/cert.pem
	tls cafile =
	pid directory = %[1]s/run
	ncalrpc dir = %[1]s/run/ncalrpc
	winbindd socket directory = %[1]s/run/winbindd
	ntp signd socket directory = %[1]s/run/ntp_signd
	log file = %[1]s/log/log.%%m
	log level = 1
	dns forwarder = 127.0.0.1
	server services = -s3fs -nbt -wrepl -dnsupdate -ntp_signd
`, dc)
	if !strings.Contains(conf, "[global]\n") {
		return errors.New("testenv: provisioned smb.conf has no [global] section")
	}
	conf = strings.Replace(conf, "[global]\n", "[global]\n"+extra, 1)
	return os.WriteFile(s.conf, []byte(conf), 0o644)
}

// writeCerts writes a test CA and a DC certificate for 127.0.0.1 and
// dc1.example.test.
func (s *Samba) writeCerts(dir string) error {
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "testenv Samba CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "dc1.example.test"},
		DNSNames:     []string{"dc1.example.test", "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	s.CAFile = filepath.Join(dir, "ca.pem")
	files := map[string]*pem.Block{
		s.CAFile:                       {Type: "CERTIFICATE", Bytes: caDER},
		filepath.Join(dir, "cert.pem"): {Type: "CERTIFICATE", Bytes: der},
		filepath.Join(dir, "key.pem"):  {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)},
	}
	for name, b := range files {
		if err := os.WriteFile(name, pem.EncodeToMemory(b), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Start starts the provisioned DC (again, after Stop or Kill) and opens the
// bridges on new free ports.
func (s *Samba) Start() error {
	var out bytes.Buffer
	// exec: the pid we hold is samba's, so /proc/<pid>/ns/net is its netns.
	cmd := exec.Command("unshare", "-n", "sh", "-c",
		"ip link set lo up && exec samba -i -M single -s "+dirShellQuote(s.conf))
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: start samba: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	s.cmd, s.done = cmd, done
	s.ns = fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)

	ldapL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.kill()
		return fmt.Errorf("testenv: samba bridge: %w", err)
	}
	ldapsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ldapL.Close()
		s.kill()
		return fmt.Errorf("testenv: samba bridge: %w", err)
	}
	kdcL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ldapL.Close()
		ldapsL.Close()
		s.kill()
		return fmt.Errorf("testenv: samba bridge: %w", err)
	}
	s.mu.Lock()
	s.listeners = []net.Listener{ldapL, ldapsL, kdcL}
	s.mu.Unlock()
	go s.bridge(kdcL, "127.0.0.1:88")
	// udp_preference_limit = 1: always TCP (only TCP is bridged).
	s.Krb5Conf = filepath.Join(s.Dir, "krb5.conf")
	krb5 := fmt.Sprintf(`[libdefaults]
	default_realm = EXAMPLE.TEST
	dns_lookup_kdc = false
	dns_lookup_realm = false
	udp_preference_limit = 1
[realms]
	EXAMPLE.TEST = {
		kdc = %s
	}
[domain_realm]
	.example.test = EXAMPLE.TEST
`, kdcL.Addr())
	if err := os.WriteFile(s.Krb5Conf, []byte(krb5), 0o644); err != nil {
		s.closeBridges()
		s.kill()
		return fmt.Errorf("testenv: write krb5.conf: %w", err)
	}
	s.URL = "ldap://" + ldapL.Addr().String()
	s.TLSURL = "ldaps://" + ldapsL.Addr().String()
	go s.bridge(ldapL, "127.0.0.1:389")
	go s.bridge(ldapsL, "127.0.0.1:636")

	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-done:
			s.done <- err
			s.closeBridges()
			return fmt.Errorf("testenv: samba exited (%v): %s (logs in %s)", err, sambaTail(out.Bytes(), 2000), filepath.Join(s.Dir, "dc", "log"))
		default:
		}
		if c, err := ldap.DialURL(s.URL); err == nil {
			_, err = c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 10, false,
				"(objectClass=*)", []string{"dnsHostName"}, nil))
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("testenv: samba LDAP not up within 90s: %s", sambaTail(out.Bytes(), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bridge forwards connections accepted on l to addr inside samba's netns.
func (s *Samba) bridge(l net.Listener, addr string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := s.dialInNS(addr)
			if err != nil {
				c.Close()
				return
			}
			if !s.track(c, up) {
				return
			}
			var wg sync.WaitGroup
			wg.Add(2)
			cp := func(dst, src net.Conn) {
				defer wg.Done()
				io.Copy(dst, src)
				// half-close so the other direction drains, then both end
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			go cp(up, c)
			go cp(c, up)
			wg.Wait()
			s.untrack(c, up)
		}()
	}
}

// dialInNS dials addr from a thread that joined samba's network namespace
// and then returns to its own. (A thread that could not return is left
// locked, so the runtime discards it; that would also fire the
// Pdeathsig of any child that thread started, so it must stay rare.)
func (s *Samba) dialInNS(addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("open own netns: %w", err)}
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open(s.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("open %s: %w", s.ns, err)}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		ch <- result{c, err}
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	r := <-ch
	return r.c, r.err
}

func (s *Samba) track(cs ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listeners == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		s.conns[c] = struct{}{}
	}
	return true
}

func (s *Samba) untrack(cs ...net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(s.conns, c)
	}
}

// DropConnections cuts every open client connection, as a DC that goes
// away would; new connections still work.
func (s *Samba) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
		delete(s.conns, c)
	}
}

func (s *Samba) closeBridges() {
	s.mu.Lock()
	ls := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	s.DropConnections()
}

func (s *Samba) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
		s.cmd = nil
	}
}

// Halt stops samba and the bridges but keeps the provisioned DC, so Start
// can bring it back.
func (s *Samba) Halt() {
	s.closeBridges()
	s.kill()
}

// Stop stops samba and removes the DC.
func (s *Samba) Stop() {
	s.Halt()
	os.RemoveAll(s.Dir)
}

// TLSConfig trusts the test CA.
func (s *Samba) TLSConfig() (*tls.Config, error) {
	pemBytes, err := os.ReadFile(s.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, errors.New("testenv: no certificate in " + s.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Dial returns an LDAPS connection bound as Administrator (LDAPS, because
// setting unicodePwd needs it).
func (s *Samba) Dial() (*ldap.Conn, error) {
	tc, err := s.TLSConfig()
	if err != nil {
		return nil, err
	}
	c, err := ldap.DialURL(s.TLSURL, ldap.DialWithTLSConfig(tc))
	if err != nil {
		return nil, fmt.Errorf("testenv: dial samba: %w", err)
	}
	if err := c.Bind(s.AdminUPN, s.AdminPW); err != nil {
		c.Close()
		return nil, fmt.Errorf("testenv: bind samba: %w", err)
	}
	return c, nil
}

// Tool runs samba-tool against the running DC over LDAP, as Administrator
// (NTLM), e.g. Tool("dsacl", "set", "--objectdn=…", "--sddl=(OD;;RP;…;;SID)").
func (s *Samba) Tool(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append(args, "-H", s.URL, "-U", "Administrator%"+s.AdminPW, "--use-kerberos=off", "-s", s.conf)
	out, err := exec.CommandContext(ctx, "samba-tool", args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("testenv: samba-tool %s: %w: %s", args[0], err, sambaTail(out, 2000))
	}
	return out, nil
}

// ExportKeytab writes a keytab with principal's keys (e.g.
// "svc@EXAMPLE.TEST") to path, read from the DC's database.
func (s *Samba) ExportKeytab(principal, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "samba-tool", "domain", "exportkeytab", path, "--principal="+principal, "-s", s.conf).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testenv: samba-tool domain exportkeytab: %w: %s", err, sambaTail(out, 2000))
	}
	return nil
}

func sambaTail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
