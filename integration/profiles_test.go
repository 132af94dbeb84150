package integration

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/verifier"
)

// profileEvent is one profile's delivery in the integration test: the body
// and the id and type its profile reads.
type profileEvent struct {
	profile string
	secret  string
	d       verifier.Delivery
	id, typ string
}

func profileEvents(prefix string) []profileEvent {
	return []profileEvent{
		{profile: verifier.Ocriva, secret: string(randomSecret(32)),
			d:  verifier.Delivery{Type: "document.processed", Body: envelope(prefix+"_oc", "document.processed", time.Now(), "")},
			id: prefix + "_oc", typ: "document.processed"},
		{profile: verifier.StandardWebhooks, secret: "whsec_" + base64.StdEncoding.EncodeToString(randomSecret(32)),
			d:  verifier.Delivery{ID: prefix + "_sw", Body: []byte(`{"type":"invoice.paid", "timestamp":"2026-12-03T12:00:00Z","data":{"n":2.50}}`)},
			id: prefix + "_sw", typ: "invoice.paid"},
		{profile: verifier.GitHub, secret: string(randomSecret(32)),
			d:  verifier.Delivery{ID: prefix + "-gh", Type: "push", Body: []byte(`{"ref":"refs/heads/main", "commits":[]}`)},
			id: prefix + "-gh", typ: "push"},
		{profile: verifier.Stripe, secret: "whsec_" + string(randomSecret(32)),
			d:  verifier.Delivery{Body: fmt.Appendf(nil, `{"id":"%s_st","object":"event","type":"invoice.paid"}`, prefix)},
			id: prefix + "_st", typ: "invoice.paid"},
		{profile: verifier.Shopify, secret: string(randomSecret(32)),
			d:  verifier.Delivery{ID: prefix + "-sh", Type: "orders.create", Body: []byte(`{"id":820982911946154508,"note":"a\u0026b"}`)},
			id: prefix + "-sh", typ: "orders.create"},
		{profile: verifier.Slack, secret: string(randomSecret(32)),
			d:  verifier.Delivery{Body: fmt.Appendf(nil, `{"type":"event_callback","event_id":"%s_sl","event":{"type":"app_mention"}}`, prefix)},
			id: prefix + "_sl", typ: "app_mention"},
	}
}

// envName is the environment variable of a profile's secret.
func envName(profile string) string {
	return "HG_" + strings.ToUpper(strings.ReplaceAll(profile, "-", "_"))
}

// postProfile signs d now as its profile's sender does and posts it to
// /hooks/<profile>. The signature is forbidden in the logs.
func postProfile(t *testing.T, g *gateway, s *sender, e profileEvent, d verifier.Delivery) answer {
	t.Helper()
	p, _ := verifier.LookupProfile(e.profile)
	d.Time = time.Now()
	h, err := p.Sign([][]byte{[]byte(e.secret)}, d)
	if err != nil {
		t.Fatal(err)
	}
	g.forbid(h.Get(p.SignatureHeader))
	h.Set("Content-Type", "application/json")
	return s.mustPost(t, &delivery{ID: e.id, Method: http.MethodPost, Path: "/hooks/" + e.profile, Body: d.Body, Header: h})
}

// TestProfilesThroughTheBinary: one gateway with a route per profile; each
// profile's event is accepted and reaches the upstream once, with the
// sender's headers and the normalised ones, however often it is sent again;
// Slack's url_verification is answered by the gateway; github's and shopify's
// routes warn at load that their replay protection is the dedupe window on an
// unsigned id.
func TestProfilesThroughTheBinary(t *testing.T) {
	t.Parallel()
	events := profileEvents(fmt.Sprintf("pr%d", time.Now().UnixNano()%1e6))
	var env []string
	for _, e := range events {
		env = append(env, envName(e.profile)+"="+e.secret)
	}
	g := newGateway(t, env...)
	up := newUpstream(t)
	var site strings.Builder
	fmt.Fprintf(&site, "http://%s {\n", g.site)
	for _, e := range events {
		g.forbid(e.secret)
		fmt.Fprintf(&site, `	handle /hooks/%[1]s {
		webhook_ingest {
			name %[1]s
			profile %[1]s
			secret {env.%[2]s}
			forward %[3]s {
				backoff 100ms 500ms
			}
		}
	}
`, e.profile, envName(e.profile), up.url("/"+e.profile))
	}
	site.WriteString("}\n")
	g.start(g.globals("") + site.String())
	for _, name := range []string{"github", "shopify"} {
		if len(g.logLines("replay protection is the dedupe window on the unsigned id only", `"profile":"`+name+`"`)) == 0 {
			t.Errorf("no warning at load that %s's replay protection is the dedupe window on the unsigned id only", name)
		}
	}

	s := newSender(g, "", nil)
	for _, e := range events {
		if a := postProfile(t, g, s, e, e.d); a.Code != http.StatusAccepted || a.EventID != e.id {
			t.Fatalf("%s: %s", e.profile, a)
		}
		if a := postProfile(t, g, s, e, e.d); a.Code != http.StatusOK || a.Status != "duplicate" {
			t.Fatalf("%s again: %s", e.profile, a)
		}
	}
	testwait.Until(t, 20*time.Second, func() (bool, string) {
		got := up.delivered()
		for _, e := range events {
			if got[e.id] != 1 {
				return false, fmt.Sprintf("waiting for %s's event upstream (%v)", e.profile, got)
			}
		}
		return true, ""
	})
	for _, e := range events {
		// Delivered, the event is still a duplicate.
		if a := postProfile(t, g, s, e, e.d); a.Code != http.StatusOK || a.Status != "duplicate" {
			t.Fatalf("%s once delivered: %s", e.profile, a)
		}
	}
	p := map[string]*verifier.Profile{}
	for _, r := range up.requests() {
		name := strings.TrimPrefix(r.Path, "/")
		if p[name] == nil {
			p[name], _ = verifier.LookupProfile(name)
		}
		var e profileEvent
		for _, x := range events {
			if x.profile == name {
				e = x
			}
		}
		if r.ID != e.id || r.Header.Get("X-Webhook-Event") != e.typ || r.Header.Get("X-Webhook-Attempt") != "1" ||
			r.Header.Get(p[name].SignatureHeader) == "" || string(r.Body) != string(e.d.Body) {
			t.Errorf("%s: upstream got id %q, event %q, attempt %q, signature %q, body %s", name, r.ID,
				r.Header.Get("X-Webhook-Event"), r.Header.Get("X-Webhook-Attempt"), r.Header.Get(p[name].SignatureHeader), r.Body)
		}
	}
	if n := up.count(); n != len(events) {
		t.Fatalf("the upstream received %d requests, want %d", n, len(events))
	}

	// Slack's url_verification: answered with its challenge, not forwarded.
	slack := events[len(events)-1]
	challenge := verifier.Delivery{Body: []byte(`{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`)}
	if a := postProfile(t, g, s, slack, challenge); a.Code != http.StatusOK || a.Body != "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" {
		t.Fatalf("url_verification: %s", a)
	}
	// Signed with another route's secret: refused.
	wrong := slack
	wrong.secret = events[0].secret
	if a := postProfile(t, g, s, wrong, challenge); a.Code != http.StatusUnauthorized {
		t.Fatalf("url_verification signed with another secret: %s", a)
	}
	if n := up.count(); n != len(events) {
		t.Fatalf("the upstream received %d requests after the challenges, want %d", n, len(events))
	}
}
