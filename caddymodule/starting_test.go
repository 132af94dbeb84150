package caddymodule

import (
	"context"
	"errors"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// gateApp is an app whose Start waits for the test: the apps of its
// configuration that Caddy starts after it wait too, as they would behind
// an app that is slow to start. Start hands the test the configuration's
// webhooks and http (if any) apps, then returns what the test sends on
// gate.release: an error fails the configuration, like an http app whose
// port is taken.
type gateApp struct {
	webhooks *App
	http     *caddyhttp.App
}

// gate connects gateApp to the running test.
var gate struct {
	started chan *gateApp
	release chan error
}

func (gateApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "hookgate_test_gate", New: func() caddy.Module { return new(gateApp) }}
}

func (g *gateApp) Provision(ctx caddy.Context) error {
	w, err := ctx.App("webhooks")
	if err != nil {
		return err
	}
	g.webhooks = w.(*App)
	if h, err := ctx.AppIfConfigured("http"); err == nil {
		g.http = h.(*caddyhttp.App)
	}
	return nil
}

func (g *gateApp) Start() error {
	gate.started <- g
	return <-gate.release
}

func (*gateApp) Stop() error { return nil }

func init() { caddy.RegisterModule(new(gateApp)) }

// webhooksStarted reports whether the webhooks app started before the gate.
func (g *gateApp) webhooksStarted() bool {
	select {
	case <-g.webhooks.ready:
		return true
	default:
		return false
	}
}

// loadBehindGate loads a configuration with the gate and one webhook_ingest
// route, again until Caddy starts the gate before the webhooks app (it
// starts apps in map order), and returns that configuration, provisioned
// but held at the gate, and where Load's result will arrive. The test then
// sends the gate's Start its result.
func loadBehindGate(t *testing.T) (*running, chan error) {
	t.Helper()
	gate.started, gate.release = make(chan *gateApp), make(chan error)
	for range 100 {
		loaded := make(chan error, 1)
		go func() {
			loaded <- caddy.Load(configJSON(t, spoolJSON(t, ""), `, "hookgate_test_gate": {}`, ingestRoute("in", "")), true)
		}()
		g := <-gate.started
		if !g.webhooksStarted() {
			t.Cleanup(func() { caddy.Stop() })
			return &running{app: g.webhooks, server: g.http.Servers["test"]}, loaded
		}
		gate.release <- nil // the webhooks app went first this time: try again
		if err := <-loaded; err != nil {
			t.Fatal(err)
		}
		caddy.Stop()
	}
	t.Fatal("Caddy started the webhooks app first in 100 loads")
	return nil, nil
}

// TestIngestWhileStarting: a request that arrives before the webhooks app
// has started waits for it and is stored; if the configuration then fails
// to start, it gets 503 with Retry-After.
func TestIngestWhileStarting(t *testing.T) {
	t.Run("the configuration starts", func(t *testing.T) {
		c, loaded := loadBehindGate(t)
		answered := make(chan result, 1)
		go func() {
			answered <- c.serve(t, c.handler(0), signedDelivery("evt_starting_1", "document.processed").request(), nil)
		}()
		gate.release <- nil
		if err := <-loaded; err != nil {
			t.Fatal(err)
		}
		res := <-answered
		if st, _ := answerBody(t, res); res.status() != 202 || st != "accepted" {
			t.Fatalf("a request that arrived while starting: %s, want 202", res)
		}
		if _, err := c.spool().Lookup(context.Background(), "in", "evt_starting_1"); err != nil {
			t.Fatalf("not stored: %v", err)
		}
	})
	t.Run("the configuration fails to start", func(t *testing.T) {
		c, loaded := loadBehindGate(t)
		answered := make(chan result, 1)
		go func() {
			answered <- c.serve(t, c.handler(0), signedDelivery("evt_starting_2", "document.processed").request(), nil)
		}()
		gate.release <- errors.New("cannot start")
		if err := <-loaded; err == nil {
			t.Fatal("the configuration loaded")
		}
		res := <-answered
		if res.err != nil || res.status() != 503 || res.rec.Header().Get("Retry-After") == "" {
			t.Fatalf("a request that arrived while starting a configuration that failed: %s, Retry-After %q; want 503 with Retry-After",
				res, res.rec.Header().Get("Retry-After"))
		}
	})
}
