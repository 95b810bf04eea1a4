package memcacheproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/hashkit"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Pool is a cluster's shards: its upstream endpoints placed on a ring the
// way twemproxy places memcached servers, each with a few idle
// connections. Endpoint health, ejection and discovery are the upstream
// cluster's; with AutoEject, failures eject an endpoint under
// twemproxy's policy (upstream.FailurePolicy) and the ring leaves out the
// endpoints the cluster would not route to (auto_eject_hosts); otherwise
// their keys get SERVER_ERROR.
type Pool struct {
	up   *upstream.Cluster
	opts Options
	hash hashkit.Func

	mu     sync.Mutex
	shards map[string]*shard // by address
	ring   atomic.Pointer[ring]
	closed bool
}

// Options configure a Pool.
type Options struct {
	Hash         string // a twemproxy hash name
	Distribution string // ketama | modula | random
	HashTag      string
	AutoEject    bool
	// Eject is the failures that eject an endpoint, and for how long,
	// under AutoEject (server_failure_limit, server_retry_timeout).
	Eject upstream.FailurePolicy
	// Timeout bounds each reply of a server; 0: none.
	Timeout time.Duration
	// Idle is the idle connections kept per shard.
	Idle int
	// Observe, if set, is told each request's shard address and outcome.
	Observe func(addr string, ok bool, d time.Duration)
}

// ring is one placement: the endpoints it was built over, which of them
// were live, and the hashkit ring.
type ring struct {
	epoch uint64 // the cluster's when it was built
	retry int64  // unix nanoseconds when the first ejection in it runs out; 0: none
	eps   []*upstream.Endpoint
	live  []bool
	r     *hashkit.Ring
}

// NewPool places up's endpoints.
func NewPool(up *upstream.Cluster, o Options) (*Pool, error) {
	h, err := hashkit.ByName(o.Hash)
	if err != nil {
		return nil, err
	}
	p := &Pool{up: up, opts: o, hash: h, shards: map[string]*shard{}}
	if _, err := p.current(time.Now()); err != nil && !errors.Is(err, upstream.ErrNoEndpoints) {
		return nil, err
	}
	return p, nil
}

// current returns the ring for the endpoints and liveness of now. It is
// built again when the cluster's epoch moved (the endpoint set, a health
// or an ejection changed) or an ejection it left out ran out; otherwise
// the check is one atomic load. The epoch is read before the endpoints,
// so that a change made meanwhile makes the next call build again.
func (p *Pool) current(now time.Time) (*ring, error) {
	epoch := p.up.Epoch()
	if rg := p.ring.Load(); rg != nil && rg.epoch == epoch && (rg.retry == 0 || now.UnixNano() < rg.retry) {
		return rg, nil
	}
	eps := p.up.Endpoints()
	if len(eps) == 0 {
		return nil, upstream.ErrNoEndpoints
	}
	rg := &ring{epoch: epoch, eps: eps, live: make([]bool, len(eps))}
	ss := make([]hashkit.Server, len(eps))
	for i, e := range eps {
		rg.live[i] = p.onRing(e, now)
		if u := e.EjectedUntil(); p.opts.AutoEject && now.Before(u) && (rg.retry == 0 || u.UnixNano() < rg.retry) {
			rg.retry = u.UnixNano()
		}
		ss[i] = hashkit.Server{Name: hashkit.KetamaName(e.Addr, e.Name), Weight: e.Weight, Live: rg.live[i]}
	}
	r, err := hashkit.Build(p.opts.Distribution, ss)
	if err != nil {
		return nil, err
	}
	rg.r = r
	p.ring.Store(rg)
	return rg, nil
}

// onRing reports whether e holds its keys at now: always without
// AutoEject; with it, unless ejected or failing its health check (an
// endpoint not checked yet stays, so that no key moves at startup).
func (p *Pool) onRing(e *upstream.Endpoint, now time.Time) bool {
	return !p.opts.AutoEject || !e.Ejected(now) && e.Health() != upstream.Unhealthy
}

// pick returns the endpoint that holds key, nil when none is live.
func (rg *ring) pick(key []byte, p *Pool) *upstream.Endpoint {
	i := rg.r.Pick(key, p.hash, p.opts.HashTag)
	if i < 0 {
		return nil
	}
	return rg.eps[i]
}

// shard returns the connections of e.
func (p *Pool) shard(e *upstream.Endpoint) *shard {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.shards[e.Addr]
	if s == nil {
		s = &shard{idle: make(chan *serverConn, max(p.opts.Idle, 1))}
		p.shards[e.Addr] = s
	}
	return s
}

// Close closes every idle connection; connections in use are closed as
// they come back.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, s := range p.shards {
		s.drain()
	}
}

// shard is the idle connections to one endpoint address.
type shard struct {
	idle chan *serverConn
}

func (s *shard) drain() {
	for {
		select {
		case c := <-s.idle:
			c.close()
		default:
			return
		}
	}
}

// serverConn is one connection to a memcached server.
type serverConn struct {
	reused  bool // taken from the idle ones: the server may have closed it
	c       net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	untrack func()
}

func (c *serverConn) close() {
	c.untrack()
	c.c.Close()
}

// get returns an idle connection to s, or dials e, its endpoint.
func (p *Pool) get(ctx context.Context, s *shard, e *upstream.Endpoint) (*serverConn, error) {
	select {
	case c := <-s.idle:
		c.reused = true
		return c, nil
	default:
	}
	return p.dial(ctx, e)
}

// dial opens a new connection to e.
func (p *Pool) dial(ctx context.Context, e *upstream.Endpoint) (*serverConn, error) {
	nc, err := p.up.Connect(ctx, e)
	if err != nil {
		p.failed(e, err)
		return nil, err
	}
	return &serverConn{c: nc, r: bufio.NewReaderSize(nc, 16<<10), w: bufio.NewWriterSize(nc, 4<<10), untrack: e.Track(nc)}, nil
}

// put keeps c for the next request to s, or closes it when enough are
// idle or the pool is closed.
func (p *Pool) put(s *shard, c *serverConn) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if !closed {
		select {
		case s.idle <- c:
			return
		default:
		}
	}
	c.close()
}

// deadline sets c's deadline for one exchange.
func (p *Pool) deadline(c *serverConn) {
	if p.opts.Timeout > 0 {
		c.c.SetDeadline(time.Now().Add(p.opts.Timeout))
	} else {
		c.c.SetDeadline(time.Time{})
	}
}

// failed counts a failure of e (refused, closed, timed out) towards its
// ejection under AutoEject.
func (p *Pool) failed(e *upstream.Endpoint, err error) {
	if p.opts.AutoEject {
		p.up.RecordFailure(e, p.opts.Eject, err)
	}
}

// serverError is how a failed shard is reported to the client, as
// twemproxy reports it.
func serverError(err error) []byte {
	msg := err.Error()
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		msg = "Connection timed out"
	case errors.Is(err, upstream.ErrNoEndpoints), errors.Is(err, errNoShard):
		msg = "no live shard"
	}
	return fmt.Appendf(nil, "SERVER_ERROR %s\r\n", msg)
}

// errNoShard: every shard is ejected.
var errNoShard = errors.New("no live shard")
