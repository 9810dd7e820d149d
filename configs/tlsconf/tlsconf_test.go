package tlsconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  *Config
		want string // "" builds
	}{
		{"off", nil, ""},
		{"system CAs", &Config{ServerName: "bf.example.dk"}, ""},
		{"missing CA file", &Config{CAFile: filepath.Join(dir, "nope.pem")}, `receiver "x": tls.ca_file: open`},
		{"CA file without PEM", &Config{CAFile: notPEM}, "holds no PEM certificate"},
		{"missing client certificate", &Config{CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "k.pem")}, "client certificate tls.cert_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Build(`receiver "x"`, "the servers'", tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if (c == nil) != (tt.cfg == nil) {
					t.Fatalf("config %v for %+v", c, tt.cfg)
				}
				if c != nil && (c.MinVersion == 0 || c.InsecureSkipVerify || c.ServerName != tt.cfg.ServerName) {
					t.Errorf("config %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build = %v, want %q", err, tt.want)
			}
		})
	}
}
