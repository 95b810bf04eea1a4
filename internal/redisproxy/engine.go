package redisproxy

import (
	"sync"
	"sync/atomic"
)

// engines are a pool's epoll engines, joined with the first client: one
// on each of the process's event loops (Options.Loops), each with its own
// server_connections to every shard.
type engines struct {
	once sync.Once
	all  []*engine
	// ready is all once made, for readers that must not start the
	// engines (Pool.retire)
	ready atomic.Pointer[[]*engine]
}

// started returns the engines made so far (none before the first client).
func (es *engines) started() []*engine {
	if all := es.ready.Load(); all != nil {
		return *all
	}
	return nil
}

// engine returns the engine for client session n; nil where there is none
// (no Options.Loops, or not Linux: the portable path; or its shards are
// reached through TLS, which the engine's raw sockets cannot speak).
func (p *Pool) engine(n int) *engine {
	if p.opts.Loops == nil || p.up.OriginatesTLS() {
		return nil
	}
	p.engines.once.Do(func() {
		for _, l := range p.opts.Loops.Loops() {
			p.engines.all = append(p.engines.all, newEngine(p, l))
		}
		all := p.engines.all
		p.engines.ready.Store(&all)
	})
	if len(p.engines.all) == 0 {
		return nil
	}
	return p.engines.all[n%len(p.engines.all)]
}

// moveEngineClients has p's engines move their clients to p's successor
// at command boundaries; no engine starts after it.
func (p *Pool) moveEngineClients() {
	p.engines.once.Do(func() {}) // orders the reads of all after its writes
	for _, e := range p.engines.all {
		e.moveClients()
	}
}

// fifo is a queue that reuses its slice once drained.
type fifo[T any] struct {
	buf  []T
	head int
}

func (q *fifo[T]) len() int  { return len(q.buf) - q.head }
func (q *fifo[T]) push(v T)  { q.buf = append(q.buf, v) }
func (q *fifo[T]) front() *T { return &q.buf[q.head] }

func (q *fifo[T]) pop() T {
	v := q.buf[q.head]
	var zero T
	q.buf[q.head] = zero
	q.head++
	switch {
	case q.head == len(q.buf):
		q.buf, q.head = q.buf[:0], 0
	case q.head >= 64 && 2*q.head >= len(q.buf):
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	return v
}
