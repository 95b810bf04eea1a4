package pgproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/rawsys"
	"github.com/attache-proxy/attache/internal/upstream"
)

// server is one logged-in server connection. While a client holds it, only
// that client's goroutines use it; in the pool, only the pool.
type server struct {
	// The socket is held two ways. fd is attache's own descriptor of it
	// (-1: none, a TLS connection), which an engine reads and writes. conn
	// is the goroutine path's, registered in Go's netpoller; while an
	// engine has the connection it is closed and nil (dropConn), since
	// every event on a socket in the netpoller wakes the thread polling
	// it, and goConn makes it again for the next goroutine user.
	conn      net.Conn
	fd        int
	w         io.Writer // conn, raw where it can be
	fe        *pgproto3.Frontend
	addr      string
	pid       uint32
	secret    []byte
	init      map[string]string // ParameterStatus at login
	params    map[string]string // as the server last reported them
	applied   map[string]string // tracked parameters a client set with SET (absent: as at login)
	akey      string            // applied in one string, see paramsKey
	created   time.Time
	idleSince time.Time
	prepared  *lru
	wbuf      []byte
	route     string // the endpoint of the pool's route; "" under TargetAny
	retire    bool   // close it rather than pool it (the server turned read-only, a cancel was sent to it)

	// The engine whose epoll set keeps fd while the connection is in the
	// pool (so that the next transaction there costs no epoll_ctl), and
	// its Source; set and used by that engine's loop only.
	home  *engine
	hsrc  any // *evloop.Source
	idleH any // its evloop.Handler while no client of home holds it
	// watched: home's set watches fd for a close while the connection is
	// idle (its idle handler then takes it out of the pool at once); the
	// pool looks at any other idle connection before handing it out.
	watched atomic.Bool

	untrack func() // its endpoint's tracking (trackedServer), or nil
	fdMu    sync.Mutex
	closed  bool // fd closed, or being closed: not to be shut down
}

// trackedServer is a server connection as its cluster endpoint tracks it
// (upstream.Endpoint.Track): closing it, when the endpoint turns
// unhealthy, shuts the socket down both ways, so that whoever holds the
// connection (an engine, a goroutine, the pool's idle watch) fails on it
// and closes it as a lost server. Safe from any goroutine at any time.
type trackedServer server

func (t *trackedServer) Close() error {
	s := (*server)(t)
	if s.fd < 0 {
		return s.conn.Close() // TLS: the goroutine path's alone
	}
	s.fdMu.Lock()
	defer s.fdMu.Unlock()
	if s.closed {
		return nil
	}
	return syscall.Shutdown(s.fd, syscall.SHUT_RDWR)
}

// goConn makes sure the goroutine path has its net.Conn of the socket
// (see server), after an engine had it.
func (s *server) goConn() error {
	if s.conn != nil {
		return nil
	}
	d, err := evloop.Dup(s.fd)
	if err != nil {
		return err
	}
	conn, err := evloop.NetConn(d) // a duplicate of d, in the netpoller
	if err != nil {
		return err
	}
	s.conn, s.w = conn, rawsys.NewWriter(conn)
	s.fe = pgproto3.NewFrontend(rawsys.NewReader(conn), conn)
	return nil
}

// dropConn closes the goroutine path's net.Conn, leaving the socket to an
// engine's fd: nothing may be buffered in fe.
func (s *server) dropConn() {
	if s.conn != nil && s.fd >= 0 {
		s.conn.Close()
		s.conn = nil
	}
}

func (s *server) send(msg pgproto3.FrontendMessage) {
	s.wbuf, _ = msg.Encode(s.wbuf)
}

func (s *server) flush() error {
	if len(s.wbuf) == 0 {
		return nil
	}
	_, err := s.w.Write(s.wbuf)
	if cap(s.wbuf) > 64<<10 {
		s.wbuf = nil
	} else {
		s.wbuf = s.wbuf[:0]
	}
	return err
}

// exec runs sql with the simple protocol, discarding rows, and returns the
// first ErrorResponse as a *ServerError. ParameterStatus updates params.
func (s *server) exec(sql string) error {
	s.send(&pgproto3.Query{String: sql})
	if err := s.flush(); err != nil {
		return err
	}
	var first error
	for {
		msg, err := s.fe.Receive()
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			if first == nil {
				e := *m
				first = &ServerError{&e}
			}
		case *pgproto3.ParameterStatus:
			s.params[m.Name] = m.Value
		case *pgproto3.ReadyForQuery:
			if first == nil && m.TxStatus != 'I' {
				first = fmt.Errorf("server left in transaction status %c", m.TxStatus)
			}
			return first
		}
	}
}

