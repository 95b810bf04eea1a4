package evloop

import (
	"runtime"
	"sync"
)

// Group is the event loops of a process: one per processor Go may use
// (GOMAXPROCS), started when an engine first asks for them and sharing
// one Threads (see Threads), on which every engine of every protocol
// serves its sockets as a Part (Loop.Join). One Group per process keeps
// the loops, and the threads they may hold, at one per processor however
// many listeners and clusters there are.
//
// The nil *Group has no loops: its engines serve by goroutines.
type Group struct {
	n       int
	threads *Threads
	once    sync.Once
	mu      sync.Mutex
	loops   []*Loop // under mu, set once by the first Loops
	closed  bool
}

// NewGroup returns a Group of n loops (GOMAXPROCS when n <= 0), not yet
// started.
func NewGroup(n int) *Group {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return &Group{n: n, threads: NewThreads(n - 1)}
}

// Loops returns the group's loops, starting them on the first call; none
// where there is no epoll, on a nil Group, or once it is closed.
func (g *Group) Loops() []*Loop {
	if g == nil {
		return nil
	}
	g.once.Do(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.closed {
			g.loops = startLoops(g.n, g.threads)
		}
	})
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	return g.loops
}

// Started reports whether the loops have been started.
func (g *Group) Started() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.loops) > 0
}

// Close stops the loops, which end every Part left on them, and waits
// for them to end. Safe to call more than once.
func (g *Group) Close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.closed = true
	ls := g.loops
	g.loops = nil
	g.mu.Unlock()
	for _, l := range ls {
		l.Stop()
	}
	for _, l := range ls {
		<-l.Done()
	}
}
