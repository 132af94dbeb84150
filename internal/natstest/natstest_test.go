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
