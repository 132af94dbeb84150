package integration

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

// TestReloadsUnderLoad posts 20 new configurations to the admin endpoint
// while senders keep sending: the secret rotates (new + old, then new only),
// the forward target alternates between two upstreams, the retry policy
// changes. No reload fails, every accepted event arrives, nothing mentions a
// lock, and no connection or goroutine is left behind.
func TestReloadsUnderLoad(t *testing.T) {
	t.Parallel()
	const reloads = 20
	secrets := make([][]byte, reloads+1)
	var env []string
	for i := range secrets {
		secrets[i] = randomSecret(32)
		env = append(env, fmt.Sprintf("HG_RS_%d=%s", i, secrets[i]))
	}
	g := newGateway(t, env...)
	for _, s := range secrets {
		g.forbid(string(s))
	}
	upA, upB := newUpstream(t), newUpstream(t)
	ups := []*upstream{upA, upB}

	// config k lists the secrets in force and the variant's settings.
	config := func(k int, secretIdx ...int) string {
		var sec []string
		for _, i := range secretIdx {
			sec = append(sec, fmt.Sprintf("{env.HG_RS_%d}", i))
		}
		backoff := []string{"100ms 1s", "200ms 2s", "50ms 500ms"}[k%3]
		return g.globals("") + forwardSite(g, strings.Join(sec, " "), ups[k%2].url(fmt.Sprintf("/in/%d", k)),
			"name reloading\n\t\t\ttolerance 30m\n\t\t\tdedupe_window 2h",
			fmt.Sprintf("backoff %s\n\t\t\t\tmax_attempts %d\n\t\t\t\tconcurrency 4\n\t\t\t\theader_up X-Config %d", backoff, 20+k, k))
	}

	g.start(config(0, 0))
	s := newSender(g, hookPath, secrets[0])
	if code, body, err := g.load(config(2, 0)); err != nil || code != 200 {
		t.Fatalf("first /load: %d %s %v", code, body, err)
	}
	// Some traffic, so that the baseline has its connections open.
	var warm []string
	for i := 0; i < 20; i++ {
		// Retried: a keep-alive connection may be closed by the reload just done
		// (a retry of an event that did get through is answered 200 duplicate).
		d, a, err := s.signedSend(typeOK, 3)
		if err != nil || (a.Code != 202 && a.Code != 200) {
			t.Fatalf("warm-up delivery: %v %v", a, err)
		}
		warm = append(warm, d.ID)
	}
	waitDelivered(t, 10*time.Second, warm, upA)
	baseline := idleGoroutines(t, g, s)
	t.Logf("baseline: %d goroutines; gateway connections to A: %d, to B: %d", baseline, upA.openConns(), upB.openConns())

	res := &loadResult{other: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// A keep-alive connection closed by a reload is retried.
				d, a, err := s.signedSend(typeOK, 3)
				res.add(func(r *loadResult) {
					switch {
					case err != nil:
						r.failed++
						r.other["error: "+err.Error()]++
					case a.Code == 202 || (a.Code == 200 && a.Status == "duplicate"):
						r.accepted = append(r.accepted, d.ID)
					default:
						r.other[a.String()]++
					}
				})
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}

	cur := 0
	for k := 1; k <= reloads; k++ {
		time.Sleep(250 * time.Millisecond)
		var code int
		var body string
		var err error
		if k%2 == 1 { // a new secret, the old one still listed
			code, body, err = g.load(config(k, cur+1, cur))
			if err == nil && code == 200 {
				cur++
				s.setSecret(secrets[cur]) // waits for deliveries signed with the old one
			}
		} else { // only the new secret
			code, body, err = g.load(config(k, cur))
		}
		if err != nil || code != 200 {
			t.Errorf("reload %d: %d %s %v", k, code, body, err)
		}
	}
	time.Sleep(250 * time.Millisecond)
	close(stop)
	wg.Wait()

	if len(res.other) > 0 {
		t.Errorf("answers other than 202/duplicate during reloads: %v", res.other)
	}
	if len(res.accepted) < 100 {
		t.Errorf("only %d events accepted during the reloads", len(res.accepted))
	}
	waitDelivered(t, 30*time.Second, res.accepted, upA, upB)
	a, b := len(upA.delivered()), len(upB.delivered())
	if a == 0 || b == 0 {
		t.Errorf("deliveries A=%d B=%d: both upstreams should have received events", a, b)
	}
	// The last config forwards to A with header X-Config 20.
	last := upA.requests()
	if h := last[len(last)-1].Header.Get("X-Config"); h != fmt.Sprint(reloads) {
		t.Errorf("the last forward carries X-Config %q, want %d", h, reloads)
	}
	if lines := g.logLines("lock"); len(lines) > 0 {
		t.Errorf("the logs mention a lock:\n%s", strings.Join(lines, "\n"))
	}
	if lines := g.logLines(`"level":"error"`); len(lines) > 0 {
		t.Errorf("the logs have errors:\n%s", strings.Join(lines[:min(10, len(lines))], "\n"))
	}

	// Nothing outlives the configuration that made it. Connections are
	// counted exactly: the gateway keeps none to upstream B, which the last
	// configuration does not forward to, at most the route's concurrency to
	// A, and runs no client connection beyond those the upstreams see. Other
	// goroutines come and go (Badger's, timers'); a leak per reload would
	// leave at least one per reload.
	var n int
	testwait.Until(t, 15*time.Second, func() (bool, string) {
		s.client.CloseIdleConnections()
		var profile string
		var err error
		n, profile, err = g.goroutines()
		if err != nil {
			t.Fatalf("goroutine count: %v", err)
		}
		conns, toA, toB := stackCount(profile, "net/http.(*persistConn).readLoop"), upA.openConns(), upB.openConns()
		switch {
		case toB != 0 || toA > 4 || conns != toA+toB:
			return false, fmt.Sprintf("the gateway runs %d client connections; upstream A (the current target, concurrency 4) sees %d, "+
				"upstream B (no longer a target) %d; profile:\n%s", conns, toA, toB, profile)
		case n >= baseline+reloads:
			return false, fmt.Sprintf("%d goroutines after %d reloads, baseline %d; profile:\n%s", n, reloads, baseline, profile)
		}
		return true, ""
	})
	t.Logf("%d events accepted during %d reloads (A %d, B %d); goroutines %d (baseline %d)", len(res.accepted), reloads, a, b, n, baseline)
}

