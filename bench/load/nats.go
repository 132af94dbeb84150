package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// natsReadyBound bounds a NATS cell's servers' start and, for a cluster,
// the election of the meta leader.
const natsReadyBound = 30 * time.Second

// natsNode is one nats-server of a cell: its ports on 127.0.0.1 and its
// directory (config, log, JetStream store).
type natsNode struct {
	name                        string
	port, httpPort, clusterPort int // clusterPort 0: a single node, no cluster
	dir                         string
	proc                        *child
	logFrom                     int64 // logCounts reads the log from here on
}

func (n *natsNode) url() string     { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }
func (n *natsNode) monitor() string { return fmt.Sprintf("http://127.0.0.1:%d", n.httpPort) }
func (n *natsNode) logPath() string { return filepath.Join(n.dir, "nats.log") }

// natsCluster is the nats-server processes of one cell, started fresh for it.
type natsCluster struct {
	nodes []*natsNode
}

// natsConfig is the config file of node n in a cell of nodes: JetStream
// fsyncing every write before it acknowledges (sync_interval: always, the
// setting the gateway's durability check wants), room for the atomic
// batches of many concurrent enqueues (the server's default is 50 open
// batches per stream; internal/natstest uses the same 1000), a file store
// large enough for the streams' reservations at the bench's max_bytes, and
// for a cluster the routes to every node, its own included (the meta group
// takes its expected size from the routes).
func natsConfig(n *natsNode, nodes []*natsNode) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n", n.name, n.port, n.httpPort)
	fmt.Fprintf(&b, "jetstream {\n\tstore_dir: %q\n\tsync_interval: always\n\tmax_file_store: 64G\n", filepath.Join(n.dir, "js"))
	b.WriteString("\tlimits {\n\t\tbatch {\n\t\t\tmax_inflight_per_stream: 1000\n\t\t\tmax_inflight_total: 4000\n\t\t}\n\t}\n}\n")
	if n.clusterPort != 0 {
		var routes []string
		for _, o := range nodes {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.clusterPort))
		}
		fmt.Fprintf(&b, "cluster {\n\tname: hookgate-bench\n\tlisten: 127.0.0.1:%d\n\troutes: [%s]\n}\n", n.clusterPort, strings.Join(routes, ", "))
	}
	return b.String()
}

// natsBackend is the webhooks app's backend block for the gateway on c:
// every server's client and monitoring URL, replicas as many as servers,
// and accept_risk below 3 (the gateway refuses fewer replicas otherwise).
func (c *natsCluster) natsBackend() string {
	var urls, mons []string
	for _, n := range c.nodes {
		urls = append(urls, n.url())
		mons = append(mons, n.monitor())
	}
	risk := ""
	if len(c.nodes) < 3 {
		risk = "\t\t\taccept_risk\n"
	}
	return fmt.Sprintf("backend nats {\n\t\t\tservers %s\n\t\t\tverify_sync %s\n\t\t\treplicas %d\n%s\t\t}",
		strings.Join(urls, " "), strings.Join(mons, " "), len(c.nodes), risk)
}

