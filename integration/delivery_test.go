package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/verifier"
)

// TestHappyPath: distinct events reach the upstream exactly once, byte for
// byte, with the gateway's headers; duplicates, sequential or concurrent, are
// answered as such and forwarded once.
func TestHappyPath(t *testing.T) {
	t.Parallel()
	secret := randomSecret(40)
	g := newGateway(t, "HG_SECRET="+string(secret))
	g.forbid(string(secret))
	up := newUpstream(t)
	g.start(g.globals("") + forwardSite(g, "{env.HG_SECRET}", up.url("/legacy/hook?src=gw"), "",
		"backoff 100ms 500ms\n\t\t\t\theader_up X-Gateway hookgate-it\n\t\t\t\theader_up Authorization \"Bearer up-token\""))
	s := newSender(g, hookPath, secret)

	t.Run("50 distinct events", func(t *testing.T) {
		const n = 50
		sent := make([]*delivery, n)
		for i := range sent {
			sent[i] = s.event(typeOK)
		}
		var wg sync.WaitGroup
		answers := make([]answer, n)
		for w := 0; w < 5; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 5 {
					a, err := s.post(sent[i])
					if err != nil {
						t.Errorf("post: %v", err)
					}
					answers[i] = a
				}
			}()
		}
		wg.Wait()
		ids := make([]string, n)
		for i, a := range answers {
			ids[i] = sent[i].ID
			expectAnswer(t, sent[i].ID, a, 202, "accepted")
			if a.EventID != sent[i].ID {
				t.Errorf("answer names eventId %q, want %q", a.EventID, sent[i].ID)
			}
		}
		waitDelivered(t, 20*time.Second, ids, up)
		time.Sleep(300 * time.Millisecond)
		got := up.byID()
		for _, d := range sent {
			reqs := got[d.ID]
			if len(reqs) != 1 {
				t.Errorf("%s received %d times, want once", d.ID, len(reqs))
				continue
			}
			checkForwarded(t, reqs[0], d, "1")
			if reqs[0].Path != "/legacy/hook" {
				t.Errorf("forwarded to path %q, want /legacy/hook", reqs[0].Path)
			}
		}
		if c := up.count(); c != n {
			t.Errorf("upstream received %d requests, want %d", c, n)
		}
	})

	t.Run("sequential duplicates", func(t *testing.T) {
		d := s.event(typeOK)
		for i := 0; i < 5; i++ {
			a := s.mustPost(t, d)
			if i == 0 {
				expectAnswer(t, "first", a, 202, "accepted")
			} else {
				expectAnswer(t, fmt.Sprintf("repeat %d", i), a, 200, "duplicate")
			}
			if a.EventID != d.ID {
				t.Errorf("answer names eventId %q, want %q", a.EventID, d.ID)
			}
		}
		waitDelivered(t, 10*time.Second, []string{d.ID}, up)
		time.Sleep(300 * time.Millisecond)
		if reqs := up.byID()[d.ID]; len(reqs) != 1 {
			t.Errorf("forwarded %d times, want once", len(reqs))
		} else {
			checkForwarded(t, reqs[0], d, "1")
		}
	})

	t.Run("100 concurrent identical deliveries", func(t *testing.T) {
		d := s.event(typeOK)
		const n = 100
		var wg sync.WaitGroup
		answers := make([]answer, n)
		start := make(chan struct{})
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				a, err := s.post(d)
				if err != nil {
					t.Errorf("post: %v", err)
				}
				answers[i] = a
			}()
		}
		close(start)
		wg.Wait()
		counts := map[string]int{}
		for _, a := range answers {
			counts[fmt.Sprintf("%d %s", a.Code, a.Status)]++
		}
		if counts["202 accepted"] != 1 || counts["200 duplicate"] != n-1 {
			t.Errorf("want one 202 accepted and %d 200 duplicate, got %v", n-1, counts)
		}
		waitDelivered(t, 10*time.Second, []string{d.ID}, up)
		time.Sleep(300 * time.Millisecond)
		if reqs := up.byID()[d.ID]; len(reqs) != 1 {
			t.Errorf("forwarded %d times, want once", len(reqs))
		}
	})

	t.Run("caddy webhook sign and send", func(t *testing.T) {
		dir := t.TempDir()
		secretFile := filepath.Join(dir, "secret.txt")
		if err := os.WriteFile(secretFile, append(append([]byte(nil), secret...), '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		d := s.event(typeOK)
		bodyFile := filepath.Join(dir, "body.json")
		if err := os.WriteFile(bodyFile, d.Body, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(caddyBin, "webhook", "sign", "--secret-file", secretFile, "--body", bodyFile).Output()
		if err != nil {
			t.Fatalf("caddy webhook sign: %v", err)
		}
		if got := strings.TrimSpace(string(out)); got != d.Header.Get(verifier.SignatureHeader) {
			t.Errorf("caddy webhook sign = %q, want %q", got, d.Header.Get(verifier.SignatureHeader))
		}
		payload := filepath.Join(dir, "payload.json")
		os.WriteFile(payload, []byte(`{"documentId":"doc_1"}`), 0o600)
		sentFile := filepath.Join(dir, "sent.json")
		cmd := exec.Command(caddyBin, "webhook", "send", "--url", g.url(hookPath), "--secret-file", secretFile,
			"--event", typeOK, "--payload", payload, "--out", sentFile)
		out, err = cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("caddy webhook send: %v\n%s", err, out)
		}
		if !strings.HasPrefix(string(out), "202 ") || !strings.Contains(string(out), `"accepted"`) {
			t.Fatalf("caddy webhook send: want a 202 accepted, got %q", out)
		}
		sentBody, err := os.ReadFile(sentFile)
		if err != nil {
			t.Fatal(err)
		}
		s.g.sentSignature(verifier.Sign(secret, sentBody))
		id := idOfBody(sentBody)
		waitDelivered(t, 10*time.Second, []string{id}, up)
		if r := up.byID()[id][0]; !bytes.Equal(r.Body, sentBody) {
			t.Errorf("upstream got %q, want the bytes sent %q", r.Body, sentBody)
		}
	})
}

// checkForwarded checks a forwarded request against the delivery it came from.
func checkForwarded(t testing.TB, r recorded, d *delivery, attempt string) {
	t.Helper()
	if r.Method != http.MethodPost {
		t.Errorf("%s: method %s, want POST", d.ID, r.Method)
	}
	if !bytes.Equal(r.Body, d.Body) {
		t.Errorf("%s: upstream got body %q, want the original %q", d.ID, r.Body, d.Body)
	}
	want := map[string]string{
		"Content-Type":           d.Header.Get("Content-Type"),
		verifier.EventHeader:     d.Type,
		verifier.SignatureHeader: d.Header.Get(verifier.SignatureHeader),
		"X-Webhook-Id":           d.ID,
		"X-Webhook-Attempt":      attempt,
		"X-Gateway":              "hookgate-it",
		"Authorization":          "Bearer up-token",
	}
	for k, v := range want {
		if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s: upstream header %s = %q, want exactly %q", d.ID, k, got, v)
		}
	}
}

