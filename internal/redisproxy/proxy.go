// Package redisproxy is the Redis ambassador: one Redis for the
// application on localhost, sharded over several servers exactly as
// twemproxy shards (internal/hashkit), with pipelining kept in order, many
// clients multiplexed over a few server connections per shard, multi-key
// commands split per shard and merged.
//
// The shards are the endpoints of an upstream.Cluster, with their
// discovery, health and ejection; the package keeps the ring over them
// (ring.go) and applies twemproxy's auto_eject_hosts as an
// upstream.FailurePolicy.
package redisproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/hashkit"
	"github.com/attache-proxy/attache/internal/resp"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Options configure a Pool.
type Options struct {
	Cluster string
	// Upstream holds the shards: its endpoints, in its order, are the
	// ring's servers, named by Endpoint.Name or else host:port as
	// nutcracker names them (hashkit.KetamaName). Its health checks and
	// ejections take shards out of the ring under AutoEject. Shard
	// connections are made through it (connect_timeout, TLS); a pool
	// whose cluster originates TLS serves its clients by goroutines (the
	// epoll engine writes raw sockets).
	Upstream           *upstream.Cluster
	Hash               string
	Distribution       string
	HashTag            string
	AutoEject          bool
	ServerFailureLimit int
	ServerRetryTimeout time.Duration
	ServerConnections  int
	Timeout            time.Duration // per reply; 0: none
	ConnectTimeout     time.Duration
	Username, Password string // AUTH to the shards
	Observer           Observer
	Log                *slog.Logger

	// Loops are the process's event loops (evloop.Group), on which the
	// pool's engines serve plain TCP clients; nil, or a platform without
	// epoll: the portable path, every client served by goroutines. Every
	// protocol takes its loops this one way (see docs/architecture.md).
	Loops *evloop.Group
}

// Observer receives per-shard events for metrics. Any field may be nil.
type Observer struct {
	// Request is called once per shard when the pool is built; the func
	// it returns is called for every request to that shard (ok false: it
	// failed or timed out) with its latency. Resolving metric labels once
	// keeps them off the per-command path.
	Request func(shard string) func(ok bool, d time.Duration)
	Ejected func(shard string)
}

// Pool is a sharded set of Redis servers: the ring over its cluster's
// endpoints, and connections to each. Safe for concurrent use.
type Pool struct {
	opts    Options
	up      *upstream.Cluster
	hash    hashkit.Func
	eject   upstream.FailurePolicy
	engines engines
	shards  atomic.Pointer[shardSet]

	mu     sync.Mutex // serialises refresh; guards byEP and nextID
	byEP   map[*upstream.Endpoint]*server
	nextID int

	life   life
	next   atomic.Pointer[Pool] // set by Replace: where clients move
	runs   sync.WaitGroup       // serverConn goroutines (goroutine path)
	quit   chan struct{}        // closed when Close cuts the server connections
	closed chan struct{}        // closed when Close has finished
}

// life counts the clients a pool serves, for Close.
type life struct {
	mu      sync.Mutex
	clients int
	conns   map[*gclient]struct{} // goroutine-path clients, cut at the deadline
	closing bool                  // Close was called
	shut    bool                  // the drain is over: no client is taken
	idle    chan struct{}         // closed once closing with no client
}

// NewPool builds the pool; no connection is made until a request needs it.
func NewPool(o Options) (*Pool, error) {
	h, err := hashkit.ByName(o.Hash)
	if err != nil {
		return nil, err
	}
	if _, err := hashkit.Build(o.Distribution, nil); err != nil {
		return nil, err
	}
	if o.Upstream == nil {
		return nil, errors.New("redisproxy: no upstream cluster")
	}
	p := &Pool{opts: o, up: o.Upstream, hash: h, byEP: map[*upstream.Endpoint]*server{},
		eject: upstream.FailurePolicy{Limit: o.ServerFailureLimit, RetryTimeout: o.ServerRetryTimeout},
		quit:  make(chan struct{}), closed: make(chan struct{})}
	p.life.idle = make(chan struct{})
	p.life.conns = map[*gclient]struct{}{}
	p.refresh()
	return p, nil
}

