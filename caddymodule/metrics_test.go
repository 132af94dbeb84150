package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// counterValue reads one counter of vec by its labels (name, value, ...).
func counterValue(t *testing.T, vec *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	v, _ := metricValue(t, vec, "", labels...)
	return v
}

// metricValue reads one counter or gauge of c by its name ("": any) and
// labels (name, value, ...), and reports whether c has it.
func metricValue(t *testing.T, c prometheus.Collector, name string, labels ...string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if name != "" && f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// TestReleasedAttemptsAreCounted: an attempt cut off at shutdown is counted
// under delivery_attempts_total{outcome="released"}. (The integration tests
// cannot scrape a process that has exited.)
func TestReleasedAttemptsAreCounted(t *testing.T) {
	arrived := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the server notices the gateway hanging up
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	defer up.Close()
	c := loadConfig(t, "", fmt.Sprintf(`[{"handler": "webhook_ingest", "name": "released", "secrets": ["{env.HG_UNIT_SECRET}"],
		"forward": {"url": %q}}]`, up.URL))
	initMetrics()
	released := func() float64 { return counterValue(t, metrics.attempts, "route", "released", "outcome", "released") }
	before := released()
	if res := c.serve(t, c.handler(0), signedDelivery("evt_released_1", "document.processed").request(), nil); res.status() != 202 {
		t.Fatalf("%s", res)
	}
	<-arrived
	c.spool().StopDelivering(0) // what an exiting process does, with no grace left
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := released() - before; got != 1 {
		t.Fatalf("released attempts counted: %v, want 1", got)
	}
}
