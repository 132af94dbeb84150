package integration

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/natstest"
	"github.com/hookgate/hookgate/internal/testwait"
)

// natsGlobals is the global options block of a gateway whose store is the
// NATS cluster c: three replicas, every server checked to fsync before it
// acknowledges, and a lease margin of a second, so that another gateway
// takes over a dead one's events a second after their route's timeout.
func (g *gateway) natsGlobals(c *natstest.Cluster) string {
	return g.globalsOn(fmt.Sprintf("backend nats {\n\t\t\tservers %s\n\t\t\tverify_sync %s\n\t\t\tlease_margin 1s\n\t\t}",
		strings.Join(c.URLs(), " "), strings.Join(c.MonitorURLs(), " ")), "")
}

// natsPair starts a 3-node NATS cluster and two gateways on it with one
// forwarding route "shared", signed with one secret, and returns a sender
// for each gateway. Gateway i forwards to ups[i]: the queue is one, and the
// upstream that receives an event tells which gateway delivered it.
func natsPair(t *testing.T, ups [2]*upstream, forward string) (c *natstest.Cluster, gs [2]*gateway, ss [2]*sender) {
	c = natstest.StartCluster(t, 3)
	c.WaitReady(t)
	secret := randomSecret(32)
	for i := range gs {
		gs[i] = newGateway(t, "HG_SECRET="+string(secret))
		gs[i].forbid(string(secret))
		gs[i].start(gs[i].natsGlobals(c) + forwardSite(gs[i], "{env.HG_SECRET}", ups[i].url("/in"), "name shared", forward))
		ss[i] = newSender(gs[i], hookPath, secret)
	}
	return c, gs, ss
}

// natsLoad is senders posting fresh events to two gateways in turn until
// stopped or each has posted max, collecting the ids answered 202.
type natsLoad struct {
	mu       sync.Mutex
	accepted []string
	failed   int
	other    map[string]int
	wg       sync.WaitGroup
}

func startNATSLoad(ss [2]*sender, workers, max int, stop <-chan struct{}) *natsLoad {
	l := &natsLoad{other: map[string]int{}}
	for w := range workers {
		l.wg.Go(func() {
			for i := range max {
				select {
				case <-stop:
					return
				default:
				}
				s := ss[(w+i)%2]
				d := s.event(typeOK)
				a, err := s.post(d)
				l.mu.Lock()
				switch {
				case err != nil:
					l.failed++
				case a.Code == 202:
					l.accepted = append(l.accepted, d.ID)
				default:
					l.other[a.String()]++
				}
				l.mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond) // a dead gateway: do not spin
				}
			}
		})
	}
	return l
}

// stop waits for the senders and returns the ids answered 202.
func (l *natsLoad) stop(t *testing.T) []string {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.accepted) == 0 {
		t.Fatal("no event was accepted")
	}
	t.Logf("%d accepted, %d transport errors, other answers %v", len(l.accepted), l.failed, l.other)
	return l.accepted
}

// TestNATSGatewayKilledUnderLoad: two gateways share a 3-node cluster; one
// is killed with SIGKILL while both take events and deliver them to a slow
// upstream each. Every event either answered 202 is delivered, and those
// the dead gateway had in flight are delivered by the other once their lease
// runs out.
func TestNATSGatewayKilledUnderLoad(t *testing.T) {
	slow := func(*recorded) reply { return reply{Status: 200, Delay: 200 * time.Millisecond} }
	ups := [2]*upstream{newUpstream(t), newUpstream(t)}
	for _, u := range ups {
		u.setRespond(slow)
	}
	_, gs, ss := natsPair(t, ups, "timeout 2s\n\t\t\t\tbackoff 100ms 1s\n\t\t\t\tmax_attempts 50\n\t\t\t\tconcurrency 32")
	stop := make(chan struct{})
	load := startNATSLoad(ss, 8, 100, stop)
	testwait.Until(t, 30*time.Second, func() (bool, string) {
		n := ups[0].count()
		return n >= 64, fmt.Sprintf("%d requests at the first gateway's upstream", n)
	})
	gs[0].kill()
	time.Sleep(500 * time.Millisecond) // the survivor keeps taking events
	close(stop)
	accepted := load.stop(t)
	waitDelivered(t, 60*time.Second, accepted, ups[0], ups[1])

	// The kill cut the first gateway's deliveries in flight.
	done := ups[0].delivered()
	var cut []string
	for id := range ups[0].byID() {
		if done[id] == 0 {
			cut = append(cut, id)
		}
	}
	if len(cut) == 0 {
		t.Fatal("the kill cut no delivery short: the test did not exercise a takeover")
	}
	waitDelivered(t, 30*time.Second, cut, ups[1])
	t.Logf("%d deliveries cut by the kill, all taken over", len(cut))
}

