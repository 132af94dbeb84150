package caddymodule

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/spool"
)

func TestForwarderRequest(t *testing.T) {
	type seen struct {
		header http.Header
		body   string
		path   string
	}
	got := make(chan seen, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Header.Clone(), string(b), r.URL.Path}
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(strings.Repeat("x", 1<<20))) // more than is read
	}))
	defer upstream.Close()

	t.Setenv("HG_UPSTREAM_TOKEN", "t0ken")
	f := &Forward{URL: upstream.URL + "/in", HeaderUp: http.Header{"x-tenant": {"acme"}, "Authorization": {"Bearer {env.HG_UPSTREAM_TOKEN}"}}}
	header, err := resolveHeaders("header_up", f.HeaderUp)
	if err != nil {
		t.Fatal(err)
	}
	route, fw := f.route(header)
	defer fw.Close()
	d := &spool.Delivery{
		EventID: "evt_1", Attempt: 3, Body: []byte(`{"a":1}`),
		Header: http.Header{"Content-Type": {"application/json"}, "X-Webhook-Event": {"a.b"}, "X-Webhook-Signature": {"sha256=00"}},
	}
	out := route.Deliverer.Deliver(context.Background(), d)
	if out.StatusCode != 503 || out.RetryAfter != 7*time.Second || out.Err != nil {
		t.Fatalf("outcome %+v", out)
	}
	s := <-got
	if s.body != `{"a":1}` || s.path != "/in" {
		t.Fatalf("upstream got %q at %s", s.body, s.path)
	}
	for k, v := range map[string]string{
		"X-Webhook-Id": "evt_1", "X-Webhook-Attempt": "3", "X-Webhook-Event": "a.b",
		"X-Webhook-Signature": "sha256=00", "Content-Type": "application/json", "X-Tenant": "acme",
		"Authorization": "Bearer t0ken", "User-Agent": userAgent,
	} {
		if s.header.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, s.header.Get(k), v)
		}
	}
	if !regexp.MustCompile(`^Hookgate/\S+$`).MatchString(userAgent) {
		t.Errorf("User-Agent %q", userAgent)
	}
	if v := s.header.Values("Accept-Encoding"); len(v) > 0 {
		t.Errorf("the transport added Accept-Encoding %q", v)
	}
}
