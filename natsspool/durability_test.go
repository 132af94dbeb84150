package natsspool

import (
	"context"
	"strings"
	"testing"

	"github.com/hookgate/hookgate/internal/natstest"
)

func TestRefusesWeakDurability(t *testing.T) {
	single := natstest.StartNode(t)
	lazy := natstest.StartCluster(t, 3, natstest.WithoutSyncAlways())
	good := natstest.StartCluster(t, 3)
	for _, tc := range []struct {
		name string
		opts Options
		want string // in Open's error; "" opens
	}{
		{"one replica", Options{Servers: []string{single.URL()}, Replicas: 1, VerifySync: []string{single.MonitorURL()}}, "has 1 replicas"},
		{"one replica accepted", Options{Servers: []string{single.URL()}, Replicas: 1, AcceptRisk: true}, ""},
		{"lazy fsync", Options{Servers: lazy.URLs(), Replicas: 3, VerifySync: lazy.MonitorURLs()}, "does not sync always"},
		{"lazy fsync accepted", Options{Servers: lazy.URLs(), Replicas: 3, VerifySync: lazy.MonitorURLs(), AcceptRisk: true}, ""},
		{"sync unknown", Options{Servers: good.URLs(), Replicas: 3, Prefix: "UNKNOWN"}, "sync setting unknown"},
		{"replicated and synced", Options{Servers: good.URLs(), Replicas: 3, VerifySync: good.MonitorURLs()}, ""},
		{"replicas differ from the stream", Options{Servers: good.URLs(), Replicas: 1, VerifySync: good.MonitorURLs(), AcceptRisk: true}, "exists with other settings: replicas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Open(context.Background(), tc.opts)
			if b != nil {
				defer b.Close()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Open: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Open: %v; want an error with %q", err, tc.want)
			case tc.want != "" && !tc.opts.AcceptRisk && strings.Contains(tc.want, "sync") && !strings.Contains(err.Error(), "accept_risk"):
				t.Fatalf("the error does not name accept_risk: %v", err)
			}
		})
	}
}
