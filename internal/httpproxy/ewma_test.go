package httpproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/upstream"
)

// slowable is a net/http backend that counts its requests and, while
// slow is set, answers each 200 ms late: more than a loopback request
// takes on a loaded machine under the race detector.
type slowable struct {
	addr string
	hits atomic.Int64
	slow atomic.Bool
}

func newSlowable(t *testing.T) *slowable {
	t.Helper()
	b := &slowable{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if b.slow.Load() {
			time.Sleep(200 * time.Millisecond)
		}
		io.WriteString(w, "ok\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// newBalancedProxy is a listener of one route to a cluster of endpoints
// balanced by picker, served on path.
func newBalancedProxy(t *testing.T, path wirePath, picker balance.Picker, endpoints []string) (addr string, up *upstream.Cluster) {
	t.Helper()
	up = upstream.New(upstream.Options{Name: "c", Picker: picker, ConnectTimeout: time.Second,
		Outlier: upstream.OutlierPolicy{ConsecutiveFailures: 100}})
	var targets []upstream.Target
	for _, e := range endpoints {
		targets = append(targets, upstream.Target{Addr: e, Weight: 1})
	}
	up.SetEndpoints(targets)
	c := NewCluster(ClusterParams{Upstream: up, Version: "auto", MaxIdle: 64, IdleTimeout: time.Minute, ConnectTimeout: time.Second})
	route := Route{Name: "l/0", Match: RouteMatch{Prefix: "/"}, To: []RouteTarget{{Cluster: "c", Weight: 1}},
		Timeout: config.Duration(5 * time.Second)}
	log := slog.New(slog.DiscardHandler)
	table := NewTable(listenerOf("l", route), func(string) *Cluster { return c })
	s := newTestServer(t, time.Minute, path, log)
	s.Update(NewHandler(HandlerOptions{Table: table, Log: log}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go s.ServeConn(context.Background(), conn)
		}
	}()
	t.Cleanup(func() { ln.Close(); s.Close(time.Second); c.Close() })
	return ln.Addr().String(), up
}

// shares sends n requests one after another (so no endpoint is ever
// busier than another when picked: only latency tells them apart) and
// returns each backend's share of them.
func shares(t *testing.T, client *http.Client, addr string, bs []*slowable, n int) []float64 {
	t.Helper()
	for _, b := range bs {
		b.hits.Store(0)
	}
	for i := range n {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	out := make([]float64, len(bs))
	for i, b := range bs {
		out[i] = float64(b.hits.Load()) / float64(n)
	}
	return out
}

// TestEWMASlowEndpointShare: under balance ewma, an endpoint that turns
// 200 ms slower than its peers gets well under its 1/3 of sequential
// requests, on each of the three paths (each times the try to the
// response head); round_robin, as a check of the test, gives it 1/3.
func TestEWMASlowEndpointShare(t *testing.T) {
	paths := []struct {
		name string
		path wirePath
	}{{"nethttp", onNetHTTP}, {"goroutine", onGoroutine}, {"engine", onEngine}}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			bs := []*slowable{newSlowable(t), newSlowable(t), newSlowable(t)}
			addr, up := newBalancedProxy(t, p.path, balance.NewEWMA(0, 0), []string{bs[0].addr, bs[1].addr, bs[2].addr})
			client := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(client.CloseIdleConnections)
			shares(t, client, addr, bs, 60)
			for _, e := range up.Endpoints() {
				if d, measured, _ := up.LatencyEstimate(e); !measured || d <= 0 {
					t.Errorf("%s not measured after 60 requests (estimate %v)", e.Addr, d)
				}
			}
			bs[0].slow.Store(true)
			got := shares(t, client, addr, bs, 300)
			t.Logf("shares with %s slow: %.3f", bs[0].addr, got)
			if got[0] > 0.1 {
				t.Errorf("slow endpoint's share %.3f, want well under 1/3 (at most 0.1)", got[0])
			}
			// Between the two fast ones the lower latency of the moment
			// wins: their split is uneven but both serve.
			for i := 1; i < 3; i++ {
				if got[i] < 0.1 {
					t.Errorf("fast endpoint %d's share %.3f, want at least 0.1", i, got[i])
				}
			}
		})
	}
	t.Run("round_robin", func(t *testing.T) {
		bs := []*slowable{newSlowable(t), newSlowable(t), newSlowable(t)}
		picker, _ := balance.New("round_robin")
		addr, _ := newBalancedProxy(t, onNetHTTP, picker, []string{bs[0].addr, bs[1].addr, bs[2].addr})
		client := &http.Client{Transport: &http.Transport{}}
		t.Cleanup(client.CloseIdleConnections)
		bs[0].slow.Store(true)
		if got := shares(t, client, addr, bs, 15); got[0] < 0.3 {
			t.Errorf("round_robin: slow endpoint's share %.3f, want 1/3", got[0])
		}
	})
}

// TestEWMASlowEndpointRetried: an endpoint that was slow and stopped
// getting requests is tried again once its estimate has decayed like the
// others' (here after an idle spell of ten decay periods, where every
// estimate is near zero and a fresh measurement is not).
func TestEWMASlowEndpointRetried(t *testing.T) {
	const decay = 100 * time.Millisecond
	bs := []*slowable{newSlowable(t), newSlowable(t), newSlowable(t)}
	addr, _ := newBalancedProxy(t, onNetHTTP, balance.NewEWMA(decay, 0), []string{bs[0].addr, bs[1].addr, bs[2].addr})
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	shares(t, client, addr, bs, 30)
	bs[0].slow.Store(true)
	shares(t, client, addr, bs, 30)
	time.Sleep(10 * decay)
	if got := shares(t, client, addr, bs, 10); got[0] == 0 {
		t.Errorf("slow endpoint not tried again after its estimate decayed: shares %.2f", got)
	}
}
