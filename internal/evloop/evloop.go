// Package evloop is the event loop under attache's socket engines
// (internal/tcpproxy, internal/redisproxy, the HTTP/1.1 and PostgreSQL fast
// paths): one goroutine serving many non-blocking sockets over a
// level-triggered epoll set, the way HAProxy, nginx, twemproxy and
// pgbouncer do, instead of a goroutine per socket parked in Go's
// edge-triggered netpoller.
//
// Why: on loopback the cost of a proxy is system calls and wake-ups. A
// goroutine reads until EAGAIN (every message costs a read that fails) and
// parks and wakes once per message; a loop reads a socket once per
// readiness report (a short read means drained; level-triggered epoll
// reports any rest) and one epoll_wait serves every ready socket.
//
// A process has one Group of loops, one per processor, which every engine
// of every protocol shares: an engine joins each loop as a Part (its tick,
// after-batch and end functions, and a Do that refuses once it has left),
// and keeps its sockets as Conns, which read (Fill), write with the rest
// queued (Write, Flush), set their epoll interest (Settle) and connect
// (Connect, Part.Dial); so an engine holds only its protocol's state.
//
// A Loop runs handlers, queued functions (Do), its Parts' ticks and
// after-batch functions, all on its own goroutine, so the state they
// touch needs no locks. An idle loop parks in Go's netpoller; a busy one with a
// thread to spare (Threads) blocks in epoll_wait itself, as a C event loop
// does. It exists on Linux only; elsewhere New fails with ErrNoLoop and
// callers serve by goroutines.
package evloop

import "sync/atomic"

// Threads is how many loops of a process may wait for events on a thread
// of their own at once. Such a loop blocks in epoll_wait itself, as
// pgbouncer and HAProxy do: one system call per wake-up, where a loop
// parked in Go's netpoller costs the runtime's two polls and its own. But
// it keeps a processor of Go's scheduler (a P) while it waits, and the
// scheduler's monitor takes processors back from threads in system calls,
// at a cost on every wait, once none is left idle. So a process shares
// one Threads among all its loops, made for GOMAXPROCS-1: a processor is
// always left for the goroutines, and the other loops park as before.
//
// The nil *Threads has none. Its methods may be called concurrently.
type Threads struct{ free atomic.Int32 }

// NewThreads returns Threads for n loops (none when n <= 0).
func NewThreads(n int) *Threads {
	t := &Threads{}
	t.free.Store(int32(max(n, 0)))
	return t
}

// take reserves a thread for a loop; false when none is free.
func (t *Threads) take() bool {
	if t == nil {
		return false
	}
	for {
		n := t.free.Load()
		if n <= 0 {
			return false
		}
		if t.free.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// give returns a thread that take reserved.
func (t *Threads) give() { t.free.Add(1) }
