package pgproxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/rawsys"
	"github.com/attache-proxy/attache/internal/upstream"
	"github.com/attache-proxy/attache/internal/userlist"
)

// Mode is a pool mode.
type Mode int

const (
	// SessionMode gives a client one server connection until it disconnects.
	SessionMode Mode = iota
	// TransactionMode gives a client a server connection from the first
	// message of a transaction until the server reports idle.
	TransactionMode
)

// Config is one PostgreSQL listener's pooling. Zero durations turn the
// corresponding limit off.
type Config struct {
	Mode                 Mode
	MaxClients           int
	PoolSize             int // per (database, user, server)
	MinPoolSize          int
	ReservePoolSize      int
	ReservePoolTimeout   time.Duration
	QueryWaitTimeout     time.Duration
	ServerIdleTimeout    time.Duration
	ServerLifetime       time.Duration
	ServerConnectTimeout time.Duration
	ResetQuery           string
	MaxPrepared          int // per server connection; 0: named statements pass through

	Users map[string]string // user -> secret (userlist format); see SetUsers
	// AuthQuery, when AuthUser is set, looks up the secret of a user not
	// in Users at each login (pgbouncer's auth_query): $1 is the user
	// name, the second column of the first row the secret (NULL or no
	// row: unknown user). It runs on a server connection of the pool of
	// (the client's database, AuthUser), whose password is in Users.
	AuthQuery, AuthUser string

	// ClientTLS, when not nil, answers SSLRequest with 'S'. RequireTLS
	// refuses clients that did not ask for TLS.
	ClientTLS  *tls.Config
	RequireTLS bool
	// ServerTLS, when not nil, sends SSLRequest to servers and returns the
	// TLS configuration for an endpoint address; ServerTLSRequired fails a
	// server that answers 'N'.
	ServerTLS         func(addr string) *tls.Config
	ServerTLSRequired bool

	// Dial connects to ep, or with ep nil (TargetAny) to the endpoint of
	// the cluster its policy chooses, and returns the address as
	// configured (host:port). A server connection to an endpoint of
	// Cluster is tracked there (upstream.Endpoint.Track) for its life.
	Dial func(ctx context.Context, ep *upstream.Endpoint) (net.Conn, string, error)
	// Target is which endpoints server connections go to; roles and lag
	// are read from Cluster, which every Target but TargetAny needs.
	// MaxLag skips standbys further behind (0: no limit).
	Target  Target
	MaxLag  time.Duration
	Cluster *upstream.Cluster
	// Keep reports whether server connections to addr may take new
	// transactions; nil: while addr is one of Cluster's endpoints.
	// Discovery removing an endpoint (a terminating pod) makes it false:
	// a connection finishes what it carries and is then closed.
	Keep func(addr string) bool
	Log  *slog.Logger

	// Loops are the process's event loops (evloop.Group), shared with
	// its other listeners: in transaction mode without server TLS,
	// plain-TCP clients are served after login by epoll engines on Engines
	// of them (GOMAXPROCS-1, at least one, when 0; see docs/postgres.md).
	// nil, or a platform without epoll: the portable path, every client
	// served by goroutines. Every protocol takes its loops this one way
	// (see docs/architecture.md).
	Loops   *evloop.Group
	Engines int
}

// Proxy is a PostgreSQL listener's connection pooler. Its methods may be
// called concurrently.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	clients atomic.Int64
	stmts   registry
	users   atomic.Pointer[map[string]string]

	mu        sync.Mutex
	pools     map[poolKey]*pool
	keys      map[uint32]*client
	verifiers map[string]*Verifier // SCRAM verifiers derived from plain secrets
	closed    bool
	stop      chan struct{}

	engineOnce sync.Once // joins the engines, with the first client for them
	engines    []*engine // plain-TCP transaction-mode clients; none: goroutines only
	next       atomic.Uint32
	// clients moved into an engine, and handed back from one (for tests)
	engineClients, handedBack atomic.Int64
}

type poolKey struct{ db, user string }

// New starts a Proxy; Close stops its background work.
func New(cfg Config) *Proxy {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ServerConnectTimeout <= 0 {
		cfg.ServerConnectTimeout = 15 * time.Second
	}
	if cfg.Cluster == nil {
		cfg.Target = TargetAny
	}
	p := &Proxy{cfg: cfg, log: cfg.Log, pools: map[poolKey]*pool{}, keys: map[uint32]*client{},
		verifiers: map[string]*Verifier{}, stop: make(chan struct{})}
	p.stmts.byText = map[stmtKey]*stmt{}
	p.SetUsers(cfg.Users)
	if cfg.Engines <= 0 {
		// One processor is left to the goroutines (logins, TLS, the
		// goroutine path, the admin server) and to what waits on a
		// thread of its own would take from them (evloop.Threads).
		p.cfg.Engines = max(runtime.GOMAXPROCS(0)-1, 1)
	}
	go p.maintain()
	return p
}

