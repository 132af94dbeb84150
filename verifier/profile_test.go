package verifier

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A profile's fixture: a good delivery and the cases only it has.
type fixture struct {
	profile     string
	secret      []byte // signs the good delivery; the verifier's second secret
	other       []byte // the verifier's first secret (rotation)
	good        Delivery
	wantID      string
	wantType    string
	sigHeader   string
	badEncoding string // a malformed signature value
	cases       []profileCase
}

// profileCase changes the good delivery and says what Verify makes of it.
type profileCase struct {
	name   string
	before func(d *Delivery)                    // before signing
	after  func(h http.Header, b []byte) []byte // after signing: headers and body
	signer [][]byte                             // signing secrets; nil: the fixture's secret
	clock  time.Duration                        // the verifier's now, from the signing time
	want   Kind
}

func whsec(b []byte) []byte { return []byte("whsec_" + base64.StdEncoding.EncodeToString(b)) }

var wrongSecret = []byte("wrong-secret-0123456789abcdef")

func setHeader(name, value string) func(h http.Header, b []byte) []byte {
	return func(h http.Header, b []byte) []byte {
		if value == "-" {
			h.Del(name)
		} else {
			h.Set(name, value)
		}
		return b
	}
}

func addHeader(name, value string) func(h http.Header, b []byte) []byte {
	return func(h http.Header, b []byte) []byte { h.Add(name, value); return b }
}

func withBody(body string) func(d *Delivery) { return func(d *Delivery) { d.Body = []byte(body) } }

// headerRules are the cases of an id, type or timestamp header.
func headerRules(name, malformed string) []profileCase {
	return []profileCase{
		{name: name + " missing", after: setHeader(name, "-"), want: HeaderMissing},
		{name: name + " repeated", after: addHeader(name, "x"), want: HeaderRepeated},
		{name: name + " malformed", after: setHeader(name, malformed), want: HeaderInvalid},
	}
}