// alive reports whether an idle server connection is still open: no EOF
// and nothing unread (an idle server sends nothing unless it is about to
// close, like a FATAL from pg_terminate_backend).
func (s *server) alive() bool {
	if s.fd < 0 {
		return true // TLS: it is read for its next client anyway
	}
	var b [1]byte
	n, _, err := syscall.Recvfrom(s.fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
}

// clearApplied forgets the parameters clients set on s (after RESET ALL or
// DISCARD ALL).
func (s *server) clearApplied() {
	clear(s.applied)
	s.akey = ""
}

// close says Terminate and closes; once. It does not touch wbuf: a client
// goroutine may still be writing there.
func (s *server) close() {
	s.fdMu.Lock()
	closed := s.closed
	s.closed = true
	s.fdMu.Unlock()
	if closed {
		return
	}
	if s.untrack != nil {
		defer s.untrack()
	}
	b, _ := (&pgproto3.Terminate{}).Encode(nil)
	if s.conn != nil {
		s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		s.conn.Write(b)
		s.conn.Close()
	} else {
		// Non-blocking: a full socket does without the courtesy.
		syscall.Sendto(s.fd, b, syscall.MSG_DONTWAIT, nil)
	}
	if s.fd >= 0 {
		syscall.Close(s.fd)
	}
}

// pool holds the server connections of one (database, user), by route:
// the endpoint they go to ("" under TargetAny, where Dial chooses). A
// server connection belongs to one endpoint for life, so when the primary
// changes the pool hands out connections of the new primary's route and
// closes those of the old one; pool_size and reserve_pool_size apply per
// route, that is per server.
type pool struct {
	p        *Proxy
	db, user string

	mu      sync.Mutex
	routes  map[string]*route
	waiting waitQueue
	welcome map[string]string
	used    bool // a client came: keep min_pool_size
	closed  bool
	cred    *serverCred // from a client's login; see credentials
	refs    int         // references taken by Proxy.pool (guarded by the Proxy's mu)

	st counters

	// Spares, so that a client that has to wait allocates nothing for
	// it: *waiter (whose ch is empty when put back) and *time.Timer
	// (stopped).
	spareWaiters, spareTimers sync.Pool
}

// route is a pool's server connections to one endpoint.
type route struct {
	idle []*server // most recently used last
	open int       // open or being opened
}

type waiter struct {
	ch         chan *server  // a server, or nil: open one yourself
	fn         func(*server) // instead of ch (an engine's client): called with pl.mu held, must not block
	eng        *engine       // fn's engine; a release by that engine calls local instead
	local      func(*server)
	handed     bool
	since      time.Time
	route      string
	prev, next *waiter // in waiting
}

// waitQueue is a FIFO of waiters linked through themselves, so that
// queueing one allocates nothing.
type waitQueue struct{ head, tail *waiter }

func (q *waitQueue) push(w *waiter) {
	w.prev, w.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
}

// remove takes out w, which is in q.
func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
}

var errWaitTimeout = errors.New("query_wait_timeout")

// peekAfter is how long a server connection that its home engine watches
// while idle (server.watched) must have been idle before it is checked for
// a pending close (one recvfrom) on the way out anyway; any other is
// checked every time, since nothing else would see its server's FATAL.
const peekAfter = 500 * time.Millisecond

// recheckEvery is how often a client waiting for a server connection of a
// route checks that the route is still the one to take (the primary may
// change while it waits).
const recheckEvery = 200 * time.Millisecond

func newPool(p *Proxy, db, user string) *pool {
	return &pool{p: p, db: db, user: user, routes: map[string]*route{}}
}

// routeLocked returns the route of an address, made if needed. mu held.
func (pl *pool) routeLocked(addr string) *route {
	r := pl.routes[addr]
	if r == nil {
		r = &route{}
		pl.routes[addr] = r
	}
	return r
}

// connect dials and logs in a new server connection to ep (nil: the one
// Dial chooses).
func (pl *pool) connect(ep *upstream.Endpoint) (*server, error) {
	s, _, err := pl.connectAt(ep, routeOf(ep))
	return s, err
}

