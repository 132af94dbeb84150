package integration

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/verifier"
)

// The end-to-end tests of webhook_publish, the outbound publisher: an
// internal app posts {"eventType","payload"[,"eventId"]}, the gateway spools
// one signed delivery per matching subscriber and retries it like the
// reference sender. Attempts are observed from the subscriber side (the
// upstream records X-Webhook-Attempt and arrival times) and in the process's
// logs (one structured line per attempt).

const (
	publishPath = "/publish"
	// A payload written unlike encoding/json would write it, so that any
	// re-serialization shows.
	oddPayload = `{"note":"héllo – ünïcode ✓","amount":2.50,  "list":[1,"x",null] }`
)

// Messages of the spool's per-attempt log lines.
const (
	msgDelivered = "delivered"
	msgRetry     = "delivery failed; will retry"
	msgDead      = "delivery failed; kept as a dead letter"
)

var (
	envelopeTimeRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)
	generatedIDRE  = regexp.MustCompile(`^evt_(\d{13})_[a-z0-9]{10}$`)
)

// newSubscriber starts an upstream for a subscriber. Every signature it
// receives (made by the gateway) is added to g's forbidden values before
// g's cleanup checks the logs.
func newSubscriber(t *testing.T, g *gateway) *upstream {
	t.Helper()
	up := newUpstream(t)
	t.Cleanup(func() { noteSignatures(g, up) }) // runs before the gateway's cleanup
	return up
}

// noteSignatures adds the signatures the upstreams received to g's forbidden
// values and returns them.
func noteSignatures(g *gateway, ups ...*upstream) []string {
	var out []string
	for _, up := range ups {
		for _, r := range up.requests() {
			if v := r.Header.Get(verifier.SignatureHeader); v != "" {
				g.sentSignature(v)
				out = append(out, v)
			}
		}
	}
	return out
}

// publishSite is a site with the given handle blocks and a 404 catch-all.
func publishSite(g *gateway, handles ...string) string {
	return fmt.Sprintf("http://%s {\n%s\n\thandle {\n\t\trespond \"not here\" 404\n\t}\n}\n", g.site, strings.Join(handles, "\n"))
}

// publishHandle is a handle block on path with a webhook_publish whose
// block holds lines.
func publishHandle(path string, lines ...string) string {
	return fmt.Sprintf("\thandle %s {\n\t\twebhook_publish {\n\t\t\t%s\n\t\t}\n\t}", path, strings.Join(lines, "\n\t\t\t"))
}

// acmeHandle is publishHandle for the acme publisher most tests use: the
// organization and project its envelopes carry, a 100ms to 400ms backoff and
// loopback subscribers allowed, then lines.
func acmeHandle(path string, lines ...string) string {
	return publishHandle(path, append([]string{"organization org_abc123", "project proj_xyz789",
		"backoff 100ms 400ms", "allow_private 127.0.0.1"}, lines...)...)
}

// subscriberBlock is a subscriber line of webhook_publish with its block.
func subscriberBlock(name, url string, lines ...string) string {
	return fmt.Sprintf("subscriber %s %s {\n\t\t\t\t%s\n\t\t\t}", name, url, strings.Join(lines, "\n\t\t\t\t"))
}

// pubAnswer is webhook_publish's answer.
type pubAnswer struct {
	Code        int
	Body        string
	Status      string
	EventID     string
	Subscribers []string
	RawSubs     string // the subscribers member as sent ("[]", "null", ...)
}

func (a pubAnswer) String() string { return fmt.Sprintf("%d %s", a.Code, strings.TrimSpace(a.Body)) }

