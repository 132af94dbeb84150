package spool

import "time"

// workerIdle is how long a delivery goroutine waits for the next delivery
// before it exits.
const workerIdle = 2 * time.Second

// work is one delivery for a worker: see Spool.deliver.
type work struct {
	key   []byte
	st    state
	route Route
	msg   *message // nil to read it
}

// startDelivery hands w to an idle worker, or starts one. Workers live on
// between deliveries: a new goroutine for each grew its stack through the
// HTTP client's calls every time, a twentieth of the gateway's CPU while
// draining a backlog. Each delivery holds a slot, so the workers busy are
// bounded by Options.Workers, and the idle ones by the most that were busy.
func (s *Spool) startDelivery(w work) {
	select {
	case s.idle <- w:
	default:
		go s.worker(w)
	}
}

// worker delivers w, then whatever it is handed, until it has been idle for
// workerIdle or the spool closes.
func (s *Spool) worker(w work) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		s.deliver(w.key, w.st, w.route, w.msg)
		w = work{} // not held while idle
		idle.Reset(workerIdle)
		select {
		case w = <-s.idle:
		case <-idle.C:
			return
		case <-s.workCtx.Done():
			return
		}
	}
}
