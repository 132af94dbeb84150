package natsspool

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/hookgate/hookgate/internal/natstest"
	"github.com/hookgate/hookgate/spool"
)

// wait bounds every wait of the tests on an event.
const wait = 60 * time.Second

// store is where the tests' backends open: a single node or a cluster.
type store struct {
	name     string
	servers  []string
	monitors []string
	replicas int
	cluster  *natstest.Cluster
}

// stores starts one node and a 3-node cluster for the test.
func stores(t *testing.T) []store {
	n := natstest.StartNode(t)
	c := natstest.StartCluster(t, 3)
	return []store{
		{name: "single", servers: []string{n.URL()}, monitors: []string{n.MonitorURL()}, replicas: 1},
		{name: "cluster", servers: c.URLs(), monitors: c.MonitorURLs(), replicas: 3, cluster: c},
	}
}

// forEachStore runs f against a single node and a 3-node cluster.
func forEachStore(t *testing.T, f func(t *testing.T, s store)) {
	for _, s := range stores(t) {
		t.Run(s.name, func(t *testing.T) { f(t, s) })
	}
}

// options are a test backend's: the single node needs AcceptRisk (one
// replica), the cluster passes the durability check. Short lease margin, so
// a lost lease ends soon.
func (s store) options(prefix string) Options {
	return Options{
		Servers: s.servers, Prefix: prefix, Replicas: s.replicas, VerifySync: s.monitors,
		AcceptRisk: s.replicas < 3, LeaseMargin: time.Second, CloseTimeout: 5 * time.Second,
	}
}

func (s store) open(t *testing.T, prefix string) *Backend {
	t.Helper()
	o := s.options(prefix)
	o.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	return openWith(t, o)
}

func openWith(t *testing.T, o Options) *Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b, err := Open(ctx, o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// delivery is one attempt a recorder saw.
type delivery struct {
	instance string
	eventID  string
	attempt  int
}

// recorder is a deliverer that reports each attempt on a channel and
// answers by a function of the delivery.
type recorder struct {
	name   string
	ch     chan delivery
	answer func(d *spool.Delivery) spool.Outcome
}

func newRecorder(name string, ch chan delivery, answer func(d *spool.Delivery) spool.Outcome) *recorder {
	if answer == nil {
		answer = func(*spool.Delivery) spool.Outcome { return spool.Outcome{StatusCode: http.StatusOK} }
	}
	return &recorder{name: name, ch: ch, answer: answer}
}

func (r *recorder) Deliver(ctx context.Context, d *spool.Delivery) spool.Outcome {
	out := r.answer(d)
	select {
	case r.ch <- delivery{instance: r.name, eventID: d.EventID, attempt: d.Attempt}:
	case <-ctx.Done():
	}
	return out
}

// next waits for the next delivery.
func next(t *testing.T, ch <-chan delivery) delivery {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(wait):
		t.Fatalf("no delivery within %v", wait)
		return delivery{}
	}
}

// counter counts deliveries per event id, safe for concurrent use.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[id]++
}

func (c *counter) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func entry(route, id, body string) spool.Entry {
	return spool.Entry{Route: route, EventID: id, Body: []byte(body), Header: http.Header{"Content-Type": {"application/json"}}, DedupeWindow: time.Hour}
}

func mustEnqueue(t *testing.T, b *Backend, e spool.Entry, want spool.Status) spool.Result {
	t.Helper()
	res, err := b.Enqueue(ctxT(t), e)
	if err != nil {
		t.Fatalf("enqueue %s: %v", e.EventID, err)
	}
	if res.Status != want {
		t.Fatalf("enqueue %s: %v, want %v", e.EventID, res.Status, want)
	}
	return res
}

func ids(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}
