package evloop

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// on runs f on l and waits for it.
func on(t *testing.T, l *Loop, f func()) {
	t.Helper()
	done := make(chan struct{})
	if !l.Do(func() { f(); close(done) }) {
		t.Fatal("loop stopped")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Do did not run in 5s")
	}
}

func TestGroupLazyAndShared(t *testing.T) {
	g := NewGroup(3)
	if g.Started() {
		t.Fatal("a new Group has started its loops, want none before Loops")
	}
	ls := g.Loops()
	if len(ls) != 3 || !g.Started() {
		t.Fatalf("Loops: %d loops (started %v), want 3", len(ls), g.Started())
	}
	if again := g.Loops(); &again[0] != &ls[0] {
		t.Fatal("a second Loops started other loops")
	}
	for _, l := range ls {
		if l.threads != g.threads {
			t.Fatal("a loop without the group's threads")
		}
	}
	ended := make(chan struct{})
	p := ls[0].Join(0, nil, nil, func() { close(ended) })
	g.Close()
	select {
	case <-ended:
	default:
		t.Fatal("Close returned before the end of a Part on its loops")
	}
	<-p.Done()
	if p.Do(func() {}) {
		t.Fatal("Part.Do after the group closed: true, want false")
	}
	if len(g.Loops()) != 0 {
		t.Fatal("a closed group has loops")
	}
	var nilGroup *Group
	if nilGroup.Loops() != nil {
		t.Fatal("the nil Group has loops")
	}
	nilGroup.Close()
}

