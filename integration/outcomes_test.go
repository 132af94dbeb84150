package integration

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/verifier"
)

// webhookCounters scrapes the request and attempt counters.
func webhookCounters(t *testing.T, g *gateway) map[string]float64 {
	out := map[string]float64{}
	for k, v := range scrapeMetrics(t, g) {
		if strings.HasPrefix(k, "caddy_webhook_requests_total{") || strings.HasPrefix(k, "caddy_webhook_delivery_attempts_total{") {
			out[k] = v
		}
	}
	return out
}

// TestEveryMetricOutcome drives every outcome of caddy_webhook_requests_total
// and caddy_webhook_delivery_attempts_total that a running gateway can show
// (a failed write's "error" cannot be caused without faking the spool, and
// "released" happens while the process exits; the caddymodule package
// tests that one) and checks that /metrics counts each exactly once.
func TestEveryMetricOutcome(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "HG_SECRET")
	up := newUpstream(t)  // route in
	vup := newUpstream(t) // route vo, behind reverse_proxy
	sub := newSubscriber(t, g)
	s := newSender(g, hookPath, secret)
	vs := newSender(g, "/hooks/vo", secret)
	poison := s.event(typeOK)
	up.setRespond(func(r *recorded) reply {
		if r.ID == poison.ID {
			return reply{Status: 503}
		}
		return reply{Status: 200}
	})
	var mu sync.Mutex
	failVO, slowVO := "", ""
	vArrived := make(chan *recorded, 16)
	vup.notify(vArrived)
	vup.setRespond(func(r *recorded) reply {
		mu.Lock()
		defer mu.Unlock()
		switch idOfBody(r.Body) {
		case failVO:
			return reply{Status: 502}
		case slowVO:
			return reply{Status: 200, Delay: 2 * time.Second}
		}
		return reply{Status: 200}
	})
	sub.setRespond(func(r *recorded) reply {
		if r.ID == "evt_outcome_poison" {
			return reply{Status: 500}
		}
		return reply{Status: 200}
	})
	g.start(g.globalsWith("max_items 20", "") + publishSite(g,
		fmt.Sprintf(`	handle %s {
		webhook_ingest {
			name in
			secret {env.HG_SECRET}
			events document.*
			tolerance 10m
			max_body 4KiB
			read_timeout 1s
			forward %s {
				max_attempts 2
				backoff 100ms 200ms
			}
		}
	}
	handle /hooks/vo {
		webhook_ingest {
			name vo
			secret {env.HG_SECRET}
			tolerance 10m
		}
		reverse_proxy %s
	}`, hookPath, up.url("/in"), vup.addr),
		publishHandle(publishPath, "attempts 2", "backoff 100ms 200ms", "allow_private 127.0.0.1",
			subscriberBlock("acme", sub.url("/hook"), "secret {env.HG_SECRET}", "events document.*")),
	))

	want := map[string]float64{}
	count := func(metric, route, outcome string) {
		want[fmt.Sprintf(`caddy_webhook_%s{outcome=%q,route=%q}`, metric, outcome, route)]++
	}
	// in: accepted, duplicate, ignored, conflict.
	expectAnswer(t, "poison", s.mustPost(t, poison), 202, "accepted")
	count("requests_total", "in", "accepted")
	var delivered []string
	for range 3 {
		d := s.event(typeOK)
		expectAnswer(t, "valid", s.mustPost(t, d), 202, "accepted")
		count("requests_total", "in", "accepted")
		delivered = append(delivered, d.ID)
	}
	expectAnswer(t, "duplicate", s.mustPost(t, poison), 200, "duplicate")
	count("requests_total", "in", "duplicate")
	expectAnswer(t, "ignored", s.mustPost(t, s.event(typeIgnored)), 200, "ignored")
	count("requests_total", "in", "ignored")
	conflict := s.eventWithID(poison.ID, typeOK)
	conflict.Body = envelope(poison.ID, typeOK, time.Now().Add(time.Second), `,"v":2`)
	s.sign(conflict)
	expectAnswer(t, "conflict", s.mustPost(t, conflict), 409, "")
	count("requests_total", "in", "conflict")

	// in: every rejection reason.
	for _, tc := range []struct {
		outcome string
		code    int
		mutate  func(*delivery)
	}{
		{"method", 405, func(d *delivery) { d.Method = http.MethodPut }},
		{"content_type", 415, func(d *delivery) { d.Header.Set("Content-Type", "text/plain") }},
		{"content_encoding", 415, func(d *delivery) { d.Header.Set("Content-Encoding", "br") }},
		{"too_large", 413, func(d *delivery) {
			d.Body = envelope(d.ID, typeOK, time.Now(), `,"pad":"`+strings.Repeat("x", 5000)+`"`)
			s.sign(d)
		}},
		{"signature_missing", 401, func(d *delivery) { d.Header.Del(verifier.SignatureHeader) }},
		{"signature_repeated", 400, func(d *delivery) { d.Header.Add(verifier.SignatureHeader, "sha256=00") }},
		{"signature_malformed", 401, func(d *delivery) { d.Header.Set(verifier.SignatureHeader, "md5=00") }},
		{"signature_mismatch", 401, func(d *delivery) { s.signWith(d, randomSecret(32)) }},
		{"envelope_invalid", 400, func(d *delivery) { d.Body = []byte(`{"eventType":"document.processed"}`); s.sign(d) }},
		{"event_header_missing", 400, func(d *delivery) { d.Header.Del(verifier.EventHeader) }},
		{"event_header_repeated", 400, func(d *delivery) { d.Header.Add(verifier.EventHeader, typeOK) }},
		{"event_header_mismatch", 400, func(d *delivery) { d.Header.Set(verifier.EventHeader, "document.deleted") }},
		{"timestamp_stale", 401, func(d *delivery) { d.Body = envelope(d.ID, typeOK, time.Now().Add(-time.Hour), ""); s.sign(d) }},
		{"timestamp_future", 401, func(d *delivery) { d.Body = envelope(d.ID, typeOK, time.Now().Add(time.Hour), ""); s.sign(d) }},
	} {
		d := s.event(typeOK)
		tc.mutate(d)
		expectAnswer(t, tc.outcome, s.mustPost(t, d), tc.code, "")
		count("requests_total", "in", tc.outcome)
	}
	// in: a body slower than read_timeout.
	const bodyOutcome = `caddy_webhook_requests_total{outcome="body",route="in"}`
	// The rest of the body goes once the gateway has given up on it: Go's
	// server reads what is left of a small body before it writes the answer.
	a := slowPost(t, g, s.event(typeOK), func() {
		testwait.Until(t, 30*time.Second, func() (bool, string) {
			return scrapeMetrics(t, g)[bodyOutcome] == 1, "the gateway is still reading the stalled body"
		})
	})
	expectAnswer(t, "stalled body", a, 408, "")
	count("requests_total", "in", "body")

	// vo: handed on, the next handler failing, in progress, duplicate.
	ok := vs.event(typeOK)
	if a := vs.mustPost(t, ok); a.Code != 200 {
		t.Fatalf("verify-only: %s", a)
	}
	count("requests_total", "vo", "handed_on")
	expectAnswer(t, "verify-only duplicate", vs.mustPost(t, ok), 200, "duplicate")
	count("requests_total", "vo", "duplicate")
	failing := vs.event(typeOK)
	mu.Lock()
	failVO = failing.ID
	mu.Unlock()
	if a := vs.mustPost(t, failing); a.Code != 502 {
		t.Fatalf("verify-only, upstream 502: %s", a)
	}
	count("requests_total", "vo", "handed_on_failed")
	slow := vs.event(typeOK)
	mu.Lock()
	slowVO = slow.ID
	mu.Unlock()
	second, first := postDuringFirst(t, vs, slow, vArrived)
	expectAnswer(t, "verify-only, concurrent", second, 409, "")
	count("requests_total", "vo", "in_progress")
	if first.Code != 200 {
		t.Fatalf("the slow verify-only request: %s", first)
	}
	count("requests_total", "vo", "handed_on")

	// publish: accepted, duplicate, no subscribers, rejected, conflict.
	expectPublished(t, "publish", publish(t, g, publishPath, publishBody(typeOK, "evt_outcome_1", `{}`)), 202, "accepted", "acme")
	expectPublished(t, "publish poison", publish(t, g, publishPath, publishBody(typeOK, "evt_outcome_poison", `{}`)), 202, "accepted", "acme")
	count("requests_total", "publish", "accepted")
	count("requests_total", "publish", "accepted")
	expectPublished(t, "publish again", publish(t, g, publishPath, publishBody(typeOK, "evt_outcome_1", `{}`)), 200, "duplicate", "acme")
	count("requests_total", "publish", "duplicate")
	expectPublished(t, "publish to nobody", publish(t, g, publishPath, publishBody(typeIgnored, "", `{}`)), 200, "no_subscribers")
	count("requests_total", "publish", "no_subscribers")
	if a := publish(t, g, publishPath, publishBody(typeOK, "evt_outcome_1", `{"v":2}`)); a.Code != 409 {
		t.Fatalf("publish conflict: %s", a)
	}
	count("requests_total", "publish", "conflict")
	for _, r := range []struct{ method, contentType, body string }{
		{http.MethodGet, "application/json", publishBody(typeOK, "", `{}`)},
		{http.MethodPost, "text/plain", publishBody(typeOK, "", `{}`)},
		{http.MethodPost, "application/json", `{"eventType":"document.processed"}`},
	} {
		if a := publishRaw(t, g, r.method, publishPath, r.contentType, nil, r.body); a.Status != "rejected" {
			t.Fatalf("publish %s %s %s: %s, want a rejection", r.method, r.contentType, r.body, a)
		}
		count("requests_total", "publish", "rejected")
	}

	// Attempts: delivered, retried, dead, on both kinds of route.
	waitDelivered(t, 10*time.Second, delivered, up)
	waitDelivered(t, 10*time.Second, []string{"evt_outcome_1"}, sub)
	for range delivered {
		count("delivery_attempts_total", "in", "delivered")
	}
	count("delivery_attempts_total", "in", "retry")
	count("delivery_attempts_total", "in", "dead")
	count("delivery_attempts_total", "subscriber/acme", "delivered")
	count("delivery_attempts_total", "subscriber/acme", "retry")
	count("delivery_attempts_total", "subscriber/acme", "dead")
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		dIn, _, _, _ := g.routeStat(t, "in")
		dSub, _, _, _ := g.routeStat(t, "subscriber/acme")
		return dIn == 1 && dSub == 1, fmt.Sprintf("dead letters: in %d, acme %d", dIn, dSub)
	})

	// unavailable: fill the spool (max_items 20) while nothing is delivered.
	for _, r := range []string{"in", "subscriber/acme"} {
		if code := g.adminDo(t, http.MethodPost, "/webhooks/routes/"+r+"/pause", "", nil); code != 200 {
			t.Fatalf("pausing %s: %d", r, code)
		}
	}
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatal("20 events accepted into a spool with two dead letters and max_items 20")
		}
		a := s.mustPost(t, s.event(typeOK))
		if a.Code == 503 {
			count("requests_total", "in", "unavailable")
			break
		}
		expectAnswer(t, "filling the spool", a, 202, "accepted")
		count("requests_total", "in", "accepted")
	}
	if a := publish(t, g, publishPath, publishBody(typeOK, "", `{}`)); a.Code != 503 || a.Status != "unavailable" {
		t.Fatalf("publish into a full spool: %s", a)
	}
	count("requests_total", "publish", "unavailable")

	got := webhookCounters(t, g)
	var diff []string
	for k, v := range want {
		if got[k] != v {
			diff = append(diff, fmt.Sprintf("%s = %v, want %v", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diff = append(diff, fmt.Sprintf("%s = %v, not expected", k, v))
		}
	}
	sort.Strings(diff)
	if len(diff) > 0 {
		t.Errorf("/metrics differs:\n%s", strings.Join(diff, "\n"))
	}
}
