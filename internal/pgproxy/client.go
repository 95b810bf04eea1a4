package pgproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/pgsql"
	"github.com/attache-proxy/attache/internal/rawsys"
	"github.com/attache-proxy/attache/internal/upstream"
)

// An entry is one client message sent to the server (or answered by
// attache) that is owed a response, in order. The relay goroutine pops
// entries as the responses arrive; this keeps responses attache makes up
// (ParseComplete for a statement the server already has, CloseComplete for
// a statement attache keeps) in their place, swallows the responses to
// what attache sent on its own, and tells when the server may go back to
// the pool: on ReadyForQuery with nothing owed.
type entryKind uint8

const (
	eParse     entryKind = iota // client's Parse: forward ParseComplete
	eInjected                   // attache's Parse of a statement the server lacks: swallow ParseComplete
	eEvict                      // attache's Close of an evicted statement: swallow CloseComplete
	eBind                       // BindComplete
	eDescribe                   // ends with RowDescription or NoData
	eExecute                    // ends with CommandComplete, EmptyQueryResponse, PortalSuspended
	eClose                      // CloseComplete
	eFakeParse                  // no server message: answer ParseComplete
	eFakeClose                  // no server message: answer CloseComplete
	eSync                       // ReadyForQuery
	eQuery                      // Query or FunctionCall: ReadyForQuery
	eInternal                   // attache's own query or Sync: everything up to ReadyForQuery swallowed
)

// extended reports whether a kind is skipped by the server after an error
// until the next Sync.
func (k entryKind) extended() bool { return k < eSync }

type entry struct {
	kind entryKind
	st   *stmt
	at   time.Time
}

// client is one application connection. The client goroutine (serve)
// reads its messages and writes them to its server. In transaction mode
// it also reads the server's responses itself (collect) after each batch
// that ends in Sync or Query, up to the ReadyForQuery that settles it, and
// writes them back: a transaction costs no goroutine hand-off. When the
// server may speak while the client does (COPY FROM STDIN, a pinned or
// session-mode client that may LISTEN, a pipeline flushed before its
// Sync), a relay goroutine reads the server instead, until the server
// goes back to the pool.
type client struct {
	p        *Proxy
	pool     *pool
	conn     net.Conn
	w        io.Writer // conn, raw where it can be (set by serve)
	be       *pgproto3.Backend
	user, db string
	params   map[string]string // tracked startup parameters
	pkey     string            // params in one string, see paramsKey
	key      uint32
	secret   [4]byte
	stmts    map[string]*stmt // client statement name -> statement (serve only)

	mu        sync.Mutex // guards what follows
	srv       *server
	relayFor  *server // srv has a relay goroutine
	q         []entry
	qbuf      []entry // q's array, from its front (see enqueue)
	skipping  bool    // the server discards messages until Sync after an error
	txStatus  byte
	pinned    string
	gone      bool // the client left
	reset     bool // the reset query was sent after the client left
	unflushed bool // serve has encoded messages it has not written yet
	wake      bool // the relay would have released the server but for unflushed
	out       []byte
	xactStart time.Time

	wmu sync.Mutex // serializes writes to conn, taken before mu is released

	buffered bool // the startup Backend read past the messages it returned

	// eng is the engine's side of the client while an engine serves it
	// (nil on the goroutine path); set and cleared by the engine.
	eng *eclient
}