func fixtures() []fixture {
	swSecret := whsec([]byte("standard-webhooks-key-0123456789"))
	swOther := whsec([]byte("standard-webhooks-old-0123456789"))
	return []fixture{
		{
			profile: Ocriva, secret: testSecret, other: otherSecret,
			good:   Delivery{Type: "document.processed", Body: []byte(envelope())},
			wantID: "evt_1743418800000_inv9x2", wantType: "document.processed",
			sigHeader: SignatureHeader, badEncoding: "sha256=" + strings.Repeat("g", 64),
			cases: []profileCase{
				{name: "eventId missing", before: withBody(envelope("eventId", "-")), want: EnvelopeInvalid},
				{name: "eventId malformed", before: withBody(envelope("eventId", `"a b"`)), want: EnvelopeInvalid},
				{name: "event header missing", after: setHeader(EventHeader, "-"), want: EventHeaderMissing},
				{name: "event header repeated", after: addHeader(EventHeader, "x"), want: EventHeaderRepeated},
				{name: "event header differs", after: setHeader(EventHeader, "document.failed"), want: EventHeaderMismatch},
				{name: "eventType malformed", before: func(d *Delivery) {
					d.Body, d.Type = []byte(envelope("eventType", `"a..b"`)), "a..b"
				}, want: EnvelopeInvalid},
			},
		},
		{
			profile: StandardWebhooks, secret: swSecret, other: swOther,
			good:   Delivery{ID: "msg_2ZQh7", Body: []byte(`{"type":"invoice.paid","timestamp":"2026-03-31T12:00:00Z","data":{"id":1}}`)},
			wantID: "msg_2ZQh7", wantType: "invoice.paid",
			sigHeader: swSignatureHeader, badEncoding: "v1,not*base64",
			cases: append(append(headerRules(swIDHeader, "msg_1 2"), headerRules(swTimestampHeader, "1.5")...),
				profileCase{name: "id with a dot", before: func(d *Delivery) { d.ID = "msg.1" }, want: HeaderInvalid},
				profileCase{name: "timestamp negative", after: setHeader(swTimestampHeader, "-1"), want: HeaderInvalid},
				profileCase{name: "type missing", before: withBody(`{"data":{}}`), want: EnvelopeInvalid},
				profileCase{name: "type malformed", before: withBody(`{"type":"a..b"}`), want: EnvelopeInvalid},
				profileCase{name: "type not a string", before: withBody(`{"type":5}`), want: EnvelopeInvalid},
				profileCase{name: "several signatures, one matches", signer: [][]byte{whsec(wrongSecret), swSecret}},
				profileCase{name: "other versions ignored", after: func(h http.Header, b []byte) []byte {
					h.Set(swSignatureHeader, "v1a,AAAA "+h.Get(swSignatureHeader))
					return b
				}},
				profileCase{name: "malformed and empty tokens skipped", after: func(h http.Header, b []byte) []byte {
					h.Set(swSignatureHeader, "v1,not*base64  v1 ,x "+h.Get(swSignatureHeader)+" v1,AAAA")
					return b
				}},
				profileCase{name: "only other versions", after: setHeader(swSignatureHeader, "v1a,AAAA"), want: SignatureMalformed},
				profileCase{name: "only malformed v1", after: setHeader(swSignatureHeader, "v1,AAAA v1,"), want: SignatureMalformed},
				profileCase{name: "the id changed", after: setHeader(swIDHeader, "msg_other"), want: SignatureMismatch},
				profileCase{name: "the timestamp changed", after: setHeader(swTimestampHeader, "1774958401"), want: SignatureMismatch},
			),
		},
		{
			profile: GitHub, secret: []byte("github-secret-0123456789"), other: otherSecret,
			good:   Delivery{ID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Type: "pull_request", Body: []byte(`{"action":"opened","number":1}`)},
			wantID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", wantType: "pull_request",
			sigHeader: githubSignatureHeader, badEncoding: "sha1=0123456789abcdef0123456789abcdef01234567",
			cases: append(append(headerRules(githubDeliveryHeader, "a/b"), headerRules(githubEventHeader, "pull request")...),
				profileCase{name: "no timestamp: a year later still verifies", clock: 365 * 24 * time.Hour},
				profileCase{name: "a year earlier too", clock: -365 * 24 * time.Hour},
				profileCase{name: "body not an object", before: withBody(`[1]`), want: EnvelopeInvalid},
			),
		},
		{
			profile: Stripe, secret: []byte("whsec_stripe-0123456789abcdef"), other: []byte("whsec_stripe-old-0123456789"),
			good:   Delivery{Body: []byte(`{"id":"evt_1NG8Du2eZvKYlo2C","object":"event","type":"customer.subscription.created","data":{"object":{}}}`)},
			wantID: "evt_1NG8Du2eZvKYlo2C", wantType: "customer.subscription.created",
			sigHeader: stripeSignatureHeader, badEncoding: "t=1774958400,v1=xyz",
			cases: []profileCase{
				{name: "id missing", before: withBody(`{"type":"invoice.paid"}`), want: EnvelopeInvalid},
				{name: "id malformed", before: withBody(`{"id":7,"type":"invoice.paid"}`), want: EnvelopeInvalid},
				{name: "type missing", before: withBody(`{"id":"evt_1"}`), want: EnvelopeInvalid},
				{name: "type malformed", before: withBody(`{"id":"evt_1","type":"invoice paid"}`), want: EnvelopeInvalid},
				{name: "t missing", after: func(h http.Header, b []byte) []byte {
					h.Set(stripeSignatureHeader, strings.TrimPrefix(h.Get(stripeSignatureHeader), "t=1774958400,"))
					return b
				}, want: SignatureMalformed},
				{name: "t repeated", after: func(h http.Header, b []byte) []byte {
					h.Set(stripeSignatureHeader, h.Get(stripeSignatureHeader)+",t=1774958400")
					return b
				}, want: SignatureMalformed},
				{name: "t malformed", after: func(h http.Header, b []byte) []byte {
					h.Set(stripeSignatureHeader, strings.Replace(h.Get(stripeSignatureHeader), "t=1774958400", "t=17749584e2", 1))
					return b
				}, want: SignatureMalformed},
				{name: "t changed", after: func(h http.Header, b []byte) []byte {
					h.Set(stripeSignatureHeader, strings.Replace(h.Get(stripeSignatureHeader), "t=1774958400", "t=1774958401", 1))
					return b
				}, clock: time.Second, want: SignatureMismatch},
				{name: "several v1, one matches", signer: [][]byte{wrongSecret, []byte("whsec_stripe-0123456789abcdef")}},
				{name: "v0 ignored", after: func(h http.Header, b []byte) []byte {
					h.Set(stripeSignatureHeader, h.Get(stripeSignatureHeader)+",v0="+strings.Repeat("0", 64))
					return b
				}},
				{name: "v1 not hex skipped", after: func(h http.Header, b []byte) []byte {
					h.Set(stripeSignatureHeader, h.Get(stripeSignatureHeader)+",v1=xyz,v1="+strings.Repeat("0", 63))
					return b
				}},
				{name: "an element not key=value", after: func(h http.Header, b []byte) []byte {
					h.Set(stripeSignatureHeader, h.Get(stripeSignatureHeader)+",v1")
					return b
				}, want: SignatureMalformed},
				{name: "only v0", after: setHeader(stripeSignatureHeader, "t=1774958400,v0="+strings.Repeat("0", 64)), want: SignatureMalformed},
			},
		},
		{
			profile: Shopify, secret: []byte("shpss_0123456789abcdef"), other: otherSecret,
			good: Delivery{ID: "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", Type: "orders.create",
				Body: []byte(`{"id":820982911946154508,"email":"jon@example.com"}`)},
			wantID: "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", wantType: "orders.create",
			sigHeader: shopifySignatureHeader, badEncoding: strings.Repeat("A", 43),
			cases: append(append(append(headerRules(shopifyWebhookIDHeader, "a b"), headerRules(shopifyTopicHeader, "orders//create")...),
				headerRules(shopifyTriggeredAtHeader, "2026-03-31 12:00:00")...),
				profileCase{name: "topic with a dot", after: setHeader(shopifyTopicHeader, "orders.create"), want: HeaderInvalid},
				profileCase{name: "hex instead of base64", after: setHeader(shopifySignatureHeader, strings.Repeat("ab", 32)), want: SignatureMalformed},
			),
		},
		{
			profile: Slack, secret: []byte("8f742231b10e8888abcd99yyyzzz85a5"), other: otherSecret,
			good:   Delivery{Body: []byte(`{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"hi"}}`)},
			wantID: "Ev08MFMKH6", wantType: "app_mention",
			sigHeader: slackSignatureHeader, badEncoding: "v1=" + strings.Repeat("0", 64),
			cases: append(headerRules(slackTimestampHeader, "+1774958400"),
				profileCase{name: "event_id missing", before: withBody(`{"type":"event_callback","event":{"type":"message"}}`), want: EnvelopeInvalid},
				profileCase{name: "event_id malformed", before: withBody(`{"type":"event_callback","event_id":"Ev 1","event":{"type":"message"}}`), want: EnvelopeInvalid},
				profileCase{name: "event missing", before: withBody(`{"type":"event_callback","event_id":"Ev1"}`), want: EnvelopeInvalid},
				profileCase{name: "event.type missing", before: withBody(`{"type":"event_callback","event_id":"Ev1","event":{"text":"x"}}`), want: EnvelopeInvalid},
				profileCase{name: "event.type malformed", before: withBody(`{"type":"event_callback","event_id":"Ev1","event":{"type":""}}`), want: EnvelopeInvalid},
				profileCase{name: "outer type missing", before: withBody(`{"event_id":"Ev1","event":{"type":"message"}}`), want: EnvelopeInvalid},
				profileCase{name: "duplicate key inside event", before: withBody(`{"type":"event_callback","event_id":"Ev1","event":{"type":"message","Type":"x"}}`), want: EnvelopeInvalid},
				profileCase{name: "timestamp changed", after: setHeader(slackTimestampHeader, "1774958401"), want: SignatureMismatch},
				profileCase{name: "challenge empty", before: withBody(`{"type":"url_verification","challenge":""}`), want: EnvelopeInvalid},
				profileCase{name: "challenge missing", before: withBody(`{"type":"url_verification"}`), want: EnvelopeInvalid},
			),
		},
	}
}

