package natsspool

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// minReplicas is the replication that survives the loss of one server with
// its disk while a quorum still acknowledges.
const minReplicas = 3

// checkDurability checks, as far as a client can see it, that an
// acknowledged enqueue survives a gateway's kill -9, the loss of one NATS
// server with its disk, and a power cut of all of them: file storage
// (checked by ensureStream), at least minReplicas replicas with a leader and
// current peers, every server hosting the streams fsyncing before it
// acknowledges (sync_always, read from the servers' /jsz), and a server
// with atomic batch publish (2.12 on). It fails naming every failing check,
// unless Options.AcceptRisk, which logs them.
func (b *Backend) checkDurability(ctx context.Context) error {
	var failed []string
	if !versionAtLeast(b.nc.ConnectedServerVersion(), 2, 12) {
		failed = append(failed, fmt.Sprintf("server version %s: atomic batch publish needs 2.12 or later", b.nc.ConnectedServerVersion()))
	}
	hosts := map[string]bool{}
	streams := []jetstream.Stream{b.queue, b.dead}
	if kvs, err := b.js.Stream(ctx, "KV_"+b.n.bucket()); err == nil {
		streams = append(streams, kvs)
	} else {
		failed = append(failed, fmt.Sprintf("bucket %s: %v", b.n.bucket(), err))
	}
	for _, s := range streams {
		info, err := settled(ctx, s, b.opts.RequestTimeout)
		if err != nil {
			failed = append(failed, fmt.Sprintf("stream info: %v", err))
			continue
		}
		name := info.Config.Name
		if info.Config.Replicas < minReplicas {
			failed = append(failed, fmt.Sprintf("stream %s has %d replicas: fewer than %d do not survive the loss of a server's disk", name, info.Config.Replicas, minReplicas))
		}
		if info.Config.Storage != jetstream.FileStorage || info.Config.PersistMode != jetstream.DefaultPersistMode {
			failed = append(failed, fmt.Sprintf("stream %s is not on file storage with the default persist mode", name))
		}
		c := info.Cluster
		if c == nil || c.Leader == "" {
			failed = append(failed, fmt.Sprintf("stream %s has no leader", name))
			continue
		}
		hosts[c.Leader] = true
		current := 0
		for _, p := range c.Replicas {
			hosts[p.Name] = true
			if p.Current && !p.Offline {
				current++
			}
		}
		if info.Config.Replicas > 1 && current < info.Config.Replicas-1 {
			failed = append(failed, fmt.Sprintf("stream %s: %d of %d followers current", name, current, info.Config.Replicas-1))
		}
	}
	synced, errs := b.syncAlways(ctx)
	failed = append(failed, errs...)
	for h := range hosts {
		if s, ok := synced[h]; !ok {
			failed = append(failed, fmt.Sprintf("server %s: sync setting unknown (not among the verify_sync URLs)", h))
		} else if !s {
			failed = append(failed, fmt.Sprintf("server %s does not sync always: an acknowledged write can be lost in a power cut", h))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	if !b.opts.AcceptRisk {
		return fmt.Errorf("natsspool: an acknowledged event might not be durable: %s (accept_risk starts anyway)", strings.Join(failed, "; "))
	}
	for _, f := range failed {
		b.log.Warn("natsspool: durability at risk (accept_risk)", zap.String("check", f))
	}
	return nil
}

// syncAlways reads each VerifySync server's name (/varz) and sync setting
// (/jsz).
func (b *Backend) syncAlways(ctx context.Context) (map[string]bool, []string) {
	out := map[string]bool{}
	var errs []string
	client := &http.Client{Timeout: b.opts.RequestTimeout}
	for _, base := range b.opts.VerifySync {
		base = strings.TrimRight(base, "/")
		var varz struct {
			Name string `json:"server_name"`
		}
		var jsz struct {
			Config struct {
				SyncAlways bool `json:"sync_always"`
			} `json:"config"`
		}
		if err := getJSON(ctx, client, base+"/varz", &varz); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if err := getJSON(ctx, client, base+"/jsz", &jsz); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out[varz.Name] = jsz.Config.SyncAlways
	}
	return out, errs
}

func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("verify_sync %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("verify_sync %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("verify_sync %s: %w", url, err)
	}
	return nil
}

// versionAtLeast reports whether a "major.minor.patch" version is at least
// major.minor.
func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// settled reads a stream's info until it has a leader and its followers
// are current (a stream just created catches up), or within has passed.
func settled(ctx context.Context, s jetstream.Stream, within time.Duration) (*jetstream.StreamInfo, error) {
	deadline := time.Now().Add(within)
	for {
		info, err := s.Info(ctx)
		if err != nil {
			return nil, err
		}
		if c := info.Cluster; c != nil && c.Leader != "" {
			current := 0
			for _, p := range c.Replicas {
				if p.Current && !p.Offline {
					current++
				}
			}
			if current >= info.Config.Replicas-1 {
				return info, nil
			}
		}
		if time.Now().After(deadline) {
			return info, nil
		}
		sleep(ctx, 100*time.Millisecond)
	}
}
