package natsspool

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/hookgate/hookgate/internal/natstest"
	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/spool"
)

// TestNodeRestartUnderLoadLosesNothingAcknowledged stops the queue stream's
// leader while two instances enqueue and deliver, restarts it with its
// store, and checks that every event either instance acknowledged is
// delivered.
func TestNodeRestartUnderLoadLosesNothingAcknowledged(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	s := store{name: "cluster", servers: c.URLs(), monitors: c.MonitorURLs(), replicas: 3, cluster: c}
	a, b := s.open(t, "HG"), s.open(t, "HG")
	var delivered counter
	for _, x := range []*Backend{a, b} {
		defer x.RegisterRoute("r", spool.Route{Deliverer: spool.DelivererFunc(func(_ context.Context, d *spool.Delivery) spool.Outcome {
			delivered.add(d.EventID)
			return spool.Outcome{StatusCode: http.StatusOK}
		})})()
	}
	const producers, perProducer = 4, 60
	info, err := a.queue.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var leader *natstest.Node
	for _, n := range c.Nodes {
		if n.Name() == info.Cluster.Leader {
			leader = n
		}
	}
	if leader == nil {
		t.Fatalf("no node is the leader %q", info.Cluster.Leader)
	}
	var mu sync.Mutex
	var acked []string
	third := make(chan struct{})
	twoThirds := make(chan struct{})
	ack := func(id string) {
		mu.Lock()
		defer mu.Unlock()
		acked = append(acked, id)
		switch len(acked) {
		case producers * perProducer / 3:
			close(third)
		case 2 * producers * perProducer / 3:
			close(twoThirds)
		}
	}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				id := fmt.Sprintf("evt-%d-%d", p, i)
				on := []*Backend{a, b}[(p+i)%2]
				// A sender retries until it has an answer; an error is no 2xx.
				for try := 0; ; try++ {
					res, err := on.Enqueue(context.Background(), entry("r", id, `{}`))
					if err == nil && (res.Status == spool.Accepted || res.Status == spool.Duplicate) {
						ack(id)
						break
					}
					if err == nil {
						t.Errorf("%s: %v", id, res.Status)
						return
					}
					if try == 20 {
						t.Errorf("%s: %v", id, err)
						return
					}
				}
			}
		})
	}
	<-third
	leader.Stop()
	<-twoThirds
	leader.Restart(t)
	wg.Wait()
	c.WaitReady(t)
	mu.Lock()
	defer mu.Unlock()
	if len(acked) != producers*perProducer {
		t.Fatalf("%d of %d events acknowledged", len(acked), producers*perProducer)
	}
	testwait.Until(t, 2*wait, func() (bool, string) {
		missing := 0
		for _, id := range acked {
			if delivered.get(id) == 0 {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d acknowledged events not delivered", missing)
	})
}