// genericCases are every profile's rules: the signature header, the
// secrets, the body's bytes and strictness, and the timestamp's tolerance.
func genericCases(f fixture, p *Profile) []profileCase {
	cs := []profileCase{
		{name: "good"},
		{name: "signed with the older secret", signer: [][]byte{f.other}},
		{name: "signature missing", after: setHeader(f.sigHeader, "-"), want: SignatureMissing},
		{name: "signature repeated", after: func(h http.Header, b []byte) []byte {
			h.Add(f.sigHeader, h.Get(f.sigHeader))
			return b
		}, want: SignatureRepeated},
		{name: "signature badly encoded", after: setHeader(f.sigHeader, f.badEncoding), want: SignatureMalformed},
		{name: "signature empty", after: setHeader(f.sigHeader, ""), want: SignatureMalformed},
		{name: "wrong secret", signer: [][]byte{wrongSecret}, want: SignatureMismatch},
		{name: "one body byte changed", after: func(h http.Header, b []byte) []byte {
			c := bytes.Clone(b)
			c[len(c)-2] ^= 1
			return c
		}, want: SignatureMismatch},
		{name: "a byte appended", after: func(h http.Header, b []byte) []byte { return append(bytes.Clone(b), ' ') }, want: SignatureMismatch},
		{name: "duplicate keys, case folded", before: func(d *Delivery) {
			d.Body = append([]byte(`{"dup":1,"DUP":2,`), d.Body[1:]...)
		}, want: EnvelopeInvalid},
		{name: "invalid UTF-8", before: func(d *Delivery) {
			d.Body = append([]byte("{\"x\":\"\xff\","), d.Body[1:]...)
		}, want: EnvelopeInvalid},
		{name: "trailing data", before: func(d *Delivery) { d.Body = append(bytes.Clone(d.Body), "{}"...) }, want: EnvelopeInvalid},
	}
	if f.profile == StandardWebhooks {
		cs[6].signer = [][]byte{whsec(wrongSecret)}
	}
	if tol := p.DefaultTolerance; p.Timestamped {
		cs = append(cs,
			profileCase{name: "timestamp at the tolerance, past", clock: tol},
			profileCase{name: "timestamp past the tolerance, past", clock: tol + time.Second, want: TimestampStale},
			profileCase{name: "timestamp at the tolerance, future", clock: -tol},
			profileCase{name: "timestamp past the tolerance, future", clock: -tol - time.Second, want: TimestampFuture},
		)
	}
	return cs
}

