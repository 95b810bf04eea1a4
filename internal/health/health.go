// Package health runs active health checks against a cluster's endpoints
// and writes the results into endpoint state. A Checker knows one protocol;
// Run owns the schedule.
package health

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/attache-proxy/attache/internal/upstream"
)

// Checker checks one endpoint; a nil error means healthy. It must return
// by the context's deadline.
type Checker interface {
	Check(ctx context.Context, addr string) error
}

// CheckerFunc adapts a function to Checker.
type CheckerFunc func(ctx context.Context, addr string) error

// Check calls f.
func (f CheckerFunc) Check(ctx context.Context, addr string) error { return f(ctx, addr) }

// Dialer opens a connection for a check.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// TCP returns a checker that passes when a TCP connection is accepted.
func TCP(dial Dialer) Checker {
	return CheckerFunc(func(ctx context.Context, addr string) error {
		c, err := dial(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// amqpHeader is the AMQP 0-9-1 protocol header a client opens with.
var amqpHeader = []byte{'A', 'M', 'Q', 'P', 0, 0, 9, 1}

// AMQP returns a checker that sends the AMQP 0-9-1 protocol header and
// expects a Connection.Start method frame: frame type 1 on channel 0, class
// and method 10/10, version 0-9, ending in the frame-end octet 0xCE. dial
// may wrap TLS (amqps). A node that is up but not serving AMQP (booting,
// wrong protocol) fails this check where a TCP connect would pass.
func AMQP(dial Dialer) Checker {
	return CheckerFunc(func(ctx context.Context, addr string) error {
		c, err := dial(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if dl, ok := ctx.Deadline(); ok {
			c.SetDeadline(dl)
		}
		if _, err := c.Write(amqpHeader); err != nil {
			return fmt.Errorf("write AMQP header: %w", err)
		}
		return readConnectionStart(c)
	})
}

// maxStartFrame bounds the Connection.Start payload a check reads; RabbitMQ
// sends about 500 bytes.
const maxStartFrame = 64 << 10

func readConnectionStart(r io.Reader) error {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fmt.Errorf("read AMQP frame header: %w", err)
	}
	if bytes.Equal(h[:4], []byte("AMQP")) {
		return fmt.Errorf("server refused the protocol header, offering %q", h[:])
	}
	typ, ch, size := h[0], binary.BigEndian.Uint16(h[1:3]), binary.BigEndian.Uint32(h[3:7])
	if typ != 1 || ch != 0 {
		return fmt.Errorf("got frame type %d on channel %d, want a method frame on channel 0", typ, ch)
	}
	if size < 6 || size > maxStartFrame {
		return fmt.Errorf("Connection.Start payload of %d bytes out of range", size)
	}
	payload := make([]byte, size+1)
	if _, err := io.ReadFull(r, payload); err != nil {
		return fmt.Errorf("read Connection.Start: %w", err)
	}
	class, method := binary.BigEndian.Uint16(payload[0:2]), binary.BigEndian.Uint16(payload[2:4])
	if class != 10 || method != 10 {
		return fmt.Errorf("got method %d.%d, want Connection.Start (10.10)", class, method)
	}
	if payload[4] != 0 || payload[5] != 9 {
		return fmt.Errorf("server speaks AMQP %d-%d, want 0-9", payload[4], payload[5])
	}
	if payload[size] != 0xCE {
		return errors.New("frame does not end in 0xCE")
	}
	return nil
}

// Policy is when checks run and how results flip health.
type Policy struct {
	Interval   time.Duration
	Timeout    time.Duration
	Thresholds upstream.Thresholds
}

// Run checks every endpoint of c each interval until ctx ends. The first
// round starts at once so that a new cluster learns its health quickly;
// later rounds are jittered by up to 10% so that many sidecars do not probe
// in step. onChange, if not nil, is called after an endpoint's health flips;
// afterRound, if not nil, after every round (roles are settled then: a
// failover is seen there).
func Run(ctx context.Context, c *upstream.Cluster, chk Checker, p Policy, log *slog.Logger, onChange func(*upstream.Endpoint, error), afterRound func()) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		Round(ctx, c, chk, p, log, onChange)
		if afterRound != nil && ctx.Err() == nil {
			afterRound()
		}
		jitter := time.Duration(rand.Int64N(int64(p.Interval)/10 + 1))
		t.Reset(p.Interval - jitter)
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				break wait
			case <-c.Added():
				// Discovery added endpoints: check them now, as Envoy
				// checks a new host on arrival, instead of leaving them
				// without traffic until the next round.
				check(ctx, c, unchecked(c.Endpoints()), chk, p, log, onChange)
			}
		}
	}
}

func unchecked(eps []*upstream.Endpoint) []*upstream.Endpoint {
	var out []*upstream.Endpoint
	for _, e := range eps {
		if e.Health() == upstream.Unknown {
			out = append(out, e)
		}
	}
	return out
}

// Round checks every endpoint of c once, concurrently, and waits for all.
// A ReplicationChecker's role and lag are stored on the endpoint before its
// health, so that an endpoint turning healthy has its role already.
func Round(ctx context.Context, c *upstream.Cluster, chk Checker, p Policy, log *slog.Logger, onChange func(*upstream.Endpoint, error)) {
	check(ctx, c, c.Endpoints(), chk, p, log, onChange)
}

func check(ctx context.Context, c *upstream.Cluster, eps []*upstream.Endpoint, chk Checker, p Policy, log *slog.Logger, onChange func(*upstream.Endpoint, error)) {
	var wg sync.WaitGroup
	for _, e := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, p.Timeout)
			var err error
			var rep upstream.Replication
			rc, learnsRole := chk.(ReplicationChecker)
			if learnsRole {
				rep, err = rc.CheckReplication(cctx, e.Addr)
			} else {
				err = chk.Check(cctx, e.Addr)
			}
			cancel()
			if ctx.Err() != nil {
				return // shutting down: a cancelled check says nothing
			}
			if learnsRole && err == nil {
				old := e.Role()
				if e.ObserveReplication(rep) {
					log.Info("endpoint role changed", "cluster", c.Name(), "endpoint", e.Addr,
						"from", old.String(), "to", rep.Role.String())
				}
			}
			wasEjected := e.Ejected(time.Now())
			changed := e.ObserveCheck(err == nil, p.Thresholds)
			if wasEjected && !e.Ejected(time.Now()) {
				log.Info("endpoint ejection ended by a passing health check", "cluster", c.Name(), "endpoint", e.Addr)
			}
			if changed {
				log.Info("endpoint health changed", "cluster", c.Name(), "endpoint", e.Addr,
					"health", e.Health().String(), "error", err)
				if onChange != nil {
					onChange(e, err)
				}
			}
		}()
	}
	wg.Wait()
}

// HTTP returns a checker that sends GET path (with Host host when set) over
// a fresh connection made by client, and passes when the status is in one of
// ranges. scheme is "http" or "https".
func HTTP(client *http.Client, scheme, path, host string, ranges [][2]int) Checker {
	return CheckerFunc(func(ctx context.Context, addr string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+path, nil)
		if err != nil {
			return err
		}
		if host != "" {
			req.Host = host
		}
		req.Header.Set("User-Agent", "attache-health-check")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		for _, r := range ranges {
			if resp.StatusCode >= r[0] && resp.StatusCode <= r[1] {
				return nil
			}
		}
		return fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	})
}