// serve reads client messages until the client leaves. A plain-TCP
// transaction-mode client is served by an engine (engine_linux.go) until
// it leaves or is handed back here.
func (c *client) serve(ctx context.Context) {
	defer c.leave()
	if e := c.p.engineFor(c); e != nil {
		if e.serve(c) {
			return // ended in the engine
		}
		defer c.conn.Close() // handed back: a new net.Conn of the socket
	}
	c.mu.Lock()
	c.w = rawsys.NewWriter(c.conn)
	s := c.srv
	c.mu.Unlock()
	if s != nil {
		// Handed back holding s: what the engine left unwritten goes
		// out, and a relay reads the responses still owed (the client
		// may wait for them before it sends more, after a Flush).
		c.flushServer(s)
		c.mu.Lock()
		c.flushLocked()
		if len(c.q) > 0 {
			c.startRelayLocked(s)
		}
		c.mu.Unlock()
	}
	for {
		msg, err := c.be.Receive()
		if err != nil {
			var perr *pgproto3.ExceededMaxBodyLenErr
			if errors.As(err, &perr) || !isNetErr(err) {
				c.fatal("08P01", "invalid message: "+err.Error())
			}
			return
		}
		switch m := msg.(type) {
		case *pgproto3.Terminate:
			return
		case *pgproto3.Query, *pgproto3.Parse, *pgproto3.Bind, *pgproto3.Describe, *pgproto3.Close,
			*pgproto3.Execute, *pgproto3.Sync, *pgproto3.FunctionCall, *pgproto3.Flush:
			if !c.forward(m) {
				return
			}
		case *pgproto3.CopyData, *pgproto3.CopyDone, *pgproto3.CopyFail:
			c.mu.Lock()
			s := c.srv
			if s != nil {
				s.send(m)
				c.unflushed = true
			}
			c.mu.Unlock()
			if s != nil && (len(s.wbuf) > 32<<10 || !isCopyData(m)) {
				c.flushServer(s)
			}
		default:
			c.fatal("08P01", fmt.Sprintf("unexpected message %T", msg))
			return
		}
	}
}

// effectOf classifies the statements of a Query or Parse (internal/pgsql);
// other messages have no effect.
func effectOf(msg pgproto3.FrontendMessage) pgsql.Effect {
	switch m := msg.(type) {
	case *pgproto3.Query:
		return pgsql.Classify(m.String)
	case *pgproto3.Parse:
		return pgsql.Classify(m.Query)
	}
	return pgsql.Effect{}
}

// consume applies one client message to the client's state and queues
// what it makes: messages for s in s.wbuf (the message itself, renamed,
// or attache's own Parse and Close), owed responses in q, made-up answers
// in out. It is the per-message logic of both paths (serve and the
// engine), with no I/O of its own: the caller writes. raw, when not nil,
// is the message as the client framed it, forwarded as is when attache
// does not change it (no re-encode); eff is effectOf(msg). Called with mu
// held, s being c.srv.
func (c *client) consume(s *server, msg pgproto3.FrontendMessage, raw []byte, eff pgsql.Effect) {
	rename := c.p.cfg.Mode == TransactionMode && c.p.cfg.MaxPrepared > 0
	pass := func(kind entryKind, owed bool) {
		if raw != nil {
			s.wbuf = append(s.wbuf, raw...)
		} else {
			s.send(msg)
		}
		if owed {
			c.push(s, entry{kind: kind})
		}
	}
	switch m := msg.(type) {
	case *pgproto3.Query:
		c.pinIf(eff.Pin)
		if eff.DeallocateAll && rename {
			clear(c.stmts)
			s.prepared.clear()
		}
		pass(eQuery, true)
	case *pgproto3.Parse:
		c.pinIf(eff.Pin)
		if !rename || m.Name == "" {
			pass(eParse, true)
			return
		}
		st := c.p.stmts.get(m.Query, m.ParameterOIDs)
		c.stmts[m.Name] = st
		c.pool.st.clientParses.Add(1)
		if s.prepared.has(st) {
			c.pool.st.preparedHits.Add(1)
			c.push(s, entry{kind: eFakeParse})
			return
		}
		c.pool.st.preparedMisses.Add(1)
		c.prepare(s, st, eParse)
	case *pgproto3.Bind:
		c.pool.st.binds.Add(1)
		var st *stmt
		if m.PreparedStatement != "" {
			st = c.stmts[m.PreparedStatement]
		}
		if !rename || st == nil {
			pass(eBind, true)
			return
		}
		m.PreparedStatement = st.name
		c.ensure(s, st)
		raw = nil // renamed
		pass(eBind, true)
	case *pgproto3.Describe:
		var st *stmt
		if rename && m.ObjectType == 'S' && m.Name != "" {
			st = c.stmts[m.Name]
		}
		if st == nil {
			pass(eDescribe, true)
			return
		}
		m.Name = st.name
		c.ensure(s, st)
		raw = nil
		pass(eDescribe, true)
	case *pgproto3.Close:
		if rename && m.ObjectType == 'S' && m.Name != "" {
			// The server keeps the statement (others may use it); the
			// client forgets its name.
			delete(c.stmts, m.Name)
			c.push(s, entry{kind: eFakeClose})
			return
		}
		pass(eClose, true)
	case *pgproto3.Execute:
		pass(eExecute, true)
	case *pgproto3.Sync:
		pass(eSync, true)
	case *pgproto3.FunctionCall:
		pass(eQuery, true)
	case *pgproto3.Flush, *pgproto3.CopyData, *pgproto3.CopyDone, *pgproto3.CopyFail:
		pass(0, false)
	}
}