// routeOf is the route of the server connections to ep: its address, or
// "" for nil (TargetAny, where Dial chooses).
func routeOf(ep *upstream.Endpoint) string {
	if ep == nil {
		return ""
	}
	return ep.Addr
}

// connectAt is connect, for the pool's route given (an endpoint's
// address, or "" under TargetAny), reporting the address dialled (""
// when the dial itself failed).
func (pl *pool) connectAt(ep *upstream.Endpoint, route string) (*server, string, error) {
	cfg := &pl.p.cfg
	cred, err := pl.credentials()
	if err != nil {
		return nil, "", fmt.Errorf("login as %q to database %q: %w", pl.user, pl.db, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ServerConnectTimeout)
	defer cancel()
	conn, addr, err := cfg.Dial(ctx, ep)
	if err != nil {
		return nil, "", err
	}
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	if cfg.ServerTLS != nil {
		if conn, err = startTLS(conn, cfg.ServerTLS(addr), cfg.ServerTLSRequired); err != nil {
			return nil, addr, fmt.Errorf("server %s: %w", addr, err)
		}
	}
	sess, err := login(conn, pl.user, pl.db, cred, nil)
	if err != nil {
		conn.Close()
		return nil, addr, fmt.Errorf("server %s: login as %q to database %q: %w", addr, pl.user, pl.db, err)
	}
	conn.SetDeadline(time.Time{})
	now := time.Now()
	fe := sess.FE
	if fe.ReadBufferLen() == 0 {
		fe = pgproto3.NewFrontend(rawsys.NewReader(conn), conn)
	}
	fd, err := evloop.DupFD(conn)
	if err != nil {
		fd = -1 // not a plain socket (TLS): the goroutine path's alone
	}
	s := &server{conn: conn, fd: fd, w: rawsys.NewWriter(conn), fe: fe, addr: addr, pid: sess.PID, secret: sess.Secret, init: sess.Params,
		params: maps.Clone(sess.Params), applied: map[string]string{}, created: now, idleSince: now, prepared: newLRU(max(cfg.MaxPrepared, 1)), route: route}
	if e := pl.p.endpoint(addr); e != nil {
		s.untrack = e.Track((*trackedServer)(s))
	}
	if cfg.Target == TargetPrimary && sess.Params["in_hot_standby"] == "on" {
		s.close()
		return nil, addr, fmt.Errorf("server %s: %w", addr, errStandby)
	}
	pl.mu.Lock()
	if pl.welcome == nil {
		pl.welcome = maps.Clone(sess.Params)
	}
	pl.mu.Unlock()
	pl.st.serversOpened.Add(1)
	return s, addr, nil
}

// startTLS asks the server for TLS. With required false a server that
// declines is used without.
func startTLS(conn net.Conn, cfg *tls.Config, required bool) (net.Conn, error) {
	req, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	if _, err := conn.Write(req); err != nil {
		conn.Close()
		return nil, err
	}
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		conn.Close()
		return nil, err
	}
	switch b[0] {
	case 'S':
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return tc, nil
	case 'N':
		if required {
			conn.Close()
			return nil, errors.New("server does not support TLS (server_tls mode requires it)")
		}
		return conn, nil
	}
	conn.Close()
	return nil, fmt.Errorf("unexpected answer %q to SSLRequest", b[0])
}

// waitTimers are a client's reserve_pool_timeout and query_wait_timeout,
// started when it first has to wait: the common case, a server at hand,
// sets no timers.
type waitTimers struct {
	reserve, timeout <-chan time.Time
	expired          bool
	started          bool
	timers           [2]*time.Timer
	spares           *sync.Pool
}

func (t *waitTimers) start(pl *pool, since time.Time) {
	if t.started {
		return
	}
	t.started, t.spares = true, &pl.spareTimers
	cfg := &pl.p.cfg
	if cfg.ReservePoolSize > 0 {
		t.timers[0] = t.timer(cfg.ReservePoolTimeout - time.Since(since))
		t.reserve = t.timers[0].C
	}
	if cfg.QueryWaitTimeout > 0 {
		t.timers[1] = t.timer(cfg.QueryWaitTimeout - time.Since(since))
		t.timeout = t.timers[1].C
	}
}

// timer returns a spare timer reset to d, or a new one. Since Go 1.23 a
// timer stopped or reset delivers no stale tick.
func (t *waitTimers) timer(d time.Duration) *time.Timer {
	if tm, _ := t.spares.Get().(*time.Timer); tm != nil {
		tm.Reset(d)
		return tm
	}
	return time.NewTimer(d)
}

