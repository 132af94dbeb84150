package main

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// upstream is the trivial upstream both modes forward to: it reads the body,
// answers 200 at once and notes every request and, for the gateway, the
// first arrival time of each X-Webhook-Id.
type upstream struct {
	srv  *http.Server
	addr string

	mu        sync.Mutex
	requests  int64
	badLength int64
	dups      int64
	first     map[string]time.Time
	last      time.Time // latest first arrival of an id
	wantLen   int64
	conns     atomic.Int64 // connections accepted since reset
}

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{addr: ln.Addr().String(), first: map[string]time.Time{}}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				u.conns.Add(1)
			}
		}}
	go u.srv.Serve(ln)
	return u, nil
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	now := time.Now()
	id := r.Header.Get("X-Webhook-Id")
	u.mu.Lock()
	u.requests++
	if u.wantLen > 0 && n != u.wantLen {
		u.badLength++
	}
	if id != "" {
		if _, seen := u.first[id]; seen {
			u.dups++
		} else {
			u.first[id] = now
			u.last = now
		}
	}
	u.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// reset clears the counters for a new cell expecting bodies of size bytes.
func (u *upstream) reset(size int) {
	u.mu.Lock()
	u.requests, u.badLength, u.dups = 0, 0, 0
	u.first = make(map[string]time.Time, 1<<16)
	u.last = time.Time{}
	u.wantLen = int64(size)
	u.conns.Store(0)
	u.mu.Unlock()
}

type upstreamSnap struct {
	requests, badLength, dups, distinct, conns int64
	last                                       time.Time
}

func (u *upstream) snap() upstreamSnap {
	u.mu.Lock()
	defer u.mu.Unlock()
	return upstreamSnap{u.requests, u.badLength, u.dups, int64(len(u.first)), u.conns.Load(), u.last}
}

// missing counts the ids of ids that have not arrived.
func (u *upstream) missing(ids []string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, id := range ids {
		if _, ok := u.first[id]; !ok {
			n++
		}
	}
	return n
}