func isCopyData(m pgproto3.FrontendMessage) bool {
	_, ok := m.(*pgproto3.CopyData)
	return ok
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.Is(err, net.ErrClosed) || errors.As(err, &ne) || strings.Contains(err.Error(), "EOF") ||
		strings.Contains(err.Error(), "connection reset")
}

// pinIf pins the client to its server connection for the rest of its
// session. Called with mu held.
func (c *client) pinIf(kind string) {
	if kind == "" || c.pinned != "" || c.p.cfg.Mode == SessionMode {
		return
	}
	c.pinned = kind
	c.pool.st.pin(kind)
	c.p.log.Debug("client pinned to its server connection", "user", c.user, "database", c.db, "statement", kind)
}

// forward makes sure the client holds a server connection, applies msg
// (consume) and writes to the server when msg ends a batch. It returns
// false when the client must be disconnected.
func (c *client) forward(msg pgproto3.FrontendMessage) bool {
	eff := effectOf(msg)
	c.mu.Lock()
	for c.srv == nil {
		c.mu.Unlock()
		s, err := c.pool.acquire()
		if err != nil {
			c.fail(err)
			return false
		}
		if err := c.applyParams(s); err != nil {
			c.paramsFailed(s, err)
			return false
		}
		c.mu.Lock()
		c.hold(s)
	}
	s := c.srv
	c.unflushed = true
	c.consume(s, msg, nil, eff)
	c.mu.Unlock()
	switch msg.(type) {
	case *pgproto3.Sync, *pgproto3.Query, *pgproto3.FunctionCall:
		c.flushServer(s)
		c.collect(s)
		// The client reads the answer before it sends more, most likely.
		yieldBeforeRead()
	case *pgproto3.Flush:
		c.flushServer(s)
		c.startRelay(s)
	default:
		if len(s.wbuf) > 32<<10 {
			c.flushServer(s)
			c.startRelay(s) // the server answers before the Sync comes
		}
	}
	return true
}

// hold makes s the client's server connection. Called with mu held.
func (c *client) hold(s *server) {
	c.srv = s
	c.pool.st.clientsActive.Add(1)
	c.pool.st.serversActive.Add(1)
}

// paramsFailed gives back s, on which applyParams failed with err, and
// ends the client with the reason.
func (c *client) paramsFailed(s *server, err error) {
	var se *ServerError
	if errors.As(err, &se) {
		c.pool.release(s, true)
		c.fatal(se.Code, se.Message)
	} else {
		c.pool.discard(s)
		c.fail(err)
	}
}

// yieldBeforeRead lets the other runnable goroutines go first when the
// next read would most likely find nothing: the server's answer right
// after the batch was written, the client's next statement right after
// the answer. Go's netpoller is edge-triggered, so a read that finds
// nothing costs a recvfrom returning EAGAIN, a park and a wake; by the
// time the other clients have had their turn the bytes are usually there
// (as in internal/httpproxy's fast path). With nothing else runnable it
// costs a trip through the scheduler, well under a failed read.
func yieldBeforeRead() { runtime.Gosched() }