func TestProfiles(t *testing.T) {
	for _, f := range fixtures() {
		p, ok := LookupProfile(f.profile)
		if !ok {
			t.Fatalf("no profile %q", f.profile)
		}
		for _, c := range append(genericCases(f, p), f.cases...) {
			t.Run(f.profile+"/"+c.name, func(t *testing.T) {
				d := f.good
				d.Time = baseTime
				if c.before != nil {
					c.before(&d)
				}
				signer := c.signer
				if signer == nil {
					signer = [][]byte{f.secret}
				}
				h, err := p.Sign(signer, d)
				if err != nil {
					t.Fatal(err)
				}
				body := d.Body
				if c.after != nil {
					body = c.after(h, body)
				}
				v := mustNew(t, Config{Profile: f.profile, Secrets: [][]byte{f.other, f.secret},
					Tolerance: p.DefaultTolerance, Now: fixedClock(baseTime.Add(c.clock))})
				ev, err := v.Verify(h, body)
				if c.want != KindUnknown {
					wantKind(t, err, c.want, c.want.Status())
					if st := c.want.Status(); st != 400 && st != 401 {
						t.Fatalf("status %d", st)
					}
					return
				}
				if err != nil {
					t.Fatalf("Verify: %v (%v)", err, KindOf(err))
				}
				wantIdx := 1
				if bytes.Equal(signer[0], f.other) {
					wantIdx = 0
				}
				if ev.ID != f.wantID || ev.Type != f.wantType || ev.SecretIndex != wantIdx || !bytes.Equal(ev.Body, body) {
					t.Fatalf("event %+v", ev)
				}
				if p.Timestamped != !ev.Timestamp.IsZero() || (p.Timestamped && !ev.Timestamp.Equal(baseTime)) {
					t.Fatalf("timestamp %v", ev.Timestamp)
				}
			})
		}
	}
}

