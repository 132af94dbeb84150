package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hookgate/hookgate/outbound"
	"github.com/hookgate/hookgate/verifier"
)

// profileSender is a sender of one profile, for the serve tests: its
// secret and a fresh event of its own shape.
type profileSender struct {
	profile string
	secret  string
	// event is its event number n, for a delivery signed at: the
	// delivery, its id and type.
	event func(n int, at time.Time) (verifier.Delivery, string, string)
}

func profileSenders() []profileSender {
	return []profileSender{
		{verifier.Ocriva, testSecret, func(n int, at time.Time) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("evt_p_%d", n)
			return verifier.Delivery{Type: "document.processed", Time: at, Body: envelopeBody(id, "document.processed", at)}, id, "document.processed"
		}},
		{verifier.StandardWebhooks, "whsec_" + base64.StdEncoding.EncodeToString([]byte("serve-test-standard-key-01234")), func(n int, at time.Time) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("msg_%d", n)
			return verifier.Delivery{Time: at, ID: id, Body: []byte(`{"type":"invoice.paid","timestamp":"2026-03-31T12:00:00Z","data":{}}`)}, id, "invoice.paid"
		}},
		{verifier.GitHub, "serve-test-github-secret", func(n int, at time.Time) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("72d3162e-cc78-11e3-81ab-%012d", n)
			return verifier.Delivery{Time: at, ID: id, Type: "push", Body: []byte(`{"ref":"refs/heads/main"}`)}, id, "push"
		}},
		{verifier.Stripe, "whsec_serve-test-stripe-secret", func(n int, at time.Time) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("evt_%d", n)
			return verifier.Delivery{Time: at, Body: fmt.Appendf(nil, `{"id":%q,"object":"event","type":"invoice.paid"}`, id)}, id, "invoice.paid"
		}},
		{verifier.Shopify, "serve-test-shopify-secret", func(n int, at time.Time) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("b54557e4-bdd9-4b37-8a5f-%012d", n)
			return verifier.Delivery{Time: at, ID: id, Type: "orders.create", Body: []byte(`{"id":820982911946154508}`)}, id, "orders.create"
		}},
		{verifier.Slack, "serve-test-slack-signing-secret", func(n int, at time.Time) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("Ev%d", n)
			return verifier.Delivery{Time: at, Body: fmt.Appendf(nil, `{"type":"event_callback","event_id":%q,"event":{"type":"app_mention"}}`, id)}, id, "app_mention"
		}},
	}
}

// request signs d at d.Time with the sender's secret and makes its request;
// edit, if not nil, changes the signed headers and body.
func (s profileSender) request(t *testing.T, d verifier.Delivery, edit func(h http.Header, body []byte) []byte) *http.Request {
	t.Helper()
	return s.requestWith(t, s.secret, d, edit)
}