// startRelay makes sure a relay goroutine reads s.
func (c *client) startRelay(s *server) {
	c.mu.Lock()
	c.startRelayLocked(s)
	c.mu.Unlock()
}

// startRelayLocked is startRelay with mu held.
func (c *client) startRelayLocked(s *server) {
	if c.srv == s && c.relayFor != s {
		c.relayFor = s
		go c.relay(s)
	}
}

// collect reads s's responses in the client goroutine until nothing is
// owed (the batch's ReadyForQuery), and hands s to a relay goroutine where
// the server may speak unasked: outside transaction mode, once pinned, and
// on CopyInResponse (the client sends the data next).
func (c *client) collect(s *server) {
	c.mu.Lock()
	if c.srv != s || c.relayFor == s {
		c.mu.Unlock()
		return
	}
	if c.p.cfg.Mode != TransactionMode || c.pinned != "" {
		c.startRelayLocked(s)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	for {
		if s.fe.ReadBufferLen() == 0 {
			yieldBeforeRead()
		}
		msg, released, live := c.step(s)
		if !live {
			c.mu.Unlock()
			return
		}
		done := released || len(c.q) == 0
		if done || s.fe.ReadBufferLen() == 0 || len(c.out) > 32<<10 {
			c.flushLocked()
		}
		if !done {
			switch msg.(type) {
			case *pgproto3.CopyInResponse, *pgproto3.CopyBothResponse:
				c.startRelayLocked(s)
				done = true
			}
		}
		c.mu.Unlock()
		if done {
			return
		}
	}
}

// flushServer writes what serve encoded for s. A failed write closes the
// server connection; its relay reports the loss to the client.
func (c *client) flushServer(s *server) {
	if err := s.flush(); err != nil {
		s.conn.Close()
	}
	c.mu.Lock()
	c.unflushed = false
	if c.wake && c.srv == s && len(c.q) == 0 {
		c.sendInternal(s, &pgproto3.Sync{})
	}
	c.wake = false
	c.mu.Unlock()
}

// push records an owed response. While the server skips to Sync after an
// error, extended-protocol entries are dropped at once, as the server drops
// their messages. Called with mu held.
func (c *client) push(s *server, e entry) {
	var now time.Time // read once: this runs per message
	if c.xactStart.IsZero() {
		now = c.now()
		c.xactStart = now
	}
	if c.skipping && e.kind.extended() {
		c.drop(s, e)
		return
	}
	if e.kind == eSync || e.kind == eQuery {
		if now.IsZero() {
			now = c.now()
		}
		e.at = now
	}
	c.enqueue(e)
	if len(c.q) == 1 {
		c.emitFakes()
		c.flushLocked()
	}
}

// now is the time for the client's statistics: the engine's batch time
// while an engine serves it.
func (c *client) now() time.Time {
	if e := c.eng.engine(); e != nil {
		return e.now()
	}
	return time.Now()
}

// enqueue appends to q, starting again at the front of its array when q
// is empty: popping moves q's start forward, so without this nearly every
// statement would allocate a new array. Called with mu held.
func (c *client) enqueue(e entry) {
	if len(c.q) == 0 {
		c.q = c.qbuf
	}
	c.q = append(c.q, e)
	if cap(c.q) > cap(c.qbuf) && cap(c.q) <= 256 {
		c.qbuf = c.q[:0] // a new array, q at its front
	}
}

// running reports whether a statement of the client's is in flight on its
// server connection: a response owed to the client. Called with mu held.
func (c *client) running() bool {
	return slices.ContainsFunc(c.q, func(e entry) bool { return e.kind != eInternal })
}

// drop forgets an entry whose message the server skipped: a statement it
// was to prepare is not prepared.
func (c *client) drop(s *server, e entry) {
	if (e.kind == eParse || e.kind == eInjected) && e.st != nil {
		s.prepared.remove(e.st)
	}
}

// prepare sends a Parse of st under its server name, making room in the
// server's statement cache. Called with mu held.
func (c *client) prepare(s *server, st *stmt, kind entryKind) {
	c.pool.st.serverParses.Add(1)
	if ev := s.prepared.add(st); ev != nil {
		s.send(&pgproto3.Close{ObjectType: 'S', Name: ev.name})
		c.push(s, entry{kind: eEvict})
	}
	s.send(&pgproto3.Parse{Name: st.name, Query: st.query, ParameterOIDs: st.oids})
	c.push(s, entry{kind: kind, st: st})
}

// ensure prepares st on s if s lacks it. Called with mu held.
func (c *client) ensure(s *server, st *stmt) {
	if s.prepared.has(st) {
		c.pool.st.preparedHits.Add(1)
		return
	}
	c.pool.st.preparedMisses.Add(1)
	c.prepare(s, st, eInjected)
}

// emitFakes answers the made-up responses at the head of the queue.
// Called with mu held.
func (c *client) emitFakes() {
	for len(c.q) > 0 {
		switch c.q[0].kind {
		case eFakeParse:
			c.emit(&pgproto3.ParseComplete{})
		case eFakeClose:
			c.emit(&pgproto3.CloseComplete{})
		default:
			return
		}
		c.q = c.q[1:]
	}
}

func (c *client) emit(msg pgproto3.BackendMessage) {
	if c.gone {
		return
	}
	c.out, _ = msg.Encode(c.out)
}

// flushLocked writes the pending output to the client. Called with mu
// held; it releases mu during the write (holding wmu, so that writes keep
// their order) and takes it again.
func (c *client) flushLocked() {
	if c.eng != nil {
		return // the engine writes out after each event
	}
	if len(c.out) == 0 || c.gone {
		c.out = c.out[:0]
		return
	}
	buf := c.out
	c.out = nil
	w := c.w
	if w == nil {
		w = c.conn
	}
	c.wmu.Lock()
	c.mu.Unlock()
	_, err := w.Write(buf)
	c.wmu.Unlock()
	if err != nil {
		c.closeConn()
	}
	c.mu.Lock()
	if c.out == nil && cap(buf) <= 64<<10 {
		c.out = buf[:0]
	}
}

// relay reads s's messages for the client until s goes back to the pool
// or fails.
func (c *client) relay(s *server) {
	for {
		_, released, live := c.step(s)
		if !live {
			c.mu.Unlock()
			return
		}
		if released || s.fe.ReadBufferLen() == 0 || len(c.out) > 32<<10 {
			c.flushLocked()
		}
		c.mu.Unlock()
		if released {
			return
		}
	}
}

// step reads s's next message and passes it on (handle). It returns with
// mu held; live is false when s failed (the client was told) or is no
// longer the client's server.
func (c *client) step(s *server) (msg pgproto3.BackendMessage, released, live bool) {
	msg, err := s.fe.Receive()
	c.mu.Lock()
	if err != nil {
		c.serverFailed(s, err)
		return nil, false, false
	}
	if c.srv != s {
		return nil, false, false
	}
	return msg, c.handle(s, msg, nil), true
}

// handle passes one server message on, keeping the queue of owed
// responses: the per-message logic of both paths for what the server
// sends. It reports whether s was given back. raw, when not nil, is the
// message as the server framed it, passed on as is; then only the fields
// of ErrorResponse, ParameterStatus and ReadyForQuery are read, and msg
// may be an undecoded value of the right type for the others. Called with
// mu held.
func (c *client) handle(s *server, msg pgproto3.BackendMessage, raw []byte) (released bool) {
	var head entryKind = 255
	if len(c.q) > 0 {
		head = c.q[0].kind
	}
	internal := head == eInternal
	// Made-up answers that come next in the queue go out after msg
	// (emitFakes below), never before it.
	pop := func() { c.q = c.q[1:] }
	switch m := msg.(type) {
	case *pgproto3.ParseComplete:
		if head == eParse || head == eInjected {
			pop()
			if head == eInjected {
				c.emitFakes()
				return false
			}
		}
	case *pgproto3.CloseComplete:
		if head == eClose || head == eEvict {
			pop()
			if head == eEvict {
				c.emitFakes()
				return false
			}
		}
	case *pgproto3.BindComplete:
		if head == eBind {
			pop()
		}
	case *pgproto3.RowDescription, *pgproto3.NoData:
		if head == eDescribe {
			pop()
		}
	case *pgproto3.CommandComplete, *pgproto3.EmptyQueryResponse:
		c.pool.st.queries.Add(1)
		if head == eExecute {
			pop()
		}
	case *pgproto3.PortalSuspended:
		if head == eExecute {
			pop()
		}
	case *pgproto3.ErrorResponse:
		if m.Code == "25006" && c.p.cfg.Target == TargetPrimary {
			// read_only_sql_transaction from what should be the primary:
			// the server may have been made read-only under the client.
			// Retire it; the next transaction routes again.
			s.retire = true
		}
		if m.Severity == "FATAL" {
			// The server is closing (pg_terminate_backend, shutdown): the
			// client's session or transaction goes with it. To the client
			// that is the loss of its server connection, one code whatever
			// the cause (08006, as for a crash), with the server's own
			// words kept in the detail.
			c.emit(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "08006",
				Message: "server connection lost: " + m.Message,
				Detail:  "The server ended the connection with SQLSTATE " + m.Code + "; an open transaction was not committed."})
			c.serverFailed(s, errors.New(m.Message))
			return true
		}
		if head.extended() && head != 255 {
			// The server skips everything up to the next Sync.
			i := 0
			for i < len(c.q) && c.q[i].kind.extended() {
				c.drop(s, c.q[i])
				i++
			}
			c.q = c.q[i:]
			c.skipping = len(c.q) == 0
		}
	case *pgproto3.ParameterStatus:
		s.params[m.Name] = m.Value
		if c.p.cfg.Target == TargetPrimary && m.Value == "on" && (m.Name == "in_hot_standby" || m.Name == "default_transaction_read_only") {
			s.retire = true // reported by PostgreSQL 14 and later when it changes
		}
	case *pgproto3.ReadyForQuery:
		var now time.Time
		if head == eSync || head == eQuery || internal {
			if !c.q[0].at.IsZero() {
				now = c.now()
				c.pool.st.queryTime.Add(now.Sub(c.q[0].at).Microseconds())
			}
			pop()
		}
		c.skipping = false
		c.txStatus = m.TxStatus
		if !internal {
			c.pass(m, raw)
		}
		c.emitFakes()
		if m.TxStatus == 'I' && !c.xactStart.IsZero() && !internal {
			c.pool.st.xacts.Add(1)
			if now.IsZero() {
				now = c.now()
			}
			c.pool.st.xactTime.Add(now.Sub(c.xactStart).Microseconds())
			c.xactStart = time.Time{}
		}
		return c.maybeRelease(s)
	}
	if !internal {
		c.pass(msg, raw)
	}
	c.emitFakes()
	return false
}

