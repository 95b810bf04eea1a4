package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/testenv"
)

const spiffeOrders = "spiffe://cluster.local/ns/shop/sa/orders"

func cert(t *testing.T, sans ...string) *x509.Certificate {
	t.Helper()
	c := &x509.Certificate{}
	for _, s := range sans {
		kind, v, _ := strings.Cut(s, ":")
		switch kind {
		case "dns":
			c.DNSNames = append(c.DNSNames, v)
		case "uri":
			u, err := url.Parse(v)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, u)
		case "ip":
			c.IPAddresses = append(c.IPAddresses, net.ParseIP(v))
		}
	}
	return c
}

func TestMatcher(t *testing.T) {
	t.Parallel()
	m := NewMatcher([]config.SANMatch{
		{DNS: "orders.shop.svc"},
		{URI: spiffeOrders},
		{URIPrefix: "spiffe://cluster.local/ns/billing/"},
		{IP: "10.0.0.7"},
		{IP: "fd00::1"},
	})
	for _, tc := range []struct {
		name string
		sans []string
		want bool
	}{
		{"dns exact", []string{"dns:orders.shop.svc"}, true},
		{"dns case", []string{"dns:Orders.Shop.SVC"}, true},
		{"dns trailing dot", []string{"dns:orders.shop.svc."}, true},
		{"dns wildcard cert", []string{"dns:*.shop.svc"}, true},
		{"dns wildcard too deep", []string{"dns:*.svc"}, false},
		{"dns partial wildcard", []string{"dns:ord*.shop.svc"}, false},
		{"dns other", []string{"dns:payments.shop.svc"}, false},
		{"dns suffix only", []string{"dns:xorders.shop.svc"}, false},
		{"uri exact", []string{"uri:" + spiffeOrders}, true},
		{"uri longer", []string{"uri:" + spiffeOrders + "-v2"}, false},
		{"uri as dns", []string{"dns:" + spiffeOrders}, false},
		{"uri prefix", []string{"uri:spiffe://cluster.local/ns/billing/sa/api"}, true},
		{"uri prefix sibling", []string{"uri:spiffe://cluster.local/ns/billingx/sa/api"}, false},
		{"uri prefix dot segments", []string{"uri:spiffe://cluster.local/ns/billing/../kube-system/sa/admin"}, false},
		{"uri prefix escaped", []string{"uri:spiffe://cluster.local/ns/billing/%2e%2e/kube-system/sa/admin"}, false},
		{"uri other trust domain", []string{"uri:spiffe://evil.local/ns/shop/sa/orders"}, false},
		{"ip", []string{"ip:10.0.0.7"}, true},
		{"ip mapped", []string{"ip:::ffff:10.0.0.7"}, true},
		{"ip6", []string{"ip:fd00:0::1"}, true},
		{"ip other", []string{"ip:10.0.0.8"}, false},
		{"one of many", []string{"dns:a.b", "uri:spiffe://x/y", "uri:" + spiffeOrders}, true},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := m.Check("10.1.2.3:443", cert(t, tc.sans...))
			if got := err == nil; got != tc.want {
				t.Errorf("%v: got accepted=%v (%v), want %v", tc.sans, got, err, tc.want)
			}
		})
	}
	if err := (*Matcher)(nil).Check("x", &x509.Certificate{}); err != nil {
		t.Errorf("nil matcher: got %v, want nil", err)
	}
}

func TestRejectionNamesPeerPresentedAndExpected(t *testing.T) {
	t.Parallel()
	m := NewMatcher([]config.SANMatch{{DNS: "orders.shop.svc"}, {URIPrefix: "spiffe://cluster.local/ns/shop/"}})
	err := m.Check("10.1.2.3:443", cert(t, "dns:payments.shop.svc", "uri:spiffe://cluster.local/ns/pay/sa/payments", "ip:10.1.2.3"))
	var r *Rejection
	if !errors.As(err, &r) {
		t.Fatalf("got %v, want a *Rejection", err)
	}
	want := "peer 10.1.2.3:443 presented dns:payments.shop.svc, uri:spiffe://cluster.local/ns/pay/sa/payments, ip:10.1.2.3; " +
		"match_san wants dns:orders.shop.svc or uri_prefix:spiffe://cluster.local/ns/shop/"
	if err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	// a peer cannot grow the log line without bound
	var many []string
	for range 1000 {
		many = append(many, "dns:"+strings.Repeat("x", 60)+".example")
	}
	many = append(many, "dns:a\nb.example")
	r = nil
	errors.As(m.Check("p", cert(t, many...)), &r)
	if len(r.Presented) != maxShownNames+1 || r.Presented[maxShownNames] != "(985 more)" {
		t.Errorf("got %d names ending %q, want %d then \"(985 more)\"", len(r.Presented), r.Presented[len(r.Presented)-1], maxShownNames)
	}
	if got := Names(cert(t, "dns:a\nb.example")); got[0] != `dns:a\nb.example` {
		t.Errorf("control character: got %q, want it escaped", got[0])
	}
}