// Close ends the pool, for a configuration reload that dropped it. Clients
// already connected keep being served, pipelines and in-flight commands
// included, until they disconnect or drain passes; then those left are
// cut, and requests still unanswered fail. Once no client is left the
// pool closes its server connections and its engines stop; Close returns
// when their goroutines have ended (a dial in progress ends within
// connect_timeout and closes what it opened). A client that arrives after
// the drain is closed at once.
//
// Close may run concurrently with serving; later calls wait for the first
// to finish.
func (p *Pool) Close(drain time.Duration) {
	l := &p.life
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		<-p.closed
		return
	}
	l.closing = true
	l.idleCheck()
	l.mu.Unlock()
	t := time.NewTimer(drain)
	select {
	case <-l.idle:
	case <-t.C:
	}
	t.Stop()
	l.mu.Lock()
	l.shut = true
	for g := range l.conns {
		g.c.Close()
	}
	l.mu.Unlock()
	p.engines.once.Do(func() {}) // no engine starts from now on
	close(p.quit)
	for _, e := range p.engines.all {
		e.stop()
	}
	p.mu.Lock()
	for _, s := range p.byEP {
		for _, sc := range s.sc {
			sc.close(errClosed)
		}
	}
	p.mu.Unlock()
	for _, e := range p.engines.all {
		<-e.done
	}
	p.runs.Wait()
	<-l.idle // the clients cut have gone
	close(p.closed)
}

// Replace ends the pool as Close does, for a reload that built next in
// its place (same cluster, new settings): each client moves to next at its
// first command boundary (nothing in flight for it), and an idle client at
// once, so that no client connection is closed; the session state that
// stays with it (AUTH to attache, database 0) is the same on every pool.
// Only a client that never reaches a boundary within drain is cut. A nil
// next is Close.
func (p *Pool) Replace(next *Pool, drain time.Duration) {
	if next != nil {
		p.next.Store(next)
		p.life.mu.Lock()
		gs := make([]*gclient, 0, len(p.life.conns))
		for g := range p.life.conns {
			gs = append(gs, g)
		}
		p.life.mu.Unlock()
		for _, g := range gs {
			g.mu.Lock()
			if g.busy == 0 {
				g.move()
			}
			g.mu.Unlock()
		}
		p.moveEngineClients()
	}
	p.Close(drain)
}

// successor enters the pool a client of p moves to: the newest live pool
// of those that replaced it; nil when there is none.
func (p *Pool) successor() *Pool {
	for q := p.next.Load(); q != nil; q = q.next.Load() {
		if q.next.Load() == nil && q.enter() {
			return q
		}
	}
	return nil
}

// enter counts a new client; false once the pool is shut.
func (p *Pool) enter() bool {
	l := &p.life
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return false
	}
	l.clients++
	return true
}

func (p *Pool) leave() {
	l := &p.life
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clients--
	l.idleCheck()
}

// track records a goroutine-path client connection (false: forgets it),
// so that the end of the drain can cut it.
func (p *Pool) track(g *gclient, on bool) {
	l := &p.life
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case !on:
		delete(l.conns, g)
	case l.shut:
		g.c.Close()
	default:
		l.conns[g] = struct{}{}
	}
}

// gclient is a goroutine-path client: the pool it is counted in and uses
// (which changes when it moves, see Replace), and the replies it is owed.
type gclient struct {
	c    net.Conn
	mu   sync.Mutex
	p    *Pool
	busy int // replies owed: requests in flight on p
}

// begin is a command read: it returns the pool to plan it on, after
// moving to a successor when nothing is in flight.
func (g *gclient) begin() *Pool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy == 0 {
		g.move()
	}
	g.busy++
	return g.p
}

// end is a reply written; the last one owed lets the client move.
func (g *gclient) end() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.busy--
	if g.busy == 0 {
		g.move()
	}
}

// move goes to the pool that replaced g's, if any. g.mu is held and
// nothing is in flight.
func (g *gclient) move() {
	if g.p.next.Load() == nil {
		return
	}
	q := g.p.successor()
	if q == nil {
		return
	}
	g.p.track(g, false)
	g.p.leave()
	q.track(g, true)
	g.p = q
}

// leaveAll forgets g in the pool it ends on.
func (g *gclient) leaveAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.p.track(g, false)
	g.p.leave()
}

// idleCheck closes idle when closing and no client is left. l.mu is held.
func (l *life) idleCheck() {
	if l.closing && l.clients == 0 {
		select {
		case <-l.idle:
		default:
			close(l.idle)
		}
	}
}

// errClosed fails the requests a closed pool still holds.
var errClosed = errors.New("the pool is closed (configuration reloaded)")

// Handler serves client connections of one listener.
type Handler struct {
	Pool     *Pool
	Password string // clients must AUTH with it when set
	Log      *slog.Logger
	sessions atomic.Uint32
}

