package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/adminapi"
	"github.com/hookgate/hookgate/internal/testwait"
)

// adminDo sends a request to the admin endpoint and decodes its JSON answer.
func (g *gateway) adminDo(t testing.TB, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+g.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// adminStats reads GET /webhooks/stats.
func (g *gateway) adminStats(t testing.TB) adminapi.Stats {
	t.Helper()
	var st adminapi.Stats
	if code := g.adminDo(t, http.MethodGet, "/webhooks/stats", "", &st); code != 200 {
		t.Fatalf("stats: %d", code)
	}
	return st
}

// stats reads GET /webhooks/stats: the storage and the named route (zero
// when it is not there).
func (g *gateway) stats(t testing.TB, route string) (storage string, rs adminapi.RouteStats) {
	t.Helper()
	st := g.adminStats(t)
	for _, r := range st.Routes {
		if r.Route == route {
			return st.Storage, r
		}
	}
	return st.Storage, rs
}

func (g *gateway) routeStat(t testing.TB, route string) (dead, pending int64, paused bool, disabled string) {
	t.Helper()
	_, r := g.stats(t, route)
	return r.Dead, r.Queued + r.InFlight + r.Scheduled, r.Paused, r.Disabled
}

// TestAdminAPI: an upstream outage produces dead letters that the stats, the
// list and an event's history show; a delete removes one; pause holds a
// replay and resume releases it; a subscriber disabled by a 410 is enabled
// again and gets what waited; bad requests get clear JSON errors; every
// change is logged with who asked.
func TestAdminAPI(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	up.setRespond(func(*recorded) reply { return reply{Status: 503} })
	sub := newSubscriber(t, g)
	sub.setRespond(func(*recorded) reply { return reply{Status: 410} })
	g.start(g.globals("") + publishSite(g,
		fmt.Sprintf("\thandle %s {\n\t\twebhook_ingest {\n\t\t\tname in\n\t\t\tsecret {env.HG_SECRET}\n\t\t\tforward %s {\n\t\t\t\tmax_attempts 2\n\t\t\t\tbackoff 100ms 200ms\n\t\t\t}\n\t\t}\n\t}",
			hookPath, up.url("/in")),
		publishHandle(publishPath, "backoff 100ms 200ms", "allow_private 127.0.0.1",
			subscriberBlock("acme", sub.url("/hook"), "secret {env.HG_SECRET}")),
	))
	s := newSender(g, hookPath, secret)
	ids := s.sendAccepted(t, 4)
	testwait.Until(t, 5*time.Second, func() (bool, string) {
		dead, _, _, _ := g.routeStat(t, "in")
		return dead == 4, fmt.Sprintf("%d dead letters", dead)
	})

	// The list, in pages, with the reason and the last error.
	type deadList struct {
		Dead []struct {
			ID, Route, Reason string
			EventID           string `json:"event_id"`
			Attempts          int
			LastStatus        int `json:"last_status"`
		} `json:"dead"`
		NextCursor string `json:"next_cursor"`
	}
	var page deadList
	if code := g.adminDo(t, http.MethodGet, "/webhooks/dead?route=in&limit=3", "", &page); code != 200 || len(page.Dead) != 3 || page.NextCursor == "" {
		t.Fatalf("first page: %d %+v", code, page)
	}
	var rest deadList
	g.adminDo(t, http.MethodGet, "/webhooks/dead?route=in&limit=3&cursor="+page.NextCursor, "", &rest)
	if len(rest.Dead) != 1 || rest.NextCursor != "" {
		t.Fatalf("second page: %+v", rest)
	}
	if d := page.Dead[0]; d.Reason != "max_attempts" || d.Attempts != 2 || d.LastStatus != 503 {
		t.Fatalf("dead letter %+v", d)
	}

	// An event's history: two attempts, both 503.
	var ev struct {
		Routes []struct {
			Route, State string
			Attempts     []struct {
				Attempt    int
				Status     int
				DurationMs float64 `json:"duration_ms"`
			}
		} `json:"routes"`
	}
	if code := g.adminDo(t, http.MethodGet, "/webhooks/events/"+ids[0], "", &ev); code != 200 || len(ev.Routes) != 1 {
		t.Fatalf("event: %d %+v", code, ev)
	}
	if r := ev.Routes[0]; r.Route != "in" || r.State != "dead" || len(r.Attempts) != 2 || r.Attempts[1].Attempt != 2 || r.Attempts[1].Status != 503 || r.Attempts[0].DurationMs <= 0 {
		t.Fatalf("event history %+v", r)
	}

	// Delete one; pause; replay the rest; nothing flows until resume.
	deleted := page.Dead[0].EventID
	if deleted == "" {
		t.Fatalf("dead letter without an event id: %+v", page.Dead[0])
	}
	if code := g.adminDo(t, http.MethodDelete, "/webhooks/dead/"+page.Dead[0].ID, "", nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code := g.adminDo(t, http.MethodPost, "/webhooks/routes/in/pause", "", nil); code != 200 {
		t.Fatalf("pause: %d", code)
	}
	up.setRespond(nil)
	var replayed struct{ Replayed int }
	if code := g.adminDo(t, http.MethodPost, "/webhooks/dead/replay", `{"route":"in","reason":"max_attempts"}`, &replayed); code != 200 || replayed.Replayed != 3 {
		t.Fatalf("replay: %d %+v", code, replayed)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(up.delivered()); n != 0 {
		t.Fatalf("%d delivered while the route was paused", n)
	}
	if _, pending, paused, _ := g.routeStat(t, "in"); !paused || pending != 3 {
		t.Fatalf("paused route: pending %d paused %v", pending, paused)
	}
	if code := g.adminDo(t, http.MethodPost, "/webhooks/routes/in/resume", "", nil); code != 200 {
		t.Fatalf("resume: %d", code)
	}
	var kept []string
	for _, id := range ids {
		if id != deleted {
			kept = append(kept, id)
		}
	}
	waitDelivered(t, 5*time.Second, kept, up)
	if up.delivered()[deleted] != 0 {
		t.Fatal("the deleted dead letter was delivered")
	}

	// A subscriber that answered 410 is disabled; enabling it sends what waited.
	for _, id := range []string{"evt_admin_1", "evt_admin_2"} {
		if a := publish(t, g, publishPath, publishBody(typeOK, id, `{}`)); a.Code != 202 {
			t.Fatalf("publish: %s", a)
		}
	}
	testwait.Until(t, 5*time.Second, func() (bool, string) {
		dead, _, _, disabled := g.routeStat(t, "subscriber/acme")
		return dead == 2 && disabled == "subscriber_gone", fmt.Sprintf("dead %d disabled %q", dead, disabled)
	})
	// A subscriber's route pauses like any other (its name holds a slash).
	if code := g.adminDo(t, http.MethodPost, "/webhooks/routes/subscriber/acme/pause", "", nil); code != 200 {
		t.Fatalf("pausing a subscriber: %d", code)
	}
	if _, _, paused, _ := g.routeStat(t, "subscriber/acme"); !paused {
		t.Fatal("the subscriber is not paused")
	}
	if code := g.adminDo(t, http.MethodPost, "/webhooks/routes/subscriber/acme/resume", "", nil); code != 200 {
		t.Fatalf("resuming a subscriber: %d", code)
	}
	sub.setRespond(nil)
	var enabled struct{ Replayed int }
	if code := g.adminDo(t, http.MethodPost, "/webhooks/subscribers/acme/enable", "", &enabled); code != 200 || enabled.Replayed != 2 {
		t.Fatalf("enable: %d %+v", code, enabled)
	}
	waitDelivered(t, 5*time.Second, []string{"evt_admin_1", "evt_admin_2"}, sub)

	// Clear errors.
	var apiErr struct{ Error string }
	for _, c := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{http.MethodPost, "/webhooks/routes/nope/pause", "", 404, "no route nope"},
		{http.MethodPost, "/webhooks/subscribers/nope/enable", "", 404, "no subscriber nope"},
		{http.MethodDelete, "/webhooks/dead/999999", "", 404, "no dead letter"},
		{http.MethodDelete, "/webhooks/dead/x", "", 400, "bad id"},
		{http.MethodPost, "/webhooks/dead/replay", `{}`, 400, `give "ids"`},
		{http.MethodPost, "/webhooks/dead/replay", `{"ids":["1"],"all":true}`, 400, `give "ids"`},
		{http.MethodPost, "/webhooks/dead/replay", `{"colour":1}`, 400, "unknown field"},
		{http.MethodGet, "/webhooks/dead/replay", "", 405, "use POST"},
		{http.MethodGet, "/webhooks/dead?limit=0", "", 400, "limit"},
		{http.MethodGet, "/webhooks/events/evt_unknown", "", 404, "no route knows"},
		{http.MethodGet, "/webhooks/nothing", "", 404, "no such endpoint"},
	} {
		apiErr.Error = ""
		if code := g.adminDo(t, c.method, c.path, c.body, &apiErr); code != c.code || !strings.Contains(apiErr.Error, c.want) {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, code, apiErr.Error, c.code, c.want)
		}
	}

	// Every change is logged with who asked.
	for _, msg := range []string{"dead letter deleted", "route paused", "dead letters replayed", "route resumed", "subscriber enabled"} {
		lines := g.logLines(msg)
		if len(lines) == 0 || !strings.Contains(lines[0], `"remote_addr":"127.0.0.1:`) {
			t.Errorf("no log line %q with the remote address: %v", msg, lines)
		}
	}
}

// TestAdminEventShowsPublishAttempts: the history of a publish that failed
// twice and then succeeded lists the three attempts with their statuses.
func TestAdminEventShowsPublishAttempts(t *testing.T) {
	t.Parallel()
	g, _ := newSecretGateway(t, "HG_SECRET")
	sub := newSubscriber(t, g)
	sub.setRespond(func(r *recorded) reply {
		if r.Attempt == "1" || r.Attempt == "2" {
			return reply{Status: 500}
		}
		return reply{Status: 200}
	})
	g.start(g.globals("") + publishSite(g, publishHandle(publishPath, "backoff 100ms 200ms", "allow_private 127.0.0.1",
		subscriberBlock("acme", sub.url("/hook"), "secret {env.HG_SECRET}"))))
	if a := publish(t, g, publishPath, publishBody(typeOK, "evt_history_1", `{}`)); a.Code != 202 {
		t.Fatalf("publish: %s", a)
	}
	waitDelivered(t, 5*time.Second, []string{"evt_history_1"}, sub)
	var ev struct {
		Routes []struct {
			Route, State string
			Attempts     []struct{ Attempt, Status int }
		} `json:"routes"`
	}
	testwait.Until(t, 3*time.Second, func() (bool, string) {
		g.adminDo(t, http.MethodGet, "/webhooks/events/evt_history_1", "", &ev)
		return len(ev.Routes) == 1 && ev.Routes[0].State == "delivered", fmt.Sprintf("%+v", ev)
	})
	r := ev.Routes[0]
	if r.Route != "subscriber/acme" || len(r.Attempts) != 3 {
		t.Fatalf("history %+v", r)
	}
	for i, want := range []int{500, 500, 200} {
		if a := r.Attempts[i]; a.Attempt != i+1 || a.Status != want {
			t.Errorf("attempt %d: %+v, want status %d", i+1, a, want)
		}
	}
	// The CLI shows the same history.
	out := g.mustCLI(t, "events", "evt_history_1")
	if !strings.Contains(out, "on route subscriber/acme: delivered") {
		t.Fatalf("caddy webhook events:\n%s", out)
	}
	var statuses []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && (f[0] == "1" || f[0] == "2" || f[0] == "3") {
			statuses = append(statuses, f[3])
		}
	}
	if strings.Join(statuses, " ") != "500 500 200" {
		t.Fatalf("attempt statuses %v in:\n%s", statuses, out)
	}
}
