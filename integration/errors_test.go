package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/verifier"
)

// TestCheckOrderWithTwoDefects: a request that fails two checks of the
// README's table is answered by the earlier one; nothing of it is stored
// (the same eventId is accepted afterwards).
func TestCheckOrderWithTwoDefects(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	g.start(g.globals("") + forwardSite(g, "{env.HG_SECRET}", up.url("/in"),
		"events document.*\n\t\t\ttolerance 10m\n\t\t\tmax_body 4KiB", "backoff 100ms 500ms"))
	s := newSender(g, hookPath, secret)
	oversize := func(d *delivery) {
		d.Body = envelope(d.ID, typeOK, time.Now(), `,"pad":"`+strings.Repeat("x", 5000)+`"`)
	}
	retyped := func(d *delivery, typ string, ts time.Time) {
		d.Type, d.Body = typ, envelope(d.ID, typ, ts, "")
		d.Header.Set(verifier.EventHeader, typ)
	}
	accepted := s.event(typeOK)
	expectAnswer(t, "an accepted event", s.mustPost(t, accepted), 202, "accepted")

	cases := []struct {
		name   string
		mutate func(*delivery)
		code   int
		status string
	}{
		{"405 before 415: GET text/plain", func(d *delivery) { d.Method = http.MethodGet; d.Header.Set("Content-Type", "text/plain") }, 405, ""},
		{"415 before 413: text/plain, too large", func(d *delivery) { d.Header.Set("Content-Type", "text/plain"); oversize(d); s.sign(d) }, 415, ""},
		{"415 before 401: gzip, unsigned", func(d *delivery) { d.Header.Set("Content-Encoding", "gzip"); d.Header.Del(verifier.SignatureHeader) }, 415, ""},
		{"413 before 401: too large, unsigned", func(d *delivery) { oversize(d); d.Header.Del(verifier.SignatureHeader) }, 413, ""},
		{"400 before 401: signature repeated, stale", func(d *delivery) {
			retyped(d, typeOK, time.Now().Add(-2*time.Hour))
			s.sign(d)
			d.Header.Add(verifier.SignatureHeader, d.Header.Get(verifier.SignatureHeader))
		}, 400, ""},
		{"401 before 400: wrong signature, not JSON", func(d *delivery) { d.Body = []byte("{"); s.signWith(d, randomSecret(32)) }, 401, ""},
		{"400 before 401: event header differs, stale", func(d *delivery) {
			retyped(d, typeOK, time.Now().Add(-2*time.Hour))
			s.sign(d)
			d.Header.Set(verifier.EventHeader, "document.deleted")
		}, 400, ""},
		{"401 before 200: stale, not in events", func(d *delivery) { retyped(d, typeIgnored, time.Now().Add(-2*time.Hour)); s.sign(d) }, 401, ""},
		{"200 ignored before 409: not in events, an accepted id", func(d *delivery) {
			d.ID = accepted.ID
			retyped(d, typeIgnored, time.Now())
			s.sign(d)
		}, 200, "ignored"},
	}
	var ids []string
	for _, tc := range cases {
		d := s.event(typeOK)
		tc.mutate(d)
		expectAnswer(t, tc.name, s.mustPost(t, d), tc.code, tc.status)
		if d.ID != accepted.ID {
			ids = append(ids, d.ID)
		}
	}
	for _, id := range ids {
		expectAnswer(t, "a valid delivery of a refused request's event", s.mustPost(t, s.eventWithID(id, typeOK)), 202, "accepted")
	}
	waitDelivered(t, 15*time.Second, append(ids, accepted.ID), up)
	if reqs := up.byID()[accepted.ID]; len(reqs) != 1 || string(reqs[0].Body) != string(accepted.Body) {
		t.Errorf("the accepted event reached the upstream as %d requests, want its own body once", len(reqs))
	}
}