// session is one client connection. It always uses the same server
// connection of each shard, so its own commands reach a shard in the order
// it sent them (read-your-writes), however many server_connections there
// are.
type session struct {
	h      *Handler
	p      *Pool // the pool its commands go to
	n      int
	authed bool
	upper  [24]byte // the command name, upper-cased
	// readOnly: the command being planned may be sent again (part.again)
	readOnly bool
	one      [1]part // the parts of a single-shard plan

	// scratch of fanout, valid until the next command
	parts   []part
	fan     fan
	counts  []int
	command []byte
}

// plan is how one command is served: a reply ready now, or requests to
// shards whose replies become the client's reply.
type plan struct {
	ready []byte
	quit  bool
	parts []part // nil: ready is the reply
	// fan merges the parts' results (replies, or -ERR naming the shard)
	// when there are several; with one, its result is the reply.
	fan *fan
}

// part is one request of a plan. raw is valid only until the client's
// next command is read: it is copied when sent.
type part struct {
	s   *server
	raw []byte
	// again: the command is read-only, so it may be sent once more on a
	// new connection when the shard closed the first before replying.
	again bool
}

// ServeConn serves one client until it quits or its connection breaks. A
// malformed command gets a protocol error and the connection is closed
// (there is no way to find the next command); other errors are replies
// and the connection stays usable.
//
// Plain TCP clients are served by the pool's epoll engines on Linux
// (engine_linux.go); TLS clients, and every client elsewhere, by
// goroutines.
func (h *Handler) ServeConn(ctx context.Context, c net.Conn) {
	p := h.Pool
	if !p.enter() {
		// The pool was replaced and has closed since the listener took c
		// (a TLS handshake may take a while): c goes to the new pool.
		if p = p.successor(); p == nil {
			c.Close()
			return
		}
	}
	n := int(h.sessions.Add(1))
	if e := p.engine(n); e != nil && e.serve(h, n, c) {
		return // the engine counted it out
	}
	g := &gclient{c: c, p: p}
	p.track(g, true)
	defer g.leaveAll()
	h.serveGoroutines(g, n, h.Password == "")
}

// reply is one reply owed to the client, in order (goroutine path).
type reply struct {
	done  <-chan struct{} // nil: ready
	ready []byte
	out   func() []byte // nil: ready is the reply
	quit  bool
}

// serveGoroutines serves g's connection (authed: the session has
// authenticated already) with a reader (this goroutine) and a writer
// goroutine; requests go through serverConn goroutines.
func (h *Handler) serveGoroutines(g *gclient, n int, authed bool) {
	c := g.c
	defer c.Close()
	replies := make(chan reply, maxQueued) // pipelined replies owed; a full queue pauses reading
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		bw := bufio.NewWriterSize(c, 4<<10)
		for rp := range replies {
			if rp.done != nil {
				<-rp.done
			}
			if rp.out != nil {
				bw.Write(rp.out())
			} else {
				bw.Write(rp.ready)
			}
			g.end()
			if rp.quit || len(replies) == 0 {
				if bw.Flush() != nil || rp.quit {
					c.Close()
					for range replies {
					}
					return
				}
			}
		}
		bw.Flush()
	}()
	defer func() { close(replies); <-writerDone }()

	rd := resp.NewReader(c)
	ss := &session{h: h, p: g.p, n: n, authed: authed}
	g.mu.Lock()
	g.move() // a client that came as its pool was replaced
	g.mu.Unlock()
	rd.RequireAuth(!ss.authed)
	for {
		args, raw, err := rd.ReadCommand()
		if err != nil {
			var pe *resp.ProtocolError
			if errors.As(err, &pe) {
				replies <- reply{ready: resp.AppendError(nil, "ERR "+pe.Error()), quit: true}
			}
			return
		}
		if len(args) == 0 {
			continue
		}
		ss.p = g.begin()
		rp := ss.start(ss.serve(rd, args, raw))
		replies <- rp
		if rp.quit {
			return
		}
	}
}

// maxQueued bounds the replies a client may owe: reading pauses until
// the oldest are written.
const maxQueued = 256

