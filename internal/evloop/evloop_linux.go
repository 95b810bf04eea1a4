package evloop

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/attache-proxy/attache/internal/rawsys"
)

// Event bits, as epoll reports them.
const (
	In    = unix.EPOLLIN
	Out   = unix.EPOLLOUT
	RdHup = unix.EPOLLRDHUP
	Hup   = unix.EPOLLHUP
	Err   = unix.EPOLLERR
)

// Handler serves the readiness events of one Source, on the loop
// goroutine.
type Handler interface {
	Event(events uint32)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(events uint32)

// Event calls f.
func (f HandlerFunc) Event(events uint32) { f(events) }

// Source is one descriptor of a Loop. Its zero mask means it is not in the
// epoll set (epoll would report hang-ups and errors whatever the mask, and
// a level-triggered hang-up on a socket nobody wants to read would spin).
type Source struct {
	FD   int
	h    Handler
	mask uint32
	gen  int32 // matches the epoll data of events meant for this Source
	l    *Loop
}

// Loop is one goroutine serving descriptors over a level-triggered epoll
// set. It waits for events in one of two ways (run): parked in Go's
// netpoller, its epoll descriptor registered there, so that an idle loop
// holds no thread; or, while events come close together and one of its
// Threads is free, blocked in epoll_wait on its own thread.
//
// Every method but Do and Stop belongs to the loop goroutine (handlers,
// functions passed to Do, the tick and after-batch functions).
type Loop struct {
	epfd    int
	eventfd int
	timerfd int
	threads *Threads

	mu      sync.Mutex
	queue   []func()
	stopped bool
	done    chan struct{}

	// owned by the loop goroutine
	sources  []*Source // by descriptor: an event's lookup is an index, not a hash
	gen      int32
	events   []unix.EpollEvent
	now      int64
	parts    []*Part       // the engines served, in the order they joined
	base     time.Duration // the timerfd's period: the shortest tick of parts
	ending   bool
	onThread bool // waiting in block, not parked
	traffic  bool // the batch being served had more than the tick
	drained  bool // set by the handler being served (Drained)
	widened  bool // a Want in this batch added events to a registered source
}

// New makes a loop; Start starts its goroutine. With any of tick, after
// and end set, the loop serves them as a Part of its own (see Join): tick
// (which may be nil) runs every interval, after after every batch of
// events, and end when the loop stops. The functions may read what their
// owner sets up between New and Start (its reference to the loop):
// starting the goroutine orders those writes before them.
func New(interval time.Duration, tick, after, end func()) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	l := &Loop{epfd: epfd, eventfd: -1, timerfd: -1,
		events: make([]unix.EpollEvent, 256), done: make(chan struct{})}
	fail := func(err error) (*Loop, error) {
		unix.Close(epfd)
		if l.eventfd >= 0 {
			unix.Close(l.eventfd)
		}
		if l.timerfd >= 0 {
			unix.Close(l.timerfd)
		}
		return nil, err
	}
	if l.eventfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return fail(err)
	}
	if l.timerfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		return fail(err)
	}
	for _, fd := range []int{l.eventfd, l.timerfd} {
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return fail(err)
		}
	}
	// For the netpoller (park), which registers a duplicate of it: the
	// flag belongs to the open file, and epoll_wait ignores it.
	if err := unix.SetNonblock(epfd, true); err != nil {
		return fail(err)
	}
	if tick != nil || after != nil || end != nil {
		if tick == nil {
			interval = 0
		}
		l.join(&Part{l: l, tick: tick, every: interval, after: after, end: end, done: make(chan struct{})})
	}
	return l, nil
}

// SetThreads lets the loop wait on a thread of its own while one of t is
// free; call it before Start. Without, it always parks.
func (l *Loop) SetThreads(t *Threads) { l.threads = t }

// Start starts the loop goroutine; once.
func (l *Loop) Start() { go l.run() }

// Now is the time the current batch of events was read, in Unix
// nanoseconds.
func (l *Loop) Now() int64 { return l.now }

// Done is closed when the loop has ended.
func (l *Loop) Done() <-chan struct{} { return l.done }

// Do queues f to run on the loop goroutine after the current batch; false
// (f dropped) once the loop has stopped. Safe from any goroutine.
func (l *Loop) Do(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.queue = append(l.queue, f)
	one := [8]byte{1}
	rawsys.Write(l.eventfd, one[:])
	return true
}

// Stop makes the loop run its end function and end, after the current
// batch. Safe from any goroutine; idempotent.
func (l *Loop) Stop() { l.Do(func() { l.ending = true }) }

// Add makes fd a Source of the loop, served by h, not yet in the epoll
// set (see Want).
func (l *Loop) Add(fd int, h Handler) *Source {
	s := &Source{}
	l.add(s, fd, h)
	return s
}