// SetUsers replaces the users and secrets (a users file read again).
// Clients already logged in are not affected; SCRAM verifiers derived from
// plain secrets are derived again.
func (p *Proxy) SetUsers(users map[string]string) {
	p.users.Store(&users)
	p.mu.Lock()
	clear(p.verifiers)
	p.mu.Unlock()
}

// Close stops background work and closes idle server connections; busy
// ones close when they come back once the last client has left. Connected
// clients keep being served.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	pools := p.poolsLocked()
	p.mu.Unlock()
	for _, pl := range pools {
		pl.close()
	}
	if p.clients.Load() == 0 {
		p.stopEngines()
	}
}

// engineFor returns the engine to serve c, or nil: a TLS client, one whose
// Backend has read ahead, or no engines.
func (p *Proxy) engineFor(c *client) *engine {
	if c.buffered {
		return nil
	}
	if _, ok := c.conn.(*net.TCPConn); !ok {
		return nil
	}
	es := p.startEngines()
	if len(es) == 0 {
		return nil
	}
	return es[int(p.next.Add(1))%len(es)]
}

// startEngines joins the engines to Engines of the loops with the first
// client they could serve, as every protocol's engines join theirs; none
// in session mode, with server TLS, without loops, or once stopped.
func (p *Proxy) startEngines() []*engine {
	p.engineOnce.Do(func() {
		if p.cfg.Mode == TransactionMode && p.cfg.ServerTLS == nil && p.cfg.Loops != nil {
			loops := p.cfg.Loops.Loops()
			p.engines = newEngines(p, loops[:min(p.cfg.Engines, len(loops))])
		}
	})
	return p.engines
}

// stopEngines stops the engines (once the Proxy is closed and has no
// client left). A client that comes later is served by goroutines.
func (p *Proxy) stopEngines() {
	p.engineOnce.Do(func() {}) // none to start any more
	for _, e := range p.engines {
		e.stop()
	}
}

// poolsLocked returns the pools, to work on after mu is released. mu held.
func (p *Proxy) poolsLocked() []*pool {
	return slices.Collect(maps.Values(p.pools))
}

// closeIdle closes the idle server connections of every pool.
func (p *Proxy) closeIdle() {
	p.mu.Lock()
	pools := p.poolsLocked()
	p.mu.Unlock()
	for _, pl := range pools {
		pl.close()
	}
}

// maintain closes idle and old server connections and keeps min_pool_size,
// once a second.
func (p *Proxy) maintain() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			pools := p.poolsLocked()
			p.mu.Unlock()
			for _, pl := range pools {
				pl.maintain(now)
			}
		}
	}
}

// keep is Config.Keep with its default.
func (p *Proxy) keep(addr string) bool {
	if p.cfg.Keep != nil {
		return p.cfg.Keep(addr)
	}
	return p.cfg.Cluster == nil || p.endpoint(addr) != nil
}

// endpoint returns the cluster's endpoint of an address, or nil.
func (p *Proxy) endpoint(addr string) *upstream.Endpoint {
	if p.cfg.Cluster == nil {
		return nil
	}
	for _, e := range p.cfg.Cluster.Endpoints() {
		if e.Addr == addr {
			return e
		}
	}
	return nil
}

// pool returns the pool of (db, user), made if needed, with a reference
// taken for the caller, who gives it back with unref.
func (p *Proxy) pool(db, user string) *pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := poolKey{db, user}
	pl := p.pools[k]
	if pl == nil {
		pl = newPool(p, db, user)
		p.pools[k] = pl
	}
	pl.refs++
	return pl
}

