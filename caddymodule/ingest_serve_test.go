package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hookgate/hookgate/spool"
	"github.com/hookgate/hookgate/verifier"
)

// ingestRoute is a forwarding webhook_ingest route named name, with JSON
// members more (each with a leading comma). Its upstream refuses
// connections: the tests pause the route or never let an attempt matter.
func ingestRoute(name, more string) string {
	return fmt.Sprintf(`[{"handler": "webhook_ingest", "name": %q, "secrets": ["{env.HG_UNIT_SECRET}"],
		"events": ["document.*"], "tolerance": "10m", "dedupe_window": "1h", "max_body": 4096,
		"forward": {"url": "http://127.0.0.1:9/in", "backoff_min": "1h", "backoff_max": "1h"}%s}]`, name, more)
}

// answerBody decodes a JSON answer of webhook_ingest.
func answerBody(t *testing.T, res result) (status, eventID string) {
	t.Helper()
	var a struct{ Status, EventID string }
	if err := json.Unmarshal(res.rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("answer %s: %v", res, err)
	}
	return a.Status, a.EventID
}

// TestIngestChecksInOrder runs Ingest.ServeHTTP (and readRequest through it)
// on requests with one or two defects: the first failing check of the
// README's table answers, its reason is the outcome placeholder, and the
// spool is left untouched (no item, no dedupe record: the same event is
// accepted afterwards).
func TestIngestChecksInOrder(t *testing.T) {
	c := loadConfig(t, "", ingestRoute("in", ""))
	h, sp := c.handler(0), c.spool()
	if err := sp.Pause(context.Background(), "in"); err != nil { // no attempt changes the spool meanwhile
		t.Fatal(err)
	}
	big := strings.Repeat("x", 5000) // over max_body 4096
	oversize := func(d *delivery) {
		d.body = fmt.Appendf(nil, `{"eventType":"document.processed","eventId":"x","timestamp":"%s","pad":"%s"}`,
			time.Now().UTC().Format(time.RFC3339), big)
	}
	retime := func(d *delivery, ts time.Time) {
		var env map[string]any
		json.Unmarshal(d.body, &env)
		d.body = envelopeBody(env["eventId"].(string), env["eventType"].(string), ts)
	}
	cases := []struct {
		name    string
		mutate  func(*delivery)
		code    int
		outcome string // "" when not pinned here
	}{
		{"GET", func(d *delivery) { d.method = http.MethodGet }, 405, "method"},
		{"GET with text/plain", func(d *delivery) { d.method = http.MethodGet; d.header.Set("Content-Type", "text/plain") }, 405, "method"},
		{"text/plain", func(d *delivery) { d.header.Set("Content-Type", "text/plain") }, 415, "content_type"},
		{"no Content-Type", func(d *delivery) { d.header.Del("Content-Type") }, 415, "content_type"},
		{"text/plain and too large", func(d *delivery) { d.header.Set("Content-Type", "text/plain"); oversize(d) }, 415, "content_type"},
		{"gzip", func(d *delivery) { d.header.Set("Content-Encoding", "gzip") }, 415, "content_encoding"},
		{"gzip and unsigned", func(d *delivery) { d.header.Set("Content-Encoding", "gzip"); d.header.Del(verifier.SignatureHeader) }, 415, "content_encoding"},
		{"too large, signed", func(d *delivery) { oversize(d); d.sign() }, 413, "too_large"},
		{"too large and unsigned", func(d *delivery) { oversize(d); d.header.Del(verifier.SignatureHeader) }, 413, "too_large"},
		{"too large, chunked", func(d *delivery) { oversize(d); d.sign(); d.chunked = true }, 413, ""},
		{"signature repeated", func(d *delivery) {
			d.header[verifier.SignatureHeader] = append(d.header[verifier.SignatureHeader], d.header.Get(verifier.SignatureHeader))
		}, 400, "signature_repeated"},
		{"signature missing", func(d *delivery) { d.header.Del(verifier.SignatureHeader) }, 401, "signature_missing"},
		{"signature malformed", func(d *delivery) { d.header.Set(verifier.SignatureHeader, "sha256=zz") }, 401, "signature_malformed"},
		{"signature mismatch and not JSON", func(d *delivery) { d.body = []byte("not json") }, 401, "signature_mismatch"},
		{"not JSON and event header differs", func(d *delivery) {
			d.body = []byte(`{"eventType":"document.processed"`)
			d.header.Set(verifier.EventHeader, "document.deleted")
			d.sign()
		}, 400, "envelope_invalid"},
		{"event header differs and stale", func(d *delivery) {
			retime(d, time.Now().Add(-2*time.Hour))
			d.header.Set(verifier.EventHeader, "document.deleted")
			d.sign()
		}, 400, "event_header_mismatch"},
		{"event header missing", func(d *delivery) { d.header.Del(verifier.EventHeader) }, 400, "event_header_missing"},
		{"stale and not in events", func(d *delivery) {
			var env map[string]any
			json.Unmarshal(d.body, &env)
			d.body = envelopeBody(env["eventId"].(string), "batch.completed", time.Now().Add(-2*time.Hour))
			d.header.Set(verifier.EventHeader, "batch.completed")
			d.sign()
		}, 401, "timestamp_stale"},
		{"future", func(d *delivery) { retime(d, time.Now().Add(time.Hour)); d.sign() }, 401, "timestamp_future"},
		{"not in events", func(d *delivery) {
			var env map[string]any
			json.Unmarshal(d.body, &env)
			d.body = envelopeBody(env["eventId"].(string), "batch.completed", time.Now())
			d.header.Set(verifier.EventHeader, "batch.completed")
			d.sign()
		}, 200, "ignored"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("evt_order_%02d", i)
			d := signedDelivery(id, "document.processed")
			tc.mutate(d)
			before := usageOf(sp)
			res := c.serve(t, h, d.request(), nil)
			if res.status() != tc.code {
				t.Fatalf("%s, want %d", res, tc.code)
			}
			if tc.outcome != "" && res.placeholder("http.webhook.outcome") != tc.outcome {
				t.Errorf("outcome %q, want %q", res.placeholder("http.webhook.outcome"), tc.outcome)
			}
			if tc.code >= 400 {
				var he caddyhttp.HandlerError
				if !errors.As(res.err, &he) || res.rec.Body.Len() != 0 {
					t.Errorf("a rejection must be a handler error (for handle_errors), not a written answer: %s", res)
				}
			}
			if tc.code == 405 && res.rec.Header().Get("Allow") != http.MethodPost {
				t.Errorf("405 without Allow: POST")
			}
			expectUntouched(t, sp, before, "in", id)
			// Nothing was remembered: the event itself is accepted now.
			res = c.serve(t, h, signedDelivery(id, "document.processed").request(), nil)
			if st, _ := answerBody(t, res); res.status() != 202 || st != "accepted" {
				t.Fatalf("the valid event afterwards: %s, want 202 accepted", res)
			}
		})
	}
}

