// Package natstest starts nats-server in process, on loopback, with
// JetStream on temporary directories: one node, or a cluster of several whose
// nodes can be stopped and restarted with their stores. Only tests import it,
// so the server stays out of the Caddy binary.
package natstest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/hookgate/hookgate/internal/testwait"
)

// startTimeout bounds a server's start and the cluster's election.
const startTimeout = 30 * time.Second

// Node is one in-process nats-server. Its ports and store stay the same
// across Stop and Restart.
type Node struct {
	opts *server.Options
	mu   sync.Mutex
	srv  *server.Server
}

// baseOptions are the settings every node shares: JetStream with
// fsync before every acknowledgement (the durability Hookgate promises needs
// it), the monitoring port for /jsz, and room for the batches of many
// concurrent enqueues (the default allows 50 open batches per stream).
func baseOptions(t testing.TB, name, storeDir string) *server.Options {
	return &server.Options{
		ServerName: name,
		Host:       "127.0.0.1",
		Port:       freePort(t),
		HTTPHost:   "127.0.0.1",
		HTTPPort:   freePort(t),
		JetStream:  true,
		StoreDir:   storeDir,
		SyncAlways: true,
		NoLog:      true,
		NoSigs:     true,
		JetStreamLimits: server.JSLimitOpts{
			MaxBatchInflightPerStream: 1000,
			MaxBatchInflightTotal:     4000,
		},
	}
}

// Option changes a node's server options before it starts.
type Option func(*server.Options)

// WithoutSyncAlways leaves the server's default lazy fsync, which cannot keep
// an acknowledged write through a power cut.
func WithoutSyncAlways() Option { return func(o *server.Options) { o.SyncAlways = false } }

// WithAtomicBatchesPerStream sets how many atomic batches may be open on one
// stream at once (the server's default is 50).
func WithAtomicBatchesPerStream(n int) Option {
	return func(o *server.Options) { o.JetStreamLimits.MaxBatchInflightPerStream = n }
}

// StartNode starts one node, without a cluster, and shuts it down when the
// test ends.
func StartNode(t testing.TB, opts ...Option) *Node {
	t.Helper()
	var n *Node
	err := withFreshPorts(func() error {
		o := baseOptions(t, "n1", t.TempDir())
		for _, f := range opts {
			f(o)
		}
		n = &Node{opts: o}
		return n.tryStart()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// startTries bounds the starts with new ports: a port found free can be
// taken by another process before the server binds it.
const startTries = 3

func withFreshPorts(start func() error) error {
	var err error
	for range startTries {
		if err = start(); err == nil {
			return nil
		}
	}
	return err
}

func (n *Node) start(t testing.TB) {
	t.Helper()
	if err := n.tryStart(); err != nil {
		t.Fatal(err)
	}
}

func (n *Node) tryStart() error {
	s, err := server.NewServer(n.opts.Clone())
	if err != nil {
		return fmt.Errorf("natstest: new server %s: %w", n.opts.ServerName, err)
	}
	go s.Start()
	if !s.ReadyForConnections(startTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return fmt.Errorf("natstest: server %s not ready within %v", n.opts.ServerName, startTimeout)
	}
	n.mu.Lock()
	n.srv = s
	n.mu.Unlock()
	return nil
}

// Server is the running server, nil while stopped.
func (n *Node) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Name is the node's server name.
func (n *Node) Name() string { return n.opts.ServerName }

// URL is the node's client URL; it stays the same across restarts.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

// MonitorURL is the node's HTTP monitoring base URL (GET /jsz, /varz).
func (n *Node) MonitorURL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.opts.HTTPPort) }

// Stop shuts the node down and waits for it; its store stays.
func (n *Node) Stop() {
	n.mu.Lock()
	s := n.srv
	n.srv = nil
	n.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts a stopped node again with its options and store.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	if n.Server() != nil {
		t.Fatalf("natstest: restart of running node %s", n.Name())
	}
	n.start(t)
}

// Cluster is a JetStream cluster of in-process nodes on loopback.
type Cluster struct {
	Nodes []*Node
}

// StartCluster starts size nodes routed to each other and waits until
// JetStream is enabled on each and the meta group has a leader. The nodes
// are shut down when the test ends.
func StartCluster(t testing.TB, size int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{}
	// The stores' directory is made before the stop is registered, as
	// cleanups run last registered first: the nodes stop before it is
	// removed, not while they still write into it.
	root := t.TempDir()
	t.Cleanup(func() { c.stop() })
	err := withFreshPorts(func() error {
		c.stop()
		c.Nodes = nil
		var routes []string
		for i := range size {
			name := fmt.Sprintf("n%d", i+1)
			dir, err := os.MkdirTemp(root, name+"-")
			if err != nil {
				return err
			}
			o := baseOptions(t, name, dir)
			o.Cluster = server.ClusterOpts{Name: "hookgate-test", Host: "127.0.0.1", Port: freePort(t)}
			for _, f := range opts {
				f(o)
			}
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.Cluster.Port))
			c.Nodes = append(c.Nodes, &Node{opts: o})
		}
		// Every node lists every route, its own included: the meta group
		// expects as many peers as there are routes.
		for _, n := range c.Nodes {
			n.opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}
		for _, n := range c.Nodes {
			if err := n.tryStart(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitReady(t)
	return c
}

func (c *Cluster) stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// URLs are the client URLs of every node.
func (c *Cluster) URLs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.URL())
	}
	return out
}

// MonitorURLs are the monitoring base URLs of every node.
func (c *Cluster) MonitorURLs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.MonitorURL())
	}
	return out
}

// WaitReady waits until every running node has JetStream enabled and is
// current with a meta leader that has every running node's stats (so that
// it can place replicas on them), and every node is routed to the others.
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	testwait.Until(t, startTimeout, func() (bool, string) {
		running := 0
		var leader *server.Server
		for _, n := range c.Nodes {
			s := n.Server()
			if s == nil {
				continue
			}
			running++
			if !s.JetStreamEnabled() {
				return false, n.Name() + ": JetStream not enabled"
			}
			if !s.JetStreamIsCurrent() {
				return false, n.Name() + ": not current with the meta leader"
			}
			if s.JetStreamIsLeader() {
				leader = s
			}
		}
		for _, n := range c.Nodes {
			if s := n.Server(); s != nil && s.NumRoutes() < running-1 {
				return false, fmt.Sprintf("%s: %d routes of %d", n.Name(), s.NumRoutes(), running-1)
			}
		}
		if leader == nil {
			return false, "no meta leader"
		}
		// Placement takes the peers the leader has current stats of.
		if peers := leader.JetStreamClusterPeers(); len(peers) < running {
			return false, fmt.Sprintf("the meta leader knows %d of %d peers", len(peers), running)
		}
		return true, ""
	})
}

// WaitStreamLeader waits until a running node leads the stream (of the
// global account): a JetStream API request about a stream whose leader is
// being elected gets no answer, and its client waits out its timeout.
func (c *Cluster) WaitStreamLeader(t testing.TB, stream string) {
	t.Helper()
	testwait.Until(t, startTimeout, func() (bool, string) {
		for _, n := range c.Nodes {
			if s := n.Server(); s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				return true, ""
			}
		}
		return false, "no leader of stream " + stream
	})
}

// freePort is a loopback TCP port that is free now, below Linux's
// ephemeral range (32768-60999), so that outgoing connections, which take
// their source ports from that range, do not take it before the server
// binds it or while its node is stopped. nats-server takes fixed ports, so
// that a node restarted with its options keeps its URLs.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 10000 + rand.IntN(20000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("natstest: no free port found")
	return 0
}
