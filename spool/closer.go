package spool

import "sync"

// closer stops one background loop: signal asks it to stop, and done is
// closed once it has returned. The loop defers exit.
type closer struct {
	stop     chan struct{}
	finished chan struct{}
	once     sync.Once
}

func newCloser() *closer {
	return &closer{stop: make(chan struct{}), finished: make(chan struct{})}
}

// signal asks the loop to stop; calls after the first do nothing.
func (c *closer) signal() { c.once.Do(func() { close(c.stop) }) }

// stopping is closed once the loop is asked to stop.
func (c *closer) stopping() <-chan struct{} { return c.stop }

// done is closed once the loop has returned.
func (c *closer) done() <-chan struct{} { return c.finished }

// exit tells those who wait that the loop has returned.
func (c *closer) exit() { close(c.finished) }

// signalAndWait asks the loop to stop and waits until it has.
func (c *closer) signalAndWait() {
	c.signal()
	<-c.finished
}

// closers are the spool's background loops, each stopped on its own: the
// dispatcher and the maintenance loop when deliveries stop, the committer,
// which every other writes through, last.
type closers struct {
	dispatch    *closer
	maintenance *closer
	commit      *closer
}

func newClosers() closers {
	return closers{dispatch: newCloser(), maintenance: newCloser(), commit: newCloser()}
}
