package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/verifier"
)

const (
	typeOK      = "document.processed"
	typeIgnored = "batch.completed"
	hookPath    = "/hooks/in"
)

// forwardSite is a site with one forwarding webhook_ingest route on hookPath;
// ingest and forward hold extra lines for the two blocks.
func forwardSite(g *gateway, secrets, forwardURL, ingest, forward string) string {
	return fmt.Sprintf(`http://%s {
	handle %s {
		webhook_ingest {
			secret %s
			%s
			forward %s {
				%s
			}
		}
	}
	handle {
		respond "not a hook" 404
	}
}
`, g.site, hookPath, secrets, ingest, forwardURL, forward)
}

// TestIngestRejections runs every check of docs/ingest.md with a
// delivery that fails it, then proves that nothing was spooled or forwarded
// and that no dedupe record was written: the upstream stays silent, and a
// valid delivery with the same eventId is accepted as new.
func TestIngestRejections(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	g.start(g.globals("") + forwardSite(g, "{env.HG_SECRET}", up.url("/in"),
		"events document.*\n\t\t\ttolerance 10m\n\t\t\tdedupe_window 1h\n\t\t\tmax_body 4KiB\n\t\t\tread_timeout 1s",
		"backoff 100ms 500ms"))
	s := newSender(g, hookPath, secret)
	other := randomSecret(32)

	big := strings.Repeat("x", 5000) // over max_body 4KiB
	resign := func(d *delivery) { s.sign(d) }
	withBody := func(body string) func(*delivery) {
		return func(d *delivery) { d.Body = []byte(body); resign(d) }
	}
	now := time.Now()
	cases := []struct {
		name   string
		mutate func(*delivery)
		slow   bool // send the body in two parts with a pause over read_timeout
		code   int
		status string
	}{
		{name: "method GET", mutate: func(d *delivery) { d.Method = http.MethodGet }, code: 405},
		{name: "method PUT", mutate: func(d *delivery) { d.Method = http.MethodPut }, code: 405},
		{name: "content-type text/plain", mutate: func(d *delivery) { d.Header.Set("Content-Type", "text/plain") }, code: 415},
		{name: "content-type missing", mutate: func(d *delivery) { d.Header.Del("Content-Type") }, code: 415},
		{name: "content-type form", mutate: func(d *delivery) { d.Header.Set("Content-Type", "application/x-www-form-urlencoded") }, code: 415},
		{name: "content-encoding gzip", mutate: func(d *delivery) { d.Header.Set("Content-Encoding", "gzip") }, code: 415},
		{name: "content-length over max_body", mutate: func(d *delivery) {
			d.Body = envelope(d.ID, typeOK, time.Now(), `,"pad":"`+big+`"`)
			resign(d)
		}, code: 413},
		{name: "chunked body over max_body", mutate: func(d *delivery) {
			d.Body = envelope(d.ID, typeOK, time.Now(), `,"pad":"`+big+`"`)
			d.NoLength = true
			resign(d)
		}, code: 413},
		{name: "body slower than read_timeout", slow: true, code: 408},
		{name: "repeated signature header", mutate: func(d *delivery) {
			sig := d.Header.Get(verifier.SignatureHeader)
			d.Header[verifier.SignatureHeader] = []string{sig, sig}
		}, code: 400},
		{name: "signature missing", mutate: func(d *delivery) { d.Header.Del(verifier.SignatureHeader) }, code: 401},
		{name: "signature malformed", mutate: func(d *delivery) { d.Header.Set(verifier.SignatureHeader, "sha256=not-hex") }, code: 401},
		{name: "signature other scheme", mutate: func(d *delivery) {
			d.Header.Set(verifier.SignatureHeader, strings.Replace(d.Header.Get(verifier.SignatureHeader), "sha256=", "sha1=", 1))
		}, code: 401},
		{name: "signature with another secret", mutate: func(d *delivery) { s.signWith(d, other) }, code: 401},
		{name: "signature over other bytes", mutate: func(d *delivery) {
			d.Body = append(d.Body, ' ') // signed before the change: the raw bytes count
		}, code: 401},
		{name: "duplicate key eventId", mutate: withBody(`{"eventType":"document.processed","eventId":"ID","eventId":"ID","timestamp":"TS"}`), code: 400},
		{name: "duplicate key in payload", mutate: withBody(`{"eventType":"document.processed","eventId":"ID","timestamp":"TS","payload":{"a":1,"a":2}}`), code: 400},
		{name: "trailing data", mutate: withBody(`{"eventType":"document.processed","eventId":"ID","timestamp":"TS"} {}`), code: 400},
		{name: "trailing garbage", mutate: withBody(`{"eventType":"document.processed","eventId":"ID","timestamp":"TS"}x`), code: 400},
		{name: "invalid UTF-8", mutate: withBody("{\"eventType\":\"document.processed\",\"eventId\":\"ID\",\"timestamp\":\"TS\",\"payload\":\"\xff\xfe\"}"), code: 400},
		{name: "not an object", mutate: withBody(`["document.processed","ID","TS"]`), code: 400},
		{name: "eventId missing", mutate: withBody(`{"eventType":"document.processed","timestamp":"TS"}`), code: 400},
		{name: "eventId unsafe characters", mutate: withBody(`{"eventType":"document.processed","eventId":"ID/../x","timestamp":"TS"}`), code: 400},
		{name: "timestamp without zone", mutate: withBody(`{"eventType":"document.processed","eventId":"ID","timestamp":"2024-01-02T03:04:05"}`), code: 400},
		{name: "event header missing", mutate: func(d *delivery) { d.Header.Del(verifier.EventHeader) }, code: 400},
		{name: "event header differs", mutate: func(d *delivery) { d.Header.Set(verifier.EventHeader, "document.deleted") }, code: 400},
		{name: "event header repeated", mutate: func(d *delivery) { d.Header[verifier.EventHeader] = []string{typeOK, typeOK} }, code: 400},
		{name: "timestamp stale", mutate: func(d *delivery) { d.Body = envelope(d.ID, typeOK, now.Add(-2*time.Hour), ""); resign(d) }, code: 401},
		{name: "timestamp future", mutate: func(d *delivery) { d.Body = envelope(d.ID, typeOK, now.Add(time.Hour), ""); resign(d) }, code: 401},
		{name: "event type not in events", mutate: func(d *delivery) {
			d.Type = typeIgnored
			d.Body = envelope(d.ID, typeIgnored, time.Now(), "")
			d.Header.Set(verifier.EventHeader, typeIgnored)
			resign(d)
		}, code: 200, status: "ignored"},
	}

	var ids []string
	for _, tc := range cases {
		d := s.event(typeOK)
		ids = append(ids, d.ID)
		if tc.mutate != nil {
			tc.mutate(d)
			// Bodies written out by hand get the case's id and a fresh timestamp.
			b := strings.ReplaceAll(string(d.Body), `"ID`, `"`+d.ID)
			b = strings.ReplaceAll(b, `"TS"`, `"`+time.Now().UTC().Format(time.RFC3339)+`"`)
			if b != string(d.Body) {
				d.Body = []byte(b)
				resign(d)
			}
		}
		var a answer
		if tc.slow {
			a = slowPost(t, g, d, func() { time.Sleep(time.Second + 500*time.Millisecond) })
		} else {
			a = s.mustPost(t, d)
		}
		expectAnswer(t, tc.name, a, tc.code, tc.status)
	}

	// Nothing was spooled: the upstream hears nothing.
	time.Sleep(300 * time.Millisecond)
	if n := up.count(); n != 0 {
		t.Fatalf("the upstream received %d requests after rejected deliveries, e.g. %q", n, up.requests()[0].ID)
	}

	// No dedupe record was written: each eventId is new.
	want := map[string][]byte{}
	for i, id := range ids {
		d := s.eventWithID(id, typeOK)
		want[id] = d.Body
		expectAnswer(t, "valid delivery after "+cases[i].name, s.mustPost(t, d), 202, "accepted")
	}
	waitDelivered(t, 15*time.Second, ids, up)
	time.Sleep(300 * time.Millisecond)
	for id, reqs := range up.byID() {
		if len(reqs) != 1 {
			t.Errorf("%s forwarded %d times, want once", id, len(reqs))
		}
		if !bytes.Equal(reqs[0].Body, want[id]) {
			t.Errorf("%s: the upstream received %q, want the accepted body %q", id, reqs[0].Body, want[id])
		}
	}
	if n := up.count(); n != len(ids) {
		t.Errorf("the upstream received %d requests, want %d", n, len(ids))
	}

	t.Run("same eventId different body", func(t *testing.T) {
		d := s.event(typeOK)
		expectAnswer(t, "first delivery", s.mustPost(t, d), 202, "accepted")
		other := s.eventWithID(d.ID, typeOK)
		other.Body = envelope(d.ID, typeOK, time.Now().Add(time.Second), `,"changed":true`)
		s.sign(other)
		expectAnswer(t, "same eventId, different body", s.mustPost(t, other), 409, "")
		expectAnswer(t, "the first body again", s.mustPost(t, d), 200, "duplicate")
		waitDelivered(t, 10*time.Second, []string{d.ID}, up)
		time.Sleep(300 * time.Millisecond)
		reqs := up.byID()[d.ID]
		if len(reqs) != 1 || !bytes.Equal(reqs[0].Body, d.Body) {
			t.Errorf("want one forward of the first body, got %d: %+v", len(reqs), reqs)
		}
	})

	t.Run("content-type with parameters accepted", func(t *testing.T) {
		d := s.event(typeOK)
		d.Header.Set("Content-Type", "application/json; charset=utf-8")
		expectAnswer(t, "charset parameter", s.mustPost(t, d), 202, "accepted")
		d2 := s.event(typeOK)
		d2.Header.Set("Content-Encoding", "identity")
		expectAnswer(t, "identity encoding", s.mustPost(t, d2), 202, "accepted")
		waitDelivered(t, 10*time.Second, []string{d.ID, d2.ID}, up)
	})
}