func (t *waitTimers) stop() {
	for _, tm := range t.timers {
		if tm != nil {
			tm.Stop()
			t.spares.Put(tm)
		}
	}
}

// pause waits routeRetry before the client asks for an endpoint again, or
// fails with query_wait_timeout and why.
func (pl *pool) pause(t *waitTimers, since time.Time, why string) error {
	t.start(pl, since)
	if !t.expired {
		select {
		case <-t.timeout:
			t.expired = true
		case <-time.After(routeRetry):
			return nil
		}
	}
	pl.st.waitTimeouts.Add(1)
	return fmt.Errorf("%w: %s", errWaitTimeout, why)
}

// acquire returns a server connection of the route the target gives now,
// waiting up to query_wait_timeout (using the reserve after
// reserve_pool_timeout) for the route to exist (a primary to be known)
// and for a server connection of it.
func (pl *pool) acquire() (*server, error) {
	cfg := &pl.p.cfg
	start := time.Now()
	pl.st.clientsWaiting.Add(1)
	defer pl.st.clientsWaiting.Add(-1)
	defer func() { pl.st.observeWait(time.Since(start)) }()
	var tm waitTimers
	defer tm.stop()
	var tried []string // endpoints whose connect just failed
	for {
		ep, err := pl.p.route(tried...)
		if err != nil {
			var we *waitError
			if !errors.As(err, &we) {
				return nil, err
			}
			if err := pl.pause(&tm, start, we.why); err != nil {
				return nil, err
			}
			continue
		}
		addr := ""
		if ep != nil {
			addr = ep.Addr
		}
		s, connect, err := pl.take(addr, start, &tm)
		if connect {
			s, err = pl.connectCounted(ep)
			if err != nil && cfg.Target != TargetAny && transient(err) {
				// The endpoint may have died since its last check (a
				// primary going down, a standby restarting): ask for the
				// route again rather than fail a transaction that has not
				// started; at once when another endpoint fits, else after
				// a pause.
				tried = append(tried, ep.Addr)
				if next, rerr := pl.p.route(tried...); rerr == nil && next != nil && !slices.Contains(tried, next.Addr) {
					continue
				}
				tried = tried[:0]
				if perr := pl.pause(&tm, start, err.Error()); perr != nil {
					return nil, perr
				}
				continue
			}
		}
		if s == nil && err == nil {
			continue // the route stopped being the target while we waited
		}
		if err == nil {
			if err = s.goConn(); err != nil { // after an engine had it
				pl.discard(s)
				s = nil
			}
		}
		return s, err
	}
}

// takeNow takes an idle server connection of route addr (a live one), or
// a slot to open one (connect true). With neither it returns with mu held
// and the route, for the caller to queue a waiter.
func (pl *pool) takeNow(addr string) (s *server, connect bool, r *route) {
	for {
		pl.mu.Lock()
		pl.used = true
		r := pl.routeLocked(addr)
		if n := len(r.idle); n > 0 {
			s := r.idle[n-1]
			r.idle = r.idle[:n-1]
			pl.mu.Unlock()
			if !pl.p.keep(s.addr) || (!s.watched.Load() || time.Since(s.idleSince) > peekAfter) && !s.alive() {
				pl.discard(s)
				continue
			}
			return s, false, nil
		}
		if r.open < pl.p.cfg.PoolSize {
			r.open++
			pl.mu.Unlock()
			return nil, true, nil
		}
		return nil, false, r
	}
}

// take gets an idle server connection of route addr, or a slot to open one
// (connect true), or waits for either. It returns nothing at all when the
// route stops being eligible while it waits.
func (pl *pool) take(addr string, start time.Time, tm *waitTimers) (s *server, connect bool, err error) {
	s, connect, r := pl.takeNow(addr)
	if r == nil {
		return s, connect, nil
	}
	if tm.expired { // spent waiting for a route that changed
		pl.mu.Unlock()
		pl.st.waitTimeouts.Add(1)
		return nil, false, errWaitTimeout
	}
	w, _ := pl.spareWaiters.Get().(*waiter)
	if w == nil {
		w = &waiter{ch: make(chan *server, 1)}
	}
	*w = waiter{ch: w.ch, since: start, route: addr}
	pl.waiting.push(w)
	pl.mu.Unlock()
	tm.start(pl, start)
	s, connect, err = pl.await(w, r, tm)
	// Every way out of await leaves w.ch empty: received from, or
	// never sent to (removed from waiting before it was handed).
	pl.spareWaiters.Put(w)
	return s, connect, err
}

