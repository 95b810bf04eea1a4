package pgproxy

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/rawsys"
)

// server is one logged-in server connection. While a client holds it, only
// that client's goroutines use it; in the pool, only the pool.
type server struct {
	conn      net.Conn
	w         io.Writer // conn, raw where it can be
	fe        *pgproto3.Frontend
	addr      string
	pid       uint32
	secret    []byte
	init      map[string]string // ParameterStatus at login
	params    map[string]string // as the server last reported them
	applied   map[string]string // tracked parameters a client set with SET (absent: as at login)
	created   time.Time
	idleSince time.Time
	prepared  *lru
	wbuf      []byte
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
	sc, ok := s.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true
	})
	return alive
}

// close says Terminate and closes. It does not touch wbuf: a client
// goroutine may still be writing there.
func (s *server) close() {
	s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	b, _ := (&pgproto3.Terminate{}).Encode(nil)
	s.conn.Write(b)
	s.conn.Close()
}

// pool holds the server connections of one (database, user).
type pool struct {
	p        *Proxy
	db, user string

	mu      sync.Mutex
	idle    []*server // most recently used last
	open    int       // open or being opened
	waiting list.List // of *waiter
	welcome map[string]string
	used    bool // a client came: keep min_pool_size
	closed  bool
	cred    *serverCred // from a client's login; see credentials

	st counters
}

type waiter struct {
	ch     chan *server // a server, or nil: open one yourself
	handed bool
	since  time.Time
}

var errWaitTimeout = errors.New("query_wait_timeout")

// peekAfter is how long a server connection must have been idle before it
// is checked for a pending close (one recvfrom) on the way out: a server
// that restarts kills connections idle for longer than this, and a busy
// pool hands connections back and forth much faster.
const peekAfter = 500 * time.Millisecond

func newPool(p *Proxy, db, user string) *pool {
	return &pool{p: p, db: db, user: user}
}

// connect dials and logs in a new server connection.
func (pl *pool) connect() (*server, error) {
	cfg := pl.p.cfg
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ServerConnectTimeout)
	defer cancel()
	conn, addr, err := cfg.Dial(ctx)
	if err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	if cfg.ServerTLS != nil {
		if conn, err = startTLS(conn, cfg.ServerTLS(addr), cfg.ServerTLSRequired); err != nil {
			return nil, fmt.Errorf("server %s: %w", addr, err)
		}
	}
	cred, err := pl.credentials()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("server %s: login as %q to database %q: %w", addr, pl.user, pl.db, err)
	}
	sess, err := login(conn, pl.user, pl.db, cred, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("server %s: login as %q to database %q: %w", addr, pl.user, pl.db, err)
	}
	conn.SetDeadline(time.Time{})
	now := time.Now()
	fe := sess.FE
	if fe.ReadBufferLen() == 0 {
		fe = pgproto3.NewFrontend(rawsys.NewReader(conn), conn)
	}
	s := &server{conn: conn, w: rawsys.NewWriter(conn), fe: fe, addr: addr, pid: sess.PID, secret: sess.Secret, init: sess.Params,
		params: maps.Clone(sess.Params), applied: map[string]string{}, created: now, idleSince: now, prepared: newLRU(max(cfg.MaxPrepared, 1))}
	pl.mu.Lock()
	if pl.welcome == nil {
		pl.welcome = maps.Clone(sess.Params)
	}
	pl.mu.Unlock()
	pl.st.serversOpened.Add(1)
	return s, nil
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

// acquire returns a server connection for a client, waiting up to
// query_wait_timeout (using the reserve after reserve_pool_timeout).
func (pl *pool) acquire() (*server, error) {
	cfg := pl.p.cfg
	start := time.Now()
	pl.st.clientsWaiting.Add(1)
	defer pl.st.clientsWaiting.Add(-1)
	defer func() { pl.st.observeWait(time.Since(start)) }()
	// The common case, a server at hand, sets no timers.
	pl.mu.Lock()
	pl.used = true
	if n := len(pl.idle); n > 0 {
		s := pl.idle[n-1]
		pl.idle = pl.idle[:n-1]
		pl.mu.Unlock()
		if pl.keep(s) && (start.Sub(s.idleSince) <= peekAfter || s.alive()) {
			return s, nil
		}
		pl.discard(s)
	} else {
		pl.mu.Unlock()
	}
	var reserve, timeout <-chan time.Time
	if cfg.ReservePoolSize > 0 {
		t := time.NewTimer(cfg.ReservePoolTimeout)
		defer t.Stop()
		reserve = t.C
	}
	if cfg.QueryWaitTimeout > 0 {
		t := time.NewTimer(cfg.QueryWaitTimeout)
		defer t.Stop()
		timeout = t.C
	}
	for {
		pl.mu.Lock()
		pl.used = true
		if n := len(pl.idle); n > 0 {
			s := pl.idle[n-1]
			pl.idle = pl.idle[:n-1]
			pl.mu.Unlock()
			if !pl.keep(s) || time.Since(s.idleSince) > peekAfter && !s.alive() {
				pl.discard(s)
				continue
			}
			return s, nil
		}
		if pl.open < cfg.PoolSize {
			pl.open++
			pl.mu.Unlock()
			return pl.connectCounted()
		}
		w := &waiter{ch: make(chan *server, 1), since: start}
		e := pl.waiting.PushBack(w)
		pl.mu.Unlock()
		for w != nil {
			select {
			case s := <-w.ch:
				if s == nil {
					return pl.connectCounted()
				}
				return s, nil
			case <-reserve:
				reserve = nil
				pl.mu.Lock()
				if !w.handed && pl.open < cfg.PoolSize+cfg.ReservePoolSize {
					pl.waiting.Remove(e)
					pl.open++
					pl.mu.Unlock()
					pl.st.reserveUsed.Add(1)
					return pl.connectCounted()
				}
				pl.mu.Unlock()
			case <-timeout:
				pl.mu.Lock()
				if !w.handed {
					pl.waiting.Remove(e)
					pl.mu.Unlock()
					pl.st.waitTimeouts.Add(1)
					return nil, errWaitTimeout
				}
				pl.mu.Unlock()
				timeout = nil // the server is in w.ch
			}
		}
	}
}