// add makes s, fresh or released, fd's Source.
func (l *Loop) add(s *Source, fd int, h Handler) {
	l.gen++
	*s = Source{FD: fd, h: h, gen: l.gen, l: l}
	if fd >= len(l.sources) {
		l.sources = append(l.sources, make([]*Source, fd+1-len(l.sources)+64)...)
	}
	l.sources[fd] = s
}

// Want sets the events s is to be told of: 0 takes it out of the epoll set.
func (s *Source) Want(mask uint32) error {
	if mask == s.mask || s.FD < 0 {
		return nil
	}
	op := unix.EPOLL_CTL_MOD
	switch {
	case mask == 0:
		op = unix.EPOLL_CTL_DEL
	case s.mask == 0:
		op = unix.EPOLL_CTL_ADD
	case mask&^s.mask != 0:
		// epoll_ctl does not wake the netpoller for a descriptor still
		// on the ready list from the last wait (see run).
		s.l.widened = true
	}
	s.mask = mask
	return rawsys.EpollCtl(s.l.epfd, op, s.FD, &unix.EpollEvent{Events: mask, Fd: int32(s.FD), Pad: s.gen})
}

// Handle makes h serve s's events from now on (a descriptor that stays
// in the set while it changes hands).
func (s *Source) Handle(h Handler) { s.h = h }

// Mask is the events s is registered for.
func (s *Source) Mask() uint32 { return s.mask }