// stackCount sums the goroutines of a debug=1 goroutine profile whose stack
// holds function fn.
func stackCount(profile, fn string) int {
	_, profile, _ = strings.Cut(profile, "\n") // "goroutine profile: total N"
	total := 0
	for _, block := range strings.Split(profile, "\n\n") {
		var n int
		if _, err := fmt.Sscanf(block, "%d @", &n); err == nil && strings.Contains(block, "\t"+fn+"+") {
			total += n
		}
	}
	return total
}

// idleGoroutines waits for the count to settle and returns it.
func idleGoroutines(t *testing.T, g *gateway, s *sender) int {
	t.Helper()
	prev := -1
	for i := 0; i < 20; i++ {
		s.client.CloseIdleConnections()
		time.Sleep(250 * time.Millisecond)
		n, _, err := g.goroutines()
		if err != nil {
			t.Fatalf("goroutine count: %v", err)
		}
		if n == prev {
			return n
		}
		prev = n
	}
	return prev
}

// TestReloadRemovingARouteKeepsItsEvents: events pending for a route stay in
// the spool when a reload removes the route (nothing is delivered while it is
// gone), and are delivered once a later reload brings the route back.
func TestReloadRemovingARouteKeepsItsEvents(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	up.setRespond(func(*recorded) reply { return reply{Status: 503} })
	withRoute := g.globals("") + forwardSite(g, "{env.HG_SECRET}", up.url("/in"),
		"name kept", "backoff 100ms 200ms\n\t\t\t\tmax_attempts 1000")
	withoutRoute := g.globals("") + fmt.Sprintf("http://%s {\n\trespond \"no hooks here\" 404\n}\n", g.site)

	g.start(withRoute)
	s := newSender(g, hookPath, secret)
	ids := s.sendAccepted(t, 10)
	testwait.Until(t, 5*time.Second, func() (bool, string) {
		return up.count() >= 10, fmt.Sprintf("%d attempts at the failing upstream", up.count())
	})

	if code, body, err := g.load(withoutRoute); err != nil || code != 200 {
		t.Fatalf("reload without the route: %d %s %v", code, body, err)
	}
	s.client.CloseIdleConnections()
	time.Sleep(500 * time.Millisecond) // attempts in flight at the reload end
	up.setRespond(nil)                 // the upstream is healthy now
	before := up.count()
	time.Sleep(time.Second)
	if n := up.count() - before; n != 0 {
		t.Fatalf("%d deliveries while the route was not configured", n)
	}
	if got := len(up.delivered()); got != 0 {
		t.Fatalf("%d events delivered while the route was gone", got)
	}

	if code, body, err := g.load(withRoute); err != nil || code != 200 {
		t.Fatalf("reload with the route back: %d %s %v", code, body, err)
	}
	waitDelivered(t, 10*time.Second, ids, up)
}