// tryTake is take without waiting, for an engine: an idle server
// connection of route addr, or a slot to open one (connect true), or, with
// neither, w (whose fn and since the caller set) queued as a waiter: its
// fn is called, with mu held, when one of them is handed to it.
func (pl *pool) tryTake(addr string, w *waiter) (s *server, connect, queued bool) {
	s, connect, r := pl.takeNow(addr)
	if r == nil {
		return s, connect, false
	}
	w.route, w.handed = addr, false
	pl.waiting.push(w)
	pl.mu.Unlock()
	return nil, false, true
}

// unwait takes w, queued by tryTake, out of waiting; false when it was
// handed something already (its fn has been called or is being called).
// With reserve, it takes a reserve slot instead if there is room (true
// then means: open one).
func (pl *pool) unwait(w *waiter, reserve bool) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if w.handed {
		return false
	}
	if reserve {
		r := pl.routeLocked(w.route)
		if r.open >= pl.p.cfg.PoolSize+pl.p.cfg.ReservePoolSize {
			return false
		}
		r.open++
		pl.st.reserveUsed.Add(1)
	}
	pl.waiting.remove(w)
	return true
}

// await waits, as the waiter w in waiting, for a server connection of
// r (route w.route), or a slot to open one, or the route to stop being
// eligible, or a timer of tm.
func (pl *pool) await(w *waiter, r *route, tm *waitTimers) (s *server, connect bool, err error) {
	cfg := &pl.p.cfg
	addr := w.route
	var recheck <-chan time.Time
	if addr != "" {
		t := time.NewTicker(recheckEvery)
		defer t.Stop()
		recheck = t.C
	}
	for {
		select {
		case s := <-w.ch:
			if !pl.p.eligible(addr) {
				if s != nil {
					pl.discard(s)
				} else {
					pl.giveBack(addr)
				}
				return nil, false, nil
			}
			return s, s == nil, nil
		case <-recheck:
			if pl.p.eligible(addr) {
				continue
			}
			pl.mu.Lock()
			if !w.handed {
				pl.waiting.remove(w)
				pl.mu.Unlock()
				return nil, false, nil
			}
			pl.mu.Unlock()
		case <-tm.reserve:
			tm.reserve = nil
			pl.mu.Lock()
			if !w.handed && r.open < cfg.PoolSize+cfg.ReservePoolSize {
				pl.waiting.remove(w)
				r.open++
				pl.mu.Unlock()
				pl.st.reserveUsed.Add(1)
				return nil, true, nil
			}
			pl.mu.Unlock()
		case <-tm.timeout:
			tm.timeout, tm.expired = nil, true
			pl.mu.Lock()
			if !w.handed {
				pl.waiting.remove(w)
				pl.mu.Unlock()
				pl.st.waitTimeouts.Add(1)
				return nil, false, errWaitTimeout
			}
			pl.mu.Unlock()
			// the server is in w.ch
		}
	}
}

// transient reports whether a failed server login may succeed if tried
// again soon, on the same or another endpoint: a network error, or a
// server starting up, shutting down or in recovery (SQLSTATE class 57P).
// A wrong password or a missing database fails at once.
func transient(err error) bool {
	var se *ServerError
	if errors.As(err, &se) {
		return strings.HasPrefix(se.Code, "57P")
	}
	return true
}

// errStandby is a login, for TargetPrimary, to a server that says it is
// a hot standby: the role the cluster last learned is out of date.
var errStandby = errors.New("server is a hot standby (in_hot_standby = on)")

// connectCounted connects to ep for a slot already counted in its route.
// Under TargetAny (ep nil) with a cluster, a login that fails in a way
// that may not last (see transient: a server shutting down or starting
// up, a connection refused or reset) is tried at once on each other
// endpoint the cluster's policy gives, before the slot is given back: a
// server restarting costs no client its connection while another one can
// serve it.
func (pl *pool) connectCounted(ep *upstream.Endpoint) (*server, error) {
	s, addr, err := pl.connectAt(ep, routeOf(ep))
	if err != nil && ep == nil && addr != "" && pl.p.cfg.Cluster != nil && transient(err) {
		tried := []string{addr}
		for err != nil && transient(err) {
			next := pl.p.cfg.Cluster.Pick(0, func(e *upstream.Endpoint) bool { return slices.Contains(tried, e.Addr) })
			if next == nil {
				break
			}
			tried = append(tried, next.Addr)
			s, _, err = pl.connectAt(next, "")
		}
	}
	if err != nil {
		pl.giveBack(routeOf(ep))
		pl.st.serverLoginErrors.Add(1)
	}
	return s, err
}

