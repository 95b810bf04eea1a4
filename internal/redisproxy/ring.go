package redisproxy

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/attache-proxy/attache/internal/hashkit"
	"github.com/attache-proxy/attache/internal/upstream"
)

// shardSet is the ring over the cluster's endpoints at one epoch of the
// cluster (upstream.Cluster.Epoch). It is immutable: a change of the
// endpoints, of their health or of an ejection makes a new one, read
// with one atomic load per key.
type shardSet struct {
	servers []*server // the cluster's endpoints in its order: ring positions
	live    []bool    // per server: it takes keys
	ring    *hashkit.Ring
	epoch   uint64
	// retry is when the first shard out of the ring by ejection is due
	// back, in unix nanoseconds; 0: none is.
	retry int64
}

// errRemoved fails the requests to a shard that left the cluster.
var errRemoved = errors.New("the shard left the cluster")

// shardFor returns the server for a key: the ring is made again first
// when the cluster changed or an ejected shard is due back.
func (p *Pool) shardFor(key []byte) *server {
	st := p.current()
	i := st.ring.Pick(key, p.hash, p.opts.HashTag)
	if i < 0 {
		return nil
	}
	return st.servers[i]
}

// current returns the shard set, made again first if it is out of date.
func (p *Pool) current() *shardSet {
	st := p.shards.Load()
	if st.epoch != p.up.Epoch() || st.retry != 0 && time.Now().UnixNano() >= st.retry {
		st = p.refresh()
	}
	return st
}

// inRing reports whether the shard of endpoint e takes keys at now. Under
// auto_eject_hosts a shard leaves the ring while it is ejected (its
// failures reached server_failure_limit) or its active health check
// failed, and its keys go to the others, as nutcracker moves them; a
// shard not checked yet stays, so that no key moves at startup. Without
// auto_eject_hosts every shard stays and a dead one's keys get errors.
func (p *Pool) inRing(e *upstream.Endpoint, now time.Time) bool {
	if !p.opts.AutoEject {
		return true
	}
	return !e.Ejected(now) && e.Health() != upstream.Unhealthy
}

// refresh makes the shard set from the cluster's endpoints: a server for
// each new endpoint, the ring over those in it, and retires the servers
// of endpoints gone (their connections close; what is in flight on them
// fails). The epoch is read before the endpoints, so that a change made
// meanwhile makes the next lookup refresh again.
func (p *Pool) refresh() *shardSet {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	epoch := p.up.Epoch()
	if st := p.shards.Load(); st != nil && st.epoch == epoch && (st.retry == 0 || now.UnixNano() < st.retry) {
		return st // another goroutine refreshed it
	}
	eps := p.up.Endpoints()
	next := &shardSet{epoch: epoch, servers: make([]*server, len(eps)), live: make([]bool, len(eps))}
	ring := make([]hashkit.Server, len(eps))
	kept := make(map[*server]bool, len(eps))
	named := make(map[string]bool, len(eps))
	for i, e := range eps {
		s := p.byEP[e]
		if s == nil {
			s = p.newServer(e)
			p.byEP[e] = s
		}
		kept[s] = true
		next.servers[i] = s
		live := p.inRing(e, now)
		if named[s.name] {
			// Discovery reported two shards of one ring name, which
			// nutcracker (and a static endpoint list) refuses: both would
			// take the same points. The first keeps the name.
			p.opts.Log.Error("redis shard left out of the ring: another shard has its name", "cluster", p.opts.Cluster,
				"shard", s.name, "address", s.addr)
			live = false
		}
		named[s.name] = true
		next.live[i] = live
		if u := e.EjectedUntil(); p.opts.AutoEject && now.Before(u) && (next.retry == 0 || u.UnixNano() < next.retry) {
			next.retry = u.UnixNano()
		}
		ring[i] = hashkit.Server{Name: s.name, Weight: e.Weight, Live: live}
	}
	// The distribution was checked by NewPool: Build cannot fail.
	next.ring, _ = hashkit.Build(p.opts.Distribution, ring)
	for e, s := range p.byEP {
		if !kept[s] {
			delete(p.byEP, e)
			p.retire(s)
		}
	}
	p.shards.Store(next)
	return next
}

