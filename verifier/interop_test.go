package verifier_test

// Interop with the senders' own libraries (test-only dependencies): what
// they sign, the verifier accepts, and what Profile.Sign makes, they accept.

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-github/v74/github"
	"github.com/slack-go/slack"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	stripewebhook "github.com/stripe/stripe-go/v82/webhook"

	"github.com/hookgate/hookgate/verifier"
)

// verifierFor makes a verifier of the profile with the secrets, clocked at now.
func verifierFor(t *testing.T, profile string, now time.Time, secrets ...string) *verifier.Verifier {
	t.Helper()
	p, _ := verifier.LookupProfile(profile)
	var ss [][]byte
	for _, s := range secrets {
		ss = append(ss, []byte(s))
	}
	v, err := verifier.New(verifier.Config{Profile: profile, Secrets: ss, Tolerance: p.DefaultTolerance, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sign signs d with the profile's Sign.
func sign(t *testing.T, profile string, d verifier.Delivery, secrets ...string) http.Header {
	t.Helper()
	p, _ := verifier.LookupProfile(profile)
	var ss [][]byte
	for _, s := range secrets {
		ss = append(ss, []byte(s))
	}
	h, err := p.Sign(ss, d)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestStandardWebhooksLibrary(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("interop-standard-webhooks-key-32"))
	old := "whsec_" + base64.StdEncoding.EncodeToString([]byte("interop-standard-webhooks-old-32"))
	body := []byte(`{"type":"invoice.paid","timestamp":"2026-03-31T12:00:00Z","data":{"id":"inv_1"}}`)
	now := time.Now().Truncate(time.Second)

	// The library signs; the verifier accepts.
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign("msg_interop_1", now, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, "msg_interop_1")
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, sig)
	ev, err := verifierFor(t, verifier.StandardWebhooks, now, old, secret).Verify(h, body)
	if err != nil || ev.ID != "msg_interop_1" || ev.Type != "invoice.paid" || !ev.Timestamp.Equal(now) || ev.SecretIndex != 1 {
		t.Fatalf("the library's signature: %+v, %v", ev, err)
	}
	if _, err := verifierFor(t, verifier.StandardWebhooks, now, old).Verify(h, body); verifier.KindOf(err) != verifier.SignatureMismatch {
		t.Fatalf("another secret: %v", err)
	}

	// Sign signs with both secrets of a rotation; the library accepts
	// with either, and refuses a changed body.
	h = sign(t, verifier.StandardWebhooks, verifier.Delivery{ID: "msg_interop_2", Time: now, Body: body}, old, secret)
	for _, s := range []string{secret, old} {
		lib, _ := standardwebhooks.NewWebhook(s)
		if err := lib.Verify(body, h); err != nil {
			t.Fatalf("the library refuses Sign's headers: %v", err)
		}
		if err := lib.Verify(append(bytes.Clone(body), ' '), h); err == nil {
			t.Fatal("the library accepts a changed body")
		}
	}
}

func TestStripeLibrary(t *testing.T) {
	const secret = "whsec_interop_stripe_0123456789"
	body := []byte(`{"id":"evt_interop_1","object":"event","type":"invoice.paid","api_version":"2025-06-30.basil","data":{"object":{}}}`)
	now := time.Now().Truncate(time.Second)

	signed := stripewebhook.GenerateTestSignedPayload(&stripewebhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: now})
	h := http.Header{}
	h.Set("Stripe-Signature", signed.Header)
	ev, err := verifierFor(t, verifier.Stripe, now, secret).Verify(h, body)
	if err != nil || ev.ID != "evt_interop_1" || ev.Type != "invoice.paid" || !ev.Timestamp.Equal(now) {
		t.Fatalf("stripe-go's signature: %+v, %v", ev, err)
	}

	h = sign(t, verifier.Stripe, verifier.Delivery{Time: now, Body: body}, "whsec_interop_other_0123456789", secret)
	if err := stripewebhook.ValidatePayloadWithTolerance(body, h.Get("Stripe-Signature"), secret, 5*time.Minute); err != nil {
		t.Fatalf("stripe-go refuses Sign's header: %v", err)
	}
	if err := stripewebhook.ValidatePayload(body[1:], h.Get("Stripe-Signature"), secret); err == nil {
		t.Fatal("stripe-go accepts a changed body")
	}
}

func TestGitHubLibrary(t *testing.T) {
	const secret = "interop-github-secret-0123"
	body := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	h := sign(t, verifier.GitHub, verifier.Delivery{ID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Type: "ping", Body: body}, secret)
	h.Set("Content-Type", "application/json")

	r := httptest.NewRequest(http.MethodPost, "/hooks/github", bytes.NewReader(body))
	r.Header = h
	payload, err := github.ValidatePayload(r, []byte(secret))
	if err != nil || !bytes.Equal(payload, body) {
		t.Fatalf("go-github refuses Sign's header: %v", err)
	}
	ev, err := verifierFor(t, verifier.GitHub, time.Now(), secret).Verify(h, body)
	if err != nil || ev.ID != github.DeliveryID(r) || ev.Type != github.WebHookType(r) {
		t.Fatalf("the verifier: %+v, %v; go-github reads %s %s", ev, err, github.DeliveryID(r), github.WebHookType(r))
	}
	// The same bytes changed: both refuse.
	changed := append(bytes.Clone(body[:len(body)-2]), '2', '}')
	if err := github.ValidateSignature(h.Get("X-Hub-Signature-256"), changed, []byte(secret)); err == nil {
		t.Fatal("go-github accepts a changed body")
	}
	if _, err := verifierFor(t, verifier.GitHub, time.Now(), secret).Verify(h, changed); verifier.KindOf(err) != verifier.SignatureMismatch {
		t.Fatalf("the verifier on a changed body: %v", err)
	}
}

func TestSlackLibrary(t *testing.T) {
	const secret = "interop-slack-signing-secret-01"
	body := []byte(`{"type":"event_callback","event_id":"Ev0INTEROP1","event_time":1,"event":{"type":"app_mention","text":"hi"}}`)
	now := time.Now().Truncate(time.Second)
	h := sign(t, verifier.Slack, verifier.Delivery{Time: now, Body: body}, secret)

	sv, err := slack.NewSecretsVerifier(h, secret)
	if err != nil {
		t.Fatal(err)
	}
	sv.Write(body)
	if err := sv.Ensure(); err != nil {
		t.Fatalf("slack-go refuses Sign's headers: %v", err)
	}
	ev, err := verifierFor(t, verifier.Slack, now, secret).Verify(h, body)
	if err != nil || ev.ID != "Ev0INTEROP1" || ev.Type != "app_mention" {
		t.Fatalf("the verifier: %+v, %v", ev, err)
	}
	sv, _ = slack.NewSecretsVerifier(h, "interop-slack-other-secret-001")
	sv.Write(body)
	if sv.Ensure() == nil {
		t.Fatal("slack-go accepts another secret")
	}
}
