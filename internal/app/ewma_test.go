package app

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// slowTLS is a TLS server that counts its handshakes and, while slow is
// set, takes 300 ms longer over each (a backend short of CPU): what a tcp
// cluster with tls measures as its connect time. 300 ms is more than a
// handshake itself takes on a loaded machine under the race detector.
type slowTLS struct {
	addr  string
	conns atomic.Int64
	slow  atomic.Bool
}

func newSlowTLS(t *testing.T, certFile, keyFile string) *slowTLS {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := &slowTLS{}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if s.slow.Load() {
			time.Sleep(300 * time.Millisecond)
		}
		return nil, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				if tc.Handshake() != nil {
					return
				}
				s.conns.Add(1)
				io.WriteString(tc, "ok\n")
			}()
		}
	}()
	return s
}

// TestEWMATCPSlowHandshake: a tcp cluster under balance ewma, its
// endpoints TLS servers, one of which turns 300 ms slower to handshake:
// its share of new connections, made one after another so that none is
// busier than another, drops well below 1/3. The estimates show on
// /status and /metrics.
func TestEWMATCPSlowHandshake(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile, certFile, keyFile := testenv.NewCA(t, "ca").Files(t, dir, "127.0.0.1")
	bs := []*slowTLS{newSlowTLS(t, certFile, keyFile), newSlowTLS(t, certFile, keyFile), newSlowTLS(t, certFile, keyFile)}
	h := start(t, fmt.Sprintf(`
listeners:
  - {name: db, address: "127.0.0.1:0", protocol: tcp, cluster: backends}
clusters:
  - name: backends
    balance: ewma
    endpoints: ["%s", "%s", "%s"]
    tls: {ca_file: "%s"}
`, bs[0].addr, bs[1].addr, bs[2].addr, filepath.ToSlash(caFile)), nil)
	h.waitReady()
	addr := h.addr("db")
	connect := func(n int) []float64 {
		t.Helper()
		for _, b := range bs {
			b.conns.Store(0)
		}
		for i := range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(got) != "ok\n" {
				t.Fatalf("connection %d: read %q, %v", i, got, err)
			}
		}
		out := make([]float64, len(bs))
		for i, b := range bs {
			out[i] = float64(b.conns.Load()) / float64(n)
		}
		return out
	}
	connect(30)
	for _, b := range bs {
		if e := h.endpointStatus("backends", b.addr); e.LatencySeconds == nil {
			t.Errorf("/status: %s has no latency_estimate_seconds after 30 connections", b.addr)
		}
		if m := h.metric(`attache_cluster_endpoint_latency_estimate_seconds{cluster="backends",endpoint="` + b.addr + `"}`); m == "" {
			t.Errorf("/metrics: no latency estimate of %s", b.addr)
		}
	}
	bs[0].slow.Store(true)
	got := connect(150)
	t.Logf("shares with %s slow to handshake: %.3f", bs[0].addr, got)
	if got[0] > 0.1 {
		t.Errorf("slow endpoint's share %.3f, want well under 1/3 (at most 0.1)", got[0])
	}
	for i := 1; i < 3; i++ {
		if got[i] < 0.1 {
			t.Errorf("fast endpoint %d's share %.3f, want at least 0.1", i, got[i])
		}
	}
}