// publishRaw posts body to path with a content type (and method).
func publishRaw(t testing.TB, g *gateway, method, path, contentType string, header http.Header, body string) pubAnswer {
	t.Helper()
	req, err := http.NewRequest(method, g.url(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatalf("publishing to %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	a := pubAnswer{Code: resp.StatusCode, Body: string(b)}
	var js struct {
		Status      string          `json:"status"`
		EventID     string          `json:"eventId"`
		Subscribers json.RawMessage `json:"subscribers"`
	}
	if json.Unmarshal(b, &js) == nil {
		a.Status, a.EventID, a.RawSubs = js.Status, js.EventID, string(js.Subscribers)
		_ = json.Unmarshal(js.Subscribers, &a.Subscribers)
	}
	return a
}

// publish posts a JSON publish request to path.
func publish(t testing.TB, g *gateway, path, body string) pubAnswer {
	t.Helper()
	return publishRaw(t, g, http.MethodPost, path, "application/json", nil, body)
}

// publishBody is a publish request; id "" leaves eventId out.
func publishBody(typ, id, payload string) string {
	if id == "" {
		return fmt.Sprintf(`{"eventType":%q,"payload":%s}`, typ, payload)
	}
	return fmt.Sprintf(`{"eventType":%q,"eventId":%q,"payload":%s}`, typ, id, payload)
}

// expectPublished checks an answer's code, status and subscriber names.
func expectPublished(t testing.TB, what string, a pubAnswer, code int, status string, subs ...string) {
	t.Helper()
	if subs == nil {
		subs = []string{}
	}
	if a.Code != code || a.Status != status || !slices.Equal(a.Subscribers, subs) {
		t.Errorf("%s: got %s, want %d %q with subscribers %q", what, a, code, status, subs)
	}
}

// logEntry is one parsed JSON log line.
type logEntry map[string]any

func (e logEntry) str(k string) string { s, _ := e[k].(string); return s }

func (e logEntry) num(k string) int {
	f, ok := e[k].(float64)
	if !ok {
		return -1
	}
	return int(f)
}

// dur reads a duration field, encoded as seconds (Caddy's default) or as a
// string; ok is false when the field is absent.
func (e logEntry) dur(k string) (time.Duration, bool) {
	switch v := e[k].(type) {
	case float64:
		return time.Duration(v * float64(time.Second)), true
	case string:
		d, err := time.ParseDuration(v)
		return d, err == nil
	}
	return 0, false
}

func (e logEntry) String() string {
	b, _ := json.Marshal(map[string]any(e))
	return string(b)
}

// logEntries returns the JSON log lines whose msg is msg (any msg if "").
func logEntries(g *gateway, msg string) []logEntry {
	var out []logEntry
	for _, line := range strings.Split(g.logs(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e logEntry
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if msg == "" || e.str("msg") == msg {
			out = append(out, e)
		}
	}
	return out
}

// attemptLines returns the spool's per-attempt log lines of an event on a
// subscriber's route, in order.
func attemptLines(g *gateway, subscriberName, eventID string) []logEntry {
	var out []logEntry
	for _, e := range logEntries(g, "") {
		switch e.str("msg") {
		case msgDelivered, msgRetry, msgDead:
		default:
			continue
		}
		if e.str("event_id") == eventID && e.str("route") == "subscriber/"+subscriberName {
			out = append(out, e)
		}
	}
	return out
}

// waitAttemptLine waits for an attempt line of the event with message msg.
func waitAttemptLine(t testing.TB, g *gateway, subscriberName, eventID, msg string, timeout time.Duration) logEntry {
	t.Helper()
	var found logEntry
	testwait.Until(t, timeout, func() (bool, string) {
		for _, e := range attemptLines(g, subscriberName, eventID) {
			if e.str("msg") == msg {
				found = e
				return true, ""
			}
		}
		return false, fmt.Sprintf("no %q line for %s on subscriber/%s; attempt lines: %v", msg, eventID, subscriberName, attemptLines(g, subscriberName, eventID))
	})
	return found
}

// requestsFor returns what an upstream received for an event, in order.
func requestsFor(up *upstream, id string) []recorded { return up.byID()[id] }

// attemptNumbers lists the X-Webhook-Attempt values received.
func attemptNumbers(reqs []recorded) []string {
	out := []string{}
	for _, r := range reqs {
		out = append(out, r.Attempt)
	}
	return out
}

// sign256 is the expected X-Webhook-Signature of body under secret,
// computed independently of the verifier package.
func sign256(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// TestPublishRoundTrip: Hookgate's publisher delivers to Hookgate's own
// webhook_ingest route on the same gateway (loopback allowed explicitly),
// which verifies the signature and forwards to an upstream; the upstream
// receives the event exactly once, with the envelope the publisher built.
func TestPublishRoundTrip(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "ACME_SECRET")
	up := newSubscriber(t, g)
	g.start(g.globals("") + publishSite(g,
		acmeHandle(publishPath,
			subscriberBlock("self", g.url(hookPath),
				"secret {env.ACME_SECRET}",
				"events document.*",
				"header X-Tenant acme"),
		),
		fmt.Sprintf("\thandle %s {\n\t\twebhook_ingest {\n\t\t\tname roundtrip\n\t\t\tsecret {env.ACME_SECRET}\n\t\t\tevents document.*\n\t\t\tforward %s {\n\t\t\t\tbackoff 100ms 400ms\n\t\t\t}\n\t\t}\n\t}",
			hookPath, up.url("/in")),
	))

	const id = "evt_roundtrip_1"
	body := publishBody(typeOK, id, oddPayload)
	before := time.Now()
	expectPublished(t, "publish", publish(t, g, publishPath, body), 202, "accepted", "self")
	after := time.Now()
	waitDelivered(t, 15*time.Second, []string{id}, up)
	// The publisher's attempt was accepted by the ingest route (202) at once.
	line := waitAttemptLine(t, g, "self", id, msgDelivered, 5*time.Second)
	if line.num("attempt") != 1 || line.num("status") != 202 {
		t.Errorf("the publisher's attempt on the ingest route: want attempt 1 status 202, got %v", line)
	}
	expectPublished(t, "the same request again", publish(t, g, publishPath, body), 200, "duplicate", "self")
	time.Sleep(700 * time.Millisecond) // longer than the backoff: a second forward would show

	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("the upstream received %d requests, want exactly 1: %v", len(reqs), attemptNumbers(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.Path != "/in" || r.ID != id {
		t.Errorf("upstream got %s %s id %q, want POST /in id %q", r.Method, r.Path, r.ID, id)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &env); err != nil {
		t.Fatalf("the forwarded envelope is not a JSON object: %v: %s", err, r.Body)
	}
	keys := []string{}
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"eventId", "eventType", "organizationId", "payload", "projectId", "timestamp"}; !slices.Equal(keys, want) {
		t.Errorf("envelope members %v, want %v", keys, want)
	}
	str := func(k string) string {
		var s string
		if err := json.Unmarshal(env[k], &s); err != nil {
			t.Errorf("envelope %s is not a string: %s", k, env[k])
		}
		return s
	}
	for k, want := range map[string]string{"eventType": typeOK, "eventId": id, "organizationId": "org_abc123", "projectId": "proj_xyz789"} {
		if got := str(k); got != want {
			t.Errorf("envelope %s = %q, want %q", k, got, want)
		}
	}
	if !bytes.Equal(env["payload"], []byte(strings.TrimSpace(oddPayload))) {
		t.Errorf("payload bytes changed on the way:\n got %s\nwant %s", env["payload"], oddPayload)
	}
	ts := str("timestamp")
	if !envelopeTimeRE.MatchString(ts) {
		t.Errorf("timestamp %q is not RFC 3339 UTC with milliseconds (2026-03-31T12:00:00.000Z)", ts)
	} else if at, err := time.Parse(time.RFC3339, ts); err != nil || at.Before(before.Add(-time.Second)) || at.After(after.Add(time.Second)) {
		t.Errorf("timestamp %q is not the publish time (between %v and %v): %v", ts, before.UTC(), after.UTC(), err)
	}
	// The ingest route passed on the publisher's headers, and the signature
	// is the HMAC of these exact bytes with the shared secret.
	if got := r.Header.Get(verifier.EventHeader); got != typeOK {
		t.Errorf("X-Webhook-Event = %q, want %q", got, typeOK)
	}
	if got, want := r.Header.Get(verifier.SignatureHeader), sign256(secret, r.Body); got != want {
		t.Errorf("forwarded signature %q, want the HMAC of the body %q", got, want)
	}
	noteSignatures(g, up)
}

// TestPublishSignatureAndStableBytes: the subscriber recomputes the HMAC
// over the bytes it received and agrees with the header; a subscriber that
// fails twice gets identical bytes and signatures on all three attempts,
// signed with the first of its secrets, with the configured extra headers.
func TestPublishSignatureAndStableBytes(t *testing.T) {
	t.Parallel()
	secret, next := randomSecret(32), randomSecret(32)
	g := newGateway(t, "ACME_SECRET="+string(secret), "ACME_NEXT="+string(next))
	g.forbid(string(secret), string(next))
	up := newSubscriber(t, g)
	up.setRespond(func(r *recorded) reply {
		if r.Attempt == "1" || r.Attempt == "2" {
			return reply{Status: 500, Body: "try again"}
		}
		return reply{Status: 200, Body: "ok"}
	})
	g.start(g.globals("") + publishSite(g, acmeHandle(publishPath,
		subscriberBlock("acme", up.url("/hook"),
			"secret {env.ACME_SECRET} {env.ACME_NEXT}",
			"events document.*",
			"header X-Tenant acme"),
	)))

	const id = "evt_sig_1"
	expectPublished(t, "publish", publish(t, g, publishPath, publishBody(typeOK, id, oddPayload)), 202, "accepted", "acme")
	waitDelivered(t, 15*time.Second, []string{id}, up)
	time.Sleep(600 * time.Millisecond)
	reqs := requestsFor(up, id)
	if got := attemptNumbers(reqs); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Fatalf("attempts received %v, want [1 2 3]", got)
	}
	first := reqs[0]
	for i, r := range reqs {
		if !bytes.Equal(r.Body, first.Body) {
			t.Errorf("attempt %d body differs from attempt 1:\n%s\n%s", i+1, r.Body, first.Body)
		}
		sig := r.Header.Get(verifier.SignatureHeader)
		if sig != first.Header.Get(verifier.SignatureHeader) {
			t.Errorf("attempt %d signature %q differs from attempt 1's %q", i+1, sig, first.Header.Get(verifier.SignatureHeader))
		}
		if want := sign256(secret, r.Body); sig != want {
			t.Errorf("attempt %d: X-Webhook-Signature %q, but the HMAC-SHA256 of the received bytes with the first secret is %q", i+1, sig, want)
		}
		if sig == sign256(next, r.Body) {
			t.Errorf("attempt %d is signed with the second secret", i+1)
		}
		if r.Method != http.MethodPost || r.Path != "/hook" {
			t.Errorf("attempt %d: %s %s, want POST /hook", i+1, r.Method, r.Path)
		}
		for h, want := range map[string]string{
			"Content-Type":       "application/json",
			verifier.EventHeader: typeOK,
			"X-Webhook-Id":       id,
			"X-Webhook-Attempt":  strconv.Itoa(i + 1),
			"X-Tenant":           "acme",
		} {
			if got := r.Header.Values(h); len(got) != 1 || got[0] != want {
				t.Errorf("attempt %d: header %s = %q, want [%q]", i+1, h, got, want)
			}
		}
		if len(r.Header.Values(verifier.SignatureHeader)) != 1 {
			t.Errorf("attempt %d: %d signature headers", i+1, len(r.Header.Values(verifier.SignatureHeader)))
		}
	}
	if env, err := verifier.ParseEnvelope(first.Body); err != nil || env.ID != id {
		t.Errorf("the delivered body is not a valid envelope for %s: %v", id, err)
	}
	if got := up.delivered()[id]; got != 1 {
		t.Errorf("delivered %d times, want once", got)
	}
}

// TestPublishRetries: a subscriber answering 500 gets exactly 3 attempts by
// default, spaced within the backoff bounds, each logged with its status
// and duration; a 429 with Retry-After is honoured; a 307 is a failed
// attempt and is never followed.
func TestPublishRetries(t *testing.T) {
	t.Parallel()
	g, _ := newSecretGateway(t, "ACME_SECRET")
	upFail := newSubscriber(t, g)
	upFail.setRespond(func(*recorded) reply { return reply{Status: 500, Body: "broken"} })
	upTarget := newSubscriber(t, g) // where the redirect points: must never be reached
	upRedirect := newSubscriber(t, g)
	upRedirect.setRespond(func(*recorded) reply {
		return reply{Status: http.StatusTemporaryRedirect, Header: http.Header{"Location": {upTarget.url("/elsewhere")}}}
	})
	upLimited := newSubscriber(t, g)
	upLimited.setRespond(func(r *recorded) reply {
		if r.Attempt == "1" {
			return reply{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"1"}}}
		}
		return reply{Status: 200}
	})
	const bmin, bmax = 100 * time.Millisecond, 400 * time.Millisecond
	g.start(g.globals("") + publishSite(g,
		acmeHandle(publishPath,
			subscriberBlock("failing", upFail.url("/hook"), "secret {env.ACME_SECRET}", "events test.fail"),
			subscriberBlock("redirect", upRedirect.url("/hook"), "secret {env.ACME_SECRET}", "events test.redirect"),
		),
		publishHandle("/publish-slow",
			"organization org_abc123",
			"project proj_xyz789",
			"backoff 100ms 2s",
			"allow_private 127.0.0.1",
			subscriberBlock("limited", upLimited.url("/hook"), "secret {env.ACME_SECRET}"),
		),
	))
	expectPublished(t, "publish to the failing subscriber", publish(t, g, publishPath, publishBody("test.fail", "evt_fail_1", `{"n":1}`)), 202, "accepted", "failing")
	expectPublished(t, "publish to the redirecting subscriber", publish(t, g, publishPath, publishBody("test.redirect", "evt_redirect_1", `{"n":2}`)), 202, "accepted", "redirect")
	expectPublished(t, "publish to the rate-limited subscriber", publish(t, g, "/publish-slow", publishBody("test.limit", "evt_limit_1", `{"n":3}`)), 202, "accepted", "limited")

	t.Run("500 gets three attempts", func(t *testing.T) {
		dead := waitAttemptLine(t, g, "failing", "evt_fail_1", msgDead, 15*time.Second)
		time.Sleep(bmax + 1500*time.Millisecond) // a 4th attempt would have come by now
		reqs := requestsFor(upFail, "evt_fail_1")
		if got := attemptNumbers(reqs); !slices.Equal(got, []string{"1", "2", "3"}) {
			t.Fatalf("attempts received %v, want exactly [1 2 3]", got)
		}
		if n := upFail.count(); n != 3 {
			t.Errorf("the failing subscriber received %d requests, want 3", n)
		}
		const slack = 1500 * time.Millisecond // -race on shared cores
		for i := 1; i < len(reqs); i++ {
			gap := reqs[i].At.Sub(reqs[i-1].At)
			// Full jitter: the ceiling doubles from bmin; a gap is at least
			// bmin and at most its ceiling (capped at bmax), plus scheduling.
			ceiling := min(bmin<<(i-1), bmax)
			if gap < bmin-5*time.Millisecond || gap > ceiling+slack {
				t.Errorf("gap before attempt %d is %v, want within [%v, %v] (+ slack)", i+1, gap, bmin, ceiling)
			}
		}
		lines := attemptLines(g, "failing", "evt_fail_1")
		if len(lines) != 3 {
			t.Fatalf("want 3 attempt log lines for evt_fail_1, got %d: %v", len(lines), lines)
		}
		for i, l := range lines {
			want := msgRetry
			if i == 2 {
				want = msgDead
			}
			if l.str("msg") != want || l.num("attempt") != i+1 || l.num("status") != 500 {
				t.Errorf("log line %d: want %q attempt %d status 500, got %v", i+1, want, i+1, l)
			}
			if _, ok := l.dur("duration"); !ok {
				t.Errorf("log line %d has no duration: %v", i+1, l)
			}
			if got, want := l.str("target"), "http://"+upFail.addr; got != want {
				t.Errorf("log line %d: target %q, want %q", i+1, got, want)
			}
			if i < 2 {
				if d, ok := l.dur("retry_in"); !ok || d < bmin || d > bmax {
					t.Errorf("log line %d: retry_in %v (present %v), want within [%v, %v]", i+1, d, ok, bmin, bmax)
				}
			}
		}
		if dead.str("reason") != "max_attempts" {
			t.Errorf("dead letter reason %q, want max_attempts: %v", dead.str("reason"), dead)
		}
	})

	t.Run("429 Retry-After is honoured", func(t *testing.T) {
		waitDelivered(t, 15*time.Second, []string{"evt_limit_1"}, upLimited)
		reqs := requestsFor(upLimited, "evt_limit_1")
		if got := attemptNumbers(reqs); !slices.Equal(got, []string{"1", "2"}) {
			t.Fatalf("attempts received %v, want [1 2]", got)
		}
		if gap := reqs[1].At.Sub(reqs[0].At); gap < 950*time.Millisecond {
			t.Errorf("the retry came %v after a 429 with Retry-After: 1, want at least ~1s", gap)
		}
		lines := attemptLines(g, "limited", "evt_limit_1")
		if len(lines) != 2 || lines[0].str("msg") != msgRetry || lines[0].num("status") != 429 ||
			lines[1].str("msg") != msgDelivered || lines[1].num("status") != 200 || lines[1].num("attempt") != 2 {
			t.Fatalf("want a retry line (429) and a delivered line (200, attempt 2), got %v", lines)
		}
		if d, _ := lines[0].dur("retry_in"); d < 950*time.Millisecond || d > 1050*time.Millisecond {
			t.Errorf("retry_in after Retry-After: 1 is %v, want 1s", d)
		}
	})

	t.Run("307 is a failed attempt, not followed", func(t *testing.T) {
		dead := waitAttemptLine(t, g, "redirect", "evt_redirect_1", msgDead, 15*time.Second)
		time.Sleep(bmax + 500*time.Millisecond)
		if got := attemptNumbers(requestsFor(upRedirect, "evt_redirect_1")); !slices.Equal(got, []string{"1", "2", "3"}) {
			t.Errorf("the redirecting subscriber got attempts %v, want [1 2 3] (each 307 a failed attempt)", got)
		}
		if n := upTarget.count(); n != 0 {
			t.Errorf("the redirect was followed: its target received %d requests", n)
		}
		for _, l := range attemptLines(g, "redirect", "evt_redirect_1") {
			if l.num("status") != http.StatusTemporaryRedirect {
				t.Errorf("attempt line with status %d, want 307: %v", l.num("status"), l)
			}
		}
		if dead.num("attempt") != 3 || dead.str("reason") != "max_attempts" {
			t.Errorf("dead letter line: want attempt 3 reason max_attempts, got %v", dead)
		}
	})
}

// TestPublishRefusesPrivateAddresses: without allow_private, a subscriber on
// loopback (also spelled 0.0.0.0 or as an IPv4-mapped IPv6 address) is
// refused at dial time and never receives a request; an allow_private for
// another range does not open loopback; a subscriber's own allow_private
// opens it for that subscriber only.
func TestPublishRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	g, _ := newSecretGateway(t, "ACME_SECRET")
	up, allowed := newSubscriber(t, g), newSubscriber(t, g)
	port := up.addr[strings.LastIndex(up.addr, ":")+1:]
	g.start(g.globals("") + publishSite(g,
		publishHandle(publishPath,
			"organization org_abc123",
			"project proj_xyz789",
			"backoff 100ms 400ms",
			subscriberBlock("loop", up.url("/hook"), "secret {env.ACME_SECRET}"),
			subscriberBlock("zero", "http://0.0.0.0:"+port+"/hook", "secret {env.ACME_SECRET}"),
			subscriberBlock("mapped", "http://[::ffff:127.0.0.1]:"+port+"/hook", "secret {env.ACME_SECRET}"),
		),
		publishHandle("/publish-ten",
			"organization org_abc123",
			"project proj_xyz789",
			"backoff 100ms 400ms",
			"allow_private 10.0.0.0/8",
			subscriberBlock("loop10", up.url("/hook"), "secret {env.ACME_SECRET}"),
			subscriberBlock("allowed", allowed.url("/hook"), "secret {env.ACME_SECRET}", "allow_private 127.0.0.1"),
		),
	))
	const id = "evt_private_1"
	expectPublished(t, "publish", publish(t, g, publishPath, publishBody(typeOK, id, `{"n":1}`)), 202, "accepted", "loop", "zero", "mapped")
	expectPublished(t, "publish (allow_private 10.0.0.0/8)", publish(t, g, "/publish-ten", publishBody(typeOK, id, `{"n":1}`)), 202, "accepted", "loop10", "allowed")
	// A subscriber's own allow_private opens loopback for it alone.
	waitDelivered(t, 10*time.Second, []string{id}, allowed)

	wantErr := map[string]string{
		"loop":   "refusing to dial 127.0.0.1",
		"zero":   "refusing to dial 0.0.0.0",
		"mapped": "refusing to dial",
		"loop10": "refusing to dial 127.0.0.1",
	}
	for name, errText := range wantErr {
		dead := waitAttemptLine(t, g, name, id, msgDead, 15*time.Second)
		if dead.str("reason") != "max_attempts" || dead.num("attempt") != 3 {
			t.Errorf("%s: dead letter line: want attempt 3 reason max_attempts, got %v", name, dead)
		}
		lines := attemptLines(g, name, id)
		if len(lines) != 3 {
			t.Errorf("%s: want 3 attempt lines, got %d: %v", name, len(lines), lines)
		}
		for i, l := range lines {
			if l.num("attempt") != i+1 || l.num("status") != 0 || !strings.Contains(l.str("error"), errText) {
				t.Errorf("%s: attempt line %d: want attempt %d, status 0, error containing %q; got %v", name, i+1, i+1, errText, l)
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := up.count(); n != 0 {
		t.Errorf("a refused subscriber received %d requests (from %v)", n, attemptNumbers(up.requests()))
	}
}

// TestPublishIdempotencyAndFanOut: publish deduplication (same request:
// one delivery; same eventId, other request: 409), generated event ids,
// fan-out by event filters, and the rejections of bad publish requests.
func TestPublishIdempotencyAndFanOut(t *testing.T) {
	t.Parallel()
	g, _ := newSecretGateway(t, "ACME_SECRET")
	upDocs, upBatch, upAll, upNarrow := newSubscriber(t, g), newSubscriber(t, g), newSubscriber(t, g), newSubscriber(t, g)
	ups := map[string]*upstream{"docs": upDocs, "batch": upBatch, "all": upAll, "narrow": upNarrow}
	g.start(g.globals("") + publishSite(g,
		acmeHandle(publishPath,
			subscriberBlock("docs", upDocs.url("/hook"), "secret {env.ACME_SECRET}", "events document.*"),
			subscriberBlock("batch", upBatch.url("/hook"), "secret {env.ACME_SECRET}", "events batch.completed"),
			subscriberBlock("all", upAll.url("/hook"), "secret {env.ACME_SECRET}"),
		),
		acmeHandle("/narrow",
			"max_body 1KiB",
			subscriberBlock("narrow", upNarrow.url("/hook"), "secret {env.ACME_SECRET}", "events document.*"),
		),
	))
	// received reports which subscribers got id, with how many requests.
	received := func(id string) map[string]int {
		out := map[string]int{}
		for name, up := range ups {
			if n := len(requestsFor(up, id)); n > 0 {
				out[name] = n
			}
		}
		return out
	}
	settle := func() { time.Sleep(600 * time.Millisecond) } // over the backoff maximum

	t.Run("fan-out by event filter", func(t *testing.T) {
		expectPublished(t, "document.processed", publish(t, g, publishPath, publishBody(typeOK, "evt_fan_doc", `{"n":1}`)), 202, "accepted", "docs", "all")
		expectPublished(t, "batch.completed", publish(t, g, publishPath, publishBody(typeIgnored, "evt_fan_batch", `{"n":2}`)), 202, "accepted", "batch", "all")
		expectPublished(t, "invoice.paid", publish(t, g, publishPath, publishBody("invoice.paid", "evt_fan_other", `{"n":3}`)), 202, "accepted", "all")
		waitDelivered(t, 15*time.Second, []string{"evt_fan_doc"}, upDocs)
		waitDelivered(t, 15*time.Second, []string{"evt_fan_batch"}, upBatch)
		waitDelivered(t, 15*time.Second, []string{"evt_fan_doc", "evt_fan_batch", "evt_fan_other"}, upAll)
		settle()
		for id, want := range map[string]map[string]int{
			"evt_fan_doc":   {"docs": 1, "all": 1},
			"evt_fan_batch": {"batch": 1, "all": 1},
			"evt_fan_other": {"all": 1},
		} {
			if got := received(id); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s reached %v, want %v", id, got, want)
			}
		}
	})

	t.Run("an event type nobody wants", func(t *testing.T) {
		a := publish(t, g, "/narrow", publishBody("invoice.paid", "evt_nobody", `{"n":1}`))
		expectPublished(t, "no subscriber", a, 200, "no_subscribers")
		if a.RawSubs != "[]" {
			t.Errorf("subscribers member %q, want []", a.RawSubs)
		}
		expectPublished(t, "a subscriber wants document.created", publish(t, g, "/narrow", publishBody("document.created", "evt_narrow_doc", `{"n":2}`)), 202, "accepted", "narrow")
		waitDelivered(t, 15*time.Second, []string{"evt_narrow_doc"}, upNarrow)
		settle()
		if got := received("evt_nobody"); len(got) != 0 {
			t.Errorf("an event no subscriber wants reached %v", got)
		}
		if got := attemptNumbers(upNarrow.requests()); len(got) != 1 {
			t.Errorf("the narrow subscriber received %d requests, want only evt_narrow_doc", len(got))
		}
	})

	t.Run("same request twice is delivered once", func(t *testing.T) {
		body := publishBody(typeOK, "evt_idem_1", oddPayload)
		expectPublished(t, "first", publish(t, g, publishPath, body), 202, "accepted", "docs", "all")
		a := publish(t, g, publishPath, body)
		expectPublished(t, "second", a, 200, "duplicate", "docs", "all")
		if a.EventID != "evt_idem_1" {
			t.Errorf("duplicate answer eventId %q", a.EventID)
		}
		conflict := publish(t, g, publishPath, publishBody(typeOK, "evt_idem_1", `{"changed":true}`))
		if conflict.Code != http.StatusConflict {
			t.Errorf("same eventId, other payload: got %s, want 409", conflict)
		}
		waitDelivered(t, 15*time.Second, []string{"evt_idem_1"}, upDocs)
		waitDelivered(t, 15*time.Second, []string{"evt_idem_1"}, upAll)
		settle()
		if got := received("evt_idem_1"); fmt.Sprint(got) != fmt.Sprint(map[string]int{"all": 1, "docs": 1}) {
			t.Errorf("evt_idem_1 reached %v, want docs and all once each", got)
		}
		for _, name := range []string{"docs", "all"} {
			for _, r := range requestsFor(ups[name], "evt_idem_1") {
				if !bytes.Contains(r.Body, []byte(`"payload":`+strings.TrimSpace(oddPayload)+`}`)) {
					t.Errorf("%s got a body other than the first request's: %s", name, r.Body)
				}
			}
		}
	})

	t.Run("same eventId with another event type is refused everywhere", func(t *testing.T) {
		// The first request reached docs and all; this one would also go to
		// batch, which has never seen the id. A 409 says the request was not
		// published: no subscriber may receive it.
		body := publishBody(typeOK, "evt_idem_2", `{"n":1}`)
		expectPublished(t, "first", publish(t, g, publishPath, body), 202, "accepted", "docs", "all")
		other := publish(t, g, publishPath, publishBody(typeIgnored, "evt_idem_2", `{"n":1}`))
		if other.Code != http.StatusConflict {
			t.Errorf("same eventId, other eventType: got %s, want 409", other)
		}
		waitDelivered(t, 15*time.Second, []string{"evt_idem_2"}, upDocs)
		waitDelivered(t, 15*time.Second, []string{"evt_idem_2"}, upAll)
		settle()
		if reqs := requestsFor(upBatch, "evt_idem_2"); len(reqs) > 0 {
			t.Errorf("BUG: the publish request was answered %d (refused), yet subscriber batch received it %d time(s): %s",
				other.Code, len(reqs), reqs[0].Body)
		}
		if got := received("evt_idem_2"); got["docs"] != 1 || got["all"] != 1 {
			t.Errorf("evt_idem_2 reached %v, want docs and all once each", got)
		}
	})

	t.Run("generated event ids", func(t *testing.T) {
		body := publishBody(typeOK, "", `{"n":1}`)
		before := time.Now().UnixMilli()
		a1 := publish(t, g, publishPath, body)
		a2 := publish(t, g, publishPath, body)
		after := time.Now().UnixMilli()
		expectPublished(t, "without eventId", a1, 202, "accepted", "docs", "all")
		expectPublished(t, "without eventId, again", a2, 202, "accepted", "docs", "all")
		if a1.EventID == a2.EventID {
			t.Errorf("two publishes without eventId got the same id %q", a1.EventID)
		}
		for _, a := range []pubAnswer{a1, a2} {
			m := generatedIDRE.FindStringSubmatch(a.EventID)
			if m == nil {
				t.Fatalf("generated eventId %q is not evt_<ms>_<random>", a.EventID)
			}
			if ms, _ := strconv.ParseInt(m[1], 10, 64); ms < before-1000 || ms > after+1000 {
				t.Errorf("generated eventId %q: %d is not the publish time in ms (%d..%d)", a.EventID, ms, before, after)
			}
		}
		ids := []string{a1.EventID, a2.EventID}
		waitDelivered(t, 15*time.Second, ids, upDocs)
		waitDelivered(t, 15*time.Second, ids, upAll)
		for _, id := range ids {
			for _, r := range requestsFor(upDocs, id) {
				if env, err := verifier.ParseEnvelope(r.Body); err != nil || env.ID != id {
					t.Errorf("the envelope delivered for %s carries eventId %v (%v)", id, env, err)
				}
			}
		}
	})

	t.Run("bad requests are rejected and not delivered", func(t *testing.T) {
		before := map[string]int{}
		for name, up := range ups {
			before[name] = up.count()
		}
		good := publishBody(typeOK, "evt_bad_1", `{"n":1}`)
		cases := []struct {
			name, method, path, ctype, body string
			header                          http.Header
			code                            int
		}{
			{name: "GET", method: http.MethodGet, ctype: "application/json", code: 405},
			{name: "PUT", method: http.MethodPut, ctype: "application/json", body: good, code: 405},
			{name: "text/plain", ctype: "text/plain", body: good, code: 415},
			{name: "no content type", body: good, code: 415},
			{name: "gzip encoding", ctype: "application/json", header: http.Header{"Content-Encoding": {"gzip"}}, body: good, code: 415},
			{name: "unknown member", body: `{"eventType":"document.processed","eventId":"evt_bad_1","payload":{},"timestamp":"2026-01-01T00:00:00.000Z"}`, code: 400},
			{name: "bad eventId", body: publishBody(typeOK, "evt/../x", `{}`), code: 400},
			{name: "numeric eventId", body: `{"eventType":"document.processed","eventId":12,"payload":{}}`, code: 400},
			{name: "bad eventType", body: publishBody("not a type!", "evt_bad_1", `{}`), code: 400},
			{name: "no eventType", body: `{"eventId":"evt_bad_1","payload":{}}`, code: 400},
			{name: "no payload", body: `{"eventType":"document.processed","eventId":"evt_bad_1"}`, code: 400},
			{name: "duplicate key", body: `{"eventType":"document.processed","eventType":"document.processed","eventId":"evt_bad_1","payload":{}}`, code: 400},
			{name: "trailing data", body: good + ` {}`, code: 400},
			{name: "not JSON", body: `eventType=document.processed`, code: 400},
			{name: "over max_body", path: "/narrow", body: publishBody(typeOK, "evt_bad_1", `{"pad":"`+strings.Repeat("x", 2000)+`"}`), code: 413},
		}
		for _, tc := range cases {
			method, path, ctype := tc.method, tc.path, tc.ctype
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = publishPath
			}
			if ctype == "" && tc.name != "no content type" {
				ctype = "application/json"
			}
			a := publishRaw(t, g, method, path, ctype, tc.header, tc.body)
			if a.Code != tc.code {
				t.Errorf("%s: got %s, want %d", tc.name, a, tc.code)
			}
			// The internal app is told what to fix.
			if !strings.Contains(a.Body, `"status":"rejected"`) || !strings.Contains(a.Body, `"error":"`) {
				t.Errorf("%s: answer %q carries no reason", tc.name, a.Body)
			}
		}
		settle()
		for name, up := range ups {
			if n := up.count(); n != before[name] {
				t.Errorf("rejected publish requests reached %s: %d new requests", name, n-before[name])
			}
		}
		// Nothing was remembered: the id is still new.
		expectPublished(t, "a valid request with the rejected ones' id", publish(t, g, publishPath, good), 202, "accepted", "docs", "all")
	})
}

// TestPublishGoneDisablesSubscriber: a subscriber answering 410 gets one
// attempt, the delivery becomes a dead letter (subscriber_gone) and the
// subscriber is disabled: its later events are never attempted, across a
// restart too, while another subscriber keeps receiving its events.
func TestPublishGoneDisablesSubscriber(t *testing.T) {
	t.Parallel()
	g, _ := newSecretGateway(t, "ACME_SECRET")
	upGone, upKeep := newSubscriber(t, g), newSubscriber(t, g)
	var goneOnce atomic.Bool
	upGone.setRespond(func(*recorded) reply {
		if goneOnce.CompareAndSwap(false, true) {
			return reply{Status: http.StatusGone, Body: "gone"}
		}
		return reply{Status: 200} // an attempt after the 410 would show as delivered
	})
	config := g.globals("") + publishSite(g, acmeHandle(publishPath,
		subscriberBlock("gone", upGone.url("/hook"), "secret {env.ACME_SECRET}"),
		subscriberBlock("keep", upKeep.url("/hook"), "secret {env.ACME_SECRET}"),
	))
	g.start(config)

	expectPublished(t, "first event", publish(t, g, publishPath, publishBody(typeOK, "evt_gone_1", `{"n":1}`)), 202, "accepted", "gone", "keep")
	dead := waitAttemptLine(t, g, "gone", "evt_gone_1", msgDead, 15*time.Second)
	if dead.num("attempt") != 1 || dead.num("status") != 410 || dead.str("reason") != "subscriber_gone" {
		t.Errorf("the 410 attempt's line: want attempt 1 status 410 reason subscriber_gone, got %v", dead)
	}
	testwait.Until(t, 5*time.Second, func() (bool, string) {
		for _, e := range logEntries(g, "route disabled until it is enabled again") {
			if e.str("route") == "subscriber/gone" && e.str("reason") == "subscriber_gone" {
				return true, ""
			}
		}
		return false, "no log line saying subscriber/gone is disabled"
	})
	waitDelivered(t, 15*time.Second, []string{"evt_gone_1"}, upKeep)
	time.Sleep(600 * time.Millisecond)
	if got := attemptNumbers(upGone.requests()); !slices.Equal(got, []string{"1"}) {
		t.Fatalf("the gone subscriber received attempts %v, want exactly one", got)
	}

	var later []string
	for i := 2; i <= 4; i++ {
		id := fmt.Sprintf("evt_gone_%d", i)
		later = append(later, id)
		a := publish(t, g, publishPath, publishBody(typeOK, id, fmt.Sprintf(`{"n":%d}`, i)))
		if a.Code != 202 || !slices.Contains(a.Subscribers, "keep") {
			t.Errorf("publish %s: got %s, want 202 with keep", id, a)
		}
	}
	waitDelivered(t, 15*time.Second, later, upKeep)
	time.Sleep(600 * time.Millisecond)
	if n := upGone.count(); n != 1 {
		t.Errorf("the disabled subscriber was attempted again: %d requests (%v)", n, upGone.requests()[n-1].ID)
	}

	// Disabled until enabled: a restart does not enable it.
	if err := g.terminate(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	g.start(config)
	expectPublished(t, "after a restart", publish(t, g, publishPath, publishBody(typeOK, "evt_gone_5", `{"n":5}`)), 202, "accepted", "gone", "keep")
	waitDelivered(t, 15*time.Second, []string{"evt_gone_5"}, upKeep)
	time.Sleep(600 * time.Millisecond)
	if n := upGone.count(); n != 1 {
		t.Errorf("after a restart the disabled subscriber was attempted: %d requests", n)
	}
	for _, id := range append(later, "evt_gone_5") {
		if lines := attemptLines(g, "gone", id); len(lines) != 0 {
			t.Errorf("%s has attempt lines on the disabled subscriber: %v", id, lines)
		}
	}
}

// TestPublishCrashBetweenAttempts: SIGKILL between a failed attempt and its
// retry, and right after a 202: after a restart on the same storage both
// events are delivered, and the attempt budget is exceeded by one at most.
func TestPublishCrashBetweenAttempts(t *testing.T) {
	t.Parallel()
	g, _ := newSecretGateway(t, "ACME_SECRET")
	upRetry, upLate := newSubscriber(t, g), newSubscriber(t, g)
	var restarted atomic.Bool
	upRetry.setRespond(func(*recorded) reply {
		if !restarted.Load() {
			return reply{Status: 500, Body: "down for now"}
		}
		return reply{Status: 200}
	})
	upLate.setRespond(func(*recorded) reply {
		if !restarted.Load() {
			return reply{Status: 200, Delay: 5 * time.Second} // cut short by the kill
		}
		return reply{Status: 200}
	})
	const attempts = 3
	config := g.globals("") + publishSite(g, publishHandle(publishPath,
		"organization org_abc123",
		"project proj_xyz789",
		"backoff 2s 2s",
		"allow_private 127.0.0.1",
		subscriberBlock("retry", upRetry.url("/hook"), "secret {env.ACME_SECRET}", "events crash.retry"),
		subscriberBlock("late", upLate.url("/hook"), "secret {env.ACME_SECRET}", "events crash.late"),
	))
	g.start(config)

	expectPublished(t, "the event that fails first", publish(t, g, publishPath, publishBody("crash.retry", "evt_crash_retry", `{"n":1}`)), 202, "accepted", "retry")
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		for _, r := range upRetry.requests() {
			if r.Attempt == "1" && r.Completed {
				return true, ""
			}
		}
		return false, "attempt 1 was not answered"
	})
	first := upRetry.requests()[0].At
	expectPublished(t, "the event killed right after its 202", publish(t, g, publishPath, publishBody("crash.late", "evt_crash_late", `{"n":2}`)), 202, "accepted", "late")
	g.kill()
	if n := upRetry.count(); n != 1 {
		t.Fatalf("the kill came too late: %v after attempt 1, %d attempts made (want it before the 2s retry)", time.Since(first), n)
	}
	if n := len(upLate.delivered()); n != 0 {
		t.Fatalf("evt_crash_late was delivered before the kill; the test proves nothing")
	}

	restarted.Store(true)
	g.start(config)
	waitDelivered(t, 20*time.Second, []string{"evt_crash_retry"}, upRetry)
	waitDelivered(t, 20*time.Second, []string{"evt_crash_late"}, upLate)
	time.Sleep(2500 * time.Millisecond) // a spare retry would come after 2s

	for name, up := range map[string]*upstream{"evt_crash_retry": upRetry, "evt_crash_late": upLate} {
		reqs := requestsFor(up, name)
		got := attemptNumbers(reqs)
		if len(reqs) > attempts+1 {
			t.Errorf("%s: %d attempts %v, want at most %d (the budget plus one)", name, len(reqs), got, attempts+1)
		}
		if n := up.delivered()[name]; n != 1 {
			t.Errorf("%s: delivered %d times after the restart, want once (attempts %v)", name, n, got)
		}
		seen := map[string]bool{}
		for i, a := range got {
			n, err := strconv.Atoi(a)
			if err != nil || n < 1 || n > attempts+1 || seen[a] || (i > 0 && a < got[i-1]) {
				t.Errorf("%s: attempt numbers %v: want distinct, increasing numbers from 1 to %d", name, got, attempts+1)
				break
			}
			seen[a] = true
		}
		for _, r := range reqs[1:] {
			if !bytes.Equal(r.Body, reqs[0].Body) || r.Header.Get(verifier.SignatureHeader) != reqs[0].Header.Get(verifier.SignatureHeader) {
				t.Errorf("%s: the attempt after the restart carries other bytes or another signature", name)
			}
		}
	}
	if got := attemptNumbers(requestsFor(upRetry, "evt_crash_retry")); len(got) < 2 || got[0] != "1" {
		t.Errorf("evt_crash_retry attempts %v, want attempt 1 (500) then the retry", got)
	}
}

// TestPublishKeepsSecretsOutOfLogs: no subscriber secret, header token,
// signature, URL credential or URL query appears in any log line, at debug
// level, whatever the attempts' outcomes; the log lines name the target by
// scheme and host only.
func TestPublishKeepsSecretsOutOfLogs(t *testing.T) {
	t.Parallel()
	secret := randomSecret(32)
	token := "tok_" + string(randomSecret(24))
	g := newGateway(t, "ACME_SECRET="+string(secret), "SUB_TOKEN="+token)
	g.forbid(string(secret), token, "pa55word", "t0k3n")
	up := newSubscriber(t, g)
	up.setRespond(func(r *recorded) reply {
		if r.Attempt == "1" {
			return reply{Status: 500, Body: "no"}
		}
		return reply{Status: 200}
	})
	closedPort := freePort(t)
	credURL := fmt.Sprintf("http://user:pa55word@%s/hook?token=t0k3n", up.addr)
	downURL := fmt.Sprintf("http://user:pa55word@127.0.0.1:%d/hook?token=t0k3n", closedPort)
	g.start(g.globals(debugWithSignatureFilter) + publishSite(g, acmeHandle(publishPath,
		subscriberBlock("creds", credURL, "secret {env.ACME_SECRET}", "header X-Api-Token {env.SUB_TOKEN}"),
		subscriberBlock("down", downURL, "secret {env.ACME_SECRET}", "header X-Api-Token {env.SUB_TOKEN}"),
	)))

	var ids []string
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("evt_secret_%d", i)
		ids = append(ids, id)
		expectPublished(t, id, publish(t, g, publishPath, publishBody(typeOK, id, `{"n":1}`)), 202, "accepted", "creds", "down")
	}
	// A rejected request too: at debug level Caddy logs its headers.
	if a := publishRaw(t, g, http.MethodPost, publishPath, "text/plain", http.Header{verifier.SignatureHeader: {sign256(secret, []byte("x"))}}, "x"); a.Code != 415 {
		t.Errorf("text/plain: got %s, want 415", a)
	}
	g.sentSignature(sign256(secret, []byte("x")))
	waitDelivered(t, 15*time.Second, ids, up)
	for _, id := range ids {
		waitAttemptLine(t, g, "down", id, msgDead, 15*time.Second)
	}

	reqs := up.requests()
	for _, r := range reqs {
		if user, pass, ok := (&http.Request{Header: r.Header}).BasicAuth(); !ok || user != "user" || pass != "pa55word" {
			t.Errorf("the subscriber did not get the URL's credentials as basic auth: %q %q %v", user, pass, ok)
		}
		if got := r.Header.Get("X-Api-Token"); got != token {
			t.Errorf("X-Api-Token = %q, want the resolved {env.SUB_TOKEN}", got)
		}
	}
	// Every attempt has its line, naming the target by scheme and host.
	for _, id := range ids {
		for _, l := range attemptLines(g, "creds", id) {
			if got, want := l.str("target"), "http://"+up.addr; got != want {
				t.Errorf("creds: target %q, want %q", got, want)
			}
		}
		for _, l := range attemptLines(g, "down", id) {
			if got, want := l.str("target"), fmt.Sprintf("http://127.0.0.1:%d", closedPort); got != want {
				t.Errorf("down: target %q, want %q", got, want)
			}
			if !strings.Contains(l.str("error"), "connection refused") {
				t.Errorf("down: error %q, want a connection refused", l.str("error"))
			}
		}
	}
	registered := 0
	for _, e := range logEntries(g, "subscriber registered") {
		if e.str("url") == "http://"+up.addr || e.str("url") == fmt.Sprintf("http://127.0.0.1:%d", closedPort) {
			registered++
		}
	}
	if registered != 2 {
		t.Errorf("want 2 \"subscriber registered\" lines with scheme and host only, found %d", registered)
	}

	sigs := noteSignatures(g, up)
	if len(sigs) < len(ids) {
		t.Fatalf("collected %d signatures, want at least %d", len(sigs), len(ids))
	}
	logs := strings.ToLower(g.logs())
	for _, s := range sigs {
		if hexSig := strings.TrimPrefix(s, "sha256="); strings.Contains(logs, hexSig[:32]) {
			t.Errorf("a signature the gateway sent appears in its logs: %s…", hexSig[:12])
		}
	}
	for _, v := range []string{"pa55word", "t0k3n", token, string(secret)} {
		if strings.Contains(g.logs(), v) {
			t.Errorf("the logs contain %q", v[:4]+"…")
		}
	}
	if leaks := g.leaks(); len(leaks) > 0 {
		t.Errorf("%d forbidden values in the logs, e.g. %s", len(leaks), leaks[0])
	}
}
