package redisproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/tlsconfig"
	"github.com/attache-proxy/attache/internal/upstream"
)

// clientTLS builds a cluster's client TLS as the app does.
func clientTLS(t *testing.T, c config.ClientTLS) func(string) *tls.Config {
	t.Helper()
	if c.MinVersion == "" {
		c.MinVersion = "1.2"
	}
	tc, err := tlsconfig.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	return tc.ForAddr
}

// TestShardTLS: a cluster's tls settings reach its shards: commands work
// through a TLS-only redis-server (its plain port is 0, so nothing can go
// in plaintext), and each verification setting refuses what it should.
func TestShardTLS(t *testing.T) {
	for _, tc := range []struct {
		name       string
		certFor    string // the server certificate's name
		clientCert bool   // the server requires a client certificate
		args       []string
		tls        func(r *testenv.RedisTLS) *config.ClientTLS // nil: no tls
		wantErr    string                                      // "": commands work
	}{
		{name: "verified", certFor: "127.0.0.1",
			tls: func(r *testenv.RedisTLS) *config.ClientTLS { return &config.ClientTLS{CAFile: r.CAFile} }},
		{name: "plaintext to a TLS-only server", certFor: "127.0.0.1",
			tls: func(r *testenv.RedisTLS) *config.ClientTLS { return nil }, wantErr: "ERR attache: shard"},
		{name: "wrong CA", certFor: "127.0.0.1",
			tls:     func(r *testenv.RedisTLS) *config.ClientTLS { return &config.ClientTLS{CAFile: testenv.OtherCA(t)} },
			wantErr: "certificate signed by unknown authority"},
		{name: "server_name", certFor: "redis.test",
			tls: func(r *testenv.RedisTLS) *config.ClientTLS {
				return &config.ClientTLS{CAFile: r.CAFile, ServerName: "redis.test"}
			}},
		{name: "name not in certificate", certFor: "redis.test",
			tls:     func(r *testenv.RedisTLS) *config.ClientTLS { return &config.ClientTLS{CAFile: r.CAFile} },
			wantErr: "cannot validate certificate for 127.0.0.1"},
		{name: "mutual TLS", certFor: "127.0.0.1", clientCert: true,
			tls: func(r *testenv.RedisTLS) *config.ClientTLS {
				return &config.ClientTLS{CAFile: r.CAFile, CertFile: r.CertFile, KeyFile: r.KeyFile}
			}},
		{name: "no client certificate", certFor: "127.0.0.1", clientCert: true,
			tls:     func(r *testenv.RedisTLS) *config.ClientTLS { return &config.ClientTLS{CAFile: r.CAFile} },
			wantErr: "ERR attache: shard"},
		{name: "min_version above the server's", certFor: "127.0.0.1", args: []string{"--tls-protocols", "TLSv1.2"},
			tls: func(r *testenv.RedisTLS) *config.ClientTLS {
				return &config.ClientTLS{CAFile: r.CAFile, MinVersion: "1.3"}
			},
			wantErr: "protocol version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testenv.StartRedisTLS(t, tc.certFor, tc.clientCert, tc.args...)
			var tlsFor func(string) *tls.Config
			if c := tc.tls(r); c != nil {
				tlsFor = clientTLS(t, *c)
			}
			// Two shards on the same server (two names) so that keys
			// take either; the default options ask for the epoll engine.
			p := pool(t, nil, func(o *Options) {
				o.Upstream = tlsCluster(tlsFor, upstream.Target{Addr: r.Addr, Name: "a", Weight: 1}, upstream.Target{Addr: r.Addr, Name: "b", Weight: 1})
			})
			rdb := client(serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}))
			defer rdb.Close()
			ctx := context.Background()
			for i := range 20 {
				k := fmt.Sprint("key:", i)
				err := rdb.Set(ctx, k, i, 0).Err()
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("SET %s: got %v, want an error with %q", k, err, tc.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("SET %s: got %v, want OK", k, err)
				}
				if got, err := rdb.Get(ctx, k).Result(); got != fmt.Sprint(i) {
					t.Fatalf("GET %s: got %q (%v), want %d", k, got, err, i)
				}
			}
		})
	}
}

// TestPingTLS: the health check of a TLS cluster goes through TLS with
// the cluster's verification.
func TestPingTLS(t *testing.T) {
	r := testenv.StartRedisTLS(t, "127.0.0.1", false)
	for _, tc := range []struct {
		name string
		tls  func(string) *tls.Config
		ok   bool
	}{
		{"verified", clientTLS(t, config.ClientTLS{CAFile: r.CAFile}), true},
		{"plaintext", nil, false},
		{"wrong CA", clientTLS(t, config.ClientTLS{CAFile: testenv.OtherCA(t)}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err := Ping(ctx, r.Addr, "", "", tc.tls)
			if (err == nil) != tc.ok {
				t.Fatalf("Ping: got %v, want ok %v", err, tc.ok)
			}
		})
	}
}