// TestIngestAnswers: accepted, duplicate and conflict, with their
// placeholders; a conflict stores nothing.
func TestIngestAnswers(t *testing.T) {
	c := loadConfig(t, "", ingestRoute("in", ""))
	h, sp := c.handler(0), c.spool()
	if err := sp.Pause(context.Background(), "in"); err != nil {
		t.Fatal(err)
	}
	d := signedDelivery("evt_answers_1", "document.processed")
	before := usageOf(sp)
	res := c.serve(t, h, d.request(), nil)
	if st, id := answerBody(t, res); res.status() != 202 || st != "accepted" || id != "evt_answers_1" {
		t.Fatalf("first delivery: %s", res)
	}
	for name, want := range map[string]string{"event_id": "evt_answers_1", "event_type": "document.processed", "outcome": "accepted"} {
		if got := res.placeholder("http.webhook." + name); got != want {
			t.Errorf("{http.webhook.%s} = %q, want %q", name, got, want)
		}
	}
	after := usageOf(sp)
	if after.items != before.items+1 || after.bytes <= before.bytes {
		t.Fatalf("spool usage %+v after an accepted event, before %+v", after, before)
	}
	st, err := sp.Lookup(context.Background(), "in", "evt_answers_1")
	if err != nil || st.State != spool.StatePending {
		t.Fatalf("the accepted event: %+v, %v", st, err)
	}

	res = c.serve(t, h, d.request(), nil)
	if st, _ := answerBody(t, res); res.status() != 200 || st != "duplicate" || res.placeholder("http.webhook.outcome") != "duplicate" {
		t.Fatalf("the same delivery again: %s", res)
	}
	other := signedDelivery("evt_answers_1", "document.processed")
	other.body = envelopeBody("evt_answers_1", "document.processed", time.Now().Add(time.Minute))
	other.sign()
	res = c.serve(t, h, other.request(), nil)
	if res.status() != 409 || res.placeholder("http.webhook.outcome") != "conflict" {
		t.Fatalf("the same id with another body: %s", res)
	}
	if u := usageOf(sp); u != after {
		t.Fatalf("a conflict changed the spool: %+v, before %+v", u, after)
	}
}