// TestUpstreamOutage: the upstream refuses connections, then answers 503,
// then recovers; every accepted event arrives.
func TestUpstreamOutage(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "HG_SECRET")
	port := freePort(t) // nothing listens here yet
	upURL := fmt.Sprintf("http://127.0.0.1:%d/in", port)
	g.start(g.globals("") + forwardSite(g, "{env.HG_SECRET}", upURL, "name outage",
		"backoff 100ms 500ms\n\t\t\t\tmax_attempts 50\n\t\t\t\ttimeout 5s"))
	s := newSender(g, hookPath, secret)

	ids := s.sendAccepted(t, 30)
	time.Sleep(1500 * time.Millisecond) // attempts fail: connection refused

	up := newUpstreamAt(t, port)
	var mu sync.Mutex
	healthy := false
	up.setRespond(func(*recorded) reply {
		mu.Lock()
		defer mu.Unlock()
		if !healthy {
			return reply{Status: 503, Body: "warming up"}
		}
		return reply{Status: 200, Body: "ok"}
	})
	testwait.Until(t, 10*time.Second, func() (bool, string) { return up.count() > 0, "no attempt reached the 503 upstream" })
	time.Sleep(time.Second)
	mu.Lock()
	healthy = true
	mu.Unlock()

	waitDelivered(t, 30*time.Second, ids, up)
	dups, retried := 0, 0
	for id, n := range up.delivered() {
		if n > 1 {
			dups += n - 1
		}
		for _, r := range up.byID()[id] {
			if r.Status == 200 && r.Attempt != "1" {
				retried++
			}
		}
	}
	if retried == 0 {
		t.Errorf("no event was delivered on a later attempt; the outage was not exercised")
	}
	saw503 := false
	for _, r := range up.requests() {
		saw503 = saw503 || r.Status == 503
	}
	if !saw503 {
		t.Errorf("the upstream never answered 503; the outage was not exercised")
	}
	t.Logf("30 events delivered; %d retried deliveries, %d duplicate deliveries, %d requests in all", retried, dups, up.count())
}