// giveBack returns an unused slot of a route.
func (pl *pool) giveBack(addr string) {
	pl.mu.Lock()
	pl.routeLocked(addr).open--
	pl.grantLocked(addr)
	pl.mu.Unlock()
}

// grantLocked lets the first waiter of a route open a connection if there
// is room.
func (pl *pool) grantLocked(addr string) {
	r := pl.routeLocked(addr)
	if r.open >= pl.p.cfg.PoolSize {
		return
	}
	if w := pl.waiterLocked(addr); w != nil {
		r.open++
		w.hand(nil)
	}
}

// hand gives w a server connection, or nil: a slot to open one.
func (w *waiter) hand(s *server) {
	if w.fn != nil {
		w.fn(s)
	} else {
		w.ch <- s
	}
}

// waiterLocked removes and returns the first waiter of a route, marked
// handed, or nil.
func (pl *pool) waiterLocked(addr string) *waiter {
	for w := pl.waiting.head; w != nil; w = w.next {
		if w.route == addr {
			pl.waiting.remove(w)
			w.handed = true
			return w
		}
	}
	return nil
}

// release takes a server connection back; reusable false closes it, and
// so does its route no longer being eligible (a primary that was demoted
// or replaced, a standby that fell behind): it is retired, not pooled.
func (pl *pool) release(s *server, reusable bool) { pl.releaseBy(s, reusable, nil) }

// releaseBy is release by engine by's loop goroutine (nil: another one):
// a waiter of the same engine is handed s without a trip through Do.
func (pl *pool) releaseBy(s *server, reusable bool, by *engine) {
	cfg := &pl.p.cfg
	var now time.Time
	if by != nil {
		now = by.now()
	} else {
		now = time.Now()
	}
	reusable = reusable && !s.retire && pl.p.eligible(s.route) && pl.p.keep(s.addr)
	pl.mu.Lock()
	r := pl.routeLocked(s.route)
	if !reusable || (pl.closed && pl.p.clients.Load() == 0) || (cfg.ServerLifetime > 0 && now.Sub(s.created) > cfg.ServerLifetime) {
		r.open--
		pl.grantLocked(s.route)
		pl.mu.Unlock()
		s.close()
		return
	}
	if w := pl.waiterLocked(s.route); w != nil {
		if by != nil && w.eng == by {
			w.local(s)
		} else {
			w.hand(s)
		}
		pl.mu.Unlock()
		return
	}
	s.idleSince = now
	r.idle = append(r.idle, s)
	pl.mu.Unlock()
}

// discard closes a server connection that is not in idle.
func (pl *pool) discard(s *server) {
	pl.mu.Lock()
	pl.routeLocked(s.route).open--
	pl.grantLocked(s.route)
	pl.mu.Unlock()
	s.close()
}

// welcomeParams returns the ParameterStatus values a new client is greeted
// with: those of the pool's first server login (made now if needed).
func (pl *pool) welcomeParams() (map[string]string, error) {
	pl.mu.Lock()
	w := pl.welcome
	pl.mu.Unlock()
	if w != nil {
		return w, nil
	}
	s, err := pl.acquire()
	if err != nil {
		return nil, err
	}
	pl.release(s, true)
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.welcome, nil
}