// connectCounted connects for a slot already counted in open.
func (pl *pool) connectCounted() (*server, error) {
	s, err := pl.connect()
	if err != nil {
		pl.mu.Lock()
		pl.open--
		pl.grantLocked()
		pl.mu.Unlock()
		pl.st.serverLoginErrors.Add(1)
	}
	return s, err
}

// grantLocked lets the first waiter open a connection if there is room.
func (pl *pool) grantLocked() {
	if pl.open >= pl.p.cfg.PoolSize || pl.waiting.Len() == 0 {
		return
	}
	w := pl.waiting.Remove(pl.waiting.Front()).(*waiter)
	w.handed = true
	pl.open++
	w.ch <- nil
}

// release takes a server connection back; reusable false closes it.
func (pl *pool) release(s *server, reusable bool) {
	cfg := pl.p.cfg
	now := time.Now()
	pl.mu.Lock()
	if !reusable || !pl.keep(s) || (pl.closed && pl.p.clients.Load() == 0) || (cfg.ServerLifetime > 0 && now.Sub(s.created) > cfg.ServerLifetime) {
		pl.open--
		pl.grantLocked()
		pl.mu.Unlock()
		s.close()
		return
	}
	if pl.waiting.Len() > 0 {
		w := pl.waiting.Remove(pl.waiting.Front()).(*waiter)
		w.handed = true
		w.ch <- s
		pl.mu.Unlock()
		return
	}
	s.idleSince = now
	pl.idle = append(pl.idle, s)
	pl.mu.Unlock()
}

// keep reports whether s's endpoint may take new work (Config.Keep).
func (pl *pool) keep(s *server) bool { return pl.p.cfg.Keep == nil || pl.p.cfg.Keep(s.addr) }

// discard closes a server connection that is not in idle.
func (pl *pool) discard(s *server) {
	pl.mu.Lock()
	pl.open--
	pl.grantLocked()
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
// min_pool_size), older than server_lifetime or of an endpoint Keep refuses,
// and opens servers up to min_pool_size for pools that have had clients.
func (pl *pool) maintain(now time.Time) {
	cfg := pl.p.cfg
	var closing []*server
	pl.mu.Lock()
	keep := pl.idle[:0]
	for i, s := range pl.idle {
		idleTooLong := cfg.ServerIdleTimeout > 0 && now.Sub(s.idleSince) > cfg.ServerIdleTimeout && pl.open-len(closing) > cfg.MinPoolSize
		tooOld := cfg.ServerLifetime > 0 && now.Sub(s.created) > cfg.ServerLifetime
		if idleTooLong || tooOld || !pl.keep(s) {
			closing = append(closing, s)
			continue
		}
		keep = append(keep, pl.idle[i])
	}
	clear(pl.idle[len(keep):])
	pl.idle = keep
	pl.open -= len(closing)
	open := 0
	if pl.used && !pl.closed {
		for pl.open+open < cfg.MinPoolSize {
			open++
		}
		pl.open += open
	}
	pl.mu.Unlock()
	for _, s := range closing {
		s.close()
	}
	for range open {
		go func() {
			s, err := pl.connectCounted()
			if err != nil {
				pl.p.log.Debug("min_pool_size: connect failed", "database", pl.db, "user", pl.user, "error", err)
				return
			}
			pl.release(s, true)
		}()
	}
}

// close marks the pool closed (its Proxy was replaced by a reload): it
// keeps serving the clients it has, and closes its idle server connections
// now and the others when they come back once no client is left.
func (pl *pool) close() {
	pl.mu.Lock()
	pl.closed = true
	idle := pl.idle
	pl.idle = nil
	pl.open -= len(idle)
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
		s.ServersIdle = int64(len(pl.idle))
		s.ServersOpen = int64(pl.open)
		if f := pl.waiting.Front(); f != nil {
			s.MaxWait = now.Sub(f.Value.(*waiter).since).Seconds()
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