// accessLog reads a JSON access log file into its entries.
func accessLog(t *testing.T, path string) []logEntry {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []logEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e logEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// TestHandleErrorsAndPlaceholders: rejections are handler errors that
// handle_errors shapes, with {http.webhook.outcome} and, once the event is
// verified, {http.webhook.event_id}; the three {http.webhook.*}
// placeholders reach the access log through log_append.
func TestHandleErrorsAndPlaceholders(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	logFile := filepath.Join(g.dir, "access.log")
	g.start(g.globals("") + fmt.Sprintf(`http://%s {
	log {
		output file %s
		format filter {
			wrap json
			request>headers>X-Webhook-Signature delete
		}
	}
	handle %s {
		log_append webhook_outcome {http.webhook.outcome}
		log_append webhook_event_id {http.webhook.event_id}
		log_append webhook_event_type {http.webhook.event_type}
		webhook_ingest {
			name placeholders
			secret {env.HG_SECRET}
			events document.*
			forward %s {
				backoff 100ms 500ms
			}
		}
	}
	handle_errors {
		header X-Outcome {http.webhook.outcome}
		respond "shaped {http.error.status_code} {http.webhook.outcome} [{http.webhook.event_id}]" {http.error.status_code}
	}
}
`, g.site, logFile, hookPath, up.url("/in")))
	s := newSender(g, hookPath, secret)

	ok := s.event(typeOK)
	expectAnswer(t, "valid", s.mustPost(t, ok), 202, "accepted")
	expectAnswer(t, "again", s.mustPost(t, ok), 200, "duplicate")
	ignored := s.event(typeIgnored)
	expectAnswer(t, "ignored", s.mustPost(t, ignored), 200, "ignored")
	bad := s.event(typeOK)
	s.signWith(bad, randomSecret(32))
	conflict := s.eventWithID(ok.ID, typeOK)
	conflict.Body = envelope(ok.ID, typeOK, time.Now().Add(time.Second), `,"v":2`)
	s.sign(conflict)
	get := s.event(typeOK)
	get.Method = http.MethodGet
	for _, tt := range []struct {
		name    string
		d       *delivery
		code    int
		outcome string
		id      string
	}{
		// Before the signature is verified no event id is known, and Caddy
		// leaves an unset placeholder as it is.
		{"wrong signature", bad, 401, "signature_mismatch", "{http.webhook.event_id}"},
		{"conflict", conflict, 409, "conflict", ok.ID},
		{"GET", get, 405, "method", "{http.webhook.event_id}"},
	} {
		a := s.mustPost(t, tt.d)
		body := fmt.Sprintf("shaped %d %s [%s]", tt.code, tt.outcome, tt.id)
		if a.Code != tt.code || a.Body != body || a.Header.Get("X-Outcome") != tt.outcome {
			t.Errorf("%s: %d %q (X-Outcome %q), want handle_errors' %d %q (X-Outcome %q)",
				tt.name, a.Code, a.Body, a.Header.Get("X-Outcome"), tt.code, body, tt.outcome)
		}
	}

	// One access log line per request, with the placeholders' values.
	want := []struct {
		status               int
		outcome, id, evtType string
	}{
		{202, "accepted", ok.ID, typeOK},
		{200, "duplicate", ok.ID, typeOK},
		{200, "ignored", ignored.ID, typeIgnored},
		{401, "signature_mismatch", "", ""},
		{409, "conflict", ok.ID, typeOK},
		{405, "method", "", ""},
	}
	var got []logEntry
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		got = got[:0]
		for _, e := range accessLog(t, logFile) {
			if req, _ := e["request"].(map[string]any); req["uri"] == hookPath {
				got = append(got, e)
			}
		}
		return len(got) >= len(want), fmt.Sprintf("%d access log lines", len(got))
	})
	if len(got) != len(want) {
		t.Fatalf("%d access log lines, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		e := got[i]
		if req, _ := e["request"].(map[string]any); req != nil {
			if h, _ := req["headers"].(map[string]any); h[verifier.SignatureHeader] != nil {
				t.Errorf("access log line %d shows the signature despite the filter", i)
			}
		}
		if e.num("status") != w.status || e.str("webhook_outcome") != w.outcome || e.str("webhook_event_id") != w.id || e.str("webhook_event_type") != w.evtType {
			t.Errorf("access log line %d: status %d, outcome %q, event %q, type %q; want %d %q %q %q",
				i, e.num("status"), e.str("webhook_outcome"), e.str("webhook_event_id"), e.str("webhook_event_type"), w.status, w.outcome, w.id, w.evtType)
		}
	}
	waitDelivered(t, 10*time.Second, []string{ok.ID}, up)
}
