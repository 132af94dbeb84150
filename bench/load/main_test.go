package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func TestLoadTargets(t *testing.T) {
	proxy := &result{cpuPerReq: 120 * time.Microsecond, p99: 20 * time.Millisecond}
	tests := []struct {
		name     string
		size     int
		gw       *result
		cpuRatio float64
		want     []bool // CPU (where the size has a target), p99, peak RssAnon
	}{
		{"1 KiB, all met", 1 << 10, &result{p99: 20 * time.Millisecond, peakAnon: 192 << 20}, 0.85, []bool{true, true, true}},
		{"1 KiB, all missed", 1 << 10, &result{p99: 21 * time.Millisecond, peakAnon: 193 << 20}, 0.84, []bool{false, false, false}},
		{"64 KiB, CPU at its own bound", 64 << 10, &result{p99: time.Millisecond}, 0.5, []bool{true, true, true}},
		{"another size has no CPU target", 4 << 10, &result{p99: time.Millisecond}, 0.1, []bool{true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := loadTargets(tt.size, proxy, tt.gw, tt.cpuRatio)
			if len(got) != len(tt.want) {
				t.Fatalf("%d targets, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, g := range got {
				if g.ok != tt.want[i] {
					t.Errorf("target %q: ok %v, want %v", g.what, g.ok, tt.want[i])
				}
			}
		})
	}
}

func TestNATSConfig(t *testing.T) {
	dir := t.TempDir()
	node := func(name string, port, clusterPort int) *natsNode {
		return &natsNode{name: name, port: port, httpPort: port + 1, clusterPort: clusterPort, dir: filepath.Join(dir, name)}
	}
	single := []*natsNode{node("n1", 4222, 0)}
	cluster := []*natsNode{node("n1", 4222, 6222), node("n2", 4232, 6232), node("n3", 4242, 6242)}
	tests := []struct {
		name    string
		n       *natsNode
		nodes   []*natsNode
		routes  []string
		backend []string // lines the gateway's backend block must have
		risk    bool     // whether it accepts the risk
	}{
		{"single node", single[0], single, nil,
			[]string{"servers nats://127.0.0.1:4222", "verify_sync http://127.0.0.1:4223", "replicas 1"}, true},
		{"cluster, second node", cluster[1], cluster,
			[]string{"nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6232", "nats-route://127.0.0.1:6242"},
			[]string{"servers nats://127.0.0.1:4222 nats://127.0.0.1:4232 nats://127.0.0.1:4242",
				"verify_sync http://127.0.0.1:4223 http://127.0.0.1:4233 http://127.0.0.1:4243", "replicas 3"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The server's own parser reads the config.
			path := filepath.Join(dir, tt.n.name+".conf")
			if err := os.WriteFile(path, []byte(natsConfig(tt.n, tt.nodes)), 0o600); err != nil {
				t.Fatal(err)
			}
			o, err := server.ProcessConfigFile(path)
			if err != nil {
				t.Fatalf("nats-server rejects the config: %v\n%s", err, natsConfig(tt.n, tt.nodes))
			}
			if o.ServerName != tt.n.name || o.Host != "127.0.0.1" || o.Port != tt.n.port || o.HTTPHost != "127.0.0.1" || o.HTTPPort != tt.n.httpPort {
				t.Errorf("name %q, client %s:%d, monitoring %s:%d", o.ServerName, o.Host, o.Port, o.HTTPHost, o.HTTPPort)
			}
			if !o.JetStream || !o.SyncAlways || o.StoreDir != filepath.Join(tt.n.dir, "js") {
				t.Errorf("JetStream %v, sync always %v, store %q", o.JetStream, o.SyncAlways, o.StoreDir)
			}
			if l := o.JetStreamLimits; l.MaxBatchInflightPerStream != 1000 || l.MaxBatchInflightTotal != 4000 {
				t.Errorf("batch limits %+v", l)
			}
			var routes []string
			for _, u := range o.Routes {
				routes = append(routes, u.String())
			}
			if !slices.Equal(routes, tt.routes) {
				t.Errorf("routes %v, want %v", routes, tt.routes)
			}
			if tt.routes != nil && (o.Cluster.Host != "127.0.0.1" || o.Cluster.Port != tt.n.clusterPort || o.Cluster.Name == "") {
				t.Errorf("cluster %+v", o.Cluster)
			}
			backend := (&natsCluster{nodes: tt.nodes}).natsBackend()
			for _, want := range tt.backend {
				if !strings.Contains(backend, "\t"+want+"\n") {
					t.Errorf("backend block lacks %q:\n%s", want, backend)
				}
			}
			if got := strings.Contains(backend, "accept_risk"); got != tt.risk {
				t.Errorf("accept_risk %v, want %v:\n%s", got, tt.risk, backend)
			}
		})
	}
}

func TestMetaLeader(t *testing.T) {
	tests := []struct {
		jsz   string
		nodes int
		ready bool
	}{
		{`{"meta_cluster":{"name":"c","leader":"n2","cluster_size":3}}`, 3, true},
		{`{"meta_cluster":{"name":"c","cluster_size":3}}`, 3, false},
		{`{"meta_cluster":{"name":"c","leader":"n2","cluster_size":2}}`, 3, false},
		{`{"server_id":"x"}`, 3, false},
		{`not json`, 3, false},
	}
	for _, tt := range tests {
		why := metaLeader([]byte(tt.jsz), tt.nodes)
		if (why == "") != tt.ready {
			t.Errorf("metaLeader(%s, %d) = %q, want ready %v", tt.jsz, tt.nodes, why, tt.ready)
		}
	}
}

func TestCells(t *testing.T) {
	tests := []struct {
		natsBin string
		want    []string
	}{
		{"", []string{"reverse_proxy", "webhook_ingest"}},
		{"/bin/nats-server", []string{"reverse_proxy", "webhook_ingest", "webhook_ingest, NATS 1 node", "webhook_ingest, NATS 3 nodes"}},
	}
	for _, tt := range tests {
		var got []string
		for _, c := range (config{natsBin: tt.natsBin}).cells() {
			got = append(got, c.label())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("cells with nats-server %q: %v, want %v", tt.natsBin, got, tt.want)
		}
	}
}

func TestBenign(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{`{"level":"warn","msg":"natsspool: durability at risk (accept_risk)","check":"stream HOOKGATE_DEAD has 1 replicas: fewer than 3 do not survive the loss of a server's disk"}`, true},
		{`{"level":"warn","msg":"natsspool: durability at risk (accept_risk)","check":"server n1 does not sync always: an acknowledged write can be lost in a power cut"}`, false},
		{`{"level":"warn","msg":"HTTP/2 skipped because it requires TLS"}`, true},
		{`{"level":"error","msg":"delivery failed"}`, false},
	}
	for _, tt := range tests {
		if got := benign(tt.line); got != tt.want {
			t.Errorf("benign(%s) = %v, want %v", tt.line, got, tt.want)
		}
	}
}
