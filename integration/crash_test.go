package integration

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// loadResult collects what concurrent senders saw.
type loadResult struct {
	mu       sync.Mutex
	accepted []string // answered 2xx
	rejected []string // deliberately bad, answered 4xx
	failed   int      // transport errors (the gateway was down)
	other    map[string]int
}

func (r *loadResult) add(f func(*loadResult)) {
	r.mu.Lock()
	f(r)
	r.mu.Unlock()
}

// TestKill9UnderLoad kills the gateway with SIGKILL mid-load several times
// and restarts it on the same storage: every event answered 2xx reaches the
// upstream, and no rejected event ever does.
func TestKill9UnderLoad(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	config := g.globals("") + forwardSite(g, "{env.HG_SECRET}", up.url("/in"), "name crash",
		"backoff 100ms 1s\n\t\t\t\tmax_attempts 50\n\t\t\t\ttimeout 5s")
	s := newSender(g, hookPath, secret)
	wrong := randomSecret(32)
	res := &loadResult{other: map[string]int{}}

	const cycles, senders, perSender = 4, 8, 400
	for c := 0; c < cycles; c++ {
		g.start(config)
		before := len(res.accepted)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < senders; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perSender; i++ {
					select {
					case <-stop:
						return
					default:
					}
					d := s.event(typeOK)
					bad := i%5 == 4
					if bad {
						s.signWith(d, wrong)
					}
					a, err := s.post(d)
					res.add(func(r *loadResult) {
						switch {
						case err != nil:
							r.failed++
						case bad && a.Code == 401:
							r.rejected = append(r.rejected, d.ID)
						case !bad && a.Code == 202:
							r.accepted = append(r.accepted, d.ID)
						default:
							r.other[fmt.Sprintf("bad=%v %d", bad, a.Code)]++
						}
					})
					if err != nil {
						time.Sleep(20 * time.Millisecond) // down: do not spin
					}
				}
			}()
		}
		time.Sleep(time.Duration(600+150*c) * time.Millisecond)
		g.kill()
		time.Sleep(100 * time.Millisecond) // senders run into the dead port
		close(stop)
		wg.Wait()
		res.mu.Lock()
		n := len(res.accepted) - before
		res.mu.Unlock()
		if n == 0 {
			t.Fatalf("cycle %d: no event accepted before the kill", c)
		}
		t.Logf("cycle %d: %d accepted before SIGKILL, %d delivered so far", c, n, len(up.delivered()))
	}
	if len(res.other) > 0 {
		t.Errorf("unexpected answers while up: %v", res.other)
	}

	g.start(config)
	waitDelivered(t, 90*time.Second, res.accepted, up)
	time.Sleep(500 * time.Millisecond)
	got := up.byID()
	for _, id := range res.rejected {
		if len(got[id]) > 0 {
			t.Errorf("rejected event %s reached the upstream", id)
		}
	}
	acceptedSet := map[string]bool{}
	for _, id := range res.accepted {
		acceptedSet[id] = true
	}
	dups, unconfirmed := 0, 0
	for id, reqs := range got {
		if n := len(reqs); n > 1 {
			dups += n - 1
		}
		if !acceptedSet[id] {
			unconfirmed++ // stored, but the answer was lost to the kill
		}
	}
	if len(res.rejected) == 0 {
		t.Errorf("no bad delivery was rejected; the test did not exercise rejections")
	}
	t.Logf("%d cycles: %d accepted, %d rejected, %d transport errors; upstream got %d requests for %d events: %d duplicates, %d events stored whose answer was lost",
		cycles, len(res.accepted), len(res.rejected), res.failed, up.count(), len(got), dups, unconfirmed)
}