// requestWith is request, signed with secret.
func (s profileSender) requestWith(t *testing.T, secret string, d verifier.Delivery, edit func(h http.Header, body []byte) []byte) *http.Request {
	t.Helper()
	p, _ := verifier.LookupProfile(s.profile)
	h, err := p.Sign([][]byte{[]byte(secret)}, d)
	if err != nil {
		t.Fatal(err)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cookie", "session=sender")
	body := d.Body
	if edit != nil {
		body = edit(h, body)
	}
	r := httptest.NewRequest(http.MethodPost, "http://gateway.test/hooks", bytes.NewReader(body))
	r.Header = h
	return r
}

// profileRoute is a route of the profile forwarding to upstream, with its
// secret in the environment.
func profileRoute(t *testing.T, s profileSender, upstream string) string {
	env := "HG_PROFILE_" + strings.ToUpper(strings.ReplaceAll(s.profile, "-", "_"))
	t.Setenv(env, s.secret)
	return fmt.Sprintf(`[{"handler": "webhook_ingest", "name": %q, "profile": %q, "secrets": ["{env.%s}"],
		"forward": {"url": %q, "backoff_min": "1h", "backoff_max": "1h"}}]`, s.profile, s.profile, env, upstream)
}

// TestProfilesServe runs each profile's route: an event is accepted and
// reaches the upstream with the sender's headers and the normalised ones,
// and its repeat is a duplicate (the rejections are TestProfileRulesServe's).
func TestProfilesServe(t *testing.T) {
	got := make(chan *http.Request, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Clone(context.Background())
		// Not delivered: the item stays, and is not retried within the test.
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer upstream.Close()
	senders := profileSenders()
	var routes []string
	for _, s := range senders {
		routes = append(routes, profileRoute(t, s, upstream.URL))
	}
	c := loadConfig(t, "", routes...)
	for i, s := range senders {
		t.Run(s.profile, func(t *testing.T) {
			h := c.handler(i)
			p, _ := verifier.LookupProfile(s.profile)
			d, id, typ := s.event(1, time.Now())
			sent := s.request(t, d, nil)
			res := c.serve(t, h, sent, nil)
			if st, gotID := answerBody(t, res); res.status() != 202 || st != "accepted" || gotID != id {
				t.Fatalf("%s", res)
			}
			var up *http.Request
			select {
			case up = <-got:
			case <-time.After(time.Minute):
				t.Fatal("the upstream got nothing in a minute")
			}
			want := map[string]string{outbound.HeaderID: id, verifier.EventHeader: typ, outbound.HeaderAttempt: "1", "Content-Type": "application/json"}
			for _, k := range p.Headers {
				if v := sent.Header.Get(k); v != "" {
					want[k] = v
				}
			}
			for k, v := range want {
				if up.Header.Get(k) != v {
					t.Errorf("upstream %s = %q, want %q", k, up.Header.Get(k), v)
				}
			}
			if up.Header.Get("Cookie") != "" {
				t.Error("the sender's cookie reached the upstream")
			}
			if res := c.serve(t, h, s.request(t, d, nil), nil); res.status() != 200 {
				t.Fatalf("the same event again: %s", res)
			}
		})
	}
}

// serveRule is a change to a profile's good delivery and the status the
// route answers it with.
type serveRule struct {
	name   string
	body   func(d *verifier.Delivery, id string)   // before signing
	edit   func(h http.Header, body []byte) []byte // after signing
	secret string                                  // the signing secret; "": the sender's
	skew   time.Duration                           // the signing time, from the route's clock
	code   int
}

func setHeaderRule(name, header, value string, code int) serveRule {
	return serveRule{name: name, code: code, edit: func(h http.Header, b []byte) []byte {
		if value == "" {
			h.Del(header)
		} else {
			h.Set(header, value)
		}
		return b
	}}
}

// headerServeRules are the rules of a header the profile reads an id, type
// or timestamp from: missing, repeated, malformed.
func headerServeRules(header, malformed string) []serveRule {
	return []serveRule{
		setHeaderRule(header+" missing", header, "", 400),
		{name: header + " repeated", code: 400, edit: func(h http.Header, b []byte) []byte { h.Add(header, "x"); return b }},
		setHeaderRule(header+" malformed", header, malformed, 400),
	}
}

// bodyRule signs body (with %[1]q for the event id, if any) instead of
// the event's.
func bodyRule(name, body string, code int) serveRule {
	return serveRule{name: name, code: code, body: func(d *verifier.Delivery, id string) {
		d.Body = fmt.Appendf(nil, body, id)
	}}
}

// profileServeRules are every profile's rules (as in the verifier's
// tests), and each profile's own.
func profileServeRules(s profileSender, p *verifier.Profile, tolerance time.Duration) []serveRule {
	rules := []serveRule{
		setHeaderRule("signature missing", p.SignatureHeader, "", 401),
		{name: "signature repeated", code: 400, edit: func(h http.Header, b []byte) []byte {
			h.Add(p.SignatureHeader, h.Get(p.SignatureHeader))
			return b
		}},
		setHeaderRule("signature badly encoded", p.SignatureHeader, map[string]string{
			verifier.Ocriva:           "sha256=" + strings.Repeat("g", 64),
			verifier.StandardWebhooks: "v1,not*base64",
			verifier.GitHub:           "sha1=0123456789abcdef0123456789abcdef01234567",
			verifier.Stripe:           "t=1774958400,v1=xyz",
			verifier.Shopify:          strings.Repeat("A", 43),
			verifier.Slack:            "v1=" + strings.Repeat("0", 64),
		}[s.profile], 401),
		{name: "wrong secret", secret: "wrong-secret-0123456789abcdef", code: 401},
		{name: "one body byte changed", code: 401, edit: func(h http.Header, b []byte) []byte {
			b = bytes.Clone(b)
			b[len(b)-2] ^= 1
			return b
		}},
	}
	if s.profile == verifier.StandardWebhooks {
		rules[3].secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte(rules[3].secret))
	}
	if p.Timestamped {
		rules = append(rules,
			serveRule{name: "timestamp at the tolerance, past", skew: -tolerance, code: 202},
			serveRule{name: "timestamp past the tolerance, past", skew: -tolerance - time.Second, code: 401},
			serveRule{name: "timestamp at the tolerance, future", skew: tolerance, code: 202},
			serveRule{name: "timestamp past the tolerance, future", skew: tolerance + time.Second, code: 401},
		)
	}
	switch s.profile {
	case verifier.Ocriva:
		rules = append(rules,
			bodyRule("eventId missing", `{"eventType":"document.processed","timestamp":"`+ocrivaTime+`"}`, 400),
			bodyRule("eventId malformed", `{"eventId":"a b","eventType":"document.processed","timestamp":"`+ocrivaTime+`"}`, 400),
			serveRule{name: "eventType malformed", code: 400, body: func(d *verifier.Delivery, id string) {
				d.Body, d.Type = envelopeBody(id, "a..b", d.Time), "a..b"
			}},
			setHeaderRule("X-Webhook-Event missing", verifier.EventHeader, "", 400),
			serveRule{name: "X-Webhook-Event repeated", code: 400, edit: func(h http.Header, b []byte) []byte {
				h.Add(verifier.EventHeader, h.Get(verifier.EventHeader))
				return b
			}},
			setHeaderRule("X-Webhook-Event differs", verifier.EventHeader, "document.failed", 400),
		)
	case verifier.StandardWebhooks:
		rules = append(append(append(rules, headerServeRules("Webhook-Id", "msg 1")...), headerServeRules("Webhook-Timestamp", "1.5")...),
			bodyRule("type missing", `{"data":{}}`, 400),
			bodyRule("type malformed", `{"type":"a..b"}`, 400),
		)
	case verifier.GitHub:
		rules = append(append(rules, headerServeRules("X-GitHub-Delivery", "a/b")...), headerServeRules("X-GitHub-Event", "pull request")...)
	case verifier.Stripe:
		rules = append(rules,
			bodyRule("id missing", `{"type":"invoice.paid"}`, 400),
			bodyRule("id malformed", `{"id":7,"type":"invoice.paid"}`, 400),
			bodyRule("type missing", `{"id":%q}`, 400),
			bodyRule("type malformed", `{"id":%q,"type":"invoice paid"}`, 400),
		)
	case verifier.Shopify:
		rules = append(append(append(rules, headerServeRules("X-Shopify-Webhook-Id", "a b")...),
			headerServeRules("X-Shopify-Topic", "orders//create")...), headerServeRules("X-Shopify-Triggered-At", "2026-03-31 12:00:00")...)
	case verifier.Slack:
		rules = append(append(rules, headerServeRules("X-Slack-Request-Timestamp", "+1774958400")...),
			bodyRule("event_id missing", `{"type":"event_callback","event":{"type":"message"}}`, 400),
			bodyRule("event_id malformed", `{"type":"event_callback","event_id":"Ev 1","event":{"type":"message"}}`, 400),
			bodyRule("event.type missing", `{"type":"event_callback","event_id":%q,"event":{"text":"x"}}`, 400),
			bodyRule("event.type malformed", `{"type":"event_callback","event_id":%q,"event":{"type":""}}`, 400),
		)
	}
	return rules
}

// ocrivaTime is a timestamp for ocriva bodies that fail before it matters.
const ocrivaTime = "2026-03-31T12:00:00Z"

// TestProfileRulesServe runs every rule of every profile through its
// served route, with the route's clock fixed: each rejection gets its
// status and leaves the spool untouched; a timestamp at the tolerance, in
// either direction, is accepted. The rejections all run first, so that no
// accepted event is in the spool's hands while they are checked.
func TestProfileRulesServe(t *testing.T) {
	senders := profileSenders()
	var routes []string
	for _, s := range senders {
		routes = append(routes, profileRoute(t, s, "http://127.0.0.1:9/in"))
	}
	c := loadConfig(t, "", routes...)
	sp := c.spool()
	now := time.Now().Truncate(time.Second) // whole seconds: the Unix timestamps are exact
	n := 0
	for _, accepted := range []bool{false, true} {
		for i, s := range senders {
			h := c.handler(i).(*Ingest)
			p, _ := verifier.LookupProfile(s.profile)
			freezeClock(t, h, s.secret, now)
			for _, r := range profileServeRules(s, p, h.tolerance()) {
				if (r.code == 202) != accepted {
					continue
				}
				t.Run(s.profile+"/"+r.name, func(t *testing.T) {
					n++
					d, id, _ := s.event(n, now.Add(r.skew))
					if r.body != nil {
						r.body(&d, id)
					}
					secret := r.secret
					if secret == "" {
						secret = s.secret
					}
					before := usageOf(sp)
					res := c.serve(t, h, s.requestWith(t, secret, d, r.edit), nil)
					if res.status() != r.code {
						t.Fatalf("%s, want %d", res, r.code)
					}
					if r.code != 202 {
						expectUntouched(t, sp, before, s.profile, id)
					} else if _, gotID := answerBody(t, res); gotID != id {
						t.Fatalf("accepted %q, want %q", gotID, id)
					}
				})
			}
		}
	}
}

// freezeClock gives the route a verifier like its own, for secret, whose
// clock stands at now.
func freezeClock(t *testing.T, h *Ingest, secret string, now time.Time) {
	t.Helper()
	v, err := verifier.New(verifier.Config{Profile: h.Profile, Secrets: [][]byte{[]byte(secret)},
		Tolerance: h.tolerance(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	h.verifier = v
}

// TestSlackChallengeServe: Slack's url_verification is answered by the
// gateway with its challenge once signed and fresh, and nothing is spooled
// or handed on.
func TestSlackChallengeServe(t *testing.T) {
	s := profileSenders()[5]
	c := loadConfig(t, "", profileRoute(t, s, "http://127.0.0.1:9/in"),
		`[{"handler": "webhook_ingest", "name": "slack-verify-only", "profile": "slack", "secrets": ["{env.HG_PROFILE_SLACK}"]}]`)
	sp := c.spool()
	body := []byte(`{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`)
	for i := range 2 { // forwarding, then verify-only (serve fails the test if handed on)
		before := usageOf(sp)
		res := c.serve(t, c.handler(i), s.request(t, verifier.Delivery{Time: time.Now(), Body: body}, nil), nil)
		if res.status() != 200 || res.err != nil || res.rec.Body.String() != "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" ||
			!strings.HasPrefix(res.rec.Header().Get("Content-Type"), "text/plain") || res.placeholder("http.webhook.outcome") != "challenge" {
			t.Fatalf("route %d: %s, Content-Type %q", i, res, res.rec.Header().Get("Content-Type"))
		}
		if after := usageOf(sp); after != before {
			t.Fatalf("a challenge changed the spool: %+v, before %+v", after, before)
		}
		res = c.serve(t, c.handler(i), s.request(t, verifier.Delivery{Time: time.Now(), Body: body}, func(h http.Header, b []byte) []byte {
			h.Set("X-Slack-Signature", "v0="+strings.Repeat("0", 64))
			return b
		}), nil)
		if res.status() != 401 || res.rec.Body.Len() != 0 {
			t.Fatalf("an unsigned challenge: %s", res)
		}
	}
}

// TestVerifyOnlyNormalisedHeaders: in verify-only mode the next handler
// gets X-Webhook-Id and X-Webhook-Event from what was verified, whatever
// the sender wrote in them, and no X-Webhook-Attempt.
func TestVerifyOnlyNormalisedHeaders(t *testing.T) {
	s := profileSenders()[2] // github: the id and type are headers of their own
	t.Setenv("HG_PROFILE_GITHUB", s.secret)
	c := loadConfig(t, "", `[{"handler": "webhook_ingest", "name": "gh-verify-only", "profile": "github", "secrets": ["{env.HG_PROFILE_GITHUB}"]}]`)
	d, id, typ := s.event(1, time.Now())
	var seen http.Header
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		seen = r.Header.Clone()
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	res := c.serve(t, c.handler(0), s.request(t, d, func(h http.Header, b []byte) []byte {
		h.Set(outbound.HeaderID, "forged")
		h.Set(verifier.EventHeader, "forged")
		h.Set(outbound.HeaderAttempt, "7")
		return b
	}), next)
	if res.status() != http.StatusNoContent || seen == nil {
		t.Fatalf("%s", res)
	}
	if seen.Get(outbound.HeaderID) != id || seen.Get(verifier.EventHeader) != typ || seen.Get(outbound.HeaderAttempt) != "" ||
		seen.Get("X-Github-Delivery") != id {
		t.Fatalf("the next handler got %v", seen)
	}
}
