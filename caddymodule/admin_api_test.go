package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/hookgate/hookgate/adminapi"
	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/spool"
)

// adminAPI provisions the admin API module in the running configuration's
// context, as Caddy's admin endpoint does.
func adminAPI(t *testing.T) *AdminAPI {
	t.Helper()
	mod, err := caddy.ActiveContext().LoadModuleByID("admin.api.webhooks", nil)
	if err != nil {
		t.Fatal(err)
	}
	return mod.(*AdminAPI)
}

// call serves one admin request and returns the status and body Caddy's
// admin endpoint would send (an API error as {"error": …}).
func (a *AdminAPI) call(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	routes := a.Routes()
	if len(routes) != 1 || !strings.HasPrefix(path, routes[0].Pattern) {
		t.Fatalf("no admin route for %s", path)
	}
	rec := httptest.NewRecorder()
	err := routes[0].Handler.ServeHTTP(rec, httptest.NewRequest(method, "http://localhost:2019"+path, strings.NewReader(body)))
	if err == nil {
		return rec.Code, rec.Body.String()
	}
	var apiErr caddy.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("%s %s: not an API error: %v", method, path, err)
	}
	js, _ := json.Marshal(apiErr)
	return apiErr.HTTPStatus, string(js)
}

// must serves an admin request that must answer 200 and decodes its body.
func (a *AdminAPI) must(t *testing.T, method, path, body string, out any) {
	t.Helper()
	code, got := a.call(t, method, path, body)
	if code != 200 {
		t.Fatalf("%s %s: %d %s", method, path, code, got)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(got), out); err != nil {
			t.Fatalf("%s %s: %q: %v", method, path, got, err)
		}
	}
}

