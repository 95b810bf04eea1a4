package health

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/upstream"
)

// backend is a net/http server on a fixed loopback address that can be
// stopped and started again on it; it counts the requests it served.
type backend struct {
	t      *testing.T
	addr   string
	served atomic.Int32
	mu     sync.Mutex
	srv    *http.Server
}

func newBackend(t *testing.T) *backend {
	b := &backend{t: t, addr: "127.0.0.1:0"}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *backend) start() {
	b.t.Helper()
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		b.t.Fatalf("listen %s: %v", b.addr, err)
	}
	b.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			b.served.Add(1)
		}
		fmt.Fprint(w, "ok")
	})}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go srv.Serve(ln)
}

// stop closes the listener and every connection: the address refuses.
func (b *backend) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		b.srv.Close()
		b.srv = nil
	}
}

// get sends one request through c (Dial, a connection per request) and
// returns the endpoint that answered.
func get(t *testing.T, c *upstream.Cluster) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, ep, err := c.Dial(ctx, 0)
	if err != nil {
		t.Fatalf("dial through the cluster: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("response from %s: %v", ep.Addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status from %s: got %d, want 200", ep.Addr, resp.StatusCode)
	}
	return ep.Addr
}

// TestPassingCheckUnejectsRealBackend is the soak's HTTP sequence with two
// real net/http backends: a is stopped and ejected by outlier detection,
// started again and passes its HTTP check; then b dies. a must take
// traffic as soon as its check passes, and once b's check fails every
// request goes to a with no connection attempt on b (no panic mode).
func TestPassingCheckUnejectsRealBackend(t *testing.T) {
	a, b := newBackend(t), newBackend(t)
	now := time.Unix(1000, 0) // the cluster's clock stands still: ejections do not expire
	var refused sync.Map      // addr -> *atomic.Int32
	refusals := func(addr string) int32 {
		if n, ok := refused.Load(addr); ok {
			return n.(*atomic.Int32).Load()
		}
		return 0
	}
	p, _ := balance.New("round_robin")
	c := upstream.New(upstream.Options{
		Name: "c", Picker: p, ConnectTimeout: 2 * time.Second, HasHealthCheck: true, Now: func() time.Time { return now },
		Outlier: upstream.OutlierPolicy{ConsecutiveFailures: 2, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 50},
		Observer: upstream.Observer{ConnectError: func(ep *upstream.Endpoint, _ error) {
			n, _ := refused.LoadOrStore(ep.Addr, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		}},
	})
	c.SetEndpoints([]upstream.Target{{Addr: a.addr}, {Addr: b.addr}})
	epA := c.Endpoints()[0]
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	chk := HTTP(client, "http", "/healthz", "", [][2]int{{200, 299}})
	pol := Policy{Interval: time.Second, Timeout: 2 * time.Second, Thresholds: upstream.Thresholds{Healthy: 1, Unhealthy: 1}}
	round := func() { Round(context.Background(), c, chk, pol, slog.New(slog.DiscardHandler), nil) }
	round()

	a.stop()
	for i := 0; !epA.Ejected(now); i++ {
		if i == 10 {
			t.Fatalf("a not ejected after %d requests while stopped (%d refusals)", i, refusals(a.addr))
		}
		get(t, c)
	}
	a.start()
	round()
	if !c.Routable(epA, now) {
		t.Errorf("a after its check passed: got not routable (ejected %v), want routable", epA.Ejected(now))
	}
	before := a.served.Load()
	for range 4 {
		get(t, c)
	}
	if a.served.Load() == before {
		t.Errorf("requests served by a after its check passed: got 0 of 4, want some")
	}

	b.stop()
	round()
	refusedB := refusals(b.addr)
	for i := range 10 {
		if got := get(t, c); got != a.addr {
			t.Errorf("request %d with b dead: served by %s, want a (%s)", i, got, a.addr)
		}
	}
	if n := refusals(b.addr) - refusedB; n != 0 {
		t.Errorf("connection attempts on dead b after its check failed: got %d, want 0", n)
	}
}
