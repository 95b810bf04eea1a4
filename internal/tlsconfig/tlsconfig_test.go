package tlsconfig

import (
	"crypto/tls"
	"net"
	"os"
	"testing"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/testenv"
)

// serve accepts TLS connections with s and completes their handshakes.
func serve(t *testing.T, s *Server) string {
	return testenv.Serve(t, s.Config(), func(c net.Conn) { c.(*tls.Conn).Handshake(); c.Close() })
}

func handshake(addr string, c *Client) (*x509Name, error) {
	conn, err := tls.Dial("tcp", addr, c.ForAddr(addr))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return &x509Name{conn.ConnectionState().PeerCertificates[0].Subject.CommonName}, nil
}

type x509Name struct{ cn string }

func TestMutualTLSAndRotation(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test-ca")
	caFile, crt, key := ca.Files(t, dir, "127.0.0.1")
	clientDir := t.TempDir()
	_, ccrt, ckey := ca.Files(t, clientDir, "app")

	srv, err := NewServer(config.ServerTLS{CertFile: crt, KeyFile: key, ClientCAFile: caFile, RequireClientCert: true, MinVersion: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)

	good, err := NewClient(config.ClientTLS{CAFile: caFile, CertFile: ccrt, KeyFile: ckey, MinVersion: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, good); err != nil {
		t.Fatalf("mTLS handshake: %v", err)
	}

	noCert, _ := NewClient(config.ClientTLS{CAFile: caFile, MinVersion: "1.2"})
	if _, err := handshake(addr, noCert); err == nil {
		// TLS 1.3 reports a missing client certificate on the first read
		conn, derr := tls.Dial("tcp", addr, noCert.ForAddr(addr))
		if derr == nil {
			_, derr = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if derr == nil {
			t.Error("client without certificate was accepted")
		}
	}

	otherCA := testenv.NewCA(t, "other")
	otherDir := t.TempDir()
	otherCAFile, _, _ := otherCA.Files(t, otherDir, "x")
	wrongRoots, _ := NewClient(config.ClientTLS{CAFile: otherCAFile, CertFile: ccrt, KeyFile: ckey, MinVersion: "1.2"})
	if _, err := handshake(addr, wrongRoots); err == nil {
		t.Error("server certificate from an unknown CA was accepted")
	}

	// rotate: a new certificate with another name is served after Reload
	c2, k2 := ca.Issue(t, "127.0.0.1")
	os.WriteFile(crt, c2, 0o600)
	os.WriteFile(key, k2, 0o600)
	if err := srv.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	// a broken certificate keeps the previous one
	os.WriteFile(crt, []byte("garbage"), 0o600)
	if err := srv.Reload(); err == nil {
		t.Fatal("reload of a broken certificate returned nil")
	}
	if _, err := handshake(addr, good); err != nil {
		t.Fatalf("handshake after failed reload: %v", err)
	}
}

func TestClientServerNameDefaultsToHost(t *testing.T) {
	c, _ := NewClient(config.ClientTLS{MinVersion: "1.2"})
	if got := c.ForAddr("api.example.com:443").ServerName; got != "api.example.com" {
		t.Errorf("got %q, want api.example.com", got)
	}
	c, _ = NewClient(config.ClientTLS{ServerName: "x.example", MinVersion: "1.3"})
	if got := c.ForAddr("10.0.0.1:443"); got.ServerName != "x.example" || got.MinVersion != tls.VersionTLS13 {
		t.Errorf("got %q/%x, want x.example/TLS1.3", got.ServerName, got.MinVersion)
	}
	if got := c.ForAddr("a:1").InsecureSkipVerify; got {
		t.Error("verification is off")
	}
}