// TestPublishedExamples checks each sender's own published example (or,
// where a sender publishes none, one recomputed independently; see
// /work/shared/reference/sender-schemes.md).
func TestPublishedExamples(t *testing.T) {
	tests := []struct {
		profile  string
		secret   string
		d        Delivery
		header   string
		want     string
		verify   bool   // the secret is long enough for New: Verify too
		wantKind Kind   // what Verify makes of it (the examples' bodies are not all events)
		wantID   string // on success
	}{
		// GitHub's documentation (validating webhook deliveries).
		{GitHub, "It's a Secret to Everybody", Delivery{ID: "d1", Type: "push", Body: []byte("Hello, World!")},
			githubSignatureHeader, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", true, EnvelopeInvalid, ""},
		// octokit/webhooks-methods' test vector.
		{GitHub, "mysecret", Delivery{Body: []byte(`{"foo":"bar"}`)},
			githubSignatureHeader, "sha256=4864d2759938a15468b5df9ade20bf161da9b4f737ea61794142f3484236bda3", false, 0, ""},
		// The Standard Webhooks reference library's test vector.
		{StandardWebhooks, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
			Delivery{ID: "msg_p5jXN8AQM9LWM0D4loKWxJek", Time: time.Unix(1614265330, 0), Body: []byte(`{"test": 2432232314}`)},
			swSignatureHeader, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", true, EnvelopeInvalid, ""},
		// Slack's documentation (verifying requests): a slash command.
		{Slack, "8f742231b10e8888abcd99yyyzzz85a5", Delivery{Time: time.Unix(1531420618, 0), Body: []byte("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")},
			slackSignatureHeader, "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", true, EnvelopeInvalid, ""},
		// slack-go's test vector: an Events API callback.
		{Slack, "e6b19c573432dcc6b075501d51b51bb8", Delivery{Time: time.Unix(1531431954, 0), Body: []byte(`{"token":"aF5ynEYQH0dFN9imlgcADxDB","team_id":"XXXXXXXXX","api_app_id":"YYYYYYYYY","event":{"type":"app_mention","user":"AAAAAAAAA","text":"<@EEEEEEEEE> hello world","client_msg_id":"477cc591-ch73-a14z-4db8-g0cd76321bec","ts":"1531431954.000073","channel":"TTTTTTTTT","event_ts":"1531431954.000073"},"type":"event_callback","event_id":"TvBP7LRED7","event_time":1531431954,"authed_users":["EEEEEEEEE"]}`)},
			slackSignatureHeader, "v0=adada4ed31709aef585c2580ca3267678c6a8eaeb7e0c1aca3ee57b656886b2c", true, KindUnknown, "TvBP7LRED7"},
		// Stripe publishes none: recomputed with HMAC-SHA256 and stripe-go.
		{Stripe, "whsec_test_secret", Delivery{Time: time.Unix(1700000000, 0), Body: []byte(`{"id":"evt_test_webhook","object":"event","type":"invoice.paid"}`)},
			stripeSignatureHeader, "t=1700000000,v1=92a67d03f3996371aee723f680b97033696bcd5bb8a1826c465e55a4d569d2c1", true, KindUnknown, "evt_test_webhook"},
		// Shopify publishes none: recomputed with HMAC-SHA256.
		{Shopify, "hush", Delivery{ID: "w1", Type: "orders.create", Body: []byte(`{"id":820982911946154508,"email":"jon@example.com"}`)},
			shopifySignatureHeader, "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=", false, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.profile+"/"+tt.want[:12], func(t *testing.T) {
			p, _ := LookupProfile(tt.profile)
			h, err := p.Sign([][]byte{[]byte(tt.secret)}, tt.d)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Get(tt.header); got != tt.want {
				t.Fatalf("Sign: %s = %q, want %q", tt.header, got, tt.want)
			}
			if !tt.verify {
				return
			}
			// The example's own header value, not the one Sign made.
			h.Set(tt.header, tt.want)
			v := mustNew(t, Config{Profile: tt.profile, Secrets: [][]byte{[]byte(tt.secret)},
				Tolerance: p.DefaultTolerance, Now: fixedClock(tt.d.Time)})
			ev, err := v.Verify(h, tt.d.Body)
			// The signature matched: what fails, if anything, is the body.
			wantKind(t, err, tt.wantKind, tt.wantKind.Status())
			if err == nil && ev.ID != tt.wantID {
				t.Fatalf("id %q", ev.ID)
			}
		})
	}
}

func TestSlackChallenge(t *testing.T) {
	p, _ := LookupProfile(Slack)
	secret := []byte("8f742231b10e8888abcd99yyyzzz85a5")
	body := []byte(`{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`)
	d := Delivery{Time: baseTime, Body: body}
	h, _ := p.Sign([][]byte{secret}, d)
	v := mustNew(t, Config{Profile: Slack, Secrets: [][]byte{secret}, Tolerance: 5 * time.Minute, Now: fixedClock(baseTime)})
	ev, err := v.Verify(h, body)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Challenge != "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" || ev.ID != "" {
		t.Fatalf("event %+v", ev)
	}
	// Unsigned or stale, a challenge is refused like any request.
	h.Set(slackSignatureHeader, "v0="+strings.Repeat("0", 64))
	_, err = v.Verify(h, body)
	wantKind(t, err, SignatureMismatch, 401)
	late := mustNew(t, Config{Profile: Slack, Secrets: [][]byte{secret}, Tolerance: 5 * time.Minute, Now: fixedClock(baseTime.Add(time.Hour))})
	h, _ = p.Sign([][]byte{secret}, d)
	_, err = late.Verify(h, body)
	wantKind(t, err, TimestampStale, 401)
}

func TestNewProfileConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"unknown profile", Config{Profile: "svix", Secrets: [][]byte{testSecret}}, false},
		{"github with a tolerance", Config{Profile: GitHub, Secrets: [][]byte{testSecret}, Tolerance: time.Minute}, false},
		{"github without", Config{Profile: GitHub, Secrets: [][]byte{testSecret}}, true},
		{"insecure beyond ocriva", Config{Profile: Stripe, InsecureNoSignature: true}, false},
		{"standard-webhooks secret not base64", Config{Profile: StandardWebhooks, Secrets: [][]byte{[]byte("whsec_not*base64*at*all*")}}, false},
		{"standard-webhooks key too short", Config{Profile: StandardWebhooks, Secrets: [][]byte{whsec([]byte("short"))}}, false},
		{"standard-webhooks without the prefix", Config{Profile: StandardWebhooks, Secrets: [][]byte{whsec(testSecret)[6:]}}, true},
		{"slack short secret", Config{Profile: Slack, Secrets: [][]byte{[]byte("short")}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v", err)
			}
			if err != nil && strings.Contains(err.Error(), "base64*") {
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
}

func TestProfileNames(t *testing.T) {
	want := "ocriva standard-webhooks github stripe shopify slack"
	if got := strings.Join(ProfileNames(), " "); got != want {
		t.Fatalf("%s", got)
	}
	if p, ok := LookupProfile(""); !ok || p.Name != Ocriva {
		t.Fatal("the default profile is not ocriva")
	}
	var unsigned []string
	for _, name := range ProfileNames() {
		if p, _ := LookupProfile(name); !p.SignedID {
			unsigned = append(unsigned, name)
		}
	}
	if got := strings.Join(unsigned, " "); got != "github shopify" {
		t.Fatalf("profiles whose id is unsigned: %q", got)
	}
}

// TestProfileCopies: what LookupProfile and Verifier.Profile hand out can
// be changed without changing the profile for anyone else.
func TestProfileCopies(t *testing.T) {
	p, _ := LookupProfile(GitHub)
	v := mustNew(t, Config{Profile: GitHub, Secrets: [][]byte{testSecret}})
	for _, got := range []*Profile{p, v.Profile()} {
		got.Name, got.Headers[0], got.SignedID = "changed", "Changed", true
	}
	again, ok := LookupProfile(GitHub)
	if !ok {
		t.Fatal("no github profile any more")
	}
	for _, q := range []*Profile{again, v.Profile()} {
		if q.Name != GitHub || q.Headers[0] != githubSignatureHeader || q.SignedID {
			t.Fatalf("the profile changed: %+v", q)
		}
	}
}

// TestDuplicateMemberNamed: a duplicate top-level member is named in the
// error only if it is one of the profile's own members, by that name.
func TestDuplicateMemberNamed(t *testing.T) {
	tests := []struct {
		profile, secret, body, want string
	}{
		{Stripe, "whsec_stripe-0123456789abcdef", `{"id":"evt_1","type":"a","eventId":1,"eventId":2}`, ""},
		{Stripe, "whsec_stripe-0123456789abcdef", `{"id":"evt_1","type":"a","ID":"evt_2"}`, "id"},
		{Stripe, "whsec_stripe-0123456789abcdef", `{"id":"evt_1","type":"a","type":"b"}`, "type"},
		{Slack, "8f742231b10e8888abcd99yyyzzz85a5", `{"type":"event_callback","event_id":"Ev1","EVENT_ID":"Ev2","event":{"type":"m"}}`, "event_id"},
		{GitHub, "github-secret-0123456789", `{"eventId":"a","eventId":"b"}`, ""},
		{Ocriva, string(testSecret), envelope("eventId", `"evt_1","EventID":"evt_2"`), "eventId"},
	}
	for _, tt := range tests {
		t.Run(tt.profile+"/"+tt.body, func(t *testing.T) {
			p, _ := LookupProfile(tt.profile)
			d := Delivery{ID: "d1", Type: "push", Time: baseTime, Body: []byte(tt.body)}
			secret := [][]byte{[]byte(tt.secret)}
			h, err := p.Sign(secret, d)
			if err != nil {
				t.Fatal(err)
			}
			v := mustNew(t, Config{Profile: tt.profile, Secrets: secret, Tolerance: p.DefaultTolerance, Now: fixedClock(baseTime)})
			_, err = v.Verify(h, d.Body)
			e, ok := err.(*Error)
			if !ok {
				t.Fatalf("error %v", err)
			}
			if e.Kind != EnvelopeInvalid || e.Field != tt.want || !strings.Contains(e.Error(), "duplicate key") {
				t.Fatalf("error %v (field %q), want a duplicate named %q", err, e.Field, tt.want)
			}
		})
	}
}

// TestLongSignatureHeader checks that the header parsers stop at the count
// bound: a long header (1 MiB, well within net/http's default header limit)
// is refused without costing memory in proportion to its length.
func TestLongSignatureHeader(t *testing.T) {
	const size = 1 << 20
	tests := []struct {
		name   string
		header string
		parse  func(string) *Error
	}{
		{"standard-webhooks spaces", strings.Repeat(" ", size), func(s string) *Error {
			_, err := parseStandardSignature(s)
			return err
		}},
		{"standard-webhooks other versions", strings.Repeat("v1a,x ", size/6), func(s string) *Error {
			_, err := parseStandardSignature(s)
			return err
		}},
		{"stripe other schemes", "t=1," + strings.Repeat("v0=0,", size/5), func(s string) *Error {
			_, _, err := parseStripeSignature(s)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.parse(tt.header); err == nil || err.Kind != SignatureMalformed {
				t.Fatalf("error %v, want %v", err, SignatureMalformed)
			}
			const runs = 20
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				tt.parse(tt.header)
			}
			runtime.ReadMemStats(&after)
			if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 4<<10 {
				t.Fatalf("%d bytes allocated per header of %d bytes", per, len(tt.header))
			}
		})
	}
}

// Fuzz targets for each profile's header parsers: no panic, and what they
// accept is well formed.

func FuzzParseStandardSignature(f *testing.F) {
	f.Add("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	f.Add("v1a,AAAA v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	f.Add("v1,")
	f.Fuzz(func(t *testing.T, s string) {
		wants, err := parseStandardSignature(s)
		if (err == nil) != (len(wants) > 0) || len(wants) > maxSignatures {
			t.Fatalf("%q: %d signatures, %v", s, len(wants), err)
		}
		if err == nil && !strings.Contains(s, "v1,") {
			t.Fatalf("%q accepted without a v1 token", s)
		}
	})
}

func FuzzParseStripeSignature(f *testing.F) {
	f.Add("t=1700000000,v1=92a67d03f3996371aee723f680b97033696bcd5bb8a1826c465e55a4d569d2c1")
	f.Add("t=1,v0=00,v1=92a67d03f3996371aee723f680b97033696bcd5bb8a1826c465e55a4d569d2c1")
	f.Add("t==,v1")
	f.Fuzz(func(t *testing.T, s string) {
		ts, wants, err := parseStripeSignature(s)
		if err != nil {
			return
		}
		if _, ok := parseUnix(ts); !ok || len(wants) == 0 || len(wants) > maxSignatures || !strings.Contains(s, "t="+ts) {
			t.Fatalf("%q: t %q, %d signatures", s, ts, len(wants))
		}
	})
}

func FuzzParseShopifySignature(f *testing.F) {
	f.Add("D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=")
	f.Add("D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo9=")
	f.Fuzz(func(t *testing.T, s string) {
		mac, err := parseShopifySignature(s)
		if err == nil && base64.StdEncoding.EncodeToString(mac[:]) != s {
			t.Fatalf("%q accepted, encodes back to another value", s)
		}
	})
}

func FuzzParseSlackSignature(f *testing.F) {
	f.Add("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503")
	f.Add("v0=")
	f.Fuzz(func(t *testing.T, s string) {
		mac, err := parseSlackSignature(s)
		if err == nil && !strings.EqualFold("v0="+hex.EncodeToString(mac[:]), s) {
			t.Fatalf("%q accepted, encodes back to another value", s)
		}
	})
}

func FuzzParseUnix(f *testing.F) {
	f.Add("1700000000")
	f.Add("-1")
	f.Add("99999999999999")
	f.Fuzz(func(t *testing.T, s string) {
		ts, ok := parseUnix(s)
		if !ok {
			return
		}
		if n, err := strconv.ParseInt(s, 10, 64); err != nil || n < 0 || ts.Unix() != n || s[0] == '+' {
			t.Fatalf("%q accepted as %v", s, ts)
		}
	})
}

// FuzzProfileHeaders throws arbitrary values at every profile's headers, for
// a panic in any parser or in Verify.
func FuzzProfileHeaders(f *testing.F) {
	f.Add(uint8(0), "sha256=00", "x", "1", []byte(`{}`))
	f.Add(uint8(1), "v1,AAAA", "msg_1", "1774958400", []byte(`{"type":"a"}`))
	f.Fuzz(func(t *testing.T, which uint8, sig, id, ts string, body []byte) {
		p := profiles[int(which)%len(profiles)]
		secret := []byte("fuzz-secret-0123456789abcdef")
		if p.Name == StandardWebhooks {
			secret = whsec(secret)
		}
		v := mustNew(t, Config{Profile: p.Name, Secrets: [][]byte{secret}, Tolerance: p.DefaultTolerance, Now: fixedClock(baseTime)})
		h := http.Header{}
		for i, name := range p.Headers {
			h.Set(name, [3]string{sig, id, ts}[i%3])
		}
		if _, err := v.Verify(h, body); err != nil && KindOf(err) == KindUnknown {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func TestSignWithoutSecret(t *testing.T) {
	for _, name := range ProfileNames() {
		p, _ := LookupProfile(name)
		if _, err := p.Sign(nil, Delivery{Body: []byte("{}")}); err == nil {
			t.Errorf("%s: Sign without a secret gave no error", name)
		}
	}
}