// slowPost sends d over a raw connection: the headers and half the body,
// then, once wait returns, the rest; it returns the gateway's answer.
func slowPost(t *testing.T, g *gateway, d *delivery, wait func()) answer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", g.site, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	half := len(d.Body) / 2
	if _, err := conn.Write(append([]byte(d.head(g.site, "Connection: close")), d.Body[:half]...)); err != nil {
		t.Fatalf("writing the first part: %v", err)
	}
	wait()
	_, _ = conn.Write(d.Body[half:]) // the gateway may have answered and closed already
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to a slow body: %v", err)
	}
	defer resp.Body.Close()
	return answer{Code: resp.StatusCode, Header: resp.Header}
}

// TestVerifyOnlyReverseProxy puts webhook_ingest without forward in front of
// reverse_proxy: the upstream gets the original request synchronously and
// its answer goes back to the sender; an event is remembered only after a
// 2xx from the upstream.
func TestVerifyOnlyReverseProxy(t *testing.T) {
	t.Parallel()
	secret := randomSecret(24)
	g := newGateway(t, "HG_SECRET="+string(secret))
	g.forbid(string(secret))
	up := newUpstream(t)
	arrived := make(chan *recorded, 16)
	up.notify(arrived)
	var mu sync.Mutex
	fail := map[string]bool{} // ids answered 500
	slow := map[string]bool{} // ids answered after a pause
	mark := func(ids map[string]bool, id string, on bool) {
		mu.Lock()
		ids[id] = on
		mu.Unlock()
	}
	up.setRespond(func(r *recorded) reply {
		mu.Lock()
		defer mu.Unlock()
		h := http.Header{"X-From-Upstream": {"yes"}}
		switch {
		case fail[r.ID] || fail[idOfBody(r.Body)]:
			return reply{Status: 500, Body: "upstream broke", Header: h}
		case slow[idOfBody(r.Body)]:
			return reply{Status: 200, Body: "slow ok", Header: h, Delay: 800 * time.Millisecond}
		}
		return reply{Status: 201, Body: "created by upstream", Header: h}
	})
	g.start(g.globals("") + fmt.Sprintf(`http://%s {
	handle %s {
		webhook_ingest {
			name verify-only
			secret {env.HG_SECRET}
			tolerance 10m
			dedupe_window 1h
		}
		reverse_proxy %s
	}
}
`, g.site, hookPath, up.addr))
	s := newSender(g, hookPath, secret)

	t.Run("valid delivery is proxied with its original bytes", func(t *testing.T) {
		d := s.event(typeOK)
		a := s.mustPost(t, d)
		if a.Code != 201 || a.Body != "created by upstream" || a.Header.Get("X-From-Upstream") != "yes" {
			t.Fatalf("want the upstream's answer 201, got %s (headers %v)", a, a.Header)
		}
		reqs := requestsWithBody(up, d.ID)
		if len(reqs) != 1 {
			t.Fatalf("upstream got %d requests for %s, want 1", len(reqs), d.ID)
		}
		r := reqs[0]
		if r.Method != http.MethodPost || r.Path != hookPath || !bytes.Equal(r.Body, d.Body) {
			t.Errorf("upstream got %s %s %q, want POST %s %q", r.Method, r.Path, r.Body, hookPath, d.Body)
		}
		for _, h := range []string{"Content-Type", verifier.EventHeader, verifier.SignatureHeader} {
			if r.Header.Get(h) != d.Header.Get(h) {
				t.Errorf("upstream header %s = %q, want %q", h, r.Header.Get(h), d.Header.Get(h))
			}
		}
		expectAnswer(t, "the same delivery after a 2xx", s.mustPost(t, d), 200, "duplicate")
		expectAnswer(t, "and again", s.mustPost(t, d), 200, "duplicate")
		if n := len(requestsWithBody(up, d.ID)); n != 1 {
			t.Errorf("a duplicate was proxied: %d requests", n)
		}
	})

	t.Run("upstream 500 is not remembered", func(t *testing.T) {
		d := s.event(typeOK)
		mark(fail, d.ID, true)
		a := s.mustPost(t, d)
		if a.Code != 500 || a.Body != "upstream broke" {
			t.Fatalf("want the upstream's 500, got %s", a)
		}
		a = s.mustPost(t, d)
		if a.Code != 500 {
			t.Fatalf("retry: want the upstream's 500 again, got %s", a)
		}
		mark(fail, d.ID, false)
		if a = s.mustPost(t, d); a.Code != 201 {
			t.Fatalf("retry after the upstream recovered: want 201, got %s", a)
		}
		expectAnswer(t, "after the 2xx", s.mustPost(t, d), 200, "duplicate")
		if n := len(requestsWithBody(up, d.ID)); n != 3 {
			t.Errorf("upstream got %d requests for %s, want 3 (two failures, one success)", n, d.ID)
		}
	})

	t.Run("bad signature is not proxied", func(t *testing.T) {
		before := up.count()
		d := s.event(typeOK)
		s.signWith(d, randomSecret(24))
		expectAnswer(t, "wrong secret", s.mustPost(t, d), 401, "")
		d2 := s.event(typeOK)
		d2.Header.Del(verifier.SignatureHeader)
		expectAnswer(t, "no signature", s.mustPost(t, d2), 401, "")
		d3 := s.event(typeOK)
		d3.Body = envelope(d3.ID, typeOK, time.Now().Add(-3*time.Hour), "")
		s.sign(d3)
		expectAnswer(t, "stale", s.mustPost(t, d3), 401, "")
		time.Sleep(300 * time.Millisecond)
		if n := up.count(); n != before {
			t.Errorf("rejected deliveries reached the upstream: %d new requests", n-before)
		}
		// Not remembered either.
		good := s.eventWithID(d.ID, typeOK)
		if a := s.mustPost(t, good); a.Code != 201 {
			t.Errorf("valid delivery with a rejected one's eventId: want 201, got %s", a)
		}
	})

	t.Run("concurrent duplicate while in flight gets 409", func(t *testing.T) {
		d := s.event(typeOK)
		mark(slow, d.ID, true)
		a, first := postDuringFirst(t, s, d, arrived)
		if a.Code != 409 || a.Header.Get("Retry-After") == "" {
			t.Errorf("concurrent duplicate: want 409 with Retry-After, got %s (Retry-After %q)", a, a.Header.Get("Retry-After"))
		}
		if first.Code != 200 || first.Body != "slow ok" {
			t.Errorf("first delivery: want the upstream's 200, got %s", first)
		}
		expectAnswer(t, "after the first finished", s.mustPost(t, d), 200, "duplicate")
		if n := len(requestsWithBody(up, d.ID)); n != 1 {
			t.Errorf("upstream got %d requests for %s, want 1", n, d.ID)
		}
	})
}

