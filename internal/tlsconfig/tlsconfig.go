// Package tlsconfig builds TLS configurations from certificate, key and CA
// files, and rebuilds them when the files change (certificate rotation,
// including the Kubernetes Secret symlink swap). A rebuild that fails keeps
// the previous configuration: a half-written or broken new certificate never
// takes a listener down.
//
// Handshakes read the current configuration through an atomic pointer, so a
// reload affects new handshakes only; open connections are untouched.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// Server terminates TLS for a listener.
type Server struct {
	cfg  config.ServerTLS
	alpn []string
	cur  atomic.Pointer[tls.Config]
}

// NewServer loads the files of cfg. alpn lists the application protocols
// offered (h2 and http/1.1 for HTTP listeners; none for TCP).
func NewServer(cfg config.ServerTLS, alpn ...string) (*Server, error) {
	s := &Server{cfg: cfg, alpn: alpn}
	return s, s.Reload()
}

// Reload re-reads the files. On error the previous configuration stays.
func (s *Server) Reload() error {
	cert, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", s.cfg.CertFile, err)
	}
	c := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   s.alpn,
		MinVersion:   config.TLSVersions[s.cfg.MinVersion],
		CipherSuites: suites(s.cfg.CipherSuites),
	}
	if s.cfg.ClientCAFile != "" {
		pool, err := loadPool(s.cfg.ClientCAFile)
		if err != nil {
			return err
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
		if s.cfg.RequireClientCert {
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	s.cur.Store(c)
	return nil
}

// Config returns a configuration for tls.Server whose every handshake uses
// the latest loaded files.
func (s *Server) Config() *tls.Config {
	return &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return s.cur.Load(), nil
	}}
}

// Files returns the files to watch.
func (s *Server) Files() []string {
	return nonEmpty(s.cfg.CertFile, s.cfg.KeyFile, s.cfg.ClientCAFile)
}

// Client originates TLS to a cluster's endpoints, always verifying the
// server: against ca_file, or the system roots without one.
type Client struct {
	cfg config.ClientTLS
	cur atomic.Pointer[tls.Config]
}

// NewClient loads the files of cfg.
func NewClient(cfg config.ClientTLS) (*Client, error) {
	c := &Client{cfg: cfg}
	return c, c.Reload()
}

// Reload re-reads the files. On error the previous configuration stays.
func (c *Client) Reload() error {
	tc := &tls.Config{
		MinVersion:   config.TLSVersions[c.cfg.MinVersion],
		CipherSuites: suites(c.cfg.CipherSuites),
	}
	if c.cfg.CAFile != "" {
		pool, err := loadPool(c.cfg.CAFile)
		if err != nil {
			return err
		}
		tc.RootCAs = pool
	}
	if c.cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.cfg.CertFile, c.cfg.KeyFile)
		if err != nil {
			return fmt.Errorf("load client certificate %s: %w", c.cfg.CertFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	c.cur.Store(tc)
	return nil
}

// ForAddr returns the configuration for a connection to addr. The server
// name to send and verify is server_name, or else the host of addr.
func (c *Client) ForAddr(addr string) *tls.Config {
	tc := c.cur.Load().Clone()
	tc.ServerName = c.cfg.ServerName
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(addr)
	}
	return tc
}

// Files returns the files to watch.
func (c *Client) Files() []string {
	return nonEmpty(c.cfg.CAFile, c.cfg.CertFile, c.cfg.KeyFile)
}

// Expiry is when a loaded certificate file stops being valid.
type Expiry struct {
	File     string
	NotAfter time.Time
}

// Expiry returns the NotAfter of the listener's certificate as last
// loaded (a failed reload keeps the previous one, so this is what
// handshakes present).
func (s *Server) Expiry() []Expiry { return expiry(s.cur.Load(), s.cfg.CertFile) }

// Expiry returns the NotAfter of the client certificate as last loaded;
// none without cert_file.
func (c *Client) Expiry() []Expiry { return expiry(c.cur.Load(), c.cfg.CertFile) }

func expiry(tc *tls.Config, file string) []Expiry {
	if tc == nil || len(tc.Certificates) == 0 || tc.Certificates[0].Leaf == nil {
		return nil
	}
	return []Expiry{{File: file, NotAfter: tc.Certificates[0].Leaf.NotAfter}}
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("load CA %s: no PEM certificate found", file)
	}
	return pool, nil
}

func suites(names []string) []uint16 {
	var ids []uint16
	for _, n := range names {
		if id, ok := config.CipherSuite(n); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
