package evloop

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Part is one engine's share of a Loop that several engines (of one
// protocol or of several) use at once: its tick, its after-batch and end
// functions, and a Do that refuses once the engine has left, so that
// nothing of it runs on the loop after its end.
type Part struct {
	l     *Loop
	tick  func()
	every time.Duration // 0: no tick
	due   int64         // when tick runs next (the loop's clock)
	after func()
	end   func()
	done  chan struct{}

	mu   sync.Mutex
	left bool
}

// Join makes an engine a Part of the loop: tick (nil: none) runs every
// interval (see SetTick), after runs after every batch of events (to
// flush what the batch queued) and end runs once, last, when the engine
// leaves or the loop stops (to close what is left of it); any may be nil.
// They run on the loop goroutine, from the first batch after Join. Safe
// from any goroutine; on a stopped loop the Part has left at once.
func (l *Loop) Join(interval time.Duration, tick, after, end func()) *Part {
	if tick == nil {
		interval = 0
	}
	p := &Part{l: l, tick: tick, every: interval, after: after, end: end, done: make(chan struct{})}
	if !l.Do(func() { l.join(p) }) {
		p.left = true
		close(p.done)
	}
	return p
}

func (l *Loop) join(p *Part) {
	l.parts = append(l.parts, p)
	if p.every > 0 {
		p.SetTick(p.every)
	}
}

// Loop is the loop p is part of.
func (p *Part) Loop() *Loop { return p.l }

// Do queues f to run on the loop goroutine after the current batch, as
// Loop.Do does; false (f dropped) once p has left or the loop stopped.
// Safe from any goroutine.
func (p *Part) Do(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.left && p.l.Do(f)
}

// Leave takes p out of its loop: what was queued by its Do runs, then its
// end function, and Done is closed. Safe from any goroutine; idempotent.
func (p *Part) Leave() {
	p.mu.Lock()
	if p.left {
		p.mu.Unlock()
		return
	}
	p.left = true
	p.mu.Unlock()
	// A stopped loop has run the end of every Part it had.
	p.l.Do(func() { p.l.leave(p) })
}

func (l *Loop) leave(p *Part) {
	for i, q := range l.parts {
		if q == p {
			l.parts = append(l.parts[:i], l.parts[i+1:]...)
			break
		}
	}
	if p.every > 0 {
		p.every = 0
		l.retime()
	}
	if p.end != nil {
		p.end()
	}
	close(p.done)
}

// Done is closed once p's end function has run.
func (p *Part) Done() <-chan struct{} { return p.done }

// SetTick makes p's tick function run every d from now on; 0 stops it.
// It belongs to the loop goroutine.
//
// The loop has one timer, whose period is the shortest tick of its
// Parts: a longer tick runs at the first period at most half a period
// before it is due, so within a period of its time, and a loop with one
// Part ticks exactly as that Part asks.
func (p *Part) SetTick(d time.Duration) {
	if p.tick == nil {
		return
	}
	now := p.l.now
	if now == 0 {
		now = time.Now().UnixNano()
	}
	p.every, p.due = d, now+int64(d)
	p.l.retime()
}

// retime sets the timer's period from the Parts' ticks; the period
// restarts from now only when it changes.
func (l *Loop) retime() {
	var base time.Duration
	for _, p := range l.parts {
		if p.every > 0 && (base == 0 || p.every < base) {
			base = p.every
		}
	}
	if base == l.base {
		return
	}
	l.base = base
	iv := unix.NsecToTimespec(int64(base))
	unix.TimerfdSettime(l.timerfd, 0, &unix.ItimerSpec{Interval: iv, Value: iv}, nil)
}

// ticks runs the ticks that are due, at an expiry of the timer.
func (l *Loop) ticks() {
	slack := int64(l.base) / 2
	for i := 0; i < len(l.parts); i++ { // a tick may not add or remove a Part, but be safe
		p := l.parts[i]
		if p.every > 0 && l.now >= p.due-slack {
			p.due = l.now + int64(p.every)
			p.tick()
		}
	}
}

// startLoops makes and starts n loops sharing threads.
func startLoops(n int, threads *Threads) []*Loop {
	var ls []*Loop
	for range n {
		l, err := New(0, nil, nil, nil)
		if err != nil {
			break
		}
		l.SetThreads(threads)
		l.Start()
		ls = append(ls, l)
	}
	return ls
}