// postDuringFirst posts d and, once the upstream has it (arrived), posts it
// again; it returns the second answer, then the first.
func postDuringFirst(t testing.TB, s *sender, d *delivery, arrived chan *recorded) (second, first answer) {
	t.Helper()
	for len(arrived) > 0 {
		<-arrived
	}
	firstc := make(chan answer, 1)
	go func() { a, _ := s.post(d); firstc <- a }()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the first delivery never reached the upstream")
	}
	second = s.mustPost(t, d)
	return second, <-firstc
}

// idOfBody extracts the eventId of an envelope (verify-only forwards carry no
// X-Webhook-Id).
func idOfBody(b []byte) string {
	env, err := verifier.ParseEnvelope(b)
	if err != nil {
		return ""
	}
	return env.ID
}

func requestsWithBody(u *upstream, id string) []recorded {
	var out []recorded
	for _, r := range u.requests() {
		if idOfBody(r.Body) == id {
			out = append(out, r)
		}
	}
	return out
}

// TestSpoolFull: past max_items the gateway answers 503 with Retry-After,
// writes nothing (a later delivery of the same event is accepted once there
// is room), and logs no signature at the default log level.
func TestSpoolFull(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "HG_SECRET")
	port := freePort(t) // the upstream is down: items stay in the spool
	config := func(maxItems int) string {
		return g.globalsWith(fmt.Sprintf("max_items %d", maxItems), "") + forwardSite(g, "{env.HG_SECRET}",
			fmt.Sprintf("http://127.0.0.1:%d/in", port), "name full", "backoff 100ms 300ms\n\t\t\t\tmax_attempts 1000")
	}
	g.start(config(3))
	s := newSender(g, hookPath, secret)
	var ids []string
	var first *delivery
	for i := 0; i < 3; i++ {
		d := s.event(typeOK)
		ids = append(ids, d.ID)
		expectAnswer(t, "under max_items", s.mustPost(t, d), 202, "accepted")
		if first == nil {
			first = d
		}
	}
	over := s.event(typeOK)
	a := s.mustPost(t, over)
	if a.Code != 503 || a.Header.Get("Retry-After") == "" {
		t.Errorf("over max_items: want 503 with Retry-After, got %s (Retry-After %q)", a, a.Header.Get("Retry-After"))
	}
	expectAnswer(t, "a duplicate is still recognised when full", s.mustPost(t, first), 200, "duplicate")

	// A reload that raises max_items takes effect on the open spool.
	if code, body, err := g.load(config(4)); err != nil || code != 200 {
		t.Fatalf("reload with max_items 4: %d %s %v", code, body, err)
	}
	s.client.CloseIdleConnections() // the old server closes them
	expectAnswer(t, "after raising max_items", s.mustPostAfterReload(t, over), 202, "accepted")
	ids = append(ids, over.ID)
	over = s.event(typeOK)
	if a := s.mustPost(t, over); a.Code != 503 {
		t.Errorf("over the raised max_items: want 503, got %s", a)
	}

	// Room again once the upstream is back and takes the four.
	up := newUpstreamAt(t, port)
	waitDelivered(t, 20*time.Second, ids, up)
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		a := s.mustPost(t, over)
		return a.Code == 202 && a.Status == "accepted", "the refused event is not accepted after the spool drained: " + a.String()
	})
	waitDelivered(t, 10*time.Second, []string{over.ID}, up)
	if leaks := g.leaks(); len(leaks) > 0 {
		t.Errorf("at the default log level the logs contain %d signatures: %v", len(leaks), leaks)
	}
}
