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
// A Loop runs handlers, queued functions (Do), a periodic tick and an
// after-batch function, all on its own goroutine, so the state they touch
// needs no locks. It exists on Linux only; elsewhere New fails with
// ErrNoLoop and callers serve by goroutines.
package evloop
