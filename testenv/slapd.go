package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Slapd is a throwaway OpenLDAP server: mdb backend with the syncprov
// overlay (RFC 4533), suffix dc=example,dc=org, listening on a free
// loopback port, its database in a temp dir.
type Slapd struct {
	URL    string // ldap://127.0.0.1:PORT
	Suffix string // dc=example,dc=org
	RootDN string // cn=admin,<suffix>
	RootPW string
	Dir    string

	cmd  *exec.Cmd
	done chan error
}

// SlapdOptions tunes the server for a test.
type SlapdOptions struct {
	// SessionLog is the syncprov session log size: how many deletions a
	// refreshOnly search can replay before the server falls back to a
	// present phase. 0 means 10000.
	SessionLog int
	// Access are extra slapd.conf access rules ("access to ... by ..."),
	// checked before the default one that lets everybody read everything.
	// They do not bind the root DN: test with another account.
	Access []string
}

// NewSlapd starts a slapd for tb and stops it when tb ends.
func NewSlapd(tb testing.TB, opts SlapdOptions) *Slapd {
	tb.Helper()
	s, err := StartSlapd(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Stop() })
	return s
}

// StartSlapd starts a slapd (for TestMain, where there is no testing.TB).
// The caller must call Stop.
func StartSlapd(opts SlapdOptions) (*Slapd, error) {
	bin, err := exec.LookPath("slapd")
	if err != nil {
		bin = "/usr/sbin/slapd"
		if _, err := os.Stat(bin); err != nil {
			return nil, errors.New("testenv: slapd not found; install the Debian packages slapd and ldap-utils (testenv/install-deps.sh)")
		}
	}
	if _, err := os.Stat("/usr/lib/ldap/syncprov.so"); err != nil {
		if _, err2 := os.Stat("/usr/lib/ldap/syncprov.la"); err2 != nil {
			return nil, errors.New("testenv: the slapd syncprov module is missing from /usr/lib/ldap; reinstall the Debian package slapd")
		}
	}
	dir, err := os.MkdirTemp("", "testenv-slapd-")
	if err != nil {
		return nil, fmt.Errorf("testenv: slapd temp dir: %w", err)
	}
	s := &Slapd{Suffix: "dc=example,dc=org", RootPW: "secret", Dir: dir}
	s.RootDN = "cn=admin," + s.Suffix
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o755); err != nil {
		return nil, err
	}
	sessionLog := opts.SessionLog
	if sessionLog <= 0 {
		sessionLog = 10000
	}
	// Comments must stand on their own lines: slapd exits silently on an
	// inline '#'.
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
sizelimit 500

database mdb
maxsize 4294967296
# throwaway database: no fsync per write
dbnosync
suffix "%[2]s"
rootdn "%[3]s"
rootpw %[4]s
directory %[1]s/db
index objectClass eq
index entryCSN,entryUUID eq
index uid,cn,ou eq
%[6]saccess to * by * read
overlay syncprov
syncprov-checkpoint 100 10
syncprov-sessionlog %[5]d
`, dir, s.Suffix, s.RootDN, s.RootPW, sessionLog, accessRules(opts.Access))
	if err := os.WriteFile(filepath.Join(dir, "slapd.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-d", "0", "-f", filepath.Join(dir, "slapd.conf")}
	if os.Geteuid() == 0 {
		// slapd drops privileges; its files must belong to that user.
		if err := dirChown(dir, "openldap"); err != nil {
			return nil, err
		}
		args = append(args, "-u", "openldap", "-g", "openldap")
	}
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.URL = "ldap://127.0.0.1:" + strconv.Itoa(port)
		err = s.start(bin, append(args, "-h", s.URL+"/"))
		if err == nil {
			break
		}
		if attempt == 2 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := s.addBase(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func accessRules(rules []string) string {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(r + "\n")
	}
	return b.String()
}

func (s *Slapd) start(bin string, args []string) error {
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: start slapd: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return fmt.Errorf("testenv: slapd exited (%v); run it with -d config to see why: %s", err, out.String())
		default:
		}
		if c, err := ldap.DialURL(s.URL); err == nil {
			c.Close()
			s.cmd, s.done = cmd, done
			return nil
		}
		time.Sleep(30 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-done
	return fmt.Errorf("testenv: slapd did not listen on %s within 15s: %s", s.URL, out.String())
}

func (s *Slapd) addBase() error {
	c, err := s.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	add := ldap.NewAddRequest(s.Suffix, nil)
	add.Attribute("objectClass", []string{"dcObject", "organization"})
	add.Attribute("o", []string{"Example"})
	add.Attribute("dc", []string{"example"})
	if err := c.Add(add); err != nil {
		return fmt.Errorf("testenv: add %s: %w", s.Suffix, err)
	}
	return nil
}

// Dial returns a connection bound as the root DN.
func (s *Slapd) Dial() (*ldap.Conn, error) {
	c, err := ldap.DialURL(s.URL)
	if err != nil {
		return nil, fmt.Errorf("testenv: dial slapd: %w", err)
	}
	if err := c.Bind(s.RootDN, s.RootPW); err != nil {
		c.Close()
		return nil, fmt.Errorf("testenv: bind slapd: %w", err)
	}
	return c, nil
}

// Stop stops slapd and removes its directory.
func (s *Slapd) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
		s.cmd = nil
	}
	os.RemoveAll(s.Dir)
}

// dirChown gives dir and everything below it to the named system user.
func dirChown(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("testenv: system user %q missing (it comes with the Debian package): %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// dirShellQuote quotes s for sh -c.
func dirShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