// TestIngestReadTimeout: a body slower than read_timeout gets 408 over a
// real connection (the deadline is the connection's), and nothing is stored.
func TestIngestReadTimeout(t *testing.T) {
	c := loadConfig(t, "", ingestRoute("slow", `, "read_timeout": "300ms"`))
	h, sp := c.handler(0), c.spool()
	outcome := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repl, err := c.serveTo(w, h, r, nil)
		var he caddyhttp.HandlerError
		if errors.As(err, &he) {
			w.WriteHeader(he.StatusCode)
		}
		v, _ := repl.GetString("http.webhook.outcome")
		outcome <- v
	}))
	defer srv.Close()
	before := usageOf(sp)
	d := signedDelivery("evt_slow_1", "document.processed")
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /hooks HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: %d\r\n", len(d.body))
	for k := range d.header {
		fmt.Fprintf(conn, "%s: %s\r\n", k, d.header.Get(k))
	}
	fmt.Fprintf(conn, "\r\n%s", d.body[:10])
	o := <-outcome // the handler gave up on the body
	// The rest arrives too late. (Go's server reads what is left of a small
	// body before it writes the answer.)
	conn.Write(d.body[10:])
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a late body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 408 || o == "" {
		t.Fatalf("late body: %d, outcome %q; want 408 with an outcome", resp.StatusCode, o)
	}
	expectUntouched(t, sp, before, "slow", "evt_slow_1")
}

// TestIngestSpoolFull: past max_items the answer is 503 with Retry-After,
// written by the handler itself (Caddy would log a 5xx handler error with
// the request's headers), and nothing is stored. The refusals are logged
// once, not once per request.
func TestIngestSpoolFull(t *testing.T) {
	c := loadConfig(t, `, "max_items": 1`, ingestRoute("in", ""))
	h, sp := c.handler(0), c.spool()
	core, logs := observer.New(zap.WarnLevel)
	h.(*Ingest).refusals = refusalLogger(zap.New(core))
	if err := sp.Pause(context.Background(), "in"); err != nil {
		t.Fatal(err)
	}
	if res := c.serve(t, h, signedDelivery("evt_full_1", "document.processed").request(), nil); res.status() != 202 {
		t.Fatalf("first event: %s", res)
	}
	before := usageOf(sp)
	res := c.serve(t, h, signedDelivery("evt_full_2", "document.processed").request(), nil)
	if st, _ := answerBody(t, res); res.err != nil || res.status() != 503 || st != "unavailable" || res.rec.Header().Get("Retry-After") == "" {
		t.Fatalf("over max_items: %s, Retry-After %q; want a written 503 unavailable with Retry-After", res, res.rec.Header().Get("Retry-After"))
	}
	if res.placeholder("http.webhook.outcome") != "unavailable" {
		t.Errorf("outcome %q, want unavailable", res.placeholder("http.webhook.outcome"))
	}
	expectUntouched(t, sp, before, "in", "evt_full_2")
	for i := range 3 {
		if res := c.serve(t, h, signedDelivery(fmt.Sprint("evt_full_more_", i), "document.processed").request(), nil); res.status() != 503 {
			t.Fatalf("over max_items again: %s", res)
		}
	}
	if n := logs.FilterMessageSnippet("refusing events").Len(); n != 1 {
		t.Errorf("%d refusals logged for 4 refused events, want 1", n)
	}
}

