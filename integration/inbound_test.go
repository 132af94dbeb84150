package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/adminapi"
	"github.com/hookgate/hookgate/internal/testwait"
)

// sendHead opens a connection to the gateway and sends the head of a POST to
// path with the given extra header lines, and no body.
func sendHead(t *testing.T, g *gateway, path string, lines ...string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", g.site, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n", path, g.site, strings.Join(lines, "\r\n"))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatalf("sending the head: %v", err)
	}
	return conn
}

// newRawGateway starts a gateway whose one route, with the webhook_ingest
// options ingest, forwards to a new upstream, for the tests that send it
// requests by hand (sendHead).
func newRawGateway(t *testing.T, ingest string) (*gateway, *upstream) {
	t.Helper()
	g, _ := newSecretGateway(t, "HG_SECRET")
	up := newUpstream(t)
	g.start(g.globals("") + forwardSite(g, "{env.HG_SECRET}", up.url("/in"), ingest, ""))
	return g, up
}

// wantLastAnswer reads the gateway's answer on conn, within timeout, and
// checks that its status is want and that the gateway closes the
// connection after it.
func wantLastAnswer(t *testing.T, conn net.Conn, timeout time.Duration, want int) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("answer %d, want %d", resp.StatusCode, want)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the %d the connection was not closed: read %v (headers %v)", want, err, resp.Header)
	}
}

// TestOversizedLengthAnsweredAtOnce: a request announcing a body over
// max_body gets 413 before it sends any of it, and the connection is closed
// rather than drained; with Expect: 100-continue there is no 100 Continue
// first. The sender never sends the body, and read_timeout is 30s: reading
// the body would answer only after it, so an answer within the deadline
// below can only come from the Content-Length check.
func TestOversizedLengthAnsweredAtOnce(t *testing.T) {
	t.Parallel()
	g, up := newRawGateway(t, "max_body 4KiB\n\t\t\tread_timeout 30s")
	for _, tc := range []struct {
		name  string
		lines []string
	}{
		{"plain", nil},
		{"expect 100-continue", []string{"Expect: 100-continue"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := sendHead(t, g, hookPath, append([]string{"Content-Type: application/json", "Content-Length: 5000"}, tc.lines...)...)
			// The first answer: never a 100 Continue.
			wantLastAnswer(t, conn, 15*time.Second, http.StatusRequestEntityTooLarge)
		})
	}
	if n := up.count(); n != 0 {
		t.Fatalf("the upstream received %d requests", n)
	}
}

// TestStalledBodyGetsItsTimeout: a sender that stops in the middle of its
// body gets a 408 once read_timeout has passed, and the connection closes:
// the server does not wait for the rest of the body before answering.
func TestStalledBodyGetsItsTimeout(t *testing.T) {
	t.Parallel()
	g, up := newRawGateway(t, "name stalled\n\t\t\tread_timeout 1s")
	conn := sendHead(t, g, hookPath, "Content-Type: application/json", "Content-Length: 1000")
	if _, err := conn.Write([]byte(`{"eventId":"evt_stalled"`)); err != nil {
		t.Fatal(err)
	}
	wantLastAnswer(t, conn, 20*time.Second, http.StatusRequestTimeout)
	if n := up.count(); n != 0 {
		t.Fatalf("the upstream received %d requests", n)
	}
}

// TestStalledBodiesHoldWhatTheySent: senders that announce 1 MiB and stall
// after 100 KiB make the gateway hold about what they sent, not what they
// announced: once it has read every byte sent, its heap has grown by at
// most twice the bytes received. (It reads up to 64 KiB of an announced
// body at once, so the senders send more than that.)
func TestStalledBodiesHoldWhatTheySent(t *testing.T) {
	t.Parallel()
	g, _ := newRawGateway(t, "name stalled\n\t\t\tread_timeout 5m")
	const conns, sent = 300, 100 << 10
	_, port, _ := net.SplitHostPort(g.site)
	before := g.heapAfterGC(t)
	part := append([]byte(`{"pad":"`), strings.Repeat("x", sent-8)...)
	for range conns {
		conn := sendHead(t, g, hookPath, "Content-Type: application/json", "Content-Length: 1048576")
		if _, err := conn.Write(part); err != nil {
			t.Fatalf("sending part of the body: %v", err)
		}
	}
	testwait.Until(t, 60*time.Second, func() (bool, string) {
		n, unread := unreadOnPort(t, port)
		return n >= conns && unread == 0, fmt.Sprintf("%d of %d connections established, %d bytes not read by the gateway", n, conns, unread)
	})
	grown := g.heapAfterGC(t) - before
	if received := int64(conns * sent); grown > 2*received {
		t.Fatalf("the heap grew by %d MiB for %d MiB received", grown>>20, received>>20)
	} else {
		t.Logf("the heap grew by %.1f MiB for %.1f MiB received", float64(grown)/(1<<20), float64(received)/(1<<20))
	}
}

