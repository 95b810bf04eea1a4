package health

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

var dialer = (&net.Dialer{}).DialContext

// startFrame builds a Connection.Start frame like RabbitMQ's.
func startFrame(major, minor byte, end byte) []byte {
	payload := []byte{0, 10, 0, 10, major, minor, 0, 0, 0, 0, 0, 0, 0, 5, 'P', 'L', 'A', 'I', 'N', 0, 0, 0, 5, 'e', 'n', '_', 'U', 'S'}
	f := []byte{1, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(f[3:], uint32(len(payload)))
	f = append(f, payload...)
	return append(f, end)
}

// fakeAMQP answers the protocol header with reply.
func fakeAMQP(t *testing.T, reply []byte) string {
	return testenv.Serve(t, nil, func(c net.Conn) {
		defer c.Close()
		hdr := make([]byte, 8)
		c.Read(hdr)
		c.Write(reply)
	})
}

func TestAMQPCheckFrames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		reply []byte
		want  string
	}{
		{"good start", startFrame(0, 9, 0xCE), ""},
		{"refused header", []byte("AMQP\x00\x00\x09\x01"), "refused the protocol header"},
		{"wrong version", startFrame(0, 8, 0xCE), "want 0-9"},
		{"bad frame end", startFrame(0, 9, 0x00), "0xCE"},
		{"heartbeat frame", []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}, "want a method frame"},
		{"closed", nil, "read AMQP frame header"},
		{"http", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), "want a method frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := fakeAMQP(t, tc.reply)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := AMQP(dialer).Check(ctx, addr)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want healthy", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestAMQPCheckRealRabbitMQ(t *testing.T) {
	addr := testenv.RabbitMQ(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := AMQP(dialer).Check(ctx, addr); err != nil {
		t.Fatalf("real RabbitMQ at %s: %v", addr, err)
	}
}

func TestAMQPCheckFailsOnNonAMQPServer(t *testing.T) {
	addr := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := AMQP(dialer).Check(ctx, addr); err == nil {
		t.Fatal("AMQP check passed against redis-server")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if err := TCP(dialer).Check(ctx2, addr); err != nil {
		t.Fatalf("TCP check failed against redis-server: %v", err)
	}
}

func TestRoundFlipsHealth(t *testing.T) {
	t.Parallel()
	p, _ := balance.New("round_robin")
	c := upstream.New(upstream.Options{Name: "c", Picker: p, HasHealthCheck: true})
	c.SetEndpoints([]upstream.Target{{Addr: "good:1"}, {Addr: "bad:1"}})
	chk := CheckerFunc(func(_ context.Context, addr string) error {
		if addr == "bad:1" {
			return errors.New("refused")
		}
		return nil
	})
	var changes atomic.Int32
	pol := Policy{Interval: time.Second, Timeout: time.Second, Thresholds: upstream.Thresholds{Healthy: 1, Unhealthy: 1}}
	Round(context.Background(), c, chk, pol, slog.New(slog.DiscardHandler), func(*upstream.Endpoint, error) { changes.Add(1) })
	eps := c.Endpoints()
	if eps[0].Health() != upstream.Healthy || eps[1].Health() != upstream.Unhealthy {
		t.Errorf("got %v/%v, want healthy/unhealthy", eps[0].Health(), eps[1].Health())
	}
	if changes.Load() != 2 {
		t.Errorf("got %d changes, want 2", changes.Load())
	}
}

// TestRunChecksAddedEndpointsAtOnce: an endpoint that discovery adds
// between rounds is checked on arrival (and only it), not an interval later.
func TestRunChecksAddedEndpointsAtOnce(t *testing.T) {
	t.Parallel()
	p, _ := balance.New("round_robin")
	c := upstream.New(upstream.Options{Name: "c", Picker: p, HasHealthCheck: true})
	c.SetEndpoints([]upstream.Target{{Addr: "old:1"}})
	var checks sync.Map // addr -> *atomic.Int32
	chk := CheckerFunc(func(_ context.Context, addr string) error {
		n, _ := checks.LoadOrStore(addr, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		return nil
	})
	count := func(addr string) int32 {
		if n, ok := checks.Load(addr); ok {
			return n.(*atomic.Int32).Load()
		}
		return 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pol := Policy{Interval: time.Hour, Timeout: time.Second, Thresholds: upstream.Thresholds{Healthy: 2, Unhealthy: 2}}
	go Run(ctx, c, chk, pol, slog.New(slog.DiscardHandler), nil, nil)
	for deadline := time.Now().Add(10 * time.Second); count("old:1") == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("first round never ran")
		}
	}
	c.SetEndpoints([]upstream.Target{{Addr: "old:1"}, {Addr: "new:1"}})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if eps := c.Endpoints(); eps[1].Health() == upstream.Healthy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the added endpoint was not checked within 10s (interval 1h): %d checks", count("new:1"))
		}
	}
	if n := count("old:1"); n != 1 {
		t.Errorf("the endpoint already checked was checked %d times, want 1 (no extra round)", n)
	}
}
