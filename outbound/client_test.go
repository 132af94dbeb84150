package outbound

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testnet"
	"github.com/hookgate/hookgate/spool"
	"github.com/hookgate/hookgate/verifier"
)

func TestClientDoesNotFollowRedirects(t *testing.T) {
	hits := 0
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer target.Close()
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	fw := New(redirect.URL, Options{})
	defer fw.Close()
	out := fw.Deliver(context.Background(), &spool.Delivery{EventID: "e", Attempt: 1, Body: []byte("{}")})
	if out.StatusCode != http.StatusTemporaryRedirect || hits != 0 {
		t.Fatalf("outcome %+v, target hit %d times", out, hits)
	}
	if out.Succeeded() || spool.DefaultRetryable(out) {
		t.Fatal("a redirect must be a failed, non-retried attempt")
	}
}

func TestClientErrorLeavesOutTheURL(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	fw := New("http://user:pass@"+addr+"/secret-path?token=abc", Options{})
	defer fw.Close()
	out := fw.Deliver(context.Background(), &spool.Delivery{EventID: "e", Attempt: 1, Body: []byte("{}")})
	if out.Err == nil {
		t.Fatal("no error from a closed port")
	}
	for _, leak := range []string{"pass", "secret-path", "token"} {
		if strings.Contains(out.Err.Error(), leak) {
			t.Fatalf("error %q leaks %q", out.Err, leak)
		}
	}
}

func TestRetiredClientClosesItsConnections(t *testing.T) {
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
	fw := New(upstream.URL, Options{})
	done := make(chan spool.Outcome)
	go func() {
		done <- fw.Deliver(context.Background(), &spool.Delivery{EventID: "e", Attempt: 1, Body: []byte("{}")})
	}()
	for conns.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	fw.Close() // the configuration is unloaded while an attempt is in flight
	close(release)
	if out := <-done; !out.Succeeded() {
		t.Fatalf("the attempt in flight failed: %+v", out)
	}
	deadline := time.Now().Add(2 * time.Second)
	for conns.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the retired client kept its connection open")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An outbound delivery is signed with the subscriber's secret at send time,
// and the subscriber can check the signature with its own HMAC code.
func TestClientSignsOutboundDeliveries(t *testing.T) {
	secret := []byte("subscriber-secret-0123456789")
	subscriber, got := testnet.Recorder(t, 1, http.StatusGone, "")
	guard := &Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	sign := func(d *spool.Delivery) http.Header {
		return http.Header{"X-Webhook-Signature": {verifier.Sign(secret, d.Body)}}
	}
	fw := New(subscriber.URL, Options{Sign: sign, GoneReason: "gone", Guard: guard})
	defer fw.Close()
	out := fw.Deliver(context.Background(), &spool.Delivery{EventID: "e", Attempt: 1, Body: []byte(`{"eventType":"a.b"}`),
		Header: http.Header{"X-Webhook-Signature": {"sha256=stale"}}})
	r := <-got
	mac := hmac.New(sha256.New, secret)
	mac.Write(r.Body)
	if r.Header.Get("X-Webhook-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		t.Fatal("the subscriber's own HMAC disagrees with the signature header")
	}
	if out.StatusCode != http.StatusGone || out.DeadReason != "gone" || !out.DisableRoute {
		t.Fatalf("a 410 gave %+v, want the dead reason", out)
	}
}

func TestClientGuardRefusesLoopbackAtDialTime(t *testing.T) {
	hits := 0
	local := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits++ }))
	defer local.Close()
	fw := New(local.URL+"/hook?token=abc", Options{Guard: &Guard{}})
	defer fw.Close()
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
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