// maintain closes servers idle longer than server_idle_timeout (down to
// min_pool_size), older than server_lifetime, of an endpoint discovery
// removed, or of a route that is no
// longer eligible, and opens servers up to min_pool_size on the eligible
// routes of pools that have had clients.
func (pl *pool) maintain(now time.Time) {
	cfg := &pl.p.cfg
	pl.mu.Lock()
	addrs := slices.Collect(maps.Keys(pl.routes))
	pl.mu.Unlock()
	eligible := map[string]bool{}
	for _, a := range addrs {
		eligible[a] = pl.p.eligible(a)
	}
	var closing []*server
	var opening []string
	pl.mu.Lock()
	for addr, r := range pl.routes {
		ok, known := eligible[addr]
		if !known {
			continue // made since; next time
		}
		closed := 0
		keep := r.idle[:0]
		for i, s := range r.idle {
			idleTooLong := cfg.ServerIdleTimeout > 0 && now.Sub(s.idleSince) > cfg.ServerIdleTimeout && r.open-closed > cfg.MinPoolSize
			tooOld := cfg.ServerLifetime > 0 && now.Sub(s.created) > cfg.ServerLifetime
			if idleTooLong || tooOld || !ok || !pl.p.keep(s.addr) {
				closing = append(closing, s)
				closed++
				continue
			}
			keep = append(keep, r.idle[i])
		}
		clear(r.idle[len(keep):])
		r.idle = keep
		r.open -= closed
		if !ok {
			if r.open == 0 && pl.waiterOf(addr) == nil {
				delete(pl.routes, addr)
			}
			continue
		}
		if pl.used && !pl.closed {
			for r.open < cfg.MinPoolSize {
				r.open++
				opening = append(opening, addr)
			}
		}
	}
	pl.mu.Unlock()
	for _, s := range closing {
		s.close()
	}
	for _, addr := range opening {
		go func() {
			var ep *upstream.Endpoint
			if addr != "" {
				if ep = pl.p.endpoint(addr); ep == nil {
					pl.giveBack(addr)
					return
				}
			}
			s, err := pl.connectCounted(ep)
			if err != nil {
				pl.p.log.Debug("min_pool_size: connect failed", "database", pl.db, "user", pl.user, "server", addr, "error", err)
				return
			}
			pl.release(s, true)
		}()
	}
}

// takeClosing takes s out of idle when it is idle there and no longer
// alive (readable: about to close), for its caller to discard it.
func (pl *pool) takeClosing(s *server) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	r := pl.routes[s.route]
	if r == nil {
		return false
	}
	i := slices.Index(r.idle, s)
	if i < 0 || s.alive() {
		return false
	}
	r.idle = slices.Delete(r.idle, i, i+1)
	return true
}

// dropIdle closes the idle server connections of a route.
func (pl *pool) dropIdle(addr string) {
	pl.mu.Lock()
	r := pl.routes[addr]
	if r == nil {
		pl.mu.Unlock()
		return
	}
	idle := r.idle
	r.idle = nil
	r.open -= len(idle)
	for range idle {
		pl.grantLocked(addr)
	}
	pl.mu.Unlock()
	for _, s := range idle {
		s.close()
	}
}

// waiterOf returns the first waiter of a route without removing it. mu
// held.
func (pl *pool) waiterOf(addr string) *waiter {
	for w := pl.waiting.head; w != nil; w = w.next {
		if w.route == addr {
			return w
		}
	}
	return nil
}

// close marks the pool closed (its Proxy was replaced by a reload): it
// keeps serving the clients it has, and closes its idle server connections
// now and the others when they come back once no client is left.
func (pl *pool) close() {
	pl.mu.Lock()
	pl.closed = true
	var idle []*server
	for _, r := range pl.routes {
		idle = append(idle, r.idle...)
		r.open -= len(r.idle)
		r.idle = nil
	}
	pl.mu.Unlock()
	for _, s := range idle {
		s.close()
	}
}

// counters are a pool's statistics, the content of pgbouncer's SHOW POOLS
// and SHOW STATS.
type counters struct {
	clientsActive, clientsWaiting atomic.Int64
	serversActive                 atomic.Int64
	xacts, queries                atomic.Int64
	xactTime, queryTime           atomic.Int64 // microseconds
	waitCount, waitTime           atomic.Int64
	waitBuckets                   [len(WaitBuckets)]atomic.Int64
	waitTimeouts, reserveUsed     atomic.Int64
	serversOpened                 atomic.Int64
	serverLoginErrors             atomic.Int64
	serverLost                    atomic.Int64
	preparedHits, preparedMisses  atomic.Int64
	clientParses, serverParses    atomic.Int64
	binds                         atomic.Int64

	pinMu sync.Mutex
	pins  map[string]int64
}

// WaitBuckets are the upper bounds, in seconds, of the wait-time histogram.
var WaitBuckets = [...]float64{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120}

func (c *counters) observeWait(d time.Duration) {
	c.waitCount.Add(1)
	c.waitTime.Add(d.Microseconds())
	s := d.Seconds()
	for i, b := range WaitBuckets {
		if s <= b {
			c.waitBuckets[i].Add(1)
			break
		}
	}
}

func (c *counters) pin(kind string) {
	c.pinMu.Lock()
	if c.pins == nil {
		c.pins = map[string]int64{}
	}
	c.pins[kind]++
	c.pinMu.Unlock()
}