// passPlain is handle for a server message framed in raw that only ends
// the owed response at the head of the queue (or none) and goes to the
// client as it is: a DataRow, a ParameterDescription, a notice, and the
// completions of Parse, Bind, Describe, Close and Execute. It reports
// false, having done nothing, for any other message or queue head (what
// attache swallows or makes up): handle, with the message decoded, then.
// Called with mu held.
func (c *client) passPlain(raw []byte) bool {
	head := entryKind(255)
	if len(c.q) > 0 {
		head = c.q[0].kind
	}
	var ends entryKind // the owed response raw completes, if at the head; 255 none
	switch raw[0] {
	case 'D', 't', 'N', 'A':
		ends = 255
	case '1':
		ends = eParse
	case '2':
		ends = eBind
	case '3':
		ends = eClose
	case 'T', 'n':
		ends = eDescribe
	case 'C', 'I', 's':
		ends = eExecute
	default:
		return false
	}
	if head == eInternal || head == eInjected || head == eEvict {
		return false
	}
	if raw[0] == 'C' || raw[0] == 'I' {
		c.pool.st.queries.Add(1)
	}
	if ends != 255 && head == ends {
		c.q = c.q[1:]
	}
	if !c.gone {
		c.out = append(c.out, raw...)
	}
	if len(c.q) > 0 && (c.q[0].kind == eFakeParse || c.q[0].kind == eFakeClose) {
		c.emitFakes()
	}
	return true
}