func FuzzDNSMatch(f *testing.F) {
	for _, s := range [][2]string{{"orders.shop.svc", "*.shop.svc"}, {"a.b", "A.B."}, {"x", "*."}, {"a.b.c", "*.*.c"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, want, san string) {
		want = strings.ToLower(want)
		if dnsMatch(want, san) && !strings.EqualFold(strings.TrimSuffix(san, "."), want) {
			// only a one-label wildcard may match a different string
			rest, ok := strings.CutPrefix(strings.ToLower(strings.TrimSuffix(san, ".")), "*.")
			if !ok || strings.Count(want, ".") != strings.Count(rest, ".")+1 || !strings.HasSuffix(want, "."+rest) {
				t.Errorf("dnsMatch(%q, %q) = true", want, san)
			}
		}
	})
}

// pkiFiles writes a CA and returns its file and a function writing a
// certificate with sans under a file name (again: a rotation).
func pkiFiles(t *testing.T) (ca *testenv.CA, caFile string, issue func(file string, sans ...string) (crt, key string)) {
	dir := t.TempDir()
	ca = testenv.NewCA(t, "mesh-ca")
	caFile, _, _ = ca.Files(t, dir, "unused")
	return ca, caFile, func(file string, sans ...string) (string, string) {
		return ca.WriteSANs(t, dir, file, file, sans...)
	}
}

type rejections struct {
	mu   sync.Mutex
	list []*Rejection
}

func (r *rejections) add(x *Rejection) { r.mu.Lock(); r.list = append(r.list, x); r.mu.Unlock() }
func (r *rejections) n() int           { r.mu.Lock(); defer r.mu.Unlock(); return len(r.list) }
func (r *rejections) last() *Rejection {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.list[len(r.list)-1]
}

// exchange dials addr with c, writes a byte and reads its echo: the
// error of a refused client certificate under TLS 1.3 arrives only then.
func exchange(addr string, c *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("x")); err != nil {
		return err
	}
	_, err = io.ReadFull(conn, make([]byte, 1))
	return err
}

func echo(c net.Conn) { defer c.Close(); io.Copy(c, c) }

