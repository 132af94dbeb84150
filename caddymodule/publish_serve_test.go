package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/hookgate/hookgate/spool"
)

// publishRoute is a webhook_publish route with subscribers a (document.processed)
// and b (document.*); their endpoint is refused by the address guard, and
// the tests pause them anyway.
const publishRoute = `[{"handler": "webhook_publish", "organization": "org_1", "project": "proj_1", "max_body": 1024,
	"subscribers": [
		{"name": "a", "url": "http://127.0.0.1:9/a", "secrets": ["{env.HG_UNIT_SECRET}"], "events": ["document.processed"]},
		{"name": "b", "url": "http://127.0.0.1:9/b", "secrets": ["{env.HG_UNIT_SECRET}"], "events": ["document.*"]}
	]}]`

// loadPublish loads publishRoute with webhooks settings and pauses both
// subscribers, so that only requests change the spool.
func loadPublish(t *testing.T, webhooks string) *running {
	t.Helper()
	c := loadConfig(t, webhooks, publishRoute)
	for _, r := range []string{"subscriber/a", "subscriber/b"} {
		if err := c.spool().Pause(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

type publishReply struct {
	Status      string
	EventID     string
	Subscribers []string
	Error       string
}

// publish serves one publish request.
func (c *running) publish(t *testing.T, method, contentType, body string) (result, publishReply) {
	t.Helper()
	r := httptest.NewRequest(method, "http://gateway.test/publish", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	res := c.serve(t, c.handler(0), r, nil)
	var rep publishReply
	if err := json.Unmarshal(res.rec.Body.Bytes(), &rep); err != nil {
		t.Fatalf("%s %s: answer %s: %v", method, body, res, err)
	}
	return res, rep
}

// TestPublishServeHTTP: refusals carry their reason and store nothing;
// accepted events go to the matching subscribers only; the same request
// again is a duplicate and the same id with another request a conflict.
func TestPublishServeHTTP(t *testing.T) {
	c := loadPublish(t, "")
	sp := c.spool()
	const ct = "application/json"
	for _, tt := range []struct {
		name, method, contentType, body string
		code                            int
		status, errorPart               string
		subscribers                     []string
	}{
		{"GET", http.MethodGet, ct, `{"eventType":"document.processed","payload":{}}`, 405, "rejected", "POST", nil},
		{"text/plain", http.MethodPost, "text/plain", `{"eventType":"document.processed","payload":{}}`, 415, "rejected", "Content-Type", nil},
		{"too large", http.MethodPost, ct, `{"eventType":"document.processed","payload":"` + strings.Repeat("x", 1100) + `"}`, 413, "rejected", "1024", nil},
		{"not JSON", http.MethodPost, ct, `{"eventType":`, 400, "rejected", "JSON", nil},
		{"unknown member", http.MethodPost, ct, `{"eventType":"document.processed","payload":{},"extra":1}`, 400, "rejected", `"extra"`, nil},
		{"no payload", http.MethodPost, ct, `{"eventType":"document.processed"}`, 400, "rejected", "payload", nil},
		{"bad eventId", http.MethodPost, ct, `{"eventType":"document.processed","eventId":"a b","payload":{}}`, 400, "rejected", "eventId", nil},
		{"no subscriber wants it", http.MethodPost, ct, `{"eventType":"batch.completed","eventId":"evt_pub_none","payload":{}}`, 200, "no_subscribers", "", []string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := usageOf(sp)
			res, rep := c.publish(t, tt.method, tt.contentType, tt.body)
			if res.err != nil || res.rec.Code != tt.code || rep.Status != tt.status || !strings.Contains(rep.Error, tt.errorPart) {
				t.Fatalf("%s; want %d %s with an error about %q", res, tt.code, tt.status, tt.errorPart)
			}
			if tt.subscribers != nil && !slices.Equal(rep.Subscribers, tt.subscribers) {
				t.Errorf("subscribers %v, want %v", rep.Subscribers, tt.subscribers)
			}
			if u := usageOf(sp); u != before {
				t.Errorf("the spool changed: %+v, before %+v", u, before)
			}
		})
	}

	before := usageOf(sp)
	res, rep := c.publish(t, http.MethodPost, ct, `{"eventType":"document.processed","eventId":"evt_pub_1","payload":{"n":1}}`)
	if res.rec.Code != 202 || rep.Status != "accepted" || rep.EventID != "evt_pub_1" || !slices.Equal(rep.Subscribers, []string{"a", "b"}) {
		t.Fatalf("publish to both: %s", res)
	}
	if u := usageOf(sp); u.items != before.items+2 {
		t.Fatalf("%d items stored for two subscribers", u.items-before.items)
	}
	for _, r := range []string{"subscriber/a", "subscriber/b"} {
		if st, err := sp.Lookup(context.Background(), r, "evt_pub_1"); err != nil || st.State != spool.StatePending {
			t.Errorf("%s: %+v, %v", r, st, err)
		}
	}
	res, rep = c.publish(t, http.MethodPost, ct, `{"eventType":"document.deleted","payload":{}}`)
	if res.rec.Code != 202 || !slices.Equal(rep.Subscribers, []string{"b"}) || !strings.HasPrefix(rep.EventID, "evt_") {
		t.Fatalf("publish to b only: %s", res)
	}

	stored := usageOf(sp)
	res, rep = c.publish(t, http.MethodPost, ct, `{"eventType":"document.processed","eventId":"evt_pub_1","payload":{"n":1}}`)
	if res.rec.Code != 200 || rep.Status != "duplicate" {
		t.Fatalf("the same request again: %s", res)
	}
	res, rep = c.publish(t, http.MethodPost, ct, `{"eventType":"document.processed","eventId":"evt_pub_1","payload":{"n":2}}`)
	if res.rec.Code != 409 || rep.Status != "rejected" || rep.Error == "" {
		t.Fatalf("the same id with another request: %s", res)
	}
	if u := usageOf(sp); u != stored {
		t.Fatalf("a duplicate or a conflict changed the spool: %+v, before %+v", u, stored)
	}
}

// TestPublishSpoolFull: deliveries that do not fit are refused with 503
// and Retry-After, all of them: nothing is stored.
func TestPublishSpoolFull(t *testing.T) {
	c := loadPublish(t, `, "max_items": 1`)
	before := usageOf(c.spool())
	res, rep := c.publish(t, http.MethodPost, "application/json", `{"eventType":"document.processed","eventId":"evt_full","payload":{}}`)
	if res.rec.Code != 503 || rep.Status != "unavailable" || res.rec.Header().Get("Retry-After") == "" {
		t.Fatalf("two deliveries over max_items 1: %s, Retry-After %q", res, res.rec.Header().Get("Retry-After"))
	}
	if u := usageOf(c.spool()); u != before {
		t.Fatalf("the spool changed: %+v, before %+v", u, before)
	}
	for _, r := range []string{"subscriber/a", "subscriber/b", publishScope} {
		if _, err := c.spool().Lookup(context.Background(), r, "evt_full"); err == nil {
			t.Errorf("%s knows the refused event", r)
		}
	}
}
