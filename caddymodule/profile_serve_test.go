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
	event   func(n int) (verifier.Delivery, string, string) // the delivery, its id and type
}

func profileSenders() []profileSender {
	return []profileSender{
		{verifier.Ocriva, testSecret, func(n int) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("evt_p_%d", n)
			return verifier.Delivery{Type: "document.processed", Body: envelopeBody(id, "document.processed", time.Now())}, id, "document.processed"
		}},
		{verifier.StandardWebhooks, "whsec_" + base64.StdEncoding.EncodeToString([]byte("serve-test-standard-key-01234")), func(n int) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("msg_%d", n)
			return verifier.Delivery{ID: id, Body: []byte(`{"type":"invoice.paid","timestamp":"2026-03-31T12:00:00Z","data":{}}`)}, id, "invoice.paid"
		}},
		{verifier.GitHub, "serve-test-github-secret", func(n int) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("72d3162e-cc78-11e3-81ab-%012d", n)
			return verifier.Delivery{ID: id, Type: "push", Body: []byte(`{"ref":"refs/heads/main"}`)}, id, "push"
		}},
		{verifier.Stripe, "whsec_serve-test-stripe-secret", func(n int) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("evt_%d", n)
			return verifier.Delivery{Body: fmt.Appendf(nil, `{"id":%q,"object":"event","type":"invoice.paid"}`, id)}, id, "invoice.paid"
		}},
		{verifier.Shopify, "serve-test-shopify-secret", func(n int) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("b54557e4-bdd9-4b37-8a5f-%012d", n)
			return verifier.Delivery{ID: id, Type: "orders.create", Body: []byte(`{"id":820982911946154508}`)}, id, "orders.create"
		}},
		{verifier.Slack, "serve-test-slack-signing-secret", func(n int) (verifier.Delivery, string, string) {
			id := fmt.Sprintf("Ev%d", n)
			return verifier.Delivery{Body: fmt.Appendf(nil, `{"type":"event_callback","event_id":%q,"event":{"type":"app_mention"}}`, id)}, id, "app_mention"
		}},
	}
}

// request signs d now and makes its request.
func (s profileSender) request(t *testing.T, d verifier.Delivery, edit func(h http.Header, body []byte) []byte) *http.Request {
	t.Helper()
	p, _ := verifier.LookupProfile(s.profile)
	d.Time = time.Now()
	h, err := p.Sign([][]byte{[]byte(s.secret)}, d)
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
// its repeat is a duplicate, and each rejection leaves the spool untouched.
func TestProfilesServe(t *testing.T) {
	got := make(chan *http.Request, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Clone(context.Background())
		// Not delivered: the item stays, so that the spool's usage does
		// not change under the rejections below.
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer upstream.Close()
	senders := profileSenders()
	var routes []string
	for _, s := range senders {
		routes = append(routes, profileRoute(t, s, upstream.URL))
	}
	c := loadConfig(t, "", routes...)
	sp := c.spool()
	for i, s := range senders {
		t.Run(s.profile, func(t *testing.T) {
			h := c.handler(i)
			p, _ := verifier.LookupProfile(s.profile)
			d, id, typ := s.event(1)
			sent := s.request(t, d, nil)
			res := c.serve(t, h, sent, nil)
			if st, gotID := answerBody(t, res); res.status() != 202 || st != "accepted" || gotID != id {
				t.Fatalf("%s", res)
			}
			up := <-got
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

			rejections := []struct {
				name string
				edit func(h http.Header, body []byte) []byte
				code int
			}{
				{"signature missing", func(h http.Header, b []byte) []byte { h.Del(p.SignatureHeader); return b }, 401},
				{"signature repeated", func(h http.Header, b []byte) []byte { h.Add(p.SignatureHeader, h.Get(p.SignatureHeader)); return b }, 400},
				{"signature malformed", func(h http.Header, b []byte) []byte { h.Set(p.SignatureHeader, "x"); return b }, 401},
				{"one body byte changed", func(h http.Header, b []byte) []byte { b = bytes.Clone(b); b[len(b)-2] ^= 1; return b }, 401},
			}
			for n, rj := range rejections {
				d, id, _ := s.event(100 + n)
				before := usageOf(sp)
				res := c.serve(t, h, s.request(t, d, rj.edit), nil)
				if res.status() != rj.code {
					t.Errorf("%s: %s, want %d", rj.name, res, rj.code)
				}
				expectUntouched(t, sp, before, s.profile, id)
			}
		})
	}
}

// TestProfilesStale: a delivery signed too long ago (or too far ahead) is
// refused with 401 and not spooled, for every profile with a timestamp.
func TestProfilesStale(t *testing.T) {
	senders := profileSenders()
	var routes []string
	for _, s := range senders {
		routes = append(routes, profileRoute(t, s, "http://127.0.0.1:9/in"))
	}
	c := loadConfig(t, "", routes...)
	sp := c.spool()
	for i, s := range senders {
		p, _ := verifier.LookupProfile(s.profile)
		for _, skew := range []time.Duration{-p.DefaultTolerance - time.Minute, p.DefaultTolerance + time.Minute} {
			d, id, _ := s.event(int(skew / time.Minute))
			d.Time = time.Now().Add(skew)
			if s.profile == verifier.Ocriva {
				d.Body = envelopeBody(id, "document.processed", d.Time)
			}
			h, _ := p.Sign([][]byte{[]byte(s.secret)}, d)
			h.Set("Content-Type", "application/json")
			r := httptest.NewRequest(http.MethodPost, "http://gateway.test/hooks", bytes.NewReader(d.Body))
			r.Header = h
			before := usageOf(sp)
			res := c.serve(t, c.handler(i), r, nil)
			want := 401
			if !p.Timestamped {
				want = 202 // github: nothing signed says when
			}
			if res.status() != want {
				t.Errorf("%s signed %v from now: %s, want %d", s.profile, skew, res, want)
			}
			if want != 202 {
				expectUntouched(t, sp, before, s.profile, id)
			}
		}
	}
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
		res := c.serve(t, c.handler(i), s.request(t, verifier.Delivery{Body: body}, nil), nil)
		if res.status() != 200 || res.err != nil || res.rec.Body.String() != "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" ||
			!strings.HasPrefix(res.rec.Header().Get("Content-Type"), "text/plain") || res.placeholder("http.webhook.outcome") != "challenge" {
			t.Fatalf("route %d: %s, Content-Type %q", i, res, res.rec.Header().Get("Content-Type"))
		}
		if after := usageOf(sp); after != before {
			t.Fatalf("a challenge changed the spool: %+v, before %+v", after, before)
		}
		res = c.serve(t, c.handler(i), s.request(t, verifier.Delivery{Body: body}, func(h http.Header, b []byte) []byte {
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
	d, id, typ := s.event(1)
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
