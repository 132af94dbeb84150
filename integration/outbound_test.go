package integration

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

// hitRecorder is an HTTP server that records every request it gets (plain
// requests and CONNECTs) and answers 200: a proxy the gateway must not use,
// or a TLS endpoint it must not trust.
type hitRecorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits []string
}

func newHitRecorder(t *testing.T, tls bool) *hitRecorder {
	h := &hitRecorder{}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.hits = append(h.hits, r.Method+" "+r.Host+r.URL.Path)
		h.mu.Unlock()
	}))
	h.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are expected
	if tls {
		h.srv.StartTLS()
	} else {
		h.srv.Start()
	}
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hitRecorder) recorded() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.hits...)
}

// endlessUpstream answers 200 with a body that never ends, and reports each
// time the gateway hung up on one.
type endlessUpstream struct {
	*httptest.Server
	hungUp chan int64 // bytes written before the gateway hung up
}

func newEndlessUpstream(t *testing.T) *endlessUpstream {
	e := &endlessUpstream{hungUp: make(chan int64, 8)}
	chunk := []byte(strings.Repeat("x", 32<<10))
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
		var n int64
		for {
			m, err := w.Write(chunk)
			n += int64(m)
			if err != nil {
				e.hungUp <- n
				return
			}
		}
	}))
	t.Cleanup(e.Close)
	return e
}

// TestOutboundClient: deliveries, outbound and forwarded, verify TLS, ignore
// the proxy environment variables, and read at most 64 KiB of an answer: an
// endless body neither stalls the attempt nor is read to its end.
func TestOutboundClient(t *testing.T) {
	t.Parallel()
	proxy := newHitRecorder(t, false)
	selfSigned := newHitRecorder(t, true)
	endless := newEndlessUpstream(t)
	proxyURL := proxy.srv.URL
	g, secret := newSecretGateway(t, "HG_SECRET",
		"HTTP_PROXY="+proxyURL, "HTTPS_PROXY="+proxyURL, "http_proxy="+proxyURL, "https_proxy="+proxyURL, "NO_PROXY=", "no_proxy=")
	// Routes whose target is not loopback: the only way to them would be the
	// proxy (192.0.2.0/24 is a documentation range).
	forward := func(path, name, target, timeout string) string {
		return ingestHandle(path, name, target, "max_attempts 1\n\t\t\t\ttimeout "+timeout)
	}
	g.start(g.globals("") + publishSite(g,
		forward("/hooks/tls", "fwd-tls", selfSigned.srv.URL+"/in", "10s"),
		forward("/hooks/proxied", "fwd-proxied", "http://192.0.2.12/in", "2s"),
		// Read to its end, an endless answer would hold the attempt until
		// its timeout: far longer than the test waits.
		forward("/hooks/endless", "fwd-endless", endless.URL+"/in", "5m"),
		publishHandle(publishPath, "attempts 1", "timeout 5m", "allow_private 127.0.0.1",
			subscriberBlock("tls", selfSigned.srv.URL+"/hook", "secret {env.HG_SECRET}"),
			subscriberBlock("proxied", "http://192.0.2.10/hook", "secret {env.HG_SECRET}"),
			subscriberBlock("proxiedtls", "https://192.0.2.11/hook", "secret {env.HG_SECRET}"),
			subscriberBlock("endless", endless.URL+"/hook", "secret {env.HG_SECRET}")),
	))
	expectPublished(t, "publish", publish(t, g, publishPath, publishBody(typeOK, "evt_outbound_1", `{}`)), 202, "accepted",
		"tls", "proxied", "proxiedtls", "endless")
	ids := map[string]string{}
	for _, route := range []string{"tls", "proxied", "endless"} {
		ids["fwd-"+route] = newSender(g, "/hooks/"+route, secret).sendAccepted(t, 1)[0]
	}
	for _, sub := range []string{"tls", "proxied", "proxiedtls", "endless"} {
		ids["subscriber/"+sub] = "evt_outbound_1"
	}

	type attempt struct {
		Status int
		Error  string
	}
	outcome := func(route string) (state string, attempts []attempt) {
		var ev struct {
			Routes []struct {
				State    string
				Attempts []attempt
			} `json:"routes"`
		}
		if code := g.adminDo(t, http.MethodGet, "/webhooks/events/"+ids[route]+"?route="+route, "", &ev); code != 200 || len(ev.Routes) != 1 {
			t.Fatalf("%s on %s: %d %+v", ids[route], route, code, ev)
		}
		return ev.Routes[0].State, ev.Routes[0].Attempts
	}
	for route := range ids {
		testwait.Until(t, 20*time.Second, func() (bool, string) {
			state, _ := outcome(route)
			return state == "dead" || state == "delivered", fmt.Sprintf("%s is still %s", route, state)
		})
	}

	if hits := proxy.recorded(); len(hits) != 0 {
		t.Errorf("the proxy from the environment was used: %v", hits)
	}
	if hits := selfSigned.recorded(); len(hits) != 0 {
		t.Errorf("requests reached the endpoint with a self-signed certificate: %v", hits)
	}
	for _, route := range []string{"fwd-tls", "subscriber/tls"} {
		if state, attempts := outcome(route); state != "dead" || len(attempts) != 1 || !strings.Contains(attempts[0].Error, "certificate") {
			t.Errorf("%s, with a self-signed certificate: %s %+v, want one attempt failed on the certificate", route, state, attempts)
		}
	}
	for _, route := range []string{"fwd-proxied", "subscriber/proxied", "subscriber/proxiedtls"} {
		if state, attempts := outcome(route); state != "dead" || len(attempts) != 1 || attempts[0].Status != 0 {
			t.Errorf("%s, reachable only through the proxy: %s %+v, want one attempt that failed to connect", route, state, attempts)
		}
	}
	for _, route := range []string{"fwd-endless", "subscriber/endless"} {
		if state, attempts := outcome(route); state != "delivered" || len(attempts) != 1 || attempts[0].Status != 200 {
			t.Errorf("%s, with an endless answer: %s %+v, want delivered at the first attempt", route, state, attempts)
		}
	}
	for range 2 {
		select {
		case <-endless.hungUp:
		case <-time.After(10 * time.Second):
			t.Fatal("the gateway kept reading an endless answer")
		}
	}
}