// TestClientMatchSAN: a server with only a SPIFFE ID (no DNS name, so the
// host name check alone would fail) is accepted by URI; one of another
// service account is refused and reported; rotated files keep working.
func TestClientMatchSAN(t *testing.T) {
	t.Parallel()
	ca, caFile, issue := pkiFiles(t)
	crt, key := issue("orders", spiffeOrders)
	pair, _ := tls.LoadX509KeyPair(crt, key)
	ordersAddr := testenv.Serve(t, &tls.Config{Certificates: []tls.Certificate{pair}}, echo)
	crt, key = issue("payments", "spiffe://cluster.local/ns/shop/sa/payments", "payments.shop.svc")
	pair, _ = tls.LoadX509KeyPair(crt, key)
	paymentsAddr := testenv.Serve(t, &tls.Config{Certificates: []tls.Certificate{pair}}, echo)

	var rej rejections
	c, err := NewClient(config.ClientTLS{CAFile: caFile, ServerName: "orders.shop.svc", MinVersion: "1.2",
		MatchSAN: []config.SANMatch{{URI: spiffeOrders}, {DNS: "orders.shop.svc"}}})
	if err != nil {
		t.Fatal(err)
	}
	c.OnReject = rej.add
	if err := exchange(ordersAddr, c.ForAddr(ordersAddr)); err != nil {
		t.Fatalf("server with the expected SPIFFE ID: %v", err)
	}
	if cfg := c.ForAddr(ordersAddr); cfg.ServerName != "orders.shop.svc" {
		t.Errorf("SNI: got %q, want orders.shop.svc", cfg.ServerName)
	}
	if err := exchange(paymentsAddr, c.ForAddr(paymentsAddr)); err == nil {
		t.Fatal("server of another service account was accepted")
	}
	if rej.n() != 1 {
		t.Fatalf("rejections reported: got %d, want 1", rej.n())
	}
	r := rej.last()
	if r.Peer != paymentsAddr || strings.Join(r.Presented, " ") != "dns:payments.shop.svc uri:spiffe://cluster.local/ns/shop/sa/payments" ||
		strings.Join(r.Expected, " ") != "uri:"+spiffeOrders+" dns:orders.shop.svc" {
		t.Errorf("rejection: got %+v", r)
	}

	// The chain is still verified: the right name from another CA fails,
	// and is not reported as a name mismatch.
	other := testenv.NewCA(t, "other")
	oc, ok := other.IssueSANs(t, "orders", spiffeOrders)
	pair, _ = tls.X509KeyPair(oc, ok)
	forged := testenv.Serve(t, &tls.Config{Certificates: []tls.Certificate{pair}}, echo)
	var cve *tls.CertificateVerificationError
	if err := exchange(forged, c.ForAddr(forged)); !errors.As(err, &cve) {
		t.Errorf("server from another CA: got %v, want a certificate verification error", err)
	}
	if rej.n() != 1 {
		t.Errorf("rejections reported: got %d, want still 1", rej.n())
	}

	// A new CA on disk (rotation) is used after Reload, with the same names.
	ca2 := testenv.NewCA(t, "mesh-ca-2")
	if err := os.WriteFile(caFile, append(append([]byte{}, ca.CertPEM...), ca2.CertPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	nc, nk := ca2.IssueSANs(t, "orders", spiffeOrders)
	pair, _ = tls.X509KeyPair(nc, nk)
	rotated := testenv.Serve(t, &tls.Config{Certificates: []tls.Certificate{pair}}, echo)
	if err := exchange(rotated, c.ForAddr(rotated)); err != nil {
		t.Errorf("server under the rotated CA: %v", err)
	}
}

// TestServerMatchSAN: a client certificate is checked for its names once
// its chain is verified; the rejection names the client's address; a
// rotated server certificate and client CA keep working.
func TestServerMatchSAN(t *testing.T) {
	t.Parallel()
	_, caFile, issue := pkiFiles(t)
	crt, key := issue("server", "127.0.0.1")
	var rej rejections
	s, err := NewServer(config.ServerTLS{CertFile: crt, KeyFile: key, ClientCAFile: caFile, RequireClientCert: true, MinVersion: "1.2",
		MatchSAN: []config.SANMatch{{URIPrefix: "spiffe://cluster.local/ns/shop/"}}})
	if err != nil {
		t.Fatal(err)
	}
	s.OnReject = rej.add
	addr := testenv.Serve(t, s.Config(), echo)
	roots := x509.NewCertPool()
	pemCA, _ := os.ReadFile(caFile)
	roots.AppendCertsFromPEM(pemCA)
	client := func(file string, sans ...string) *tls.Config {
		crt, key := issue(file, sans...)
		pair, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}}
	}

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		good := client("orders", spiffeOrders)
		good.MaxVersion = v
		if err := exchange(addr, good); err != nil {
			t.Errorf("TLS %x: client in the namespace: %v", v, err)
		}
		bad := client("intruder", "spiffe://cluster.local/ns/other/sa/orders", "orders.shop.svc")
		bad.MaxVersion = v
		before := rej.n()
		if err := exchange(addr, bad); err == nil {
			t.Errorf("TLS %x: client of another namespace was served", v)
		}
		if rej.n() != before+1 {
			t.Fatalf("TLS %x: rejections reported: got %d, want %d", v, rej.n(), before+1)
		}
		r := rej.last()
		if host, _, _ := net.SplitHostPort(r.Peer); host != "127.0.0.1" ||
			strings.Join(r.Presented, " ") != "dns:orders.shop.svc uri:spiffe://cluster.local/ns/other/sa/orders" {
			t.Errorf("rejection: got %+v", r)
		}
	}

	// rotation of the server's own certificate: the check stays
	issue("server", "127.0.0.1")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := exchange(addr, client("orders", spiffeOrders)); err != nil {
		t.Errorf("after rotation: %v", err)
	}
	if err := exchange(addr, client("intruder", "spiffe://cluster.local/ns/other/sa/x")); err == nil {
		t.Error("after rotation: client of another namespace was served")
	}
}

// FuzzMatcherURI: a certificate URI accepted by a prefix entry starts
// with the prefix and has no dot segment or escape; one accepted by an
// exact entry is that entry. Names never panics and stays bounded.
func FuzzMatcherURI(f *testing.F) {
	for _, s := range []string{spiffeOrders, "spiffe://cluster.local/ns/shop/../x", "spiffe://cluster.local/ns/shop/%2e%2e/x", "spiffe://cluster.local/ns/shop", "a:b"} {
		f.Add(s)
	}
	const prefix = "spiffe://cluster.local/ns/shop/"
	m := NewMatcher([]config.SANMatch{{URIPrefix: prefix}, {URI: "spiffe://cluster.local/ns/data/sa/db"}})
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		c := &x509.Certificate{URIs: []*url.URL{u}, DNSNames: []string{raw}}
		if m.Check("p", c) == nil {
			s := u.String()
			if s != "spiffe://cluster.local/ns/data/sa/db" && (!strings.HasPrefix(s, prefix) || strings.Contains(s, "%") || strings.Contains(s, "/../") || strings.Contains(s, "/./") || strings.HasSuffix(s, "/..") || strings.HasSuffix(s, "/.")) {
				t.Errorf("accepted %q", s)
			}
		}
		for _, n := range Names(c) {
			if len(n) > 4*256+16 {
				t.Errorf("name of %d bytes", len(n))
			}
		}
	})
}
