package caddymodule

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookgate/hookgate/spool"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"120", 2 * time.Minute},
		{"99999999999", 7 * 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(100 * 24 * time.Hour).Format(http.TimeFormat), 7 * 24 * time.Hour},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

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
	header, err := f.resolveHeaders()
	if err != nil {
		t.Fatal(err)
	}
	route, fw := f.route(header)
	defer fw.close()
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

func TestForwarderDoesNotFollowRedirects(t *testing.T) {
	hits := 0
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer target.Close()
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	route, fw := (&Forward{URL: redirect.URL}).route(nil)
	defer fw.close()
	out := route.Deliverer.Deliver(context.Background(), &spool.Delivery{EventID: "e", Attempt: 1, Body: []byte("{}")})
	if out.StatusCode != http.StatusTemporaryRedirect || hits != 0 {
		t.Fatalf("outcome %+v, target hit %d times", out, hits)
	}
	if out.Succeeded() || spool.DefaultRetryable(out) {
		t.Fatal("a redirect must be a failed, non-retried attempt")
	}
}

func TestForwarderErrorLeavesOutTheURL(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	route, fw := (&Forward{URL: "http://user:pass@" + addr + "/secret-path?token=abc"}).route(nil)
	defer fw.close()
	out := route.Deliverer.Deliver(context.Background(), &spool.Delivery{EventID: "e", Attempt: 1, Body: []byte("{}")})
	if out.Err == nil {
		t.Fatal("no error from a closed port")
	}
	for _, leak := range []string{"pass", "secret-path", "token"} {
		if strings.Contains(out.Err.Error(), leak) {
			t.Fatalf("error %q leaks %q", out.Err, leak)
		}
	}
}

func TestRetiredForwarderClosesItsConnections(t *testing.T) {
	release := make(chan struct{})
	var conns atomic.Int64
	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	upstream.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			conns.Add(-1)
		}
	}
	upstream.Start()
	defer upstream.Close()
	route, fw := (&Forward{URL: upstream.URL}).route(nil)
	done := make(chan spool.Outcome)
	go func() {
		done <- route.Deliverer.Deliver(context.Background(), &spool.Delivery{EventID: "e", Attempt: 1, Body: []byte("{}")})
	}()
	for conns.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	fw.close() // the configuration is unloaded while an attempt is in flight
	close(release)
	if out := <-done; !out.Succeeded() {
		t.Fatalf("the attempt in flight failed: %+v", out)
	}
	deadline := time.Now().Add(2 * time.Second)
	for conns.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the retired forwarder kept its connection open")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An outbound delivery is signed with the subscriber's secret at send time,
// and the subscriber can check the signature with its own HMAC code.
func TestForwarderSignsOutboundDeliveries(t *testing.T) {
	secret := []byte("subscriber-secret-0123456789")
	got := make(chan bool, 1)
	subscriber := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		got <- r.Header.Get("X-Webhook-Signature") == "sha256="+hex.EncodeToString(mac.Sum(nil))
		w.WriteHeader(http.StatusGone)
	}))
	defer subscriber.Close()
	guard := &addressGuard{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	fw := &forwarder{url: subscriber.URL, client: newDeliveryClient(2, guard), signWith: secret, goneReason: "gone"}
	defer fw.close()
	out := fw.Deliver(context.Background(), &spool.Delivery{EventID: "e", Attempt: 1, Body: []byte(`{"eventType":"a.b"}`),
		Header: http.Header{"X-Webhook-Signature": {"sha256=stale"}}})
	if !<-got {
		t.Fatal("the subscriber's own HMAC disagrees with the signature header")
	}
	if out.StatusCode != http.StatusGone || out.DeadReason != "gone" || !out.DisableRoute {
		t.Fatalf("a 410 gave %+v, want the dead reason", out)
	}
}

func TestForwarderGuardRefusesLoopbackAtDialTime(t *testing.T) {
	hits := 0
	local := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits++ }))
	defer local.Close()
	fw := &forwarder{url: local.URL + "/hook?token=abc", client: newDeliveryClient(2, &addressGuard{})}
	defer fw.close()
	out := fw.Deliver(context.Background(), &spool.Delivery{EventID: "e", Attempt: 1, Body: []byte("{}")})
	if out.Err == nil || hits != 0 {
		t.Fatalf("loopback reached (%d hits, outcome %+v)", hits, out)
	}
	if msg := out.Err.Error(); !strings.Contains(msg, "refusing to dial 127.0.0.1") || strings.Contains(msg, "token") {
		t.Fatalf("error %q: want the refusal, without the URL", msg)
	}
	if !spool.DefaultRetryable(out) {
		t.Fatal("a refused dial should be retried like any connection error (the allow list may be fixed by a reload)")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pass@hooks.acme.example:8443/ocriva/abc?token=x": "https://hooks.acme.example:8443",
		"http://127.0.0.1:9000/in":                                     "http://127.0.0.1:9000",
		"not a url":                                                    "(invalid URL)",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "-1", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", "1e3", " 5"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d := parseRetryAfter(v, now); d < 0 || d > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %v", v, d)
		}
	})
}
