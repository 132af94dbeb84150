package integration

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

// ingestHandle is a handle block on path with a named forwarding
// webhook_ingest route; forward holds the forward block's lines.
func ingestHandle(path, name, forwardURL, forward string) string {
	return fmt.Sprintf("\thandle %s {\n\t\twebhook_ingest {\n\t\t\tname %s\n\t\t\tsecret {env.HG_SECRET}\n\t\t\tforward %s {\n\t\t\t\t%s\n\t\t\t}\n\t\t}\n\t}",
		path, name, forwardURL, forward)
}

// TestReloadAppliesToPendingEvents: events already pending when a reload
// changes their route's upstream URL go to the new upstream only, and a new
// max_attempts applies to events already being retried.
func TestReloadAppliesToPendingEvents(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "HG_SECRET")
	oldUp, newUp, failing := newUpstream(t), newUpstream(t), newUpstream(t)
	failing.setRespond(func(*recorded) reply { return reply{Status: 503} })
	config := func(target *upstream, maxAttempts int) string {
		return g.globals("") + publishSite(g,
			ingestHandle(hookPath, "moving", target.url("/in"), "backoff 100ms 200ms"),
			ingestHandle("/hooks/policy", "policy", failing.url("/p"), fmt.Sprintf("max_attempts %d\n\t\t\t\tbackoff 100ms 200ms", maxAttempts)))
	}
	g.start(config(oldUp, 1000))
	if code := g.adminDo(t, http.MethodPost, "/webhooks/routes/moving/pause", "", nil); code != 200 {
		t.Fatalf("pause: %d", code)
	}
	moving := newSender(g, hookPath, secret).sendAccepted(t, 3)
	retried := newSender(g, "/hooks/policy", secret).sendAccepted(t, 2)
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		for _, id := range retried {
			if n := len(failing.byID()[id]); n < 2 {
				return false, fmt.Sprintf("%s attempted %d times", id, n)
			}
		}
		return true, ""
	})

	if code, body, err := g.load(config(newUp, 2)); err != nil || code != 200 {
		t.Fatalf("reload: %d %s %v", code, body, err)
	}
	if code := g.adminDo(t, http.MethodPost, "/webhooks/routes/moving/resume", "", nil); code != 200 {
		t.Fatalf("resume: %d", code)
	}
	waitDelivered(t, 10*time.Second, moving, newUp)
	if n := oldUp.count(); n != 0 {
		t.Errorf("the old upstream received %d requests after the reload moved the route", n)
	}
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		got := eventIDs(g.deadLetters(t, "route=policy&reason=max_attempts"))
		return len(got) == len(retried), fmt.Sprintf("dead letters by max_attempts: %v, want %v", got, retried)
	})
}

// heldUpstream holds every request until released, and tracks how many it
// holds at once.
type heldUpstream struct {
	*upstream
	mu         sync.Mutex
	open       bool
	holding    int
	maxHolding int
	released   chan struct{}
}

func newHeldUpstream(t *testing.T) *heldUpstream {
	h := &heldUpstream{upstream: newUpstream(t), open: true, released: make(chan struct{})}
	h.setRespond(func(*recorded) reply {
		h.mu.Lock()
		if h.open {
			h.mu.Unlock()
			return reply{Status: 200}
		}
		h.holding++
		h.maxHolding = max(h.maxHolding, h.holding)
		h.mu.Unlock()
		<-h.released
		h.mu.Lock()
		h.holding--
		h.mu.Unlock()
		return reply{Status: 200}
	})
	t.Cleanup(h.release)
	return h
}

// hold makes later requests wait until release.
func (h *heldUpstream) hold() {
	h.mu.Lock()
	h.open = false
	h.mu.Unlock()
}

func (h *heldUpstream) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.open {
		h.open = true
		close(h.released)
	}
}

// counts returns how many requests are held now and at most so far.
func (h *heldUpstream) counts() (now, most int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.holding, h.maxHolding
}

// TestReloadAppliesWorkersAndRetention: a reload's workers and
// attempt_retention take effect on the running spool: more deliveries go
// out at once, and attempts recorded from then on expire by the new
// retention while older ones keep theirs.
func TestReloadAppliesWorkersAndRetention(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "HG_SECRET")
	up := newHeldUpstream(t)
	config := func(workers int, retention string) string {
		return g.globalsWith(fmt.Sprintf("workers %d\n\t\tattempt_retention %s", workers, retention), "") +
			publishSite(g, ingestHandle(hookPath, "held", up.url("/in"), "concurrency 8\n\t\t\t\ttimeout 1m"))
	}
	g.start(config(1, "7d"))
	s := newSender(g, hookPath, secret)
	before := s.sendAccepted(t, 1)[0]
	waitDelivered(t, 10*time.Second, []string{before}, up.upstream)

	up.hold()
	ids := s.sendAccepted(t, 4)
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		n, _ := up.counts()
		return n == 1, fmt.Sprintf("%d deliveries held", n)
	})
	if _, most := up.counts(); most != 1 {
		t.Fatalf("%d deliveries at once with workers 1", most)
	}
	if code, body, err := g.load(config(3, "1s")); err != nil || code != 200 {
		t.Fatalf("reload: %d %s %v", code, body, err)
	}
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		n, _ := up.counts()
		return n == 3, fmt.Sprintf("%d deliveries held after raising workers to 3", n)
	})
	up.release()
	waitDelivered(t, 10*time.Second, ids, up.upstream)
	if _, most := up.counts(); most != 3 {
		t.Errorf("%d deliveries at once with workers 3", most)
	}

	after := s.sendAccepted(t, 1)[0]
	waitDelivered(t, 10*time.Second, []string{after}, up.upstream)
	// attempts returns the event's recorded attempts once its outcome is
	// recorded (the upstream has it a moment before), -1 until then.
	attempts := func(id string) int {
		var ev struct {
			Routes []struct {
				State    string
				Attempts []struct{ Attempt int }
			} `json:"routes"`
		}
		if code := g.adminDo(t, http.MethodGet, "/webhooks/events/"+id, "", &ev); code != 200 || len(ev.Routes) != 1 {
			t.Fatalf("event %s: %d %+v", id, code, ev)
		}
		if ev.Routes[0].State != "delivered" {
			return -1
		}
		return len(ev.Routes[0].Attempts)
	}
	testwait.Until(t, 20*time.Second, func() (bool, string) {
		n := attempts(after)
		return n == 0, fmt.Sprintf("%s still shows %d attempts with attempt_retention 1s", after, n)
	})
	if n := attempts(before); n != 1 {
		t.Errorf("%s, recorded under attempt_retention 7d, shows %d attempts, want 1", before, n)
	}
}