// unref gives back a reference taken by pool. A pool that nobody refers
// to and that never logged in to a server, holding no connection and no
// waiter, is forgotten: what logins to a database that does not exist
// leave (the auth query runs before the client is authenticated), which
// would otherwise pile up one pool per name tried.
func (p *Proxy) unref(pl *pool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pl.refs--; pl.refs > 0 {
		return
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.welcome != nil || pl.waiting.head != nil {
		return
	}
	for _, r := range pl.routes {
		if r.open > 0 || len(r.idle) > 0 {
			return
		}
	}
	if k := (poolKey{pl.db, pl.user}); p.pools[k] == pl {
		delete(p.pools, k)
	}
}

// ServeConn serves one client connection until it ends.
func (p *Proxy) ServeConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	if n := p.clients.Add(1); p.cfg.MaxClients > 0 && n > int64(p.cfg.MaxClients) {
		p.clients.Add(-1)
		// Read the startup packet so that the client reads our refusal.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := readStartup(conn); err == nil {
			writeError(conn, "FATAL", "53300", "no more connections allowed (max_client_connections)")
		}
		return
	}
	defer func() {
		if p.clients.Add(-1) == 0 {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				p.closeIdle()
				p.stopEngines()
			}
		}
	}()
	c, err := p.startup(conn)
	if err != nil {
		p.log.Debug("client startup failed", "client", conn.RemoteAddr(), "error", err)
		return
	}
	if c == nil {
		return // a cancel request, done
	}
	defer p.forget(c)
	c.serve(ctx)
}

// startupTimeout bounds a client's startup and authentication, like
// pgbouncer's client_login_timeout.
const startupTimeout = 60 * time.Second

// maxMessage bounds one client message (PostgreSQL's own limit is 1 GB).
const maxMessage = 1 << 30

