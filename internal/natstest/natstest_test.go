package natstest

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishR3 stores one message on a replicated stream through url and
// returns its sequence: the cluster has a working JetStream.
func publish(t *testing.T, url string, replicas int, body string) uint64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}, Replicas: replicas}); err != nil {
		t.Fatalf("stream: %v", err)
	}
	ack, err := js.Publish(ctx, "t", []byte(body))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return ack.Sequence
}

func TestNodeSyncsAlwaysAndRestartsWithItsStore(t *testing.T) {
	n := StartNode(t)
	if got := publish(t, n.URL(), 1, "a"); got != 1 {
		t.Fatalf("first sequence %d", got)
	}
	resp, err := http.Get(n.MonitorURL() + "/jsz")
	if err != nil {
		t.Fatal(err)
	}
	var jsz struct {
		Config struct {
			SyncAlways bool `json:"sync_always"`
		} `json:"config"`
	}
	err = json.NewDecoder(resp.Body).Decode(&jsz)
	resp.Body.Close()
	if err != nil || !jsz.Config.SyncAlways {
		t.Fatalf("/jsz sync_always = %v (%v)", jsz.Config.SyncAlways, err)
	}
	n.Stop()
	n.Restart(t)
	if got := publish(t, n.URL(), 1, "b"); got != 2 {
		t.Fatalf("after restart: sequence %d, want 2 (the store kept the first)", got)
	}
}

func TestClusterSurvivesANodeRestart(t *testing.T) {
	c := StartCluster(t, 3)
	if got := publish(t, c.Nodes[0].URL(), 3, "a"); got != 1 {
		t.Fatalf("first sequence %d", got)
	}
	c.Nodes[1].Stop()
	c.WaitReady(t)             // a new meta leader, if the stopped node was it
	c.WaitStreamLeader(t, "T") // and the stream's
	if got := publish(t, c.Nodes[2].URL(), 3, "b"); got != 2 {
		t.Fatalf("with a node down: sequence %d", got)
	}
	c.Nodes[1].Restart(t)
	c.WaitReady(t)
	c.WaitStreamLeader(t, "T")
	if got := publish(t, c.Nodes[1].URL(), 3, "c"); got != 3 {
		t.Fatalf("after restart: sequence %d", got)
	}
}

// removalCheck is the test's testing.TB, but each of its temporary
// directories checks, just before it is removed, that no node runs:
// a running node writes into its store while it is being removed, and the
// removal fails ("directory not empty").
type removalCheck struct {
	*testing.T
	nodes *[]*Node
}

func (r removalCheck) TempDir() string {
	dir := r.T.TempDir()
	r.T.Cleanup(func() { // runs before the removal, registered before it
		for _, n := range *r.nodes {
			if n.Server() != nil {
				r.T.Errorf("%s removed while node %s runs", dir, n.Name())
			}
		}
	})
	return dir
}

func TestNodesStopBeforeTheirStoresAreRemoved(t *testing.T) {
	for _, tt := range []struct {
		name  string
		start func(testing.TB) []*Node
	}{
		{"node", func(tb testing.TB) []*Node { return []*Node{StartNode(tb)} }},
		{"cluster", func(tb testing.TB) []*Node { return StartCluster(tb, 3).Nodes }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var nodes []*Node
			nodes = tt.start(removalCheck{T: t, nodes: &nodes})
		})
	}
}
