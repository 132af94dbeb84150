package integration

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

type deadEntry struct {
	ID         string `json:"id"`
	EventID    string `json:"event_id"`
	Reason     string `json:"reason"`
	LastStatus int    `json:"last_status"`
	Bytes      int64  `json:"bytes"`
}

// deadLetters lists GET /webhooks/dead?query.
func (g *gateway) deadLetters(t *testing.T, query string) []deadEntry {
	t.Helper()
	var page struct {
		Dead []deadEntry `json:"dead"`
	}
	if code := g.adminDo(t, http.MethodGet, "/webhooks/dead?"+query, "", &page); code != 200 {
		t.Fatalf("dead letters ?%s: %d", query, code)
	}
	return page.Dead
}

func eventIDs(ds []deadEntry) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.EventID)
	}
	slices.Sort(out)
	return out
}

// TestAdminQueriesAndStats: dead letters filtered by reason, the storage
// chosen with ?storage=, an event looked up on one route, a replay by ids on
// the real endpoint, and the stats' bytes and oldest pending age.
func TestAdminQueriesAndStats(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	up.setRespond(func(r *recorded) reply {
		switch {
		case strings.HasSuffix(r.ID, "1"), strings.HasSuffix(r.ID, "2"):
			return reply{Status: 422} // rejected at once
		case strings.HasSuffix(r.ID, "3"):
			return reply{Status: 503} // retried, then max_attempts
		}
		return reply{Status: 200}
	})
	g.start(g.globals("") + publishSite(g,
		fmt.Sprintf("\thandle %s {\n\t\twebhook_ingest {\n\t\t\tname in\n\t\t\tsecret {env.HG_SECRET}\n\t\t\tforward %s {\n\t\t\t\tmax_attempts 2\n\t\t\t\tbackoff 100ms 200ms\n\t\t\t}\n\t\t}\n\t}",
			hookPath, up.url("/in")),
		"\thandle /hooks/other {\n\t\twebhook_ingest {\n\t\t\tname other\n\t\t\tsecret {env.HG_SECRET}\n\t\t\tforward "+up.url("/other")+"\n\t\t}\n\t}"))
	s := newSender(g, hookPath, secret)
	s.prefix = "evt_q" // ids evt_q_00001 ... so that their last digit picks the answer
	var ids []string
	var bodyBytes int64
	for range 3 {
		d := s.event(typeOK)
		expectAnswer(t, d.ID, s.mustPost(t, d), 202, "accepted")
		ids = append(ids, d.ID)
		bodyBytes += int64(len(d.Body))
	}
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		_, rs := g.stats(t, "in")
		return rs.Dead == 3, fmt.Sprintf("route in: %+v", rs)
	})

	t.Run("dead letters by reason", func(t *testing.T) {
		for _, tt := range []struct {
			query string
			want  []string
		}{
			{"reason=rejected", ids[:2]},
			{"route=in&reason=rejected", ids[:2]},
			{"reason=max_attempts", ids[2:]},
			{"route=other&reason=max_attempts", nil},
			{"reason=max_age", nil},
		} {
			if got := eventIDs(g.deadLetters(t, tt.query)); !slices.Equal(got, tt.want) {
				t.Errorf("?%s: %v, want %v", tt.query, got, tt.want)
			}
		}
	})

	t.Run("storage", func(t *testing.T) {
		storage, _ := g.stats(t, "in")
		var st struct{ Storage string }
		if code := g.adminDo(t, http.MethodGet, "/webhooks/stats?storage="+url.QueryEscape(storage), "", &st); code != 200 || st.Storage != storage {
			t.Fatalf("?storage=%s: %d %+v", storage, code, st)
		}
		if got := g.deadLetters(t, "storage="+url.QueryEscape(storage)+"&reason=max_attempts"); len(got) != 1 {
			t.Errorf("dead letters in the chosen storage: %v", got)
		}
		var e struct{ Error string }
		if code := g.adminDo(t, http.MethodGet, "/webhooks/stats?storage=/not/open", "", &e); code != 404 || !strings.Contains(e.Error, "no open storage") {
			t.Errorf("?storage= of a storage that is not open: %d %q", code, e.Error)
		}
	})

	t.Run("an event on one route", func(t *testing.T) {
		var ev struct {
			Routes []struct{ Route, State string } `json:"routes"`
		}
		if code := g.adminDo(t, http.MethodGet, "/webhooks/events/"+ids[0]+"?route=in", "", &ev); code != 200 ||
			len(ev.Routes) != 1 || ev.Routes[0].Route != "in" || ev.Routes[0].State != "dead" {
			t.Errorf("?route=in: %d %+v", code, ev)
		}
		var e struct{ Error string }
		if code := g.adminDo(t, http.MethodGet, "/webhooks/events/"+ids[0]+"?route=other", "", &e); code != 404 {
			t.Errorf("?route=other: %d %q, want 404", code, e.Error)
		}
	})

	// The stats' bytes are the dead letters' until more arrives.
	var deadBytes int64
	for _, d := range g.deadLetters(t, "route=in") {
		deadBytes += d.Bytes
	}
	if _, rs := g.stats(t, "in"); rs.Bytes != deadBytes || deadBytes < bodyBytes || rs.OldestPendingAge != 0 {
		t.Fatalf("route in with three dead letters of %d bytes (bodies %d): %+v", deadBytes, bodyBytes, rs)
	}

	t.Run("pending bytes and oldest age", func(t *testing.T) {
		if code := g.adminDo(t, http.MethodPost, "/webhooks/routes/in/pause", "", nil); code != 200 {
			t.Fatalf("pause: %d", code)
		}
		before := time.Now()
		first := s.event(typeOK) // ends in 4: delivered once resumed
		expectAnswer(t, "pending", s.mustPost(t, first), 202, "accepted")
		received := time.Now()
		second := s.event(typeOK)
		expectAnswer(t, "pending", s.mustPost(t, second), 202, "accepted")
		pendingBody := int64(len(first.Body) + len(second.Body))
		asked := time.Now()
		_, rs := g.stats(t, "in")
		answered := time.Now()
		age := time.Duration(rs.OldestPendingAge * float64(time.Second))
		// The oldest item was received between before and received; the
		// stats were taken between asked and answered. The age counts from
		// the start of the second it was received in.
		if low, high := asked.Sub(received)-time.Millisecond, answered.Sub(before.Truncate(time.Second))+time.Millisecond; age < low || age > high {
			t.Errorf("oldest pending age %v, want between %v and %v", age, low, high)
		}
		if rs.Queued != 2 || rs.Bytes < deadBytes+pendingBody {
			t.Errorf("two pending events of %d body bytes on %d dead bytes: %+v", pendingBody, deadBytes, rs)
		}
		if code := g.adminDo(t, http.MethodPost, "/webhooks/routes/in/resume", "", nil); code != 200 {
			t.Fatalf("resume: %d", code)
		}
		waitDelivered(t, 10*time.Second, []string{first.ID, second.ID}, up)
		testwait.Until(t, 5*time.Second, func() (bool, string) {
			_, rs := g.stats(t, "in")
			return rs.Bytes == deadBytes && rs.OldestPendingAge == 0, fmt.Sprintf("after delivery: %+v, dead bytes %d", rs, deadBytes)
		})
	})

	t.Run("replay by ids", func(t *testing.T) {
		up.setRespond(nil)
		dead := g.deadLetters(t, "route=in")
		var replay []string
		for _, d := range dead {
			if d.EventID != ids[1] {
				replay = append(replay, fmt.Sprintf("%q", d.ID))
			}
		}
		var n struct{ Replayed int }
		if code := g.adminDo(t, http.MethodPost, "/webhooks/dead/replay", `{"ids":[`+strings.Join(replay, ",")+`]}`, &n); code != 200 || n.Replayed != 2 {
			t.Fatalf("replay of %v: %d %+v", replay, code, n)
		}
		waitDelivered(t, 10*time.Second, []string{ids[0], ids[2]}, up)
		if got := eventIDs(g.deadLetters(t, "route=in")); !slices.Equal(got, []string{ids[1]}) {
			t.Errorf("dead letters after replaying the others: %v, want %v", got, ids[1:2])
		}
		if up.delivered()[ids[1]] != 0 {
			t.Errorf("the dead letter that was not replayed was delivered")
		}
	})
}
