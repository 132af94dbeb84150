package verifier

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// Fuzz targets that sign the fuzzed body (and id and type) with
// Profile.Sign, so that what runs after the signature check (the strict
// scan, jsonObject, members, valueEnd, the id and type rules) gets the
// fuzzed bytes; one per profile. What Verify accepts must be what
// encoding/json reads.

func FuzzSignedOcriva(f *testing.F)           { fuzzSigned(f, Ocriva) }
func FuzzSignedStandardWebhooks(f *testing.F) { fuzzSigned(f, StandardWebhooks) }
func FuzzSignedGitHub(f *testing.F)           { fuzzSigned(f, GitHub) }
func FuzzSignedStripe(f *testing.F)           { fuzzSigned(f, Stripe) }
func FuzzSignedShopify(f *testing.F)          { fuzzSigned(f, Shopify) }
func FuzzSignedSlack(f *testing.F)            { fuzzSigned(f, Slack) }

func fuzzSigned(f *testing.F, profile string) {
	for _, fx := range fixtures() {
		f.Add(fx.good.ID, fx.good.Type, fx.good.Body)
	}
	f.Add("a", "a", []byte(`{"event":{"type":"x","a":[{"b":"}"}]},"event_id":"E1","type":"event_callback"}`))
	f.Add("a", "a", []byte(`{"type":"url_verification","challenge":"c\u00e9"}`))
	p, _ := LookupProfile(profile)
	secret := []byte("fuzz-secret-0123456789abcdef")
	if profile == StandardWebhooks {
		secret = whsec(secret)
	}
	// No tolerance: the fuzzed bodies' own timestamps (ocriva) pass.
	v := mustNew(f, Config{Profile: profile, Secrets: [][]byte{secret}, Now: fixedClock(baseTime)})
	f.Fuzz(func(t *testing.T, id, typ string, body []byte) {
		d := Delivery{ID: id, Type: typ, Time: baseTime, Body: body}
		h, err := p.Sign([][]byte{secret}, d)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := v.Verify(h, body)
		if err != nil {
			if k := KindOf(err); k == KindUnknown || k == SignatureMismatch || k == SignatureMalformed {
				t.Fatalf("%v (%v) for a signed body", err, k)
			}
			return
		}
		if !json.Valid(body) || CheckJSON(body) != nil || !bytes.Equal(ev.Body, body) {
			t.Fatalf("accepted %q", body)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted %q, not an object: %v", body, err)
		}
		str := func(raw json.RawMessage) string {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("accepted %q: %v", body, err)
			}
			return s
		}
		var wantID, wantType string
		switch profile {
		case Ocriva:
			wantID, wantType = str(m["eventId"]), str(m["eventType"])
		case StandardWebhooks:
			wantID, wantType = id, str(m["type"])
		case GitHub:
			wantID, wantType = id, typ
		case Shopify: // Sign writes the type's "." as "/" in the topic
			wantID, wantType = id, strings.ReplaceAll(typ, "/", ".")
		case Stripe:
			wantID, wantType = str(m["id"]), str(m["type"])
		case Slack:
			if ev.Challenge != "" {
				if ev.Challenge != str(m["challenge"]) || str(m["type"]) != "url_verification" {
					t.Fatalf("challenge %q from %q", ev.Challenge, body)
				}
				return
			}
			var event map[string]json.RawMessage
			if err := json.Unmarshal(m["event"], &event); err != nil {
				t.Fatalf("accepted %q: event: %v", body, err)
			}
			wantID, wantType = str(m["event_id"]), str(event["type"])
		}
		if ev.ID != wantID || ev.Type != wantType {
			t.Fatalf("%q: id %q, type %q; encoding/json reads %q, %q", body, ev.ID, ev.Type, wantID, wantType)
		}
	})
}
