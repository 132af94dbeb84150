package caddymodule

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestParsePublishRequest(t *testing.T) {
	tests := []struct {
		body    string
		wantErr string
		id      string
	}{
		{`{"eventType":"document.processed","payload":{"a":1}}`, "", ""},
		{`{"eventType":"document.processed","eventId":"evt_1","payload":[1,2]}`, "", "evt_1"},
		{`{"eventType":"document.processed"}`, "payload is required", ""},
		{`{"payload":{}}`, "eventType", ""},
		{`{"eventType":"bad type","payload":{}}`, "eventType", ""},
		{`{"eventType":7,"payload":{}}`, "eventType", ""},
		{`{"eventType":"a.b","eventId":"has space","payload":{}}`, "eventId", ""},
		{`{"eventType":"a.b","payload":{},"extra":1}`, `unknown member "extra"`, ""},
		{`{"eventType":"a.b","EventType":"c","payload":{}}`, `duplicate key "eventType"`, ""},
		{`{"eventType":"a.b","Payload":{},"payload":{}}`, `duplicate key "payload"`, ""},
		{`{"eventType":"a.b","payload":{},"payload":{}}`, "duplicate", ""},
		{`{"eventType":"a.b","payload":{}} trailing`, "invalid JSON", ""},
		{`[1]`, "object", ""},
	}
	for _, tt := range tests {
		req, err := parsePublishRequest([]byte(tt.body))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: error %v, want %q", tt.body, err, tt.wantErr)
			}
			continue
		}
		if err != nil || req.eventID != tt.id || req.eventType != "document.processed" {
			t.Errorf("%s: %+v, %v", tt.body, req, err)
		}
	}
}

func TestUnmarshalPublish(t *testing.T) {
	input := `webhook_publish {
		organization org_abc123
		project proj_xyz789
		attempts 5
		backoff 1s 1m
		timeout 10s
		allow_private 127.0.0.0/8 ::1
		dedupe_window 24h
		max_body 256KiB
		subscriber acme https://hooks.acme.example/ocriva {
			secret {env.ACME} {env.ACME_OLD}
			events document.*
			header X-Tenant acme
		}
		subscriber billing http://127.0.0.1:9000/in {
			secret {file./run/billing}
		}
	}`
	got := new(Publish)
	if err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	want := &Publish{
		Organization: "org_abc123", Project: "proj_xyz789", Attempts: 5,
		BackoffMin: caddy.Duration(time.Second), BackoffMax: caddy.Duration(time.Minute), Timeout: caddy.Duration(10 * time.Second),
		AllowPrivate: []string{"127.0.0.0/8", "::1"}, DedupeWindow: caddy.Duration(24 * time.Hour), MaxBody: 256 << 10,
		Subscribers: []Subscriber{
			{Name: "acme", URL: "https://hooks.acme.example/ocriva", Secrets: []string{"{env.ACME}", "{env.ACME_OLD}"},
				Events: []string{"document.*"}, Header: http.Header{"X-Tenant": {"acme"}}},
			{Name: "billing", URL: "http://127.0.0.1:9000/in", Secrets: []string{"{file./run/billing}"}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for input, wantErr := range map[string]string{
		"webhook_publish {\n subscriber a http://x {\n secret literal-secret-long-enough\n }\n}":                             "write it as a placeholder",
		"webhook_publish {\n subscriber a http://x\n}":                                                                       "needs a secret",
		"webhook_publish {\n subscriber a ftp://x {\n secret {env.A}\n }\n}":                                                 "not an http(s) URL",
		"webhook_publish {\n allow_private 10.0.0.0/33\n}":                                                                   "not a CIDR",
		"webhook_publish {\n colour blue\n}":                                                                                 `unknown option "colour"`,
		"webhook_publish {\n subscriber a http://x {\n secret {env.A}\n retries 3\n }\n}":                                    `subscriber: unknown option "retries"`,
		"webhook_publish {\n subscriber a http://x {\n secret {env.A}\n }\n subscriber a http://y {\n secret {env.A}\n }\n}": "listed twice",
	} {
		err := new(Publish).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: error %v, want %q", input, err, wantErr)
		}
	}
}
