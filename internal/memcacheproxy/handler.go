package memcacheproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/attache-proxy/attache/internal/upstream"
)

// Handler serves memcached text-protocol clients over a Pool. Commands
// are answered in order; a multi-key retrieval is split by shard, sent to
// every shard at once and answered as one reply in the client's key
// order. It implements listener.Handler.
type Handler struct {
	Pool *Pool
	// MaxValue bounds a stored value (memcached's item_size_max).
	MaxValue    int
	IdleTimeout time.Duration
}

// ServeConn serves c until it quits, goes idle or sends a line too long to
// continue after.
func (h *Handler) ServeConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4<<10)
	w := bufio.NewWriterSize(c, 4<<10)
	var buf []byte
	for {
		if h.IdleTimeout > 0 {
			c.SetReadDeadline(time.Now().Add(h.IdleTimeout))
		}
		line, b, err := readLine(r, buf)
		buf = b
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				w.WriteString("CLIENT_ERROR line too long\r\n")
				w.Flush()
			}
			return
		}
		if !h.serve(ctx, line, r, w) {
			w.Flush()
			return
		}
		if r.Buffered() == 0 && w.Flush() != nil {
			return
		}
	}
}

// serve answers one command line, reading its data block from r. It
// reports whether the connection goes on.
func (h *Handler) serve(ctx context.Context, line []byte, r *bufio.Reader, w *bufio.Writer) bool {
	rq, err := parse(line, h.MaxValue)
	var big tooLarge
	switch {
	case errors.As(err, &big):
		// memcached drops the block and says so; the stream goes on.
		if _, err := r.Discard(int(big) + 2); err != nil {
			return false
		}
		if !rq.noreply {
			w.WriteString("SERVER_ERROR object too large for cache\r\n")
		}
		return true
	case errors.Is(err, errUnknown):
		w.WriteString("ERROR\r\n")
		return true
	case errors.Is(err, errUnsupported):
		w.WriteString("SERVER_ERROR command not supported by the proxy\r\n")
		return true
	case err != nil:
		w.WriteString("CLIENT_ERROR " + err.Error() + "\r\n")
		return true
	}
	switch rq.kind {
	case quit:
		return false
	case version:
		w.WriteString("VERSION attache\r\n")
		return true
	case retrieval:
		w.Write(h.retrieve(ctx, rq))
		return true
	}
	var data []byte
	if rq.kind == storage {
		data = make([]byte, rq.size+2)
		if _, err := io.ReadFull(r, data); err != nil {
			return false
		}
		if !bytes.HasSuffix(data, []byte("\r\n")) {
			// memcached: the block did not end where its length said;
			// what follows is read as commands.
			w.WriteString("CLIENT_ERROR bad data chunk\r\n")
			return true
		}
	}
	reply := h.one(ctx, rq, data)
	if !rq.noreply {
		w.Write(reply)
	}
	return true
}

// one sends a single-key command (with its data block) to the key's shard
// and returns the reply line. A command that may have reached the server
// is never sent twice: storage and arithmetic are not idempotent.
func (h *Handler) one(ctx context.Context, rq *request, data []byte) []byte {
	p := h.Pool
	rg, err := p.current(time.Now())
	if err != nil {
		return serverError(err)
	}
	e := rg.pick(rq.keys[0], p)
	if e == nil {
		return serverError(errNoShard)
	}
	start := time.Now()
	s := p.shard(e)
	c, err := p.get(ctx, s, e)
	if err != nil {
		h.observe(e, false, start)
		return serverError(err)
	}
	p.deadline(c)
	c.w.Write(rq.line(rq.keys))
	c.w.Write(data)
	if err = c.w.Flush(); err == nil {
		var reply []byte
		if reply, err = readReplyLine(c.r); err == nil {
			e.RecordSuccess()
			p.put(s, c)
			h.observe(e, true, start)
			return reply
		}
	}
	c.close()
	s.drain() // the server closed one: the others idle are likely closed too
	p.failed(e, err)
	h.observe(e, false, start)
	return serverError(err)
}

// part is the keys of a retrieval that go to one shard.
type part struct {
	e      *upstream.Endpoint
	s      *shard
	keys   [][]byte
	c      *serverConn
	values map[string][][]byte // key -> its VALUE blocks, in order
	err    error
}

