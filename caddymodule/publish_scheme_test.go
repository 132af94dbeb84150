package caddymodule

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hookgate/hookgate/internal/testnet"
	"github.com/hookgate/hookgate/verifier"
)

// TestPublishStandardWebhooks: a subscriber with scheme standard-webhooks
// gets {"type", "timestamp", "data"} signed once per secret of its rotation,
// which the Standard Webhooks reference library and the gateway's own
// standard-webhooks profile both verify with either secret.
func TestPublishStandardWebhooks(t *testing.T) {
	newSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("publish-standard-new-key-012345"))
	oldSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("publish-standard-old-key-012345"))
	t.Setenv("HG_SW_NEW", newSecret)
	t.Setenv("HG_SW_OLD", oldSecret)
	subscriber, deliveries := testnet.Recorder(t, 1, http.StatusOK, "")
	c := loadConfig(t, "", `[{"handler": "webhook_publish", "allow_private": ["127.0.0.1/32"], "subscribers": [
		{"name": "sw", "url": "`+subscriber.URL+`", "scheme": "standard-webhooks", "secrets": ["{env.HG_SW_NEW}", "{env.HG_SW_OLD}"]}]}]`)

	res, rep := c.publish(t, http.MethodPost, "application/json",
		`{"eventType":"document.processed","eventId":"evt_sw_1","payload":{"documentId":"doc_1","note":"<a&b>"}}`)
	if res.status() != 202 || rep.Status != "accepted" {
		t.Fatalf("%s", res)
	}
	d := <-deliveries
	var body struct {
		Type, Timestamp string
		Data            json.RawMessage
	}
	if err := json.Unmarshal(d.Body, &body); err != nil || body.Type != "document.processed" ||
		string(body.Data) != `{"documentId":"doc_1","note":"<a&b>"}` || !strings.HasPrefix(string(d.Body), `{"type":`) {
		t.Fatalf("body %s: %v", d.Body, err)
	}
	if ts, err := time.Parse(time.RFC3339, body.Timestamp); err != nil || time.Since(ts) > time.Minute {
		t.Fatalf("timestamp %q", body.Timestamp)
	}
	if d.Header.Get("Webhook-Id") != "evt_sw_1" || len(strings.Fields(d.Header.Get("Webhook-Signature"))) != 2 {
		t.Fatalf("headers %v", d.Header)
	}
	for _, s := range []string{newSecret, oldSecret} {
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(d.Body, d.Header); err != nil {
			t.Fatalf("the reference library refuses the delivery: %v", err)
		}
		v, err := verifier.New(verifier.Config{Profile: verifier.StandardWebhooks, Secrets: [][]byte{[]byte(s)}, Tolerance: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := v.Verify(d.Header, d.Body); err != nil || ev.ID != "evt_sw_1" || ev.Type != "document.processed" {
			t.Fatalf("the standard-webhooks profile: %+v, %v", ev, err)
		}
	}

	// An id with a dot cannot be signed in this scheme: refused, nothing stored.
	res, rep = c.publish(t, http.MethodPost, "application/json", `{"eventType":"document.processed","eventId":"evt.2","payload":{}}`)
	if res.status() != 400 || !strings.Contains(rep.Error, "standard-webhooks") {
		t.Fatalf("an id with a dot: %s", res)
	}
}

// TestPublishSchemeConfig: an unknown scheme, or a secret not written as
// the scheme writes it, fails the load.
func TestPublishSchemeConfig(t *testing.T) {
	for _, tc := range []struct{ scheme, want string }{
		{"svix", `unknown scheme "svix"`},
		{"standard-webhooks", "secret 0: not whsec_ followed by standard base64"},
	} {
		route := `[{"handler": "webhook_publish", "subscribers": [{"name": "s", "url": "https://example.com/", "scheme": "` +
			tc.scheme + `", "secrets": ["{env.HG_UNIT_SECRET}"]}]}]`
		err := caddy.Load(configJSON(t, spoolJSON(t, ""), "", route), true)
		if err == nil {
			caddy.Stop()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("scheme %s: %v, want %q", tc.scheme, err, tc.want)
		}
	}
}