// pass queues a server message for the client: raw when there is one.
func (c *client) pass(msg pgproto3.BackendMessage, raw []byte) {
	if raw == nil {
		c.emit(msg)
	} else if !c.gone {
		c.out = append(c.out, raw...)
	}
}

// maybeRelease gives s back to the pool when nothing is owed, the server
// is idle, and either the pool mode is transaction and the client is not
// pinned, or the client left (after the reset query when its session may
// carry state). Called with mu held.
func (c *client) maybeRelease(s *server) bool {
	if len(c.q) > 0 {
		return false
	}
	if !c.gone && (c.p.cfg.Mode == SessionMode || c.pinned != "" || c.txStatus != 'I') {
		// The client keeps s. Checked before unflushed: a wake there
		// would send a Sync whose answer is still owed when the client
		// leaves, and s would be closed instead of reset and reused.
		return false
	}
	if c.unflushed {
		// serve is writing to s: it sends a Sync when done (flushServer),
		// whose ReadyForQuery brings us back here.
		c.wake = true
		return false
	}
	if c.txStatus != 'I' {
		c.detach(s, false) // the client left: never returned inside a transaction
		return true
	}
	dirty := c.pinned != "" || c.p.cfg.Mode == SessionMode
	if c.gone && dirty && !c.reset {
		if c.p.cfg.ResetQuery == "" && c.pinned != "" {
			c.detach(s, false)
			return true
		}
		if c.p.cfg.ResetQuery != "" {
			c.reset = true
			c.sendInternal(s, &pgproto3.Query{String: c.p.cfg.ResetQuery})
			s.prepared.clear()
			s.clearApplied()
			return false
		}
	}
	c.detach(s, true)
	return true
}