// startNATS starts a fresh cell of nodes nats-servers (bin) on loopback,
// each with its own directory under root, and waits until JetStream is
// enabled on each and, for a cluster, every node knows the meta leader.
// On error the servers it started are stopped.
func startNATS(ctx context.Context, bin, root, cellName string, nodes int) (c *natsCluster, err error) {
	c = &natsCluster{}
	defer func() {
		if err != nil {
			c.close(false)
		}
	}()
	for i := range nodes {
		n := &natsNode{name: fmt.Sprintf("n%d", i+1)}
		if n.dir, err = os.MkdirTemp(root, cellName+"-"+n.name+"-"); err != nil {
			return nil, err
		}
		if n.port, err = freePort(); err != nil {
			return nil, err
		}
		if n.httpPort, err = freePort(); err != nil {
			return nil, err
		}
		if nodes > 1 {
			if n.clusterPort, err = freePort(); err != nil {
				return nil, err
			}
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		cfgPath := filepath.Join(n.dir, "nats.conf")
		if err := os.WriteFile(cfgPath, []byte(natsConfig(n, c.nodes)), 0o600); err != nil {
			return nil, err
		}
		if n.proc, err = startChild(n.dir, n.logPath(), nil, bin, "-c", cfgPath); err != nil {
			return nil, err
		}
	}
	readyCtx, cancel := context.WithTimeout(ctx, natsReadyBound)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	var why string
	err = await(readyCtx, func() (bool, error) {
		for _, n := range c.nodes {
			select {
			case <-n.proc.exited:
				return false, fmt.Errorf("nats-server %s exited during startup: %s", n.name, tail(n.logPath()))
			default:
			}
			if why = natsNodeReady(readyCtx, client, n, nodes); why != "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		if ctx.Err() == nil && readyCtx.Err() != nil {
			var logs []string
			for _, n := range c.nodes {
				logs = append(logs, n.logPath())
			}
			return nil, fmt.Errorf("nats-server cell of %d not ready after %v: %s\n%s", nodes, natsReadyBound, why, tail(logs...))
		}
		return nil, err
	}
	return c, nil
}

// natsNodeReady returns why node n is not ready yet, or "" once JetStream
// is enabled on it (/healthz?js-enabled-only=true) and, in a cluster of
// nodes, its /jsz names a meta leader of a cluster of that size.
func natsNodeReady(ctx context.Context, client *http.Client, n *natsNode, nodes int) string {
	if _, err := httpDo(ctx, client, http.MethodGet, n.monitor()+"/healthz?js-enabled-only=true", 1<<20); err != nil {
		return fmt.Sprintf("%s: healthz: %v", n.name, err)
	}
	if nodes == 1 {
		return ""
	}
	body, err := httpDo(ctx, client, http.MethodGet, n.monitor()+"/jsz", 1<<20)
	if err != nil {
		return fmt.Sprintf("%s: jsz: %v", n.name, err)
	}
	if why := metaLeader(body, nodes); why != "" {
		return n.name + ": " + why
	}
	return ""
}

// metaLeader returns why a /jsz answer does not show a meta leader of a
// cluster of size nodes, or "" if it does.
func metaLeader(jsz []byte, nodes int) string {
	var v struct {
		Meta *struct {
			Leader string `json:"leader"`
			Size   int    `json:"cluster_size"`
		} `json:"meta_cluster"`
	}
	switch err := json.Unmarshal(jsz, &v); {
	case err != nil:
		return fmt.Sprintf("jsz: %v", err)
	case v.Meta == nil:
		return "no meta cluster yet"
	case v.Meta.Leader == "":
		return "no meta leader yet"
	case v.Meta.Size != nodes:
		return fmt.Sprintf("meta cluster of %d, want %d", v.Meta.Size, nodes)
	}
	return ""
}

// cpu is the servers' user+system CPU so far, summed.
func (c *natsCluster) cpu() time.Duration {
	var sum time.Duration
	for _, n := range c.nodes {
		st := n.proc.stat()
		sum += st.user + st.sys
	}
	return sum
}

// peakRSS is the sum of the servers' VmHWM.
func (c *natsCluster) peakRSS() int64 {
	var sum int64
	for _, n := range c.nodes {
		sum += max(n.proc.peakRSS(), 0)
	}
	return sum
}

// markLogs makes logCounts skip what the servers logged so far: a
// cluster's start logs refused routes and the wait for a meta leader.
func (c *natsCluster) markLogs() {
	for _, n := range c.nodes {
		if fi, err := os.Stat(n.logPath()); err == nil {
			n.logFrom = fi.Size()
		}
	}
}

// logCounts counts the servers' log lines at warning and error level
// ([WRN], [ERR], [FTL]) since markLogs and returns the first of the worst
// level.
func (c *natsCluster) logCounts() (warn, errs int, sample string) {
	var warnSample string
	for _, n := range c.nodes {
		f, err := os.Open(n.logPath())
		if err != nil {
			continue
		}
		if _, err := f.Seek(n.logFrom, io.SeekStart); err != nil {
			f.Close()
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.Contains(line, "[WRN]"):
				warn++
				if warnSample == "" {
					warnSample = n.name + ": " + line
				}
			case strings.Contains(line, "[ERR]"), strings.Contains(line, "[FTL]"):
				errs++
				if sample == "" {
					sample = n.name + ": " + line
				}
			}
		}
		f.Close()
	}
	if sample == "" {
		sample = warnSample
	}
	return warn, errs, sample
}

// close stops every server and, unless keep, removes its directory, so
// that the stores of one cell do not fill the disk for the next.
func (c *natsCluster) close(keep bool) {
	for _, n := range c.nodes {
		n.proc.stop()
		if !keep {
			os.RemoveAll(n.dir)
		}
	}
}
