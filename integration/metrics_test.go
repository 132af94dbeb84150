package integration

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

// scrapeMetrics reads the admin endpoint's /metrics into series -> value,
// keeping only caddy_webhook_* series.
func scrapeMetrics(t testing.TB, g *gateway) map[string]float64 {
	t.Helper()
	code, body, err := g.adminGet("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_webhook_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetrics: after known traffic, /metrics reports exactly what happened:
// requests by outcome, dedupe hits, ack latency, attempts by outcome, dead
// letters and spool depth; the values survive a reload without
// duplicate-registration errors.
func TestMetrics(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	sub := newSubscriber(t, g)
	s := newSender(g, hookPath, secret)
	poison := s.event(typeOK)
	up.setRespond(func(r *recorded) reply {
		if r.ID == poison.ID {
			return reply{Status: 503}
		}
		return reply{Status: 200}
	})
	config := g.globals("") + publishSite(g,
		fmt.Sprintf("\thandle %s {\n\t\twebhook_ingest {\n\t\t\tname in\n\t\t\tsecret {env.HG_SECRET}\n\t\t\tevents document.*\n\t\t\tforward %s {\n\t\t\t\tmax_attempts 2\n\t\t\t\tbackoff 100ms 200ms\n\t\t\t}\n\t\t}\n\t}",
			hookPath, up.url("/in")),
		publishHandle(publishPath, "backoff 100ms 200ms", "allow_private 127.0.0.1",
			subscriberBlock("acme", sub.url("/hook"), "secret {env.HG_SECRET}")),
	)
	g.start(config)

	expectAnswer(t, "poison", s.mustPost(t, poison), 202, "accepted")
	var ok []string
	for range 2 {
		d := s.event(typeOK)
		expectAnswer(t, "valid", s.mustPost(t, d), 202, "accepted")
		ok = append(ok, d.ID)
	}
	expectAnswer(t, "duplicate", s.mustPost(t, poison), 200, "duplicate")
	bad := s.event(typeOK)
	s.signWith(bad, randomSecret(32))
	expectAnswer(t, "bad signature", s.mustPost(t, bad), 401, "")
	expectAnswer(t, "ignored", s.mustPost(t, s.event(typeIgnored)), 200, "ignored")
	if a := publish(t, g, publishPath, publishBody(typeOK, "evt_metrics_1", `{}`)); a.Code != 202 {
		t.Fatalf("publish: %s", a)
	}
	waitDelivered(t, 5*time.Second, ok, up)
	waitDelivered(t, 5*time.Second, []string{"evt_metrics_1"}, sub)

	want := map[string]float64{
		`caddy_webhook_requests_total{outcome="accepted",route="in"}`:                        3,
		`caddy_webhook_requests_total{outcome="duplicate",route="in"}`:                       1,
		`caddy_webhook_requests_total{outcome="signature_mismatch",route="in"}`:              1,
		`caddy_webhook_requests_total{outcome="ignored",route="in"}`:                         1,
		`caddy_webhook_requests_total{outcome="accepted",route="publish"}`:                   1,
		`caddy_webhook_dedupe_hits_total{route="in"}`:                                        1,
		`caddy_webhook_ack_duration_seconds_count{route="in"}`:                               4,
		`caddy_webhook_ack_duration_seconds_count{route="publish"}`:                          1,
		`caddy_webhook_delivery_attempts_total{outcome="delivered",route="in"}`:              2,
		`caddy_webhook_delivery_attempts_total{outcome="retry",route="in"}`:                  1,
		`caddy_webhook_delivery_attempts_total{outcome="dead",route="in"}`:                   1,
		`caddy_webhook_delivery_attempts_total{outcome="delivered",route="subscriber/acme"}`: 1,
		`caddy_webhook_delivery_duration_seconds_count{route="in"}`:                          4,
		`caddy_webhook_dead_letters_total{route="in"}`:                                       1,
		`caddy_webhook_spool_items{route="in",state="dead"}`:                                 1,
		`caddy_webhook_spool_items{route="in",state="queued"}`:                               0,
		`caddy_webhook_spool_items{route="in",state="in_flight"}`:                            0,
		`caddy_webhook_spool_items{route="in",state="scheduled"}`:                            0,
		`caddy_webhook_oldest_pending_age_seconds{route="in"}`:                               0,
		// Three events on in, one published (its dedupe record and its
		// subscriber's); five attempts.
		`caddy_webhook_records{kind="dedupe"}`:        5,
		`caddy_webhook_records{kind="attempts"}`:      5,
		`caddy_webhook_max_record_bytes`:              4 << 30,
		`caddy_webhook_attempt_records_dropped_total`: 0,
	}
	var got map[string]float64
	testwait.Until(t, 5*time.Second, func() (bool, string) {
		got = scrapeMetrics(t, g)
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				return false, fmt.Sprintf("%s = %v, want %v", k, got[k], v)
			}
		}
		return true, ""
	})
	for _, k := range []string{`caddy_webhook_spool_bytes{route="in"}`, `caddy_webhook_record_bytes{kind="dedupe"}`, `caddy_webhook_record_bytes{kind="attempts"}`} {
		if got[k] <= 0 {
			t.Errorf("%s = %v, want the bytes stored", k, got[k])
		}
	}

	// A reload keeps the counters and registers without errors.
	if code, body, err := g.load(config); err != nil || code != 200 {
		t.Fatalf("reload: %d %s %v", code, body, err)
	}
	after := scrapeMetrics(t, g)
	for _, k := range []string{`caddy_webhook_requests_total{outcome="accepted",route="in"}`, `caddy_webhook_delivery_attempts_total{outcome="delivered",route="in"}`} {
		if after[k] != want[k] {
			t.Errorf("after the reload %s = %v, want %v", k, after[k], want[k])
		}
	}
}