// startup negotiates TLS, reads the StartupMessage, authenticates the
// client and greets it. It returns nil, nil for a cancel request. Until
// the client is logged in, no message of more than PostgreSQL's own
// limits for the startup phase is read (maxStartupPacket, maxPasswordMsg,
// maxSASLMsg).
func (p *Proxy) startup(conn net.Conn) (*client, error) {
	conn.SetDeadline(time.Now().Add(startupTimeout))
	// Raw reads (internal/rawsys), counted: an engine takes the client
	// only if the Backend holds nothing it has not decoded.
	wire := &wireCount{r: rawsys.NewReader(conn)}
	var r io.Reader = wire
	tlsDone, sslAsked, gssAsked := false, false, false
	var sm *startupMsg
	for sm == nil {
		sp, err := readStartup(r)
		if err == nil && (sp.code == codeSSL && sslAsked || sp.code == codeGSSEnc && gssAsked) {
			// PostgreSQL takes one of each: a client asking again would
			// keep the connection going round before login.
			err = errors.New("request for encryption made twice")
		}
		if err != nil {
			if errors.Is(err, errUnsupportedProtocol) {
				writeError(conn, "FATAL", "0A000", err.Error())
			} else {
				writeError(conn, "FATAL", "08P01", "invalid startup packet: "+err.Error())
			}
			return nil, err
		}
		switch sp.code {
		case codeSSL:
			sslAsked = true
			if tlsDone || p.cfg.ClientTLS == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return nil, err
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, err
			}
			tc := tls.Server(conn, p.cfg.ClientTLS)
			if err := tc.Handshake(); err != nil {
				return nil, fmt.Errorf("TLS handshake: %w", err)
			}
			conn, r, tlsDone = tc, tc, true
		case codeGSSEnc:
			gssAsked = true
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case codeCancel:
			p.cancel(sp.pid, sp.secret)
			return nil, nil
		default:
			sm = sp
		}
	}
	wire.used = wire.read // readStartup reads exactly its packets
	if sm.minor() > 0 || len(sm.options) > 0 {
		// As PostgreSQL does: the newest minor version attache speaks
		// (3.0) and the protocol options it does not know (all of them);
		// the client goes on with 3.0 or disconnects.
		if err := send(conn, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: sm.options}); err != nil {
			return nil, err
		}
	}
	be := pgproto3.NewBackend(r, conn)
	if p.cfg.RequireTLS && !tlsDone {
		writeError(conn, "FATAL", "28000", "SSL required")
		return nil, errors.New("client without TLS refused (client_tls mode require)")
	}
	user, db := sm.params["user"], sm.params["database"]
	if db == "" {
		db = user
	}
	params := map[string]string{}
	for k, v := range sm.params {
		switch {
		case k == "user" || k == "database":
		case canonical(k) != "":
			params[canonical(k)] = v
		default:
			writeError(conn, "FATAL", "08P01", fmt.Sprintf("unsupported startup parameter: %s", k))
			return nil, fmt.Errorf("unsupported startup parameter %q", k)
		}
	}
	if user == "" {
		writeError(conn, "FATAL", "28000", "no PostgreSQL user name specified in startup packet")
		return nil, errors.New("no user name")
	}
	secret, known := (*p.users.Load())[user]
	if !known && p.cfg.AuthUser != "" {
		var err error
		if secret, known, err = p.lookup(db, user); err != nil {
			p.log.Warn("auth_query failed", "user", user, "database", db, "auth_user", p.cfg.AuthUser, "error", err)
			writeError(conn, "FATAL", "08006", "auth_query failed (see attache's log)")
			return nil, err
		}
	}
	cred, err := p.authenticate(conn, be, user, secret, known, wire.seen)
	if err != nil {
		var long *pgproto3.ExceededMaxBodyLenErr
		if errors.As(err, &long) {
			writeError(conn, "FATAL", "08P01", fmt.Sprintf("invalid message length: %d bytes in an authentication message, at most %d", long.ActualBodyLen+4, long.MaxExpectedBodyLen+4))
		} else {
			writeError(conn, "FATAL", "28P01", fmt.Sprintf("password authentication failed for user %q", user))
		}
		return nil, err
	}
	be.SetMaxBodyLen(maxMessage) // logged in: PostgreSQL's own limit from now on
	c := &client{p: p, conn: conn, be: be, user: user, db: db, params: params, pkey: paramsKey(params), stmts: map[string]*stmt{}, txStatus: 'I',
		buffered: !tlsDone && wire.read != wire.used}
	c.pool = p.pool(db, user)
	c.pool.remember(cred)
	welcome, err := c.pool.welcomeParams()
	if err != nil {
		c.fail(err)
		p.unref(c.pool)
		return nil, err
	}
	buf := (&pgproto3.AuthenticationOk{}).Encode
	out, _ := buf(nil)
	for k, v := range welcome {
		if cv, ok := params[k]; ok {
			v = cv
		}
		out, _ = (&pgproto3.ParameterStatus{Name: k, Value: v}).Encode(out)
	}
	p.register(c)
	out, _ = (&pgproto3.BackendKeyData{ProcessID: c.key, SecretKey: c.secret[:]}).Encode(out)
	out, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(out)
	if _, err := conn.Write(out); err != nil {
		p.forget(c)
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

// authenticate runs SCRAM-SHA-256 (plain and SCRAM secrets) or md5 (md5
// secrets) with the client. An unknown user goes through the same SCRAM
// exchange with a random verifier, so that it fails like a wrong password.
// It returns what the server can be logged into with besides a plain
// password: the secret, and for SCRAM secrets the client's ClientKey.
//
// seen is told of every message received.
func (p *Proxy) authenticate(conn net.Conn, be *pgproto3.Backend, user, secret string, known bool, seen func(pgproto3.FrontendMessage)) (*serverCred, error) {
	if known && userlist.KindOf(secret) == userlist.MD5 {
		var salt [4]byte
		rand.Read(salt[:])
		if err := send(conn, &pgproto3.AuthenticationMD5Password{Salt: salt}); err != nil {
			return nil, err
		}
		be.SetAuthType(pgproto3.AuthTypeMD5Password)
		be.SetMaxBodyLen(maxPasswordMsg - 4)
		msg, err := be.Receive()
		if err != nil {
			return nil, err
		}
		seen(msg)
		pm, ok := msg.(*pgproto3.PasswordMessage)
		if !ok {
			return nil, fmt.Errorf("want a password message, got %T", msg)
		}
		want := md5Salted(secret[3:], salt)
		if subtle.ConstantTimeCompare([]byte(pm.Password), []byte(want)) != 1 {
			return nil, errWrongPassword
		}
		return &serverCred{secret: secret}, nil
	}
	v, err := p.verifier(user, secret, known)
	if err != nil {
		return nil, err
	}
	if err := send(conn, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{scramMechanism}}); err != nil {
		return nil, err
	}
	be.SetAuthType(pgproto3.AuthTypeSASL)
	be.SetMaxBodyLen(maxSASLMsg - 4)
	msg, err := be.Receive()
	if err != nil {
		return nil, err
	}
	seen(msg)
	init, ok := msg.(*pgproto3.SASLInitialResponse)
	if !ok || init.AuthMechanism != scramMechanism {
		return nil, fmt.Errorf("want SASLInitialResponse for %s, got %T", scramMechanism, msg)
	}
	ss := &scramServer{v: v}
	first, err := ss.first(init.Data)
	if err != nil {
		return nil, err
	}
	if err := send(conn, &pgproto3.AuthenticationSASLContinue{Data: first}); err != nil {
		return nil, err
	}
	be.SetAuthType(pgproto3.AuthTypeSASLContinue)
	be.SetMaxBodyLen(maxSASLMsg - 4)
	if msg, err = be.Receive(); err != nil {
		return nil, err
	}
	seen(msg)
	resp, ok := msg.(*pgproto3.SASLResponse)
	if !ok {
		return nil, fmt.Errorf("want SASLResponse, got %T", msg)
	}
	final, err := ss.final(resp.Data)
	if err != nil {
		return nil, err
	}
	if !known {
		return nil, errWrongPassword
	}
	cred := &serverCred{secret: secret}
	if userlist.KindOf(secret) == userlist.SCRAM {
		cred.scram = &scramKeys{clientKey: ss.clientKey, v: v}
	}
	return cred, send(conn, &pgproto3.AuthenticationSASLFinal{Data: final})
}