// start sends a plan's requests through serverConns (goroutine path).
func (ss *session) start(pl plan) reply {
	if pl.parts == nil {
		return reply{ready: pl.ready, quit: pl.quit}
	}
	p := ss.p
	if len(pl.parts) == 1 {
		s := pl.parts[0].s
		r := newRequest(append([]byte(nil), pl.parts[0].raw...), pl.parts[0].again)
		s.conn(ss.n).send(r)
		return reply{done: r.done, out: func() []byte { return p.result(s, r.reply, r.err, time.Since(r.start)) }}
	}
	f := fan{cmd: pl.fan.cmd, keyPart: slices.Clone(pl.fan.keyPart)}
	shards := make([]*server, len(pl.parts))
	reqs := make([]*request, len(pl.parts))
	var wg sync.WaitGroup
	for i, pt := range pl.parts {
		shards[i] = pt.s
		reqs[i] = newRequest(append([]byte(nil), pt.raw...), pt.again)
		pt.s.conn(ss.n).send(reqs[i])
		wg.Add(1)
		go func() { <-reqs[i].done; wg.Done() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return reply{done: done, out: func() []byte {
		outs := make([][]byte, len(reqs))
		for i, r := range reqs {
			outs[i] = p.result(shards[i], r.reply, r.err, time.Since(r.start))
		}
		return f.merge(nil, outs, shards)
	}}
}

func ready(b []byte) plan { return plan{ready: b} }

func errReply(format string, a ...any) plan {
	return ready(resp.AppendError(nil, fmt.Sprintf(format, a...)))
}

// serve plans a command read from rd, and lifts rd's limits for a client
// that has not authenticated once it has.
func (ss *session) serve(rd *resp.Reader, args [][]byte, raw []byte) plan {
	if ss.authed {
		return ss.dispatch(args, raw)
	}
	pl := ss.dispatch(args, raw)
	if ss.authed {
		rd.RequireAuth(false)
	}
	return pl
}

func (ss *session) dispatch(args [][]byte, raw []byte) plan {
	h := ss.h
	authed := &ss.authed
	// A name longer than ss.upper is no command attache knows: it is not
	// copied (it may be a bulk of any length).
	up := ss.upper[:0]
	if len(args[0]) <= len(ss.upper) {
		for _, c := range args[0] {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			up = append(up, c)
		}
	}
	sp, ok := commands[string(up)]
	ss.readOnly = sp.readOnly
	if !*authed && (!ok || sp.kind != local) {
		return errReply("NOAUTH Authentication required.")
	}
	if !ok {
		name := string(up)
		if reason, ok := why[name]; ok {
			return errReply("ERR attache: %s is not supported through a sharding proxy: %s", name, reason)
		}
		return errReply("ERR attache: unsupported command '%s'", args[0][:min(len(args[0]), 128)])
	}
	switch sp.kind {
	case local:
		name := sp.name
		if !*authed && name != "AUTH" && name != "HELLO" && name != "QUIT" {
			return errReply("NOAUTH Authentication required.")
		}
		return h.local(name, args, authed)
	case single:
		if len(args) < 2 {
			return errReply("ERR wrong number of arguments for '%s' command", bytes.ToLower(args[0]))
		}
		return ss.forward(args[1], raw)
	case sameShard, script:
		name := sp.name
		keys, err := keysOf(sp, args)
		if err != nil {
			return errReply("%v", err)
		}
		if len(keys) == 0 { // a script with no keys: any shard
			return ss.forward(nil, raw)
		}
		s := ss.p.shardFor(keys[0])
		for _, k := range keys[1:] {
			if ss.p.shardFor(k) != s {
				return errReply("ERR attache: the keys of %s hash to different shards; use a hash tag", name)
			}
		}
		return ss.forward(keys[0], raw)
	case fanout:
		return ss.fanout(sp.name, sp, args, raw)
	}
	return errReply("ERR attache: unsupported command '%s'", args[0])
}

func keysOf(sp spec, args [][]byte) ([][]byte, error) {
	if sp.kind == script {
		if len(args) < 3 {
			return nil, fmt.Errorf("ERR wrong number of arguments for '%s' command", bytes.ToLower(args[0]))
		}
		n, ok := resp.ParseInt(args[2]) // as Redis reads numkeys
		switch {
		case !ok:
			return nil, errors.New("ERR value is not an integer or out of range")
		case n < 0:
			return nil, errors.New("ERR Number of keys can't be negative")
		case n > int64(len(args)-3):
			return nil, errors.New("ERR Number of keys can't be greater than number of args")
		}
		return args[3 : 3+n], nil
	}
	last := sp.last
	if last < 0 {
		last = len(args) - 1
	}
	if len(args) <= sp.first || last >= len(args) {
		return nil, fmt.Errorf("ERR wrong number of arguments for '%s' command", bytes.ToLower(args[0]))
	}
	var keys [][]byte
	for i := sp.first; i <= last; i += sp.step {
		keys = append(keys, args[i])
	}
	return keys, nil
}

func (h *Handler) local(name string, args [][]byte, authed *bool) plan {
	switch name {
	case "PING":
		if len(args) > 1 {
			return ready(resp.AppendBulk(nil, args[1]))
		}
		return ready([]byte("+PONG\r\n"))
	case "ECHO":
		if len(args) != 2 {
			return errReply("ERR wrong number of arguments for 'echo' command")
		}
		return ready(resp.AppendBulk(nil, args[1]))
	case "QUIT":
		return plan{ready: []byte("+OK\r\n"), quit: true}
	case "SELECT":
		if len(args) == 2 && string(args[1]) == "0" {
			return ready([]byte("+OK\r\n"))
		}
		return errReply("ERR attache: only database 0 exists through a sharding proxy")
	case "AUTH":
		if h.Password == "" {
			return errReply("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
		}
		switch {
		case len(args) < 2:
			return errReply("ERR wrong number of arguments for 'auth' command")
		case len(args) > 3:
			return errReply("ERR syntax error")
		case !h.passwordOK(args[1:]):
			return errReply("WRONGPASS invalid username-password pair or user is disabled.")
		}
		*authed = true
		return ready([]byte("+OK\r\n"))
	case "HELLO":
		// RESP2 only: HELLO 3 is refused so that clients fall back.
		if len(args) >= 2 && string(args[1]) != "2" {
			return errReply("NOPROTO sorry, this protocol version is not supported")
		}
		for i := 2; i+1 < len(args); i++ {
			if bytes.EqualFold(args[i], []byte("AUTH")) && i+2 < len(args) {
				if h.Password != "" && !h.passwordOK(args[i+1:i+3]) {
					return errReply("WRONGPASS invalid username-password pair or user is disabled.")
				}
				*authed = true
			}
		}
		if !*authed {
			return errReply("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		}
		var b []byte
		b = append(b, "*14\r\n"...)
		for _, kv := range [][2]string{{"server", "redis"}, {"version", "7.0.0"}, {"proto", ""}, {"id", ""}, {"mode", "standalone"}, {"role", "master"}} {
			b = resp.AppendBulk(b, []byte(kv[0]))
			switch kv[0] {
			case "proto":
				b = resp.AppendInt(b, 2)
			case "id":
				b = resp.AppendInt(b, 0)
			default:
				b = resp.AppendBulk(b, []byte(kv[1]))
			}
		}
		b = resp.AppendBulk(b, []byte("modules"))
		b = append(b, "*0\r\n"...)
		return ready(b)
	}
	return errReply("ERR attache: unsupported command '%s'", name)
}

// passwordOK reports whether [username] password (args) is the default
// user's password, as Redis with requirepass checks it: the only user is
// "default". The comparison takes the same time whatever the bytes.
func (h *Handler) passwordOK(args [][]byte) bool {
	user := []byte("default")
	if len(args) == 2 {
		user, args = args[0], args[1:]
	}
	pass := subtle.ConstantTimeCompare(args[0], []byte(h.Password)) == 1
	return pass && string(user) == "default"
}

// forward sends raw to the shard of key (any shard for a nil key).
func (ss *session) forward(key, raw []byte) plan {
	p := ss.p
	s := p.shardFor(key)
	if s == nil {
		return errReply("ERR attache: no live shard in cluster %s", p.opts.Cluster)
	}
	ss.one[0] = part{s: s, raw: raw, again: ss.readOnly}
	return plan{parts: ss.one[:]}
}

// result is the reply bytes of a finished request, an -ERR naming the
// shard on failure, and counts it.
func (p *Pool) result(s *server, reply []byte, err error, d time.Duration) []byte {
	if s.observe != nil {
		s.observe(err == nil, d)
	}
	if err != nil {
		return resp.AppendError(nil, "ERR attache: "+err.Error())
	}
	return reply
}

// Ping checks one shard: it connects as the pool does, through TLS when
// tlsFor is set (as Options.TLS), with AUTH when configured, and wants
// +PONG to a PING.
func Ping(ctx context.Context, addr, username, password string, tlsFor func(string) *tls.Config) error {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(time.Second)
	}
	conn, err := dialer(addr, time.Until(dl), username, password, tlsFor)()
	if err != nil {
		return err
	}
	return conn.Close()
}