// TestAdminHandlers drives every admin endpoint against a real spool whose
// dead letters come from real deliveries: a route "in" whose upstream
// answers 400 (rejected) or 503 (max_attempts 1) by event, and a subscriber
// whose endpoint answers 410.
func TestAdminHandlers(t *testing.T) {
	var healthy atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Webhook-Id")
		switch {
		case healthy.Load():
		case r.URL.Path == "/gone":
			w.WriteHeader(http.StatusGone)
		case strings.Contains(id, "reject"):
			w.WriteHeader(http.StatusBadRequest)
		case strings.Contains(id, "fail"):
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer up.Close()
	c := loadConfig(t, "",
		fmt.Sprintf(`[{"handler": "webhook_ingest", "name": "in", "secrets": ["{env.HG_UNIT_SECRET}"],
			"forward": {"url": %q, "max_attempts": 1}}]`, up.URL+"/in"),
		fmt.Sprintf(`[{"handler": "webhook_publish", "allow_private": ["127.0.0.1"],
			"subscribers": [{"name": "gone", "url": %q, "secrets": ["{env.HG_UNIT_SECRET}"]}]}]`, up.URL+"/gone"))
	sp := c.spool()
	api := adminAPI(t)
	for _, id := range []string{"evt_reject_1", "evt_reject_2", "evt_fail_1", "evt_ok_1"} {
		if res := c.serve(t, c.handler(0), signedDelivery(id, "document.processed").request(), nil); res.status() != 202 {
			t.Fatalf("%s: %s", id, res)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "http://gateway.test/publish", strings.NewReader(`{"eventType":"a.b","eventId":"evt_gone_1","payload":{}}`))
	r.Header.Set("Content-Type", "application/json")
	if res := c.serve(t, c.handler(1), r, nil); res.status() != 202 {
		t.Fatalf("publish: %s", res)
	}
	stat := func(route string) adminapi.RouteStats {
		var st adminapi.Stats
		api.must(t, http.MethodGet, "/webhooks/stats", "", &st)
		if st.Storage != c.storeName() {
			t.Fatalf("stats of storage %q, want %s", st.Storage, c.storeName())
		}
		for _, rs := range st.Routes {
			if rs.Route == route {
				return rs
			}
		}
		return adminapi.RouteStats{}
	}
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		in, gone := stat("in"), stat("subscriber/gone")
		return in.Dead == 3 && gone.Dead == 1 && gone.Disabled == ReasonGone, fmt.Sprintf("in %+v, subscriber %+v", in, gone)
	})
	if in := stat("in"); in.Bytes <= 0 || in.Queued+in.InFlight+in.Scheduled != 0 || in.OldestPendingAge != 0 {
		t.Errorf("route in: %+v, want the dead letters' bytes and nothing pending", in)
	}
	if gone := stat("subscriber/gone"); gone.Subscriber != "gone" {
		t.Errorf("the subscriber's route does not name it: %+v", gone)
	}

	t.Run("records in the stats and the metrics", func(t *testing.T) {
		// Four events on in and one published (its dedupe record and
		// its subscriber's); one attempt each.
		want := adminapi.RecordStats{Dedupe: adminapi.RecordCount{Count: 6}, Attempts: adminapi.RecordCount{Count: 5}, MaxBytes: 4 << 30}
		var st adminapi.Stats
		testwait.Until(t, 5*time.Second, func() (bool, string) {
			api.must(t, http.MethodGet, "/webhooks/stats", "", &st)
			return st.Records.Attempts.Count == want.Attempts.Count, fmt.Sprintf("%+v", st.Records)
		})
		u := sp.Records()
		if st.Records.Dedupe.Count != want.Dedupe.Count || st.Records.MaxBytes != want.MaxBytes || st.Records.AttemptRecordsDropped != 0 ||
			st.Records != toRecordStats(u) || u.Dedupe.Bytes <= 0 || u.Attempts.Bytes <= 0 {
			t.Fatalf("records in the stats %+v, want %+v with the spool's bytes %+v", st.Records, want, u)
		}
		initMetrics()
		for _, m := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"caddy_webhook_records", []string{"kind", "dedupe"}, float64(u.Dedupe.Count)},
			{"caddy_webhook_records", []string{"kind", "attempts"}, float64(u.Attempts.Count)},
			{"caddy_webhook_record_bytes", []string{"kind", "dedupe"}, float64(u.Dedupe.Bytes)},
			{"caddy_webhook_record_bytes", []string{"kind", "attempts"}, float64(u.Attempts.Bytes)},
			{"caddy_webhook_max_record_bytes", nil, 4 << 30},
			{"caddy_webhook_attempt_records_dropped_total", nil, 0},
		} {
			if got, ok := metricValue(t, metrics.spool, m.name, m.labels...); !ok || got != m.want {
				t.Errorf("%s%v = %v (found %v), want %v", m.name, m.labels, got, ok, m.want)
			}
		}
	})

	t.Run("dead letters by route and reason, in pages", func(t *testing.T) {
		for _, tt := range []struct {
			query  string
			events []string
			status int
		}{
			{"route=in&reason=rejected", []string{"evt_reject_1", "evt_reject_2"}, 400},
			{"reason=max_attempts", []string{"evt_fail_1"}, 503},
			{"route=in&reason=max_attempts", []string{"evt_fail_1"}, 503},
			{"reason=" + ReasonGone, []string{"evt_gone_1"}, 410},
			{"route=subscriber/gone", []string{"evt_gone_1"}, 410},
			{"route=nope", nil, 0},
			{"route=in&reason=nope", nil, 0},
		} {
			var page adminapi.DeadPage
			api.must(t, http.MethodGet, "/webhooks/dead?"+tt.query, "", &page)
			var events []string
			for _, d := range page.Dead {
				events = append(events, d.EventID)
				if d.LastStatus != tt.status || d.Attempts != 1 || d.Bytes <= 0 {
					t.Errorf("%s: %+v, want last status %d after 1 attempt", tt.query, d, tt.status)
				}
			}
			slices.Sort(events)
			if !slices.Equal(events, tt.events) {
				t.Errorf("%s: %v, want %v", tt.query, events, tt.events)
			}
		}
		var first, second adminapi.DeadPage
		api.must(t, http.MethodGet, "/webhooks/dead?route=in&limit=2", "", &first)
		if len(first.Dead) != 2 || first.NextCursor == "" {
			t.Fatalf("first page: %+v", first)
		}
		api.must(t, http.MethodGet, "/webhooks/dead?route=in&limit=2&cursor="+first.NextCursor, "", &second)
		if len(second.Dead) != 1 || second.NextCursor != "" || second.Dead[0].ID == first.Dead[0].ID {
			t.Fatalf("second page: %+v after %+v", second, first)
		}
	})

	t.Run("an event's status per route", func(t *testing.T) {
		var ev adminapi.Event
		api.must(t, http.MethodGet, "/webhooks/events/evt_reject_1", "", &ev)
		if len(ev.Routes) != 1 || ev.Routes[0].Route != "in" || ev.Routes[0].State != adminapi.StateDead || ev.Routes[0].Dead == nil ||
			len(ev.Routes[0].Attempts) != 1 || ev.Routes[0].Attempts[0].Status != 400 {
			t.Fatalf("evt_reject_1: %+v", ev)
		}
		api.must(t, http.MethodGet, "/webhooks/events/evt_reject_1?route=in", "", &ev)
		if len(ev.Routes) != 1 || ev.Routes[0].State != adminapi.StateDead {
			t.Fatalf("evt_reject_1 on route in: %+v", ev)
		}
		api.must(t, http.MethodGet, "/webhooks/events/evt_gone_1?route=subscriber/gone", "", &ev)
		if len(ev.Routes) != 1 || ev.Routes[0].Route != "subscriber/gone" || ev.Routes[0].State != adminapi.StateDead {
			t.Fatalf("evt_gone_1 on its subscriber: %+v", ev)
		}
		testwait.Until(t, 5*time.Second, func() (bool, string) {
			api.must(t, http.MethodGet, "/webhooks/events/evt_ok_1", "", &ev)
			return len(ev.Routes) == 1 && ev.Routes[0].State == adminapi.StateDelivered, fmt.Sprintf("%+v", ev)
		})
		for _, path := range []string{"/webhooks/events/evt_reject_1?route=subscriber/gone", "/webhooks/events/evt_unknown"} {
			if code, body := api.call(t, http.MethodGet, path, ""); code != 404 || !strings.Contains(body, "no route knows") {
				t.Errorf("GET %s: %d %s, want 404", path, code, body)
			}
		}
	})

	deadID := func(event string) string {
		var page adminapi.DeadPage
		api.must(t, http.MethodGet, "/webhooks/dead", "", &page)
		for _, d := range page.Dead {
			if d.EventID == event {
				return d.ID
			}
		}
		t.Fatalf("no dead letter for %s in %+v", event, page)
		return ""
	}
	delivered := func(route, event string) func() (bool, string) {
		return func() (bool, string) {
			st, err := sp.Lookup(context.Background(), route, event)
			return err == nil && st.State == spool.StateDelivered, fmt.Sprintf("%s on %s: %+v %v", event, route, st, err)
		}
	}
	healthy.Store(true)

	t.Run("replay and delete", func(t *testing.T) {
		var n adminapi.Replayed
		api.must(t, http.MethodPost, "/webhooks/dead/replay", fmt.Sprintf(`{"ids":[%q]}`, deadID("evt_fail_1")), &n)
		if n.Replayed != 1 {
			t.Fatalf("replay by id: %+v", n)
		}
		testwait.Until(t, 10*time.Second, delivered("in", "evt_fail_1"))
		api.must(t, http.MethodPost, "/webhooks/dead/replay", `{"route":"in","reason":"rejected"}`, &n)
		if n.Replayed != 2 {
			t.Fatalf("replay by route and reason: %+v", n)
		}
		testwait.Until(t, 10*time.Second, delivered("in", "evt_reject_2"))
		testwait.Until(t, 10*time.Second, delivered("in", "evt_reject_1"))

		id := deadID("evt_gone_1")
		var del adminapi.Deleted
		api.must(t, http.MethodDelete, "/webhooks/dead/"+id, "", &del)
		if del.Deleted != 1 {
			t.Fatalf("delete: %+v", del)
		}
		if code, body := api.call(t, http.MethodDelete, "/webhooks/dead/"+id, ""); code != 404 {
			t.Errorf("deleting it again: %d %s, want 404", code, body)
		}
		api.must(t, http.MethodPost, "/webhooks/dead/replay", `{"all":true}`, &n)
		if n.Replayed != 0 {
			t.Errorf("replay all with no dead letters left: %+v", n)
		}
	})

	t.Run("pause, resume and enable", func(t *testing.T) {
		api.must(t, http.MethodPost, "/webhooks/routes/in/pause", "", nil)
		if !stat("in").Paused {
			t.Fatal("route in is not paused")
		}
		if res := c.serve(t, c.handler(0), signedDelivery("evt_paused_1", "document.processed").request(), nil); res.status() != 202 {
			t.Fatalf("while paused: %s", res)
		}
		if in := stat("in"); in.Queued != 1 || in.Bytes <= 0 || in.OldestPendingAge <= 0 {
			t.Fatalf("a paused route with one event: %+v", in)
		}
		var ev adminapi.Event
		api.must(t, http.MethodGet, "/webhooks/events/evt_paused_1", "", &ev)
		if len(ev.Routes) != 1 || ev.Routes[0].State != adminapi.StatePending || ev.Routes[0].ID == "" {
			t.Fatalf("an event held by a pause: %+v", ev)
		}
		api.must(t, http.MethodPost, "/webhooks/routes/in/resume", "", nil)
		testwait.Until(t, 10*time.Second, delivered("in", "evt_paused_1"))

		var en adminapi.SubscriberEnabled
		r := httptest.NewRequest(http.MethodPost, "http://gateway.test/publish", strings.NewReader(`{"eventType":"a.b","eventId":"evt_gone_2","payload":{}}`))
		r.Header.Set("Content-Type", "application/json")
		if res := c.serve(t, c.handler(1), r, nil); res.status() != 202 {
			t.Fatalf("publish to the disabled subscriber: %s", res)
		}
		testwait.Until(t, 10*time.Second, func() (bool, string) {
			st, err := sp.Lookup(context.Background(), "subscriber/gone", "evt_gone_2")
			return err == nil && st.State == spool.StateDead, fmt.Sprintf("%+v %v", st, err)
		})
		api.must(t, http.MethodPost, "/webhooks/subscribers/gone/enable", "", &en)
		if !en.Enabled || en.Replayed != 1 {
			t.Fatalf("enable: %+v", en)
		}
		testwait.Until(t, 10*time.Second, delivered("subscriber/gone", "evt_gone_2"))
		if gone := stat("subscriber/gone"); gone.Disabled != "" {
			t.Errorf("still disabled: %+v", gone)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, tt := range []struct {
			method, path, body string
			code               int
			want               string
		}{
			{http.MethodPost, "/webhooks/stats", "", 405, "use GET"},
			{http.MethodGet, "/webhooks/dead/replay", "", 405, "use POST"},
			{http.MethodGet, "/webhooks/dead/1", "", 405, "use DELETE"},
			{http.MethodGet, "/webhooks/routes/in/pause", "", 405, "use POST"},
			{http.MethodGet, "/webhooks/nothing", "", 404, "no such endpoint"},
			{http.MethodGet, "/webhooks/dead?limit=0", "", 400, "limit"},
			{http.MethodGet, "/webhooks/dead?limit=1001", "", 400, "limit"},
			{http.MethodGet, "/webhooks/dead?cursor=x", "", 400, "cursor"},
			{http.MethodPost, "/webhooks/dead/replay", `{}`, 400, `give "ids"`},
			{http.MethodPost, "/webhooks/dead/replay", `{"ids":["1"],"route":"in"}`, 400, `give "ids"`},
			{http.MethodPost, "/webhooks/dead/replay", `{"route":"in","all":true}`, 400, `give "ids"`},
			{http.MethodPost, "/webhooks/dead/replay", `{"ids":["0"]}`, 400, "bad id"},
			{http.MethodPost, "/webhooks/dead/replay", `{"ids":["x"]}`, 400, "bad id"},
			{http.MethodPost, "/webhooks/dead/replay", `{"colour":1}`, 400, "unknown field"},
			{http.MethodPost, "/webhooks/dead/replay", `not json`, 400, "bad request body"},
			{http.MethodDelete, "/webhooks/dead/x", "", 400, "bad id"},
			{http.MethodDelete, "/webhooks/dead/999999", "", 404, "no dead letter"},
			{http.MethodPost, "/webhooks/routes/nope/pause", "", 404, "no route nope"},
			{http.MethodPost, "/webhooks/subscribers/nope/enable", "", 404, "no subscriber nope"},
			{http.MethodGet, "/webhooks/stats?storage=/nowhere", "", 404, "no open storage"},
		} {
			code, body := api.call(t, tt.method, tt.path, tt.body)
			var e adminapi.Error
			if json.Unmarshal([]byte(body), &e); code != tt.code || !strings.Contains(e.Message, tt.want) {
				t.Errorf("%s %s %s: %d %s, want %d with %q", tt.method, tt.path, tt.body, code, body, tt.code, tt.want)
			}
		}
	})

	t.Run("several storages open", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		val, _, err := stores.LoadOrNew(other, func() (caddy.Destructor, error) {
			s, err := spool.Open(spool.Options{Dir: other, MinFreeDisk: 1 << 20})
			return storeHandle{s}, err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stores.Delete(other)
		otherName := val.(storeHandle).Name()
		if code, body := api.call(t, http.MethodGet, "/webhooks/stats", ""); code != 400 || !strings.Contains(body, "?storage=") {
			t.Fatalf("stats with two storages open and none chosen: %d %s", code, body)
		}
		name, otherDir := c.storeName(), strings.TrimPrefix(otherName, "badger:")
		dir := strings.TrimPrefix(name, "badger:")
		for _, tt := range []struct{ storage, name string }{
			{name, name},
			{dir, name}, // the bare directory, as older clients give it
			{otherName, otherName},
			{otherDir, otherName},
		} {
			var st adminapi.Stats
			api.must(t, http.MethodGet, "/webhooks/stats?storage="+tt.storage, "", &st)
			if st.Storage != tt.name {
				t.Errorf("?storage=%s answered for %s, want %s", tt.storage, st.Storage, tt.name)
			}
		}
		var ev adminapi.Event
		api.must(t, http.MethodGet, "/webhooks/events/evt_ok_1?storage="+dir+"&route=in", "", &ev)
		if len(ev.Routes) != 1 || ev.Routes[0].State != adminapi.StateDelivered {
			t.Errorf("the event in the chosen storage: %+v", ev)
		}
		if code, body := api.call(t, http.MethodGet, "/webhooks/events/evt_ok_1?storage="+otherDir, ""); code != 404 {
			t.Errorf("the event in the other storage: %d %s, want 404", code, body)
		}
	})

	t.Run("no storage open", func(t *testing.T) {
		if err := caddy.Stop(); err != nil {
			t.Fatal(err)
		}
		if code, body := api.call(t, http.MethodGet, "/webhooks/stats", ""); code != 404 || !strings.Contains(body, "no webhooks storage") {
			t.Fatalf("stats with no spool open: %d %s", code, body)
		}
	})
}

// TestEventStatesAreTheSpools: the states /webhooks/events reports are the
// spool's, under the names its clients know.
func TestEventStatesAreTheSpools(t *testing.T) {
	for _, tt := range []struct {
		spool spool.ItemState
		api   adminapi.EventState
	}{
		{spool.StatePending, adminapi.StatePending},
		{spool.StateDead, adminapi.StateDead},
		{spool.StateDelivered, adminapi.StateDelivered},
		{spool.StateDeleted, adminapi.StateDeleted},
	} {
		if string(tt.spool) != string(tt.api) {
			t.Errorf("the spool's state %q is %q in the admin API", tt.spool, tt.api)
		}
	}
}