// verifier returns the SCRAM verifier of a user, deriving (once) one from
// a plain secret.
func (p *Proxy) verifier(user, secret string, known bool) (*Verifier, error) {
	if known && userlist.KindOf(secret) == userlist.SCRAM {
		return ParseVerifier(secret)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key := user + "\x00" + secret // a secret from the auth query may change
	if !known {
		key, secret = "\x00unknown", nonce()
	}
	v := p.verifiers[key]
	if v == nil {
		v = NewVerifier(secret, 4096)
		p.verifiers[key] = v
	}
	return v, nil
}

// register issues the client its cancel key.
func (p *Proxy) register(c *client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		var b [8]byte
		rand.Read(b[:])
		c.key = binary.BigEndian.Uint32(b[:4]) &^ (1 << 31)
		copy(c.secret[:], b[4:])
		if _, dup := p.keys[c.key]; !dup && c.key != 0 {
			p.keys[c.key] = c
			return
		}
	}
}

// forget takes back what register and startup gave c: its cancel key and
// its reference to its pool.
func (p *Proxy) forget(c *client) {
	p.mu.Lock()
	if p.keys[c.key] == c {
		delete(p.keys, c.key)
	}
	p.mu.Unlock()
	p.unref(c.pool)
}

// cancel forwards a cancel request, with the server's own key, to the
// server connection serving the client the key was issued to, and only
// while it runs a statement of that client's: a cancel for a client
// without a server connection, or with nothing in flight, is dropped. The
// server connection is then retired (closed rather than pooled when the
// client gives it back), since the request may reach the server after
// the statement ended: it must find nobody else's statement there.
func (p *Proxy) cancel(key uint32, secret []byte) {
	p.mu.Lock()
	c := p.keys[key]
	p.mu.Unlock()
	if c == nil || subtle.ConstantTimeCompare(secret, c.secret[:]) != 1 {
		p.log.Debug("cancel request with an unknown key")
		return
	}
	c.mu.Lock()
	srv := c.srv
	running := srv != nil && c.running()
	if running {
		srv.retire = true
	}
	c.mu.Unlock()
	if !running {
		p.log.Debug("cancel request for a client with no statement running", "user", c.user, "database", c.db)
		return
	}
	conn, err := net.DialTimeout("tcp", srv.addr, p.cfg.ServerConnectTimeout)
	if err != nil {
		p.log.Debug("cancel: dial server", "server", srv.addr, "error", err)
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(p.cfg.ServerConnectTimeout))
	b, _ := (&pgproto3.CancelRequest{ProcessID: srv.pid, SecretKey: srv.secret}).Encode(nil)
	conn.Write(b)
	// The server closes the connection when it has handled the request.
	conn.Read(make([]byte, 1))
}

// wireCount counts the bytes a Backend reads and the bytes of the
// messages it has returned: when they differ after the startup, the
// Backend holds bytes of messages to come.
type wireCount struct {
	r          io.Reader
	read, used int
}

func (w *wireCount) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.read += n
	return n, err
}

// seen counts a message received (its encoding has the length it came
// with).
func (w *wireCount) seen(msg pgproto3.FrontendMessage) {
	b, _ := msg.Encode(nil)
	w.used += len(b)
}

func send(conn net.Conn, msg pgproto3.BackendMessage) error {
	b, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	_, err = conn.Write(b)
	return err
}

func errorResponse(severity, code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg}
}

func writeError(conn net.Conn, severity, code, msg string) {
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	send(conn, errorResponse(severity, code, msg))
}

// md5Salted is the client's answer to an md5 challenge given the stored
// hex md5(password + user).
func md5Salted(hexInner string, salt [4]byte) string {
	return md5Outer(hexInner, salt)
}
