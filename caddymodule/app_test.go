package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/hookgate/hookgate/spool"
)

// TestFailedReloadKeepsTheRunningLimits: the webhooks app of a configuration
// that fails to start may have started before the app that failed; its
// limits must never reach the shared spool, which the running configuration
// keeps using.
func TestFailedReloadKeepsTheRunningLimits(t *testing.T) {
	dir := t.TempDir()
	config := func(maxItems int, extra string) []byte {
		return fmt.Appendf(nil, `{"admin":{"disabled":true,"config":{"persist":false}},"apps":{"webhooks":{"storage":%q,"max_items":%d,"min_free_disk":1048576}%s}}`,
			dir, maxItems, extra)
	}
	if err := caddy.Load(config(100, ""), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
	// Caddy starts apps in map order: load until the webhooks app starts
	// before the gate, which then fails the configuration.
	gate.started, gate.release = make(chan *gateApp), make(chan error)
	for tries := 0; ; tries++ {
		if tries == 100 {
			t.Fatal("Caddy never started the webhooks app before the gate in 100 loads")
		}
		loaded := make(chan error, 1)
		go func() { loaded <- caddy.Load(config(1, `,"hookgate_test_gate":{}`), true) }()
		g := <-gate.started
		webhooksFirst := g.webhooksStarted()
		gate.release <- errors.New("cannot start")
		if err := <-loaded; err == nil {
			t.Fatal("a configuration with an app that cannot start loaded")
		}
		if webhooksFirst {
			break
		}
	}
	name, err := spool.NameOf(dir)
	if err != nil {
		t.Fatal(err)
	}
	val, _, err := stores.LoadOrNew(name, func() (caddy.Destructor, error) { return nil, errors.New("the spool is not open") })
	if err != nil {
		t.Fatal(err)
	}
	defer stores.Delete(name)
	sp := val.(storeHandle).Backend
	for i := range 3 {
		if _, err := sp.Enqueue(context.Background(), spool.Entry{Route: "r", EventID: fmt.Sprint("evt_", i), Body: []byte("{}")}); err != nil {
			t.Fatalf("event %d refused under the running configuration's max_items 100: %v", i, err)
		}
	}
}

// TestRouteNamesCountUses: a reloaded configuration adds its verify-only
// routes before the old one removes the same names; they stay listed until
// the last use goes, and a remove function counts once.
func TestRouteNamesCountUses(t *testing.T) {
	rn := &routeNames{uses: map[string]map[string]int{}}
	sp := "badger:/srv/a"
	removeOld := rn.add(sp, "b")
	rn.add(sp, "a")
	removeNew := rn.add(sp, "b")
	removeOld()
	removeOld()
	if got := rn.list(sp); !reflect.DeepEqual(got, []string{"a", "b"}) || !rn.has(sp, "b") {
		t.Fatalf("after the old configuration's cleanup: %v", got)
	}
	removeNew()
	if got := rn.list(sp); !reflect.DeepEqual(got, []string{"a"}) || rn.has(sp, "b") || rn.has("badger:/srv/b", "a") {
		t.Fatalf("after the last use of b: %v", got)
	}
}

// TestMaxBodyBelowTheUnverifiedBudget: a handler whose max_body could never
// be read within max_unverified_bytes is refused when the config loads.
func TestMaxBodyBelowTheUnverifiedBudget(t *testing.T) {
	config := func(handler string) []byte {
		return fmt.Appendf(nil, `{"admin":{"disabled":true},"apps":{
			"webhooks":{"storage":%q,"max_unverified_bytes":1048576},
			"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[%s]}]}}}}}`, t.TempDir(), handler)
	}
	for _, tt := range []struct {
		handler string
		ok      bool
	}{
		{`{"handler":"webhook_ingest","name":"a","insecure_no_signature":true,"max_body":1048575}`, true},
		{`{"handler":"webhook_ingest","name":"a","insecure_no_signature":true,"max_body":1048576}`, false},
		{`{"handler":"webhook_ingest","name":"a","insecure_no_signature":true}`, false}, // the default 1 MiB
		{`{"handler":"webhook_publish","organization":"o","project":"p","max_body":2097152}`, false},
	} {
		var cfg caddy.Config
		if err := json.Unmarshal(config(tt.handler), &cfg); err != nil {
			t.Fatal(err)
		}
		err := caddy.Validate(&cfg)
		if (err == nil) != tt.ok || (err != nil && !strings.Contains(err.Error(), "max_unverified_bytes")) {
			t.Errorf("%s: %v", tt.handler, err)
		}
	}
}

// TestIngestJSONHeldToTheCaddyfileRules: a configuration written in JSON,
// which never passes the Caddyfile parser, is refused at load for what the
// parser refuses (Ingest.validate serves both).
func TestIngestJSONHeldToTheCaddyfileRules(t *testing.T) {
	for _, tt := range []struct {
		name, handler, want string
	}{
		{"no secret", `{"handler":"webhook_ingest","name":"a"}`, "a secret is required"},
		{"secret and insecure", `{"handler":"webhook_ingest","name":"a","secrets":["{env.HG_UNIT_SECRET}"],"insecure_no_signature":true}`, "exclude each other"},
		{"verify-only without a name", `{"handler":"webhook_ingest","insecure_no_signature":true}`, "name is required"},
		{"dedupe window under the tolerance", `{"handler":"webhook_ingest","name":"a","insecure_no_signature":true,"dedupe_window":60000000000}`, "dedupe_window"},
		{"forward not http", `{"handler":"webhook_ingest","name":"a","insecure_no_signature":true,"forward":{"url":"ftp://x"}}`, "not an http(s) URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := caddy.Load(configJSON(t, spoolJSON(t, ""), "", "["+tt.handler+"]"), true)
			if err == nil {
				caddy.Stop()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want one about %q", err, tt.want)
			}
		})
	}
}