// TestPoisonEvent: one event the upstream always refuses with 500 is tried
// exactly max_attempts times while the others keep flowing.
func TestPoisonEvent(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	s := newSender(g, hookPath, secret)
	poison := s.event(typeOK)
	up.setRespond(func(r *recorded) reply {
		if r.ID == poison.ID {
			return reply{Status: 500, Body: "cannot handle this one"}
		}
		return reply{Status: 200, Body: "ok"}
	})
	g.start(g.globals("") + forwardSite(g, "{env.HG_SECRET}", up.url("/in"), "",
		"backoff 100ms 500ms\n\t\t\t\tmax_attempts 3"))

	expectAnswer(t, "poison", s.mustPost(t, poison), 202, "accepted")
	var ids []string
	for i := 0; i < 20; i++ {
		d := s.event(typeOK)
		ids = append(ids, d.ID)
		expectAnswer(t, d.ID, s.mustPost(t, d), 202, "accepted")
		time.Sleep(25 * time.Millisecond) // spread over the poison's retries
	}
	waitDelivered(t, 15*time.Second, ids, up)
	testwait.Until(t, 15*time.Second, func() (bool, string) {
		n := len(up.byID()[poison.ID])
		return n >= 3, fmt.Sprintf("poison attempted %d times", n)
	})
	time.Sleep(2 * time.Second) // far past the largest backoff: a 4th attempt would show
	var attempts []string
	for _, r := range up.byID()[poison.ID] {
		attempts = append(attempts, r.Attempt)
	}
	sort.Strings(attempts)
	if strings.Join(attempts, ",") != "1,2,3" {
		t.Errorf("poison attempts: X-Webhook-Attempt %v, want exactly 1,2,3", attempts)
	}
	for id, reqs := range up.byID() {
		if id != poison.ID && len(reqs) != 1 {
			t.Errorf("%s received %d times, want once", id, len(reqs))
		}
	}
	if lines := g.logLines("dead letter", poison.ID); len(lines) == 0 {
		t.Errorf("no log line says the poison event became a dead letter")
	}
}

// TestGracefulShutdown: SIGTERM while a slow upstream holds a forward; the
// forward in flight completes, and after a restart on the same storage every
// accepted event is delivered.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "HG_SECRET")
	slowUp := newUpstream(t)
	slowUp.setRespond(func(*recorded) reply { return reply{Status: 200, Body: "slow", Delay: time.Second} })
	arrived := make(chan *recorded, 16)
	slowUp.notify(arrived)
	config := func(u *upstream) string {
		return g.globals("") + forwardSite(g, "{env.HG_SECRET}", u.url("/in"), "name graceful",
			"backoff 100ms 500ms\n\t\t\t\tconcurrency 1\n\t\t\t\ttimeout 10s")
	}
	g.start(config(slowUp))
	s := newSender(g, hookPath, secret)
	ids := s.sendAccepted(t, 5)
	var inFlight *recorded
	select {
	case inFlight = <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no forward reached the slow upstream")
	}
	if err := g.terminate(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The attempt in flight at SIGTERM was allowed to finish.
	for _, r := range slowUp.requests() {
		if r.ID == inFlight.ID && !r.Completed {
			t.Errorf("the forward of %s in flight at SIGTERM was cut off", r.ID)
		}
	}
	if len(slowUp.delivered()) >= len(ids) {
		t.Fatalf("every event was delivered before shutdown; the test did not exercise a restart")
	}

	fastUp := newUpstream(t)
	g.start(config(fastUp))
	waitDelivered(t, 20*time.Second, ids, slowUp, fastUp)
	dups := 0
	for id := range slowUp.delivered() {
		dups += fastUp.delivered()[id]
	}
	t.Logf("%d delivered before SIGTERM, %d after the restart, %d of them twice",
		len(slowUp.delivered()), len(fastUp.delivered()), dups)
}