// heapAfterGC returns the gateway's heap in use right after a garbage
// collection, from the admin endpoint's heap profile.
func (g *gateway) heapAfterGC(t *testing.T) int64 {
	t.Helper()
	code, body, err := g.adminGet("/debug/pprof/heap?debug=1&gc=1")
	if err != nil || code != http.StatusOK {
		t.Fatalf("heap profile: %d %v", code, err)
	}
	_, rest, ok := strings.Cut(body, "\n# HeapAlloc = ")
	if !ok {
		t.Fatal("the heap profile has no HeapAlloc line")
	}
	line, _, _ := strings.Cut(rest, "\n")
	n, err := strconv.ParseInt(line, 10, 64)
	if err != nil {
		t.Fatalf("HeapAlloc %q: %v", line, err)
	}
	return n
}

// unreadOnPort reads /proc/net/tcp: the established IPv4 connections whose
// local port is port (hex), and the bytes in their receive queues, which
// the process that owns them has not read yet.
func unreadOnPort(t *testing.T, port string) (conns int, unread int64) {
	t.Helper()
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatalf("reading /proc/net/tcp: %v", err)
	}
	suffix := fmt.Sprintf(":%04X", p)
	for _, line := range strings.Split(string(raw), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], suffix) || f[3] != "01" {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/tcp queue %q: %v", f[4], err)
		}
		conns++
		unread += n
	}
	return conns, unread
}

// TestInsecureRoutesDropTheSignature: a route with insecure_no_signature
// checks no signature, so whatever a sender puts in X-Webhook-Signature is
// its own choice: it never reaches the upstream, forwarded or handed on.
func TestInsecureRoutesDropTheSignature(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	up := newUpstream(t)
	g.start(g.globals("") + fmt.Sprintf(`http://%s {
	handle /hooks/forward {
		webhook_ingest {
			insecure_no_signature
			name insecure-forward
			forward %s {
				backoff 100ms 500ms
			}
		}
	}
	handle /hooks/verify {
		webhook_ingest {
			insecure_no_signature
			name insecure-verify
		}
		reverse_proxy %s
	}
}
`, g.site, up.url("/in"), up.addr))
	forged := "sha256=" + strings.Repeat("ab", 32)
	var ids []string
	for _, path := range []string{"/hooks/forward", "/hooks/verify"} {
		s := newSender(g, path, randomSecret(32))
		d := s.event(typeOK)
		d.Header.Set("X-Webhook-Signature", forged)
		a := s.mustPost(t, d)
		if a.Code != http.StatusAccepted && a.Code != http.StatusOK {
			t.Fatalf("%s: %s", path, a)
		}
		ids = append(ids, d.ID)
	}
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		return len(requestsWithBody(up, ids[0])) == 1 && len(requestsWithBody(up, ids[1])) == 1, "waiting for both events upstream"
	})
	for _, r := range up.requests() {
		if v := r.Header.Values("X-Webhook-Signature"); len(v) > 0 {
			t.Errorf("the upstream received the sender's signature header %q (event %s)", v, idOfBody(r.Body))
		}
	}
}

// TestVerifyOnlyRoutesInTheAdminAPI: a verify-only route is listed in
// /webhooks/stats (with nothing queued: it keeps dedupe records only), and
// /webhooks/events/{id} finds an event it handed on as delivered.
func TestVerifyOnlyRoutesInTheAdminAPI(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	g.start(g.globals("") + fmt.Sprintf(`http://%s {
	handle %s {
		webhook_ingest {
			name verify-only
			secret {env.HG_SECRET}
		}
		reverse_proxy %s
	}
}
`, g.site, hookPath, up.addr))
	var st struct {
		Routes []struct {
			Route      string `json:"route"`
			Queued     int64  `json:"queued"`
			Dead       int64  `json:"dead"`
			VerifyOnly bool   `json:"verify_only"`
		} `json:"routes"`
	}
	if code := g.adminDo(t, http.MethodGet, "/webhooks/stats", "", &st); code != 200 || len(st.Routes) != 1 {
		t.Fatalf("stats: %d %+v, want the verify-only route", code, st)
	}
	if r := st.Routes[0]; r.Route != "verify-only" || !r.VerifyOnly || r.Queued != 0 || r.Dead != 0 {
		t.Fatalf("stats of the verify-only route: %+v", r)
	}

	s := newSender(g, hookPath, secret)
	d := s.event(typeOK)
	if a := s.mustPost(t, d); a.Code != http.StatusOK {
		t.Fatalf("handed on: %s, want the upstream's 200", a)
	}
	var ev struct {
		Routes []struct{ Route, State string } `json:"routes"`
	}
	if code := g.adminDo(t, http.MethodGet, "/webhooks/events/"+d.ID, "", &ev); code != 200 || len(ev.Routes) != 1 ||
		ev.Routes[0].Route != "verify-only" || ev.Routes[0].State != "delivered" {
		t.Fatalf("events/%s: %d %+v, want delivered on route verify-only", d.ID, code, ev)
	}
	if code := g.adminDo(t, http.MethodGet, "/webhooks/events/evt_never_sent", "", nil); code != http.StatusNotFound {
		t.Fatalf("an unknown event: %d, want 404", code)
	}
}

