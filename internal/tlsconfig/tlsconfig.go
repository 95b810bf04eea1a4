// Package tlsconfig builds TLS configurations from certificate, key and CA
// files, and rebuilds them when the files change (certificate rotation,
// including the Kubernetes Secret symlink swap). A rebuild that fails keeps
// the previous configuration: a half-written or broken new certificate never
// takes a listener down.
//
// Handshakes read the current configuration through an atomic pointer, so a
// reload affects new handshakes only; open connections are untouched.
//
// A match_san list makes a handshake also check the peer's identity: its
// certificate must present one of the listed names (see Matcher). A peer
// that does not is refused and reported to OnReject.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// Server terminates TLS for a listener.
type Server struct {
	// OnReject, when not nil, is told of each client certificate that
	// chained to client_ca_file but presented none of the names of
	// match_san. Set it before the first handshake.
	OnReject func(*Rejection)

	cfg   config.ServerTLS
	alpn  []string
	match *Matcher
	cur   atomic.Pointer[tls.Config]
}

// NewServer loads the files of cfg. alpn lists the application protocols
// offered (h2 and http/1.1 for HTTP listeners; none for TCP).
func NewServer(cfg config.ServerTLS, alpn ...string) (*Server, error) {
	s := &Server{cfg: cfg, alpn: alpn, match: NewMatcher(cfg.MatchSAN)}
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
// the latest loaded files, and with match_san checks the client's names
// once crypto/tls has verified its chain.
func (s *Server) Config() *tls.Config {
	return &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := s.cur.Load()
		if s.match == nil {
			return c, nil
		}
		// A copy per handshake, to name the peer in a rejection. Session
		// tickets still work: they use the keys of the outer
		// configuration, and a resumed session is checked again.
		c = c.Clone()
		peer := "client"
		if hello.Conn != nil {
			peer = hello.Conn.RemoteAddr().String()
		}
		c.VerifyConnection = s.match.VerifyConnection(peer, s.OnReject)
		return c, nil
	}}
}

// Files returns the files to watch.
func (s *Server) Files() []string {
	return nonEmpty(s.cfg.CertFile, s.cfg.KeyFile, s.cfg.ClientCAFile)
}

// Client originates TLS to a cluster's endpoints, always verifying the
// server: against ca_file, or the system roots without one. The server's
// name is checked against server_name (or the endpoint's host), or, with
// match_san, against those names instead.
type Client struct {
	// OnReject, when not nil, is told of each server certificate that
	// chained to the CA but presented none of the names of match_san. Set
	// it before the first handshake.
	OnReject func(*Rejection)

	cfg   config.ClientTLS
	match *Matcher
	cur   atomic.Pointer[tls.Config]
}

// NewClient loads the files of cfg.
func NewClient(cfg config.ClientTLS) (*Client, error) {
	c := &Client{cfg: cfg, match: NewMatcher(cfg.MatchSAN)}
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
// name to send (SNI) is server_name, or else the host of addr; it is also
// the name verified, unless match_san gives the names to accept.
func (c *Client) ForAddr(addr string) *tls.Config {
	tc := c.cur.Load().Clone()
	tc.ServerName = c.cfg.ServerName
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(addr)
	}
	if c.match != nil {
		// crypto/tls cannot verify a chain without also checking
		// ServerName, and a SPIFFE certificate has no DNS name: the chain
		// is verified here, the name by match_san.
		roots := tc.RootCAs
		check := c.match.VerifyConnection(addr, c.OnReject)
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := verifyChain(roots, cs.PeerCertificates, x509.ExtKeyUsageServerAuth); err != nil {
				return err
			}
			return check(cs)
		}
	}
	return tc
}

// verifyChain verifies a peer's certificates, leaf first, against roots
// (the system roots when nil) for usage, as crypto/tls does before it
// checks a host name.
func verifyChain(roots *x509.CertPool, certs []*x509.Certificate, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return errors.New("the peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return nil
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
