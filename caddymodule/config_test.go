package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hookgate/hookgate/spool"
	"github.com/hookgate/hookgate/verifier"
)

// testSecret is the signing secret of the handlers under test, given to
// them as {env.HG_UNIT_SECRET}.
const testSecret = "unit-test-secret-0123456789abcdef"

// running is a configuration loaded into this process's Caddy as `caddy
// run` loads one: the webhooks app on a spool in a temporary directory, and
// an HTTP server whose routes hold the handlers under test, provisioned by
// Caddy. Tests call the handlers directly with httptest.
type running struct {
	app    *App
	server *caddyhttp.Server
}

// loadConfig loads a configuration with webhooks (more members of the
// webhooks app's JSON, each with a leading comma; may be "") and one route
// per entry of routes (a JSON list of handlers). Caddy is stopped when the
// test ends. Loads replace each other: tests that use it do not run in
// parallel.
func loadConfig(t *testing.T, webhooks string, routes ...string) *running {
	t.Helper()
	return loadWebhooks(t, spoolJSON(t, webhooks), routes...)
}

// spoolJSON is the webhooks app of most tests: a spool in a temporary
// directory, with more members (each with a leading comma; may be "").
func spoolJSON(t *testing.T, more string) string {
	return fmt.Sprintf(`{"storage": %q, "min_free_disk": 1048576%s}`, t.TempDir(), more)
}

// loadWebhooks is loadConfig with the webhooks app's whole JSON object.
func loadWebhooks(t *testing.T, webhooks string, routes ...string) *running {
	t.Helper()
	if err := caddy.Load(configJSON(t, webhooks, "", routes...), true); err != nil {
		t.Fatalf("loading the configuration: %v", err)
	}
	t.Cleanup(func() { caddy.Stop() })
	ctx := caddy.ActiveContext()
	app, err := ctx.App("webhooks")
	if err != nil {
		t.Fatal(err)
	}
	httpApp, err := ctx.App("http")
	if err != nil {
		t.Fatal(err)
	}
	return &running{app: app.(*App), server: httpApp.(*caddyhttp.App).Servers["test"]}
}

// configJSON is loadWebhooks's configuration, with more apps (each with a
// leading comma) if apps is not "".
func configJSON(t *testing.T, webhooks, apps string, routes ...string) []byte {
	t.Setenv("HG_UNIT_SECRET", testSecret)
	var rs []string
	for _, r := range routes {
		rs = append(rs, `{"handle":`+r+`}`)
	}
	return fmt.Appendf(nil, `{
		"admin": {"disabled": true, "config": {"persist": false}},
		"apps": {
			"webhooks": %s,
			"http": {"servers": {"test": {
				"listen": ["127.0.0.1:0"],
				"automatic_https": {"disable": true},
				"routes": [%s]
			}}}%s
		}
	}`, webhooks, strings.Join(rs, ","), apps)
}

// handler returns the first handler of route i.
func (c *running) handler(i int) caddyhttp.MiddlewareHandler {
	return c.server.Routes[i].Handlers[0]
}

// spool is the configuration's open store.
func (c *running) spool() spool.Backend { return c.app.store }

// storeName is the name of the configuration's store.
func (c *running) storeName() string { return c.app.backend.StoreName() }

// result is what a handler did with one request: the response it wrote,
// the error it returned, and the request's placeholders.
type result struct {
	rec  *httptest.ResponseRecorder
	err  error
	repl *caddy.Replacer
}

// status is the status the client gets: a handler error's, else the
// written one.
func (r result) status() int {
	var he caddyhttp.HandlerError
	if errors.As(r.err, &he) {
		return he.StatusCode
	}
	return r.rec.Code
}

// placeholder returns a request placeholder's value, "" if unset.
func (r result) placeholder(name string) string {
	v, _ := r.repl.GetString(name)
	return v
}

func (r result) String() string {
	return fmt.Sprintf("status %d, body %q, error %v", r.status(), strings.TrimSpace(r.rec.Body.String()), r.err)
}

// serve runs h on req set up as Caddy's server sets up a request; next
// (nil: a handler that fails the test) is the handler after h.
func (c *running) serve(t *testing.T, h caddyhttp.MiddlewareHandler, req *http.Request, next caddyhttp.Handler) result {
	t.Helper()
	if next == nil {
		next = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			t.Error("the next handler was called")
			return nil
		})
	}
	res := result{rec: httptest.NewRecorder()}
	res.repl, res.err = c.serveTo(res.rec, h, req, next)
	return res
}

// serveTo runs h on req, answering on w, and returns the request's placeholders
// and the handler's error.
func (c *running) serveTo(w http.ResponseWriter, h caddyhttp.MiddlewareHandler, req *http.Request, next caddyhttp.Handler) (*caddy.Replacer, error) {
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, w, c.server)
	return repl, h.ServeHTTP(w, req, next)
}

// envelopeBody is a valid envelope.
func envelopeBody(id, typ string, ts time.Time) []byte {
	return fmt.Appendf(nil, `{"eventType":%q,"eventId":%q,"timestamp":%q,"payload":{"documentId":"doc_1"}}`,
		typ, id, ts.UTC().Format(time.RFC3339Nano))
}

// delivery is an inbound webhook request under construction.
type delivery struct {
	method  string
	header  http.Header
	body    []byte
	chunked bool // no Content-Length
}

// signedDelivery is a valid delivery of event id, signed with testSecret.
func signedDelivery(id, typ string) *delivery {
	d := &delivery{method: http.MethodPost, body: envelopeBody(id, typ, time.Now()), header: http.Header{}}
	d.header.Set("Content-Type", "application/json")
	d.header.Set(verifier.EventHeader, typ)
	d.sign()
	return d
}

// sign (re)signs the body with testSecret.
func (d *delivery) sign() {
	d.header.Set(verifier.SignatureHeader, verifier.Sign([]byte(testSecret), d.body))
}

func (d *delivery) request() *http.Request {
	r := httptest.NewRequest(d.method, "http://gateway.test/hooks", bytes.NewReader(d.body))
	r.Header = d.header.Clone()
	if d.chunked {
		r.ContentLength = -1
	}
	return r
}

// usage is the spool's item and byte count, to compare before and after
// a request that must leave it untouched.
type usage struct{ items, bytes int64 }

func usageOf(s spool.Backend) usage {
	items, bytes := s.Usage()
	return usage{items, bytes}
}

// expectUntouched fails if the spool's usage changed or it knows event id
// on route.
func expectUntouched(t *testing.T, s spool.Backend, before usage, route, id string) {
	t.Helper()
	if after := usageOf(s); after != before {
		t.Errorf("the spool changed: %+v, before %+v", after, before)
	}
	if st, err := s.Lookup(context.Background(), route, id); !errors.Is(err, spool.ErrNotFound) {
		t.Errorf("the spool knows %s on route %s: %+v, %v", id, route, st, err)
	}
}