// TestUnnamedRouteName: an unnamed route is named after its forward URL's
// scheme, host and port. The path and query may hold a token, and the name
// reaches log lines, metric labels and the admin API.
func TestUnnamedRouteName(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	g.start(g.globals("") + forwardSite(g, "{env.HG_SECRET}", up.url("/hooks/t0kenInPath?key=t0kenInQuery"), "", ""))
	want := "http://" + up.addr
	if !g.hasRoute(t, want) {
		t.Fatalf("no route %s in the stats", want)
	}
	s := newSender(g, hookPath, secret)
	d := s.event(typeOK)
	expectAnswer(t, "delivery", s.mustPost(t, d), http.StatusAccepted, "accepted")
	waitDelivered(t, 10*time.Second, []string{d.ID}, up)
	_, metrics, err := g.adminGet("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(metrics, `route="`+want+`"`) {
		t.Errorf("no metric labelled route=%q", want)
	}
	for what, text := range map[string]string{"logs": g.logs(), "metrics": metrics} {
		if strings.Contains(text, "t0ken") {
			t.Errorf("the %s hold the forward URL's path or query", what)
		}
	}
}

// hasRoute reports whether /webhooks/stats lists route.
func (g *gateway) hasRoute(t *testing.T, route string) bool {
	t.Helper()
	return slices.ContainsFunc(g.adminStats(t).Routes, func(r adminapi.RouteStats) bool { return r.Route == route })
}

// TestForwardedHeadersAreExactlyTheDocumentedSet: what a sender or an
// internal app adds (cookies, credentials, forwarding headers, its own
// X-Webhook-Id ...) never reaches the upstream or a subscriber; they get
// exactly the documented headers, with User-Agent Hookgate/<version> and no
// Accept-Encoding of the gateway's own.
func TestForwardedHeadersAreExactlyTheDocumentedSet(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	sub := newSubscriber(t, g)
	g.start(g.globals("") + publishSite(g,
		fmt.Sprintf("\thandle %s {\n\t\twebhook_ingest {\n\t\t\tname in\n\t\t\tsecret {env.HG_SECRET}\n\t\t\tforward %s {\n\t\t\t\theader_up X-Gateway hookgate-it\n\t\t\t}\n\t\t}\n\t}",
			hookPath, up.url("/in")),
		publishHandle(publishPath, "allow_private 127.0.0.1",
			subscriberBlock("acme", sub.url("/hook"), "secret {env.HG_SECRET}", "header X-Tenant acme")),
	))
	extra := http.Header{
		"Cookie":            {"session=s3cret"},
		"Authorization":     {"Bearer sender-token"},
		"X-Forwarded-For":   {"10.1.2.3"},
		"X-Real-Ip":         {"10.1.2.3"},
		"Forwarded":         {"for=10.1.2.3"},
		"Via":               {"1.1 sender-proxy"},
		"Origin":            {"https://sender.example"},
		"User-Agent":        {"sender/1.0"},
		"Accept-Encoding":   {"br"},
		"X-Webhook-Id":      {"spoofed"},
		"X-Webhook-Attempt": {"99"},
		"X-Custom":          {"anything"},
	}
	s := newSender(g, hookPath, secret)
	d := s.event(typeOK)
	for k, vs := range extra {
		d.Header[k] = vs
	}
	expectAnswer(t, "delivery", s.mustPost(t, d), http.StatusAccepted, "accepted")
	if a := publishRaw(t, g, http.MethodPost, publishPath, "application/json", extra, publishBody(typeOK, "evt_headers_1", `{}`)); a.Code != http.StatusAccepted {
		t.Fatalf("publish: %s", a)
	}
	waitDelivered(t, 10*time.Second, []string{d.ID}, up)
	waitDelivered(t, 10*time.Second, []string{"evt_headers_1"}, sub)

	ua := regexp.MustCompile(`^Hookgate/\S+$`)
	for _, tc := range []struct {
		name  string
		r     recorded
		extra string // the configured header
	}{
		{"forwarded", up.requests()[0], "X-Gateway"},
		{"published", sub.requests()[0], "X-Tenant"},
	} {
		var got []string
		for k := range tc.r.Header {
			got = append(got, k)
		}
		slices.Sort(got)
		want := []string{"Content-Length", "Content-Type", "User-Agent", tc.extra, "X-Webhook-Attempt", "X-Webhook-Event", "X-Webhook-Id", "X-Webhook-Signature"}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: the headers are %v, want exactly %v", tc.name, got, want)
		}
		if v := tc.r.Header.Values("User-Agent"); len(v) != 1 || !ua.MatchString(v[0]) {
			t.Errorf("%s: User-Agent %q, want Hookgate/<version>", tc.name, v)
		}
		if tc.r.Attempt != "1" || tc.r.ID == "spoofed" {
			t.Errorf("%s: X-Webhook-Id %q, X-Webhook-Attempt %q", tc.name, tc.r.ID, tc.r.Attempt)
		}
	}
}