// TestShutdownWithinGracePeriod: a forward that would outlast the grace
// period is cut off when it ends, even while a slow sender keeps the HTTP
// servers busy for all of their grace; its lease is released, so after a
// restart it is delivered at once as attempt 1.
//
// The deliveries' grace must run alongside the servers', not after them:
// with the sender holding the servers for their whole grace G, a grace that
// began after theirs could not cut the forward off before 2G, and the
// spool's own close timeout (10 s) would not either. So the forward must end
// before 2G; G is long enough that this leaves a busy machine G of slack.
func TestShutdownWithinGracePeriod(t *testing.T) {
	t.Parallel()
	const grace = 4 * time.Second
	g, secret := newSecretGateway(t, "HG_SECRET")
	hung := newUpstream(t)
	hung.setRespond(func(*recorded) reply { return reply{Status: 200, Delay: time.Minute} })
	arrived := make(chan *recorded, 4)
	hung.notify(arrived)
	config := func(u *upstream) string {
		return strings.Replace(g.globals(""), "grace_period 2s", fmt.Sprintf("grace_period %v", grace), 1) +
			forwardSite(g, "{env.HG_SECRET}", u.url("/in"), "name grace", "timeout 5m")
	}
	g.start(config(hung))
	s := newSender(g, hookPath, secret)
	d := s.event(typeOK)
	expectAnswer(t, d.ID, s.mustPost(t, d), 202, "accepted")
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the forward never reached the upstream")
	}
	// A sender that is slow to send its body keeps the HTTP servers in their
	// grace period for all of it; its 100 Continue says that the handler is
	// reading.
	slow, err := net.Dial("tcp", g.site)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", hookPath, g.site)
	slow.SetReadDeadline(time.Now().Add(30 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(slow), nil); err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("waiting for 100 Continue: %v %v", resp, err)
	}
	begin := time.Now()
	if err := g.terminate(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := len(hung.delivered()); n != 0 {
		t.Fatalf("%d deliveries completed to the hung upstream", n)
	}
	r := hung.requests()[0]
	if r.Ended.IsZero() {
		t.Fatal("the forward to the hung upstream was not cut off by the shutdown")
	}
	if took := r.Ended.Sub(begin); took >= 2*grace {
		t.Fatalf("the forward was cut off %v after SIGTERM, with a grace period of %v", took, grace)
	}
	fastUp := newUpstream(t)
	g.start(config(fastUp))
	waitDelivered(t, 10*time.Second, []string{d.ID}, fastUp)
	if r := fastUp.requests()[0]; r.Attempt != "1" {
		t.Fatalf("X-Webhook-Attempt %s after a released lease, want 1", r.Attempt)
	}
}

// TestValidateLeavesTheSpoolAlone: caddy validate provisions the
// configuration but never starts it, so it neither needs the storage's lock
// (it works next to the running gateway) nor delivers what is pending.
func TestValidateLeavesTheSpoolAlone(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "HG_SECRET")
	port := freePort(t) // the upstream is down: events stay pending
	config := g.globals("") + forwardSite(g, "{env.HG_SECRET}", fmt.Sprintf("http://127.0.0.1:%d/in", port), "name pending",
		"backoff 100ms 200ms\n\t\t\t\tmax_attempts 1000") // pending however long validate takes
	file := g.writeConfig(config)
	validate := func(when string) {
		t.Helper()
		cmd := exec.Command(caddyBin, "validate", "--config", file, "--adapter", "caddyfile")
		cmd.Env, cmd.Dir = g.env, g.dir
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Valid configuration") {
			t.Fatalf("caddy validate %s: %v\n%s", when, err, out)
		}
	}
	g.start(config)
	ids := newSender(g, hookPath, secret).sendAccepted(t, 3)
	validate("next to the running gateway")
	if err := g.terminate(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	up := newUpstreamAt(t, port)
	validate("on the stopped gateway's storage")
	time.Sleep(time.Second)
	if n := up.count(); n != 0 {
		t.Fatalf("validating delivered %d requests", n)
	}
	g.start(config)
	waitDelivered(t, 10*time.Second, ids, up)
}