// newServer makes the server of endpoint e. p.mu is held.
func (p *Pool) newServer(e *upstream.Endpoint) *server {
	o := &p.opts
	// A shard that refuses connections is dialled again for as long as a
	// reply may take (timeout), or connect_timeout without one.
	window := o.Timeout
	if window <= 0 {
		window = o.ConnectTimeout
	}
	s := &server{id: p.nextID, ep: e, p: p, addr: e.Addr, name: hashkit.KetamaName(e.Addr, e.Name),
		timeout: o.Timeout, dial: p.dialer(e), window: window, quit: p.quit, runs: &p.runs}
	p.nextID++
	if o.Observer.Request != nil {
		s.observe = o.Observer.Request(s.name)
	}
	closed := false
	select {
	case <-p.quit: // Close has closed the servers it knew
		closed = true
	default:
	}
	for j := 0; j < max(o.ServerConnections, 1); j++ {
		sc := &serverConn{s: s}
		if closed {
			sc.closed, sc.closeErr = true, errClosed
		}
		s.sc = append(s.sc, sc)
	}
	return s
}

// dialer returns the dial func of endpoint e's server: it connects
// through the cluster (connect_timeout, the cluster's TLS) and greets the
// shard (hello) before handing the connection over; connect_timeout
// bounds all of it.
func (p *Pool) dialer(e *upstream.Endpoint) func() (net.Conn, error) {
	o := &p.opts
	return func() (net.Conn, error) {
		deadline := time.Now().Add(o.ConnectTimeout)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		conn, err := p.up.Connect(ctx, e)
		if err != nil {
			return nil, err
		}
		if err := hello(conn, time.Until(deadline), o.Username, o.Password); err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	}
}

// retire closes the connections of a server whose endpoint left the
// cluster. p.mu is held.
func (p *Pool) retire(s *server) {
	s.gone.Store(true)
	for _, sc := range s.sc {
		sc.close(errRemoved)
	}
	for _, e := range p.engines.started() {
		e.drop(s)
	}
}

// failed counts a failure of s under auto_eject_hosts: at
// server_failure_limit in a row its endpoint is ejected for
// server_retry_timeout (upstream.FailurePolicy), which takes it out of
// the ring.
func (s *server) failed(err error) {
	p := s.p
	if !p.opts.AutoEject || err == errClosed || err == errRemoved {
		return
	}
	if p.up.RecordFailure(s.ep, p.eject, err) && p.opts.Observer.Ejected != nil {
		p.opts.Observer.Ejected(s.name)
	}
}

// ok is a reply from s: its run of failures ends (one atomic load when
// there is none).
func (s *server) ok() { s.ep.RecordSuccess() }

// Shards returns each shard of the ring, in the cluster's order.
func (p *Pool) Shards() []ShardStatus {
	st := p.current()
	now := time.Now()
	out := make([]ShardStatus, 0, len(st.servers))
	for i, s := range st.servers {
		out = append(out, ShardStatus{Addr: s.addr, Name: s.name, Connections: s.conns.Load(),
			Ejected: s.ep.Ejected(now), Health: s.ep.Health().String(), InRing: st.live[i]})
	}
	return out
}

// ShardStatus is one shard in /status.
type ShardStatus struct {
	Addr        string `json:"address"`
	Name        string `json:"name"`
	Connections int64  `json:"connections"`
	// Ejected: auto_eject_hosts (or outlier detection) has it out.
	Ejected bool `json:"ejected"`
	// Health is its active check's verdict: healthy, unhealthy, unknown.
	Health string `json:"health"`
	// InRing: it takes keys (see Pool.inRing; a shard whose ring name
	// another has is out).
	InRing bool `json:"in_ring"`
}