// TestRouteNamesAreDistinct: one route name is one queue, dedupe scope and
// target, so a configuration that gives two different handlers the same name
// (or an ingest route a publisher's name) is refused and the running one
// stays; the same handler used twice is fine.
func TestRouteNamesAreDistinct(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "HG_SECRET", "SUB_SECRET=subscriber-secret-0123456789")
	up := newUpstream(t)
	ingest := func(path, name, url string) string {
		return fmt.Sprintf("\thandle %s {\n\t\twebhook_ingest {\n\t\t\tname %s\n\t\t\tsecret {env.HG_SECRET}\n\t\t\tforward %s\n\t\t}\n\t}", path, name, url)
	}
	site := func(handles ...string) string { return g.globals("") + publishSite(g, handles...) }
	g.start(site(ingest(hookPath, "shared", up.url("/a"))))

	for _, tt := range []struct {
		name, config, wantErr string
	}{
		{"two ingest routes, one name", site(ingest(hookPath, "shared", up.url("/a")), ingest("/other", "shared", up.url("/b"))),
			`route "shared" is configured twice with different settings`},
		{"an ingest route named like a subscriber", site(ingest(hookPath, "subscriber/acme", up.url("/a"))),
			`the name "subscriber/acme" is reserved for webhook_publish`},
		{"two subscribers, one name", site(ingest(hookPath, "shared", up.url("/a")),
			publishHandle("/pub1", "allow_private 127.0.0.0/8", subscriberBlock("acme", up.url("/x"), "secret {env.SUB_SECRET}")),
			publishHandle("/pub2", "allow_private 127.0.0.0/8", subscriberBlock("acme", up.url("/y"), "secret {env.SUB_SECRET}"))),
			`subscriber acme: route "subscriber/acme" is configured twice with different settings`},
	} {
		code, body, err := g.load(tt.config)
		if err != nil || code == 200 || !strings.Contains(strings.ReplaceAll(body, `\"`, `"`), tt.wantErr) {
			t.Errorf("%s: load answered %d %s %v; want a refusal containing %q", tt.name, code, body, err, tt.wantErr)
		}
	}
	// The same handler on two paths shares its route.
	if code, body, err := g.load(site(ingest(hookPath, "shared", up.url("/a")), ingest("/other", "shared", up.url("/a")))); err != nil || code != 200 {
		t.Fatalf("the same route on two paths: %d %s %v", code, body, err)
	}
	s := newSender(g, hookPath, secret)
	d := s.event(typeOK)
	if a := s.mustPostAfterReload(t, d); a.Code != 202 && a.Status != "duplicate" {
		t.Fatalf("%s: %s, want 202 accepted", d.ID, a)
	}
	expectAnswer(t, "the same event on the other path", newSender(g, "/other", secret).mustPost(t, d), 200, "duplicate")
	waitDelivered(t, 10*time.Second, []string{d.ID}, up)
}