// sendInternal sends attache's own query (or Sync) on s, whose output is
// swallowed. Called with mu held by whoever may write to s.
func (c *client) sendInternal(s *server, msg pgproto3.FrontendMessage) {
	s.send(msg)
	c.enqueue(entry{kind: eInternal})
	if c.eng != nil {
		return // the engine writes wbuf
	}
	if err := s.flush(); err != nil {
		s.conn.Close()
	}
}

// detach takes s from the client and gives it back (or closes it).
// Called with mu held.
func (c *client) detach(s *server, reusable bool) {
	if c.srv != s {
		return
	}
	c.srv = nil
	if c.relayFor == s {
		c.relayFor = nil // the relay sees srv changed, or its read fails
	}
	if c.eng != nil {
		c.eng.dropServer(s) // out of the engine's loop before anyone else may take it
	}
	c.q = c.q[:0]
	c.skipping = false
	c.pool.st.clientsActive.Add(-1)
	c.pool.st.serversActive.Add(-1)
	c.pool.releaseBy(s, reusable, c.eng.engine())
}

// serverFailed handles the loss of the server connection the client
// holds: the connection is discarded and the client, whose session or
// transaction went with it, gets 08006 and is disconnected. Called with
// mu held.
func (c *client) serverFailed(s *server, err error) {
	if c.srv != s {
		return // attache closed it
	}
	c.pool.st.serverLost.Add(1)
	c.p.log.Debug("server connection lost", "server", s.addr, "user", c.user, "database", c.db, "error", err)
	c.detach(s, false)
	if s.route != "" {
		// The server is likely going down (a failover): its idle
		// connections would fail the next transactions given them.
		c.pool.dropIdle(s.route)
	}
	if !c.gone {
		if len(c.out) == 0 {
			c.emit(errorResponse("FATAL", "08006", "server connection lost: "+err.Error()))
		}
		c.flushLocked()
		c.closeConn()
	}
}