// Close closes s's descriptor (which takes it out of the epoll set). With
// reset, the socket is closed with an RST rather than a FIN.
func (s *Source) Close(reset bool) {
	if s.FD < 0 {
		return
	}
	if reset {
		unix.SetsockoptLinger(s.FD, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	s.Release()
	unix.Close(s.FD)
	s.FD = -1
}

// Release takes s out of the loop and its epoll set, leaving the
// descriptor open for its caller (to hand back to Go, see NetConn).
func (s *Source) Release() {
	if s.FD < 0 {
		return
	}
	if s.mask != 0 {
		rawsys.EpollCtl(s.l.epfd, unix.EPOLL_CTL_DEL, s.FD, nil)
		s.mask = 0
	}
	if s.l.sources[s.FD] == s {
		s.l.sources[s.FD] = nil
	}
}

func (l *Loop) source(fd int) *Source {
	if fd < 0 || fd >= len(l.sources) {
		return nil
	}
	return l.sources[fd]
}

// How a loop waits (run):
//   - blockFor: how long a loop on its own thread waits for the next event
//     before it gives the thread back and parks.
//   - yieldEvery: how often a loop on its own thread that is never idle
//     for blockFor goes through the scheduler (runtime.Gosched): the
//     scheduler's monitor preempts a goroutine that has not been through
//     it for 10 ms, and takes the processor of one in a system call then,
//     needed or not. A yield costs a wake-up of an idle thread (Gosched's
//     wakep), so not more often than that.
const (
	blockFor   = 5 * time.Millisecond
	yieldEvery = 9 * time.Millisecond
)

// run serves until the loop ends, waiting in one of two ways:
//
//   - Parked (park): the loop's epoll descriptor is registered in Go's
//     netpoller, and with nothing ready the goroutine parks there. An idle
//     loop costs nothing, but each wake-up costs the runtime's polls (a
//     non-blocking one, the blocking one) besides the loop's own.
//   - On its own thread (block): the loop blocks in epoll_wait itself, one
//     system call per wake-up. The epoll descriptor is then out of the
//     netpoller, or every event would also wake the thread polling it. The
//     goroutine keeps its processor while it waits, unless the scheduler's
//     monitor hands it to goroutines that have none, and it takes it back
//     at once when it wakes if nobody did; which is why the loop needs a
//     free one of its Threads for this (see Threads).
//
// A parked loop goes to its own thread when it wakes within blockFor of
// parking and a thread is free; it parks again after blockFor without an
// event.
func (l *Loop) run() {
	defer close(l.done)
	for !l.ending {
		if !l.park() {
			continue
		}
		l.block()
		l.threads.give()
	}
	l.teardown()
}

// park serves events while parked in Go's netpoller, until the loop ends
// or, true, it took a thread to go on with (see run).
func (l *Loop) park() (threaded bool) {
	// One registration, and one Read, for the whole stay: a readiness
	// report that reaches the netpoller while a batch is served is kept
	// for the next wait, where a new Read would clear it.
	fd, err := Dup(l.epfd)
	if err != nil {
		// Out of descriptors: wait here, through the scheduler (which
		// lets the processor go), and try again.
		if n, _ := unix.EpollWait(l.epfd, l.events, 10); n > 0 {
			l.serve(n)
		}
		return false
	}
	f := os.NewFile(uintptr(fd), "attache-epoll")
	defer f.Close() // which takes it out of the netpoller
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var parked int64 // when the goroutine last parked
	rc.Read(func(uintptr) bool {
		for {
			n := rawsys.EpollWait(l.epfd, l.events)
			if n == 0 {
				parked = time.Now().UnixNano()
				return false // park on the netpoller
			}
			woke := parked
			settled := l.serve(n)
			if l.ending {
				return true
			}
			if l.traffic && woke != 0 && l.now-woke < int64(blockFor) && l.threads.take() {
				threaded = true
				return true
			}
			if settled && n < len(l.events) {
				// Nothing of the batch is left for level-triggered epoll
				// to report again, and no interest was widened (epoll_ctl
				// does not wake the netpoller for a descriptor still on
				// the ready list from this wait, where a level-triggered
				// report leaves it): whatever is ready next is new, and
				// its wake-up reaches the netpoller, so the wait that
				// would find nothing is skipped.
				parked = l.now
				return false
			}
		}
	})
	return threaded
}

// block serves events waiting in epoll_wait on the goroutine's thread,
// until none comes for blockFor or the loop ends.
func (l *Loop) block() {
	l.onThread = true
	defer func() { l.onThread = false }()
	yielded := time.Now().UnixNano()
	busy := yielded // when a batch last had more than the tick
	for {
		// Through the scheduler: while the loop waits, its processor can
		// be handed to goroutines that have none (see Threads).
		n, err := unix.EpollWait(l.epfd, l.events, int(blockFor.Milliseconds()))
		switch {
		case err != nil: // EINTR: a signal, such as the scheduler's preemption
		case n == 0:
			return
		default:
			l.serve(n)
			if l.ending {
				return
			}
			if l.traffic {
				busy = l.now
			} else if l.now-busy >= int64(blockFor) {
				return // a tick shorter than blockFor is not traffic
			}
			if l.now-yielded > int64(yieldEvery) {
				yielded = l.now
				runtime.Gosched()
			}
		}
	}
}

// serve serves a batch of n events, then the tick, the queued functions
// and the after function; true when every handler of the batch reported
// its descriptor drained (Drained) and no Want widened an interest.
func (l *Loop) serve(n int) (settled bool) {
	l.now = time.Now().UnixNano()
	settled = true
	l.widened = false
	commands, tick := false, false
	l.traffic = false
	for i := 0; i < n; i++ {
		ev := l.events[i]
		switch int(ev.Fd) {
		case l.eventfd:
			commands, l.traffic = true, true
		case l.timerfd:
			tick = true
		default:
			// The generation check drops an event for a descriptor
			// closed earlier in the batch whose number was reused.
			l.traffic = true
			if s := l.source(int(ev.Fd)); s != nil && s.gen == ev.Pad && s.mask != 0 {
				l.drained = false
				s.h.Event(ev.Events)
				settled = settled && l.drained
			}
		}
	}
	if tick {
		var b [8]byte
		rawsys.Read(l.timerfd, b[:])
		l.ticks()
	}
	if commands {
		var b [8]byte
		rawsys.Read(l.eventfd, b[:])
		l.mu.Lock()
		q := l.queue
		l.queue = nil
		l.mu.Unlock()
		for _, f := range q {
			f()
		}
	}
	for _, p := range l.parts {
		if p.after != nil {
			p.after()
		}
	}
	return settled && !l.widened
}

// Drained tells the loop, from a handler, that the event it serves has
// left nothing that level-triggered epoll would report again: it read its
// descriptor until a short read or EAGAIN, the event carried no hang-up or
// error, and what it still wants (Out after a send that got EAGAIN) is not
// ready now. When every handler of a batch says so, the loop parks without
// the epoll_wait that would find nothing (one system call per wake-up).
// A handler that does not call it costs that wait, nothing else.
func (l *Loop) Drained() { l.drained = true }

// teardown stops Do, runs end and closes the loop's descriptors.
func (l *Loop) teardown() {
	l.mu.Lock()
	l.stopped = true
	q := l.queue
	l.queue = nil
	unix.Close(l.eventfd)
	l.mu.Unlock()
	for _, f := range q {
		f()
	}
	for _, p := range l.parts {
		p.mu.Lock()
		p.left = true
		p.mu.Unlock()
		if p.end != nil {
			p.end()
		}
		close(p.done)
	}
	l.parts = nil
	unix.Close(l.timerfd)
	unix.Close(l.epfd)
}

// ErrNoLoop is returned by New where there is no epoll; never on Linux.
var ErrNoLoop = errors.New("no epoll on this platform")
