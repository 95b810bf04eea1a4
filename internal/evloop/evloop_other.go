//go:build !linux

package evloop

import (
	"errors"
	"time"
)

// Loop is not available on this platform.
type Loop struct{}

// New fails: there is no epoll here.
func New(interval time.Duration, tick, after, end func()) (*Loop, error) { return nil, ErrNoLoop }

// ErrNoLoop is returned by New where there is no epoll.
var ErrNoLoop = errors.New("no epoll on this platform")

// Stop and Done: there is no loop to stop.
func (l *Loop) Stop()                 {}
func (l *Loop) Done() <-chan struct{} { return nil }

func startLoops(int, *Threads) []*Loop { return nil }