// TestRecordBudgetFull: once the dedupe records fill max_record_bytes, a
// new event is answered 503 with Retry-After and nothing is stored, on a
// spooling route and on a verify-only one, which does not hand it on;
// events already seen are still answered as duplicates.
func TestRecordBudgetFull(t *testing.T) {
	c := loadConfig(t, "", ingestRoute("in", ""), verifyOnlyRoute)
	sp := c.spool()
	handlers := map[string]caddyhttp.MiddlewareHandler{"in": c.handler(0), "vo": c.handler(1)}
	ok := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
	seen := map[string]*delivery{"in": signedDelivery("evt_budget_in", "document.processed"), "vo": signedDelivery("evt_budget_vo", "document.processed")}
	for route, d := range seen {
		if res := c.serve(t, handlers[route], d.request(), ok); res.status() != 202 && res.status() != 200 {
			t.Fatalf("%s, before the budget is used up: %s", route, res)
		}
	}
	l := c.app.limits
	l.MaxRecordBytes = 1 // what a reload to a lower max_record_bytes applies
	sp.Reconfigure(l)
	for _, tt := range []struct {
		route  string
		new    bool
		code   int
		answer string
	}{
		{"in", false, 200, "duplicate"},
		{"in", true, 503, "unavailable"},
		{"vo", false, 200, "duplicate"},
		{"vo", true, 503, "unavailable"},
	} {
		t.Run(fmt.Sprintf("%s, new %v", tt.route, tt.new), func(t *testing.T) {
			d, id := seen[tt.route], "evt_budget_"+tt.route+"_new"
			if tt.new {
				d = signedDelivery(id, "document.processed")
			}
			before, records := usageOf(sp), sp.Records().Dedupe
			res := c.serve(t, handlers[tt.route], d.request(), nil) // the next handler is never called
			if st, _ := answerBody(t, res); res.err != nil || res.status() != tt.code || st != tt.answer {
				t.Fatalf("%s, want %d %s", res, tt.code, tt.answer)
			}
			if tt.code == 503 && res.rec.Header().Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After")
			}
			if after := sp.Records().Dedupe; after != records {
				t.Errorf("dedupe records %+v, before %+v", after, records)
			}
			if tt.new {
				expectUntouched(t, sp, before, tt.route, id)
			}
		})
	}
}

// TestIngestWhileStopping: a request that reaches a handler of a
// configuration whose spool has closed (Caddy stopping) gets 503 with
// Retry-After, not a 500.
func TestIngestWhileStopping(t *testing.T) {
	c := loadConfig(t, "", ingestRoute("in", ""))
	h := c.handler(0)
	if err := caddy.Stop(); err != nil { // the last configuration: the spool closes
		t.Fatal(err)
	}
	res := c.serve(t, h, signedDelivery("evt_stopping_1", "document.processed").request(), nil)
	if res.err != nil || res.status() != 503 || res.rec.Header().Get("Retry-After") == "" {
		t.Fatalf("after the spool closed: %s, Retry-After %q; want 503 with Retry-After", res, res.rec.Header().Get("Retry-After"))
	}
}

// TestSpoolFailureAnswers: the answer to each kind of failed write. A
// failed write other than full or closed cannot be caused on a real spool
// without faking it, so the mapping itself is checked here.
func TestSpoolFailureAnswers(t *testing.T) {
	for _, tt := range []struct {
		name       string
		err        error
		code       int
		retryAfter string
	}{
		{"full", &spool.FullError{}, 503, "30"},
		{"full, wrapped", fmt.Errorf("enqueue: %w", spool.ErrFull), 503, "30"},
		{"not started", errNotStarted, 503, "5"},
		{"closed", spool.ErrClosed, 503, "5"},
		{"too large", spool.ErrTooLarge, 500, ""},
		{"sender gone", context.Canceled, 500, ""},
		{"disk error", errors.New("write /spool/000001.vlog: input/output error"), 500, ""},
	} {
		code, retryAfter, msg := spoolFailure(tt.err)
		if code != tt.code || retryAfter != tt.retryAfter || msg == "" || strings.Contains(msg, "/spool/") {
			t.Errorf("%s: %d, Retry-After %q, %q; want %d, %q and a message that does not show the error", tt.name, code, retryAfter, msg, tt.code, tt.retryAfter)
		}
	}
}

// verifyOnlyRoute is a verify-only webhook_ingest route named vo.
const verifyOnlyRoute = `[{"handler": "webhook_ingest", "name": "vo", "secrets": ["{env.HG_UNIT_SECRET}"],
	"tolerance": "10m", "dedupe_window": "1h"}]`