// PoolStats is a snapshot of one pool.
type PoolStats struct {
	Database       string           `json:"database"`
	User           string           `json:"user"`
	ClientsActive  int64            `json:"cl_active"`
	ClientsWaiting int64            `json:"cl_waiting"`
	ServersActive  int64            `json:"sv_active"`
	ServersIdle    int64            `json:"sv_idle"`
	ServersOpen    int64            `json:"sv_open"`
	MaxWait        float64          `json:"maxwait_seconds"`
	Transactions   int64            `json:"total_xact_count"`
	Queries        int64            `json:"total_query_count"`
	XactTime       float64          `json:"total_xact_time_seconds"`
	QueryTime      float64          `json:"total_query_time_seconds"`
	WaitCount      int64            `json:"total_wait_count"`
	WaitTime       float64          `json:"total_wait_time_seconds"`
	WaitBuckets    []uint64         `json:"-"` // cumulative counts per WaitBuckets
	WaitTimeouts   int64            `json:"wait_timeouts"`
	ReserveUsed    int64            `json:"reserve_used"`
	ServersOpened  int64            `json:"servers_opened"`
	LoginErrors    int64            `json:"server_login_errors"`
	ServersLost    int64            `json:"servers_lost"`
	PreparedHits   int64            `json:"prepared_hits"`
	PreparedMisses int64            `json:"prepared_misses"`
	ClientParses   int64            `json:"total_client_parse_count"`
	ServerParses   int64            `json:"total_server_parse_count"`
	Binds          int64            `json:"total_bind_count"`
	Pins           map[string]int64 `json:"pins,omitempty"`
	// ServersByEndpoint is ServersOpen by endpoint, for targets that
	// choose one (primary, standby, prefer_standby).
	ServersByEndpoint map[string]int64 `json:"servers_by_endpoint,omitempty"`
}

// Stats returns a snapshot of every pool, sorted by database and user.
func (p *Proxy) Stats() []PoolStats {
	p.mu.Lock()
	pools := make([]*pool, 0, len(p.pools))
	for _, pl := range p.pools {
		pools = append(pools, pl)
	}
	p.mu.Unlock()
	now := time.Now()
	out := make([]PoolStats, 0, len(pools))
	for _, pl := range pools {
		c := &pl.st
		s := PoolStats{Database: pl.db, User: pl.user,
			ClientsActive: c.clientsActive.Load(), ClientsWaiting: c.clientsWaiting.Load(), ServersActive: c.serversActive.Load(),
			Transactions: c.xacts.Load(), Queries: c.queries.Load(),
			XactTime: float64(c.xactTime.Load()) / 1e6, QueryTime: float64(c.queryTime.Load()) / 1e6,
			WaitCount: c.waitCount.Load(), WaitTime: float64(c.waitTime.Load()) / 1e6,
			WaitTimeouts: c.waitTimeouts.Load(), ReserveUsed: c.reserveUsed.Load(), ServersOpened: c.serversOpened.Load(),
			LoginErrors: c.serverLoginErrors.Load(), ServersLost: c.serverLost.Load(),
			PreparedHits: c.preparedHits.Load(), PreparedMisses: c.preparedMisses.Load(),
			ClientParses: c.clientParses.Load(), ServerParses: c.serverParses.Load(), Binds: c.binds.Load()}
		var cum uint64
		for i := range WaitBuckets {
			cum += uint64(c.waitBuckets[i].Load())
			s.WaitBuckets = append(s.WaitBuckets, cum)
		}
		pl.mu.Lock()
		for addr, r := range pl.routes {
			s.ServersIdle += int64(len(r.idle))
			s.ServersOpen += int64(r.open)
			if addr != "" && r.open > 0 {
				if s.ServersByEndpoint == nil {
					s.ServersByEndpoint = map[string]int64{}
				}
				s.ServersByEndpoint[addr] = int64(r.open)
			}
		}
		if f := pl.waiting.head; f != nil {
			s.MaxWait = now.Sub(f.since).Seconds()
		}
		pl.mu.Unlock()
		c.pinMu.Lock()
		if len(c.pins) > 0 {
			s.Pins = maps.Clone(c.pins)
		}
		c.pinMu.Unlock()
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Database != out[j].Database {
			return out[i].Database < out[j].Database
		}
		return out[i].User < out[j].User
	})
	return out
}