// Two Parts on one loop: each has its tick at its own interval, its after
// function every batch, and leaving runs its end after what its Do queued,
// and stops its tick while the other goes on.
func TestPartsShareLoop(t *testing.T) {
	l, err := New(0, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	defer func() { l.Stop(); <-l.Done() }()
	var fastTicks, slowTicks, afters atomic.Int64
	fast := l.Join(2*time.Millisecond, func() { fastTicks.Add(1) }, func() { afters.Add(1) }, nil)
	var order []string
	slowEnded := make(chan struct{})
	slow := l.Join(40*time.Millisecond, func() { slowTicks.Add(1) }, nil, func() {
		order = append(order, "end")
		close(slowEnded)
	})
	deadline := time.Now().Add(10 * time.Second)
	for slowTicks.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("slow ticks: %d in 10s", slowTicks.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The slow tick runs at its own pace, not the fast one's.
	if f, s := fastTicks.Load(), slowTicks.Load(); s*4 > f {
		t.Fatalf("%d slow ticks for %d fast ones, want the slow tick every 20 fast ones or so", s, f)
	}
	if afters.Load() == 0 {
		t.Fatal("after never ran")
	}
	slow.Do(func() { order = append(order, "do") })
	slow.Leave()
	<-slowEnded
	<-slow.Done()
	if !bytes.Equal([]byte(order[0]+order[1]), []byte("doend")) {
		t.Fatalf("order %v, want what Do queued before end", order)
	}
	if slow.Do(func() {}) {
		t.Fatal("Do after Leave: true, want false")
	}
	slow.Leave() // idempotent
	n := slowTicks.Load()
	f := fastTicks.Load()
	for fastTicks.Load() < f+30 {
		if time.Now().After(deadline) {
			t.Fatal("the fast tick stopped when the slow part left")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if slowTicks.Load() != n {
		t.Fatal("the tick of a Part that left still runs")
	}
	// SetTick(0) stops a tick; the loop's timer stops with the last one.
	on(t, l, func() { fast.SetTick(0) })
	f = fastTicks.Load()
	time.Sleep(30 * time.Millisecond)
	if fastTicks.Load() != f {
		t.Fatal("a tick set to 0 still runs")
	}
	on(t, l, func() {
		if l.base != 0 {
			t.Errorf("timer period %v with no tick, want 0", l.base)
		}
	})
}

func TestJoinStoppedLoop(t *testing.T) {
	l, err := New(0, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	l.Stop()
	<-l.Done()
	p := l.Join(0, nil, nil, func() { t.Error("end of a Part that never joined ran") })
	<-p.Done()
	if p.Do(func() {}) {
		t.Fatal("Do on a Part of a stopped loop: true")
	}
}

// conns returns a loop and a Conn on it of one end of a socket pair, the
// other end as a net.Conn.
func connPair(t *testing.T, l *Loop, h Handler) (*Conn, net.Conn) {
	t.Helper()
	app, srv := pair(t)
	t.Cleanup(func() { app.Close() })
	fd, err := Adopt(srv)
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{}
	on(t, l, func() { l.AddConn(c, fd, h) })
	return c, app
}

func TestConnWriteQueuesAndFlushes(t *testing.T) {
	l := drainLoop(t)
	outs := make(chan struct{}, 100)
	var c *Conn
	c, app := connPair(t, l, HandlerFunc(func(ev uint32) {
		if ev&Out != 0 {
			if err := c.Flush(); err != nil {
				t.Error(err)
			}
			c.Settle(false)
			select {
			case outs <- struct{}{}:
			default:
			}
		}
	}))
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB, more than the socket takes
	on(t, l, func() {
		c.Out = append(c.Out, "head:"...)
		if err := c.Write(big); err != nil {
			t.Fatal(err)
		}
		if !c.Pending() || !c.blocked {
			t.Error("a write larger than the socket: nothing queued")
		}
		// Blocked: a write only queues.
		if err := c.Write([]byte(":tail")); err != nil {
			t.Fatal(err)
		}
		if err := c.Settle(true); err != nil {
			t.Fatal(err)
		}
		if c.Mask() != In|RdHup|Out {
			t.Errorf("mask %#x with output queued and reading, want In|RdHup|Out", c.Mask())
		}
	})
	want := append(append([]byte("head:"), big...), ":tail"...)
	got := make([]byte, len(want))
	app.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(app, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the bytes read differ from those written")
	}
	<-outs
	on(t, l, func() {
		if c.Pending() || c.Mask() != 0 {
			t.Errorf("after the flush: pending %v, mask %#x; want nothing", c.Pending(), c.Mask())
		}
		if cap(c.Out) > maxKeep {
			t.Errorf("kept an output buffer of %d bytes", cap(c.Out))
		}
	})
	// A small write goes at once, nothing queued, and allocates nothing.
	on(t, l, func() {
		msg := []byte("x")
		if a := testing.AllocsPerRun(100, func() { c.Write(msg) }); a != 0 {
			t.Errorf("Write allocates %v times, want 0", a)
		}
		if c.Pending() {
			t.Error("a small write was queued")
		}
	})
}

func TestConnFill(t *testing.T) {
	l := drainLoop(t)
	got := make(chan string, 10)
	var c *Conn
	buf := make([]byte, 64)
	c, app := connPair(t, l, HandlerFunc(func(ev uint32) {
		n, err := c.Fill(buf)
		switch {
		case err == unix.EAGAIN:
			got <- "again"
		case err != nil:
			got <- err.Error()
			c.Close(false)
		default:
			got <- string(buf[:n])
		}
	}))
	on(t, l, func() {
		if _, err := c.Fill(buf); err != unix.EAGAIN {
			t.Errorf("Fill of an empty socket: %v, want EAGAIN", err)
		}
		c.Settle(true)
	})
	app.Write([]byte("hello"))
	if s := <-got; s != "hello" {
		t.Fatalf("got %q, want hello", s)
	}
	app.Close()
	for s := range got {
		if s == io.EOF.Error() {
			break
		}
		if s != "again" {
			t.Fatalf("got %q, want EOF", s)
		}
	}
}

func TestConnConnect(t *testing.T) {
	l := drainLoop(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	results := make(chan error, 2)
	c := &Conn{}
	h := HandlerFunc(func(ev uint32) {
		results <- c.ConnectResult()
		c.Close(false)
	})
	on(t, l, func() {
		connected, err := c.Connect(l, addr, h)
		if err != nil {
			t.Fatal(err)
		}
		if connected {
			results <- nil
			c.Close(false)
			return
		}
		c.Want(Out)
	})
	if err := <-results; err != nil {
		t.Fatalf("connect to a listener: %v", err)
	}
	ln.Close() // the port refuses now
	on(t, l, func() {
		connected, err := c.Connect(l, addr, h)
		switch {
		case err != nil:
			results <- err
		case connected:
			t.Error("connected to a closed port")
		default:
			c.Want(Out)
		}
	})
	if err := <-results; !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
	}
}

func TestPartDial(t *testing.T) {
	l := drainLoop(t)
	p := l.Join(0, nil, nil, nil)
	app, srv := pair(t)
	defer app.Close()
	got := make(chan int, 1)
	p.Dial(func() (net.Conn, error) { return srv, nil }, func(fd int, err error) {
		if err != nil {
			t.Error(err)
		}
		got <- fd
	})
	fd := <-got
	if _, err := unix.Write(fd, []byte("x")); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	readByte(t, app, 'x')
	// The dial's error reaches done.
	p.Dial(func() (net.Conn, error) { return nil, io.ErrUnexpectedEOF }, func(fd int, err error) {
		if fd >= 0 || err != io.ErrUnexpectedEOF {
			t.Errorf("done(%d, %v), want -1, the dial's error", fd, err)
		}
		got <- fd
	})
	<-got
}

type elem struct {
	Member
	n int
}

func TestSet(t *testing.T) {
	var s Set[*elem]
	es := make([]*elem, 5)
	for i := range es {
		es[i] = &elem{n: i}
		s.Add(es[i])
	}
	s.Add(es[0]) // in already
	if s.Len() != 5 {
		t.Fatalf("len %d, want 5", s.Len())
	}
	s.Remove(es[1])
	s.Remove(es[1])
	if es[1].In() || s.Len() != 4 {
		t.Fatal("Remove left it in")
	}
	// Removing while ranging skips what was removed; adding is seen next time.
	var seen []int
	for e := range s.All() {
		seen = append(seen, e.n)
		if e.n == 0 {
			s.Remove(es[2])
			s.Remove(es[3])
			s.Add(es[1])
		}
	}
	if len(seen) != 2 {
		t.Fatalf("ranged over %v, want 0 and 4 (2 and 3 removed meanwhile)", seen)
	}
	var all []int
	for e := range s.All() {
		all = append(all, e.n)
	}
	if len(all) != 3 || s.Len() != 3 {
		t.Fatalf("then %v, want 0, 4 and 1", all)
	}
}