// TestNATSSameEventOnTwoGateways: one event sent to both gateways at the
// same moment is accepted by one, answered as a duplicate by the other, and
// delivered once.
func TestNATSSameEventOnTwoGateways(t *testing.T) {
	up := newUpstream(t)
	_, _, ss := natsPair(t, [2]*upstream{up, up}, "timeout 5s")
	const events = 20
	var ids []string
	for range events {
		d := ss[0].event(typeOK)
		ss[1].sign(d) // the same signature, recorded for the second gateway's log check too
		var answers [2]answer
		var errs [2]error
		var wg sync.WaitGroup
		for i := range ss {
			wg.Go(func() { answers[i], errs[i] = ss[i].post(d) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("gateway %d: %v", i, err)
			}
		}
		got := []string{answers[0].String(), answers[1].String()}
		accepted := (answers[0].Code == 202) != (answers[1].Code == 202)
		dup := answers[0].Status == "duplicate" || answers[1].Status == "duplicate"
		if !accepted || !dup {
			t.Fatalf("event %s: answers %v, want one 202 accepted and one duplicate", d.ID, got)
		}
		ids = append(ids, d.ID)
	}
	waitDelivered(t, 30*time.Second, ids, up)
	// A second copy would follow the first within the route's timeout.
	time.Sleep(time.Second)
	for id, n := range up.delivered() {
		if n != 1 {
			t.Errorf("event %s delivered %d times, want once", id, n)
		}
	}
}

// TestNATSNodeRestartedUnderLoad: one NATS server is stopped while two
// gateways take events, then restarted; nothing answered 202 is lost.
func TestNATSNodeRestartedUnderLoad(t *testing.T) {
	up := newUpstream(t)
	c, _, ss := natsPair(t, [2]*upstream{up, up}, "timeout 2s\n\t\t\t\tbackoff 100ms 1s\n\t\t\t\tmax_attempts 50")
	stop := make(chan struct{})
	load := startNATSLoad(ss, 8, 1_000_000, stop)
	testwait.Until(t, 30*time.Second, func() (bool, string) {
		n := up.count()
		return n >= 200, fmt.Sprintf("%d requests at the upstream", n)
	})
	c.Nodes[0].Stop()
	before := up.count()
	testwait.Until(t, 30*time.Second, func() (bool, string) {
		n := up.count() - before
		return n >= 200, fmt.Sprintf("%d requests at the upstream with a server down", n)
	})
	c.Nodes[0].Restart(t)
	c.WaitReady(t)
	close(stop)
	accepted := load.stop(t)
	waitDelivered(t, 60*time.Second, accepted, up)
}

// TestNATSUpstreamDownThenBack: events taken by both gateways while the
// upstream answers 503 are retried, and all arrive once it is back.
func TestNATSUpstreamDownThenBack(t *testing.T) {
	up := newUpstream(t)
	up.setRespond(func(*recorded) reply { return reply{Status: 503} })
	_, _, ss := natsPair(t, [2]*upstream{up, up}, "timeout 2s\n\t\t\t\tbackoff 100ms 500ms\n\t\t\t\tmax_attempts 1000")
	var ids []string
	for i := range 20 {
		s := ss[i%2]
		d := s.event(typeOK)
		a, err := s.post(d)
		if err != nil {
			t.Fatal(err)
		}
		expectAnswer(t, "while the upstream is down", a, 202, "accepted")
		ids = append(ids, d.ID)
	}
	testwait.Until(t, 30*time.Second, func() (bool, string) {
		n := up.count()
		return n >= 40, fmt.Sprintf("%d attempts refused by the upstream", n)
	})
	up.setRespond(nil)
	waitDelivered(t, 30*time.Second, ids, up)
}