// leave runs when the client goroutine ends. An idle server connection is
// handed back by its relay after the reset query (or a Sync); one with a
// statement in flight or a transaction open is closed.
func (c *client) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return // the engine saw it leave
	}
	c.gone = true
	c.out = nil
	s := c.srv
	if s == nil {
		return
	}
	if c.running() || c.txStatus != 'I' || c.unflushed || len(c.q) > 0 && c.eng != nil {
		c.detach(s, false)
		return
	}
	if len(c.q) > 0 {
		// Only attache's own Sync is owed (sent when the relay saw the
		// last answer before serve finished writing): its ReadyForQuery
		// releases s.
		c.startRelayLocked(s)
		return
	}
	if c.eng != nil {
		// An engine client is unpinned and in transaction mode: with
		// nothing owed and the server idle, s is clean (the engine
		// releases it at that ReadyForQuery already; this is a guard).
		c.detach(s, true)
		return
	}
	// Wake the relay: it releases s at the ReadyForQuery, resetting first
	// when needed.
	c.sendInternal(s, &pgproto3.Sync{})
	c.startRelayLocked(s)
}

// applyParams sets the client's tracked parameters on s where they differ
// from what s has, and resets those that a previous client set and this
// one did not.
func (c *client) applyParams(s *server) error {
	if c.pkey == s.akey {
		return nil // the common case: the server had this client or its twin last
	}
	var sql []string
	keys := make([]string, 0, len(c.params))
	for k := range c.params {
		keys = append(keys, k)
	}
	for k := range s.applied {
		if _, ok := c.params[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		want, wanted := c.params[k]
		have, set := s.applied[k]
		switch {
		case !wanted:
			sql = append(sql, "RESET "+k)
		case set && have == want, !set && s.init[k] == want:
		default:
			sql = append(sql, fmt.Sprintf("SET %s = %s", k, quoteLiteral(want)))
		}
	}
	if len(sql) > 0 {
		if err := s.exec(strings.Join(sql, "; ")); err != nil {
			return err
		}
	}
	// Recorded even when nothing was sent (the login had these values):
	// the next client with them then finds them at once.
	clear(s.applied)
	for k, v := range c.params {
		s.applied[k] = v
	}
	s.akey = c.pkey
	return nil
}

// paramsKey puts tracked parameters in one canonical string (sorted
// name=value pairs), so that whether a server connection has a client's
// is one comparison of strings: this runs per transaction.
func paramsKey(params map[string]string) string {
	keys := slices.Sorted(maps.Keys(params))
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params[k])
		b.WriteByte(0)
	}
	return b.String()
}

// fail tells the client why it gets no server connection, and ends it.
func (c *client) fail(err error) {
	var se *ServerError
	switch {
	case errors.Is(err, errWaitTimeout):
		c.fatal("08P01", err.Error())
	case errors.As(err, new(*upstream.SplitBrainError)):
		c.fatal("08004", err.Error()+": no transaction is sent to either until one is left")
	case errors.As(err, &se):
		c.fatal(se.Code, "server login failed: "+se.Message)
	default:
		c.fatal("08006", "could not connect to server: "+err.Error())
	}
}

// fatal sends a FATAL ErrorResponse and closes the client.
func (c *client) fatal(code, msg string) {
	c.mu.Lock()
	c.emit(errorResponse("FATAL", code, msg))
	c.flushLocked()
	c.mu.Unlock()
	c.closeConn()
}

// closeConn closes the client connection: in the engine, once what is
// queued for it is written (as far as the socket takes it).
func (c *client) closeConn() {
	if c.eng != nil {
		c.eng.closeClient()
		return
	}
	c.conn.Close()
}