// retrieve answers a retrieval: one request per shard holding some of the
// keys, all sent before any reply is read, then VALUE blocks in the
// client's key order and END. When any shard fails the reply is its
// SERVER_ERROR, as nutcracker answers.
func (h *Handler) retrieve(ctx context.Context, rq *request) []byte {
	p := h.Pool
	start := time.Now()
	rg, err := p.current(start)
	if err != nil {
		return serverError(err)
	}
	var parts []*part
	byEP := map[*upstream.Endpoint]*part{}
	of := make([]*part, len(rq.keys)) // each key's part (random picks differ each time)
	for i, k := range rq.keys {
		e := rg.pick(k, p)
		if e == nil {
			return serverError(errNoShard)
		}
		pt := byEP[e]
		if pt == nil {
			pt = &part{e: e, s: p.shard(e)}
			byEP[e] = pt
			parts = append(parts, pt)
		}
		pt.keys = append(pt.keys, k)
		of[i] = pt
	}
	for _, pt := range parts {
		if pt.c, pt.err = p.get(ctx, pt.s, pt.e); pt.err != nil {
			continue
		}
		p.deadline(pt.c)
		pt.c.w.Write(rq.line(pt.keys))
		pt.err = pt.c.w.Flush()
	}
	var failed error
	for _, pt := range parts {
		if pt.err == nil {
			pt.values, pt.err = readValues(pt.c.r, h.MaxValue)
		}
		if pt.err != nil && pt.c != nil && pt.c.reused && !isReply(pt.err) {
			// An idle connection the server had closed (it restarted):
			// a read is sent once more, on a new connection.
			pt.c.close()
			pt.s.drain()
			pt.c, pt.values, pt.err = nil, nil, nil
			if pt.c, pt.err = p.dial(ctx, pt.e); pt.err == nil {
				p.deadline(pt.c)
				pt.c.w.Write(rq.line(pt.keys))
				if pt.err = pt.c.w.Flush(); pt.err == nil {
					pt.values, pt.err = readValues(pt.c.r, h.MaxValue)
				}
			}
		}
		switch {
		case pt.err == nil || isReply(pt.err):
			// A server's own error line leaves the connection in step.
			pt.e.RecordSuccess()
			p.put(pt.s, pt.c)
			h.observe(pt.e, pt.err == nil, start)
		case pt.c != nil:
			pt.c.close()
			pt.s.drain()
			p.failed(pt.e, pt.err)
			h.observe(pt.e, false, start)
		default:
			h.observe(pt.e, false, start)
		}
		if pt.err != nil && failed == nil {
			failed = pt.err
		}
	}
	if failed != nil {
		var reply replyError
		if errors.As(failed, &reply) {
			return append([]byte(reply), '\r', '\n')
		}
		return serverError(failed)
	}
	var out []byte
	for i, k := range rq.keys {
		pt := of[i]
		if vs := pt.values[string(k)]; len(vs) > 0 {
			out = append(out, vs[0]...)
			pt.values[string(k)] = vs[1:]
		}
	}
	return append(out, "END\r\n"...)
}

func (h *Handler) observe(e *upstream.Endpoint, ok bool, start time.Time) {
	if f := h.Pool.opts.Observe; f != nil {
		f(e.Addr, ok, time.Since(start))
	}
}

// replyError is an error line a server answered (ERROR, CLIENT_ERROR,
// SERVER_ERROR): passed on to the client as it came.
type replyError string

func (e replyError) Error() string { return string(e) }

func isReply(err error) bool {
	var r replyError
	return errors.As(err, &r)
}

// errBadReply is a reply that is not memcached's: the connection is out
// of step and is closed.
var errBadReply = errors.New("bad reply from server")

// readReplyLine reads a one-line reply.
func readReplyLine(r *bufio.Reader) ([]byte, error) {
	line, _, err := readLine(r, nil)
	if err != nil {
		return nil, err
	}
	if len(line) == 0 {
		return nil, errBadReply
	}
	return append(line, '\r', '\n'), nil
}

// readValues reads a retrieval reply: VALUE <key> <flags> <bytes> [<cas>]
// lines, each followed by its block, until END. A value over maxValue is
// refused (the connection is then dropped).
func readValues(r *bufio.Reader, maxValue int) (map[string][][]byte, error) {
	values := map[string][][]byte{}
	var buf []byte
	for {
		line, b, err := readLine(r, buf)
		buf = b
		if err != nil {
			return nil, err
		}
		switch {
		case string(line) == "END":
			return values, nil
		case string(line) == "ERROR", bytes.HasPrefix(line, []byte("SERVER_ERROR")), bytes.HasPrefix(line, []byte("CLIENT_ERROR")):
			return nil, replyError(line)
		case !bytes.HasPrefix(line, []byte("VALUE ")):
			return nil, errBadReply
		}
		f := bytes.Fields(line)
		if len(f) != 4 && len(f) != 5 {
			return nil, errBadReply
		}
		n, err := strconv.Atoi(string(f[3]))
		if err != nil || n < 0 || n > maxValue {
			return nil, errBadReply
		}
		block := make([]byte, 0, len(line)+2+n+2)
		block = append(append(block, line...), '\r', '\n')
		block = block[:len(block)+n+2]
		if _, err := io.ReadFull(r, block[len(line)+2:]); err != nil {
			return nil, err
		}
		if !bytes.HasSuffix(block, []byte("\r\n")) {
			return nil, errBadReply
		}
		values[string(f[1])] = append(values[string(f[1])], block)
	}
}