// TestHandOn: verify-only mode hands a verified request, body replayed, to
// the next handler and remembers the event only after a 2xx; the next
// handler's failures are not remembered; a concurrent delivery of the same
// event gets 409 with Retry-After while the first is being handled.
func TestHandOn(t *testing.T) {
	c := loadConfig(t, "", verifyOnlyRoute)
	h, sp := c.handler(0), c.spool()

	// answering returns a next handler that checks the replayed request and
	// answers code, or returns err.
	answering := func(t *testing.T, d *delivery, code int, err error) (caddyhttp.Handler, *int) {
		calls := new(int)
		return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			*calls++
			body, rerr := io.ReadAll(r.Body)
			if rerr != nil || string(body) != string(d.body) || r.ContentLength != int64(len(d.body)) {
				t.Errorf("the next handler got %q (length %d, %v), want the original body", body, r.ContentLength, rerr)
			}
			if err != nil {
				return err
			}
			w.WriteHeader(code)
			fmt.Fprint(w, "from next")
			return nil
		}), calls
	}

	for _, tt := range []struct {
		name     string
		code     int
		err      error
		remember bool
	}{
		{"201", 201, nil, true},
		{"204", 204, nil, true},
		{"502", 502, nil, false},
		{"404", 404, nil, false},
		{"handler error", 0, caddyhttp.Error(http.StatusBadGateway, errors.New("upstream down")), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := signedDelivery("evt_handon_"+tt.name[:3], "document.processed")
			next, calls := answering(t, d, tt.code, tt.err)
			res := c.serve(t, h, d.request(), next)
			if *calls != 1 {
				t.Fatalf("the next handler ran %d times", *calls)
			}
			if tt.err != nil {
				if !errors.Is(res.err, tt.err) {
					t.Fatalf("the next handler's error was not passed on: %s", res)
				}
			} else if res.err != nil || res.rec.Code != tt.code || res.rec.Body.String() != "from next" {
				t.Fatalf("%s, want the next handler's answer %d", res, tt.code)
			}
			next, _ = answering(t, d, 200, nil)
			again := c.serve(t, h, d.request(), next)
			if tt.remember {
				if s, _ := answerBody(t, again); again.status() != 200 || s != "duplicate" {
					t.Fatalf("the same event after a %s: %s, want 200 duplicate", tt.name, again)
				}
			} else if again.status() != 200 || again.rec.Body.String() != "from next" {
				t.Fatalf("the same event after a %s was not handed on again: %s", tt.name, again)
			}
		})
	}

	t.Run("rejected requests reach neither the next handler nor the spool", func(t *testing.T) {
		d := signedDelivery("evt_handon_bad", "document.processed")
		d.header.Set(verifier.SignatureHeader, verifier.Sign([]byte("another-secret-0123456789"), d.body))
		before := usageOf(sp)
		if res := c.serve(t, h, d.request(), nil); res.status() != 401 {
			t.Fatalf("%s, want 401", res)
		}
		expectUntouched(t, sp, before, "vo", "evt_handon_bad")
	})

	t.Run("concurrent delivery of the same event", func(t *testing.T) {
		d := signedDelivery("evt_handon_busy", "document.processed")
		entered, release := make(chan struct{}), make(chan struct{})
		slow := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			close(entered)
			<-release
			w.WriteHeader(200)
			return nil
		})
		var wg sync.WaitGroup
		var first result
		wg.Add(1)
		go func() {
			defer wg.Done()
			first = c.serve(t, h, d.request(), slow)
		}()
		<-entered
		res := c.serve(t, h, d.request(), nil)
		if res.status() != 409 || res.rec.Header().Get("Retry-After") != "1" || res.placeholder("http.webhook.outcome") != "in_progress" {
			t.Errorf("while the first is handed on: %s, Retry-After %q", res, res.rec.Header().Get("Retry-After"))
		}
		close(release)
		wg.Wait()
		if first.err != nil || first.rec.Code != 200 {
			t.Fatalf("the first delivery: %s", first)
		}
		if res := c.serve(t, h, d.request(), nil); res.status() != 200 {
			t.Fatalf("after the first: %s, want 200 duplicate", res)
		}
	})

	t.Run("same id, other body", func(t *testing.T) {
		d := signedDelivery("evt_handon_conflict", "document.processed")
		next, _ := answering(t, d, 200, nil)
		if res := c.serve(t, h, d.request(), next); res.rec.Code != 200 {
			t.Fatalf("first: %s", res)
		}
		other := signedDelivery("evt_handon_conflict", "document.processed")
		other.body = envelopeBody("evt_handon_conflict", "document.processed", time.Now().Add(time.Minute))
		other.sign()
		if res := c.serve(t, h, other.request(), nil); res.status() != 409 {
			t.Fatalf("other body: %s, want 409", res)
		}
	})
}
