package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/hookgate/hookgate/internal/natstest"
	"github.com/hookgate/hookgate/natsspool"

	"github.com/caddyserver/caddy/v2"

	"github.com/hookgate/hookgate/spool"
)

// wrappedBackend is a second backend, as a new backend's glue file makes
// one: its store is a Badger spool behind the spool.Backend interface only,
// so that nothing in the app can reach the *spool.Spool.
type wrappedBackend struct{ BadgerBackend }

// wrappedStore hides the spool's own type.
type wrappedStore struct{ spool.Backend }

func (*wrappedBackend) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "webhooks.backends.test_wrapped", New: func() caddy.Module { return new(wrappedBackend) }}
}

func (b *wrappedBackend) OpenStore(c StoreConfig) (spool.Backend, error) {
	s, err := b.BadgerBackend.OpenStore(c)
	if err != nil {
		return nil, err
	}
	return wrappedStore{s}, nil
}

// ReconfigureStore hides Badger's: the wrapped backend has no settings of
// its own.
func (*wrappedBackend) ReconfigureStore(spool.Backend) {}

func init() { caddy.RegisterModule(new(wrappedBackend)) }

// TestBackendConfig: the backend module chosen by the app's JSON, and the
// configurations refused.
func TestBackendConfig(t *testing.T) {
	dir := t.TempDir()
	name, err := spool.NameOf(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, webhooks, wantErr string
	}{
		{"shorthand", fmt.Sprintf(`{"storage": %q, "min_free_disk": 1048576}`, dir), ""},
		{"badger backend", fmt.Sprintf(`{"backend": {"backend": "badger", "storage": %q, "min_free_disk": 1048576}}`, dir), ""},
		{"another backend", fmt.Sprintf(`{"backend": {"backend": "test_wrapped", "storage": %q, "min_free_disk": 1048576}}`, dir), ""},
		{"storage beside a backend", fmt.Sprintf(`{"storage": %q, "backend": {"backend": "badger"}}`, dir), "shorthand"},
		{"min_free_disk beside a backend", `{"min_free_disk": 1048576, "backend": {"backend": "test_wrapped"}}`, "shorthand"},
		{"unknown backend", `{"backend": {"backend": "etcd"}}`, "unknown module: webhooks.backends.etcd"},
		{"no backend name", `{"backend": {"storage": "/tmp/x"}}`, "module name not specified with key 'backend'"},
		{"negative floor", fmt.Sprintf(`{"backend": {"backend": "badger", "storage": %q, "min_free_disk": -1}}`, dir), "min_free_disk must not be negative"},
		{"negative floor, shorthand", fmt.Sprintf(`{"storage": %q, "min_free_disk": -1}`, dir), "min_free_disk must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			loadStore(t, tt.webhooks, tt.wantErr, name)
		})
	}
}

// loadStore loads a config whose webhooks app is webhooks and checks that it
// fails with wantErr, or opens the store named name.
func loadStore(t *testing.T, webhooks, wantErr, name string) {
	t.Helper()
	err := caddy.Load(configJSON(t, webhooks, "", ingestRoute("in", "")), true)
	t.Cleanup(func() { caddy.Stop() })
	if checkError(t, err, wantErr) {
		return
	}
	app, err := caddy.ActiveContext().App("webhooks")
	if err != nil {
		t.Fatal(err)
	}
	if got := app.(*App).store.Name(); got != name {
		t.Fatalf("store %s, want %s", got, name)
	}
}

// TestBackendSpellingsShareOneStore: a reload that names the same store
// another way (the backend block instead of the shorthand, the directory
// through a symbolic link) shares the open store, as a reload with the same
// directory does, instead of failing to open it a second time.
func TestBackendSpellingsShareOneStore(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	c := loadWebhooks(t, fmt.Sprintf(`{"storage": %q, "min_free_disk": 1048576}`, dir), ingestRoute("in", ""))
	first := c.spool()
	if res := c.serve(t, c.handler(0), signedDelivery("evt_shared_1", "document.processed").request(), nil); res.status() != 202 {
		t.Fatalf("%s", res)
	}
	for _, webhooks := range []string{
		fmt.Sprintf(`{"backend": {"backend": "badger", "storage": %q, "min_free_disk": 1048576}}`, dir),
		fmt.Sprintf(`{"backend": {"backend": "badger", "storage": %q, "min_free_disk": 1048576}}`, link),
		fmt.Sprintf(`{"storage": %q, "min_free_disk": 1048576}`, link+"/"),
	} {
		c = loadWebhooks(t, webhooks, ingestRoute("in", ""))
		if c.spool() != first {
			t.Fatalf("%s: another store was opened", webhooks)
		}
		if st, err := c.spool().Lookup(context.Background(), "in", "evt_shared_1"); err != nil || st.State != spool.StatePending {
			t.Fatalf("%s: the event accepted before: %+v, %v", webhooks, st, err)
		}
	}
}

// TestReloadAppliesMinFreeDisk: min_free_disk, which spool.Limits leave
// out, reaches the shared store on a reload through the badger backend's
// ReconfigureStore.
func TestReloadAppliesMinFreeDisk(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		minFree int64
		want    error
	}{
		{1 << 20, nil},
		{1 << 60, spool.ErrFull},
		{1 << 20, nil},
	} {
		c := loadWebhooks(t, fmt.Sprintf(`{"backend": {"backend": "badger", "storage": %q, "min_free_disk": %d}}`, dir, tt.minFree))
		_, err := c.spool().Enqueue(context.Background(), spool.Entry{Route: "r", EventID: fmt.Sprint("evt_floor_", tt.minFree), Body: []byte("{}")})
		var full *spool.FullError
		if !errors.Is(err, tt.want) || (tt.want != nil && (!errors.As(err, &full) || full.Limit != "min_free_disk")) {
			t.Fatalf("min_free_disk %d: %v, want %v", tt.minFree, err, tt.want)
		}
	}
}

// TestAppWorksOnAnyBackend: an event goes in, is delivered, and shows in
// the admin API's stats on a store that is only a spool.Backend.
func TestAppWorksOnAnyBackend(t *testing.T) {
	delivered := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delivered <- r.Header.Get("X-Webhook-Id")
	}))
	defer up.Close()
	c := loadWebhooks(t, fmt.Sprintf(`{"backend": {"backend": "test_wrapped", "storage": %q, "min_free_disk": 1048576}}`, t.TempDir()),
		fmt.Sprintf(`[{"handler": "webhook_ingest", "name": "in", "secrets": ["{env.HG_UNIT_SECRET}"], "forward": {"url": %q}}]`, up.URL))
	if _, ok := c.spool().(wrappedStore); !ok {
		t.Fatalf("the store is a %T, want the wrapped backend's", c.spool())
	}
	if res := c.serve(t, c.handler(0), signedDelivery("evt_any_1", "document.processed").request(), nil); res.status() != 202 {
		t.Fatalf("%s", res)
	}
	if id := <-delivered; id != "evt_any_1" {
		t.Fatalf("delivered %q", id)
	}
	api := adminAPI(t)
	var st struct {
		Storage string
		Routes  []struct{ Route string }
	}
	api.must(t, http.MethodGet, "/webhooks/stats", "", &st)
	if st.Storage != c.storeName() || len(st.Routes) != 1 || st.Routes[0].Route != "in" {
		t.Fatalf("stats %+v", st)
	}
}

// TestNATSBackendConfig: the nats backend opens its store on a real server,
// named as the store names itself, and refuses what cannot keep the
// promise of a 2xx: a single server without accept_risk.
func TestNATSBackendConfig(t *testing.T) {
	node := natstest.StartNode(t)
	servers := fmt.Sprintf("%q", node.URL())
	t.Setenv("HG_TEST_NATS_SECRET", "s3cret")
	for _, tt := range []struct {
		name, backend, wantErr string
	}{
		{"one server, risk accepted", `"servers": [` + servers + `], "replicas": 1, "accept_risk": true, "verify_sync": [` + fmt.Sprintf("%q", node.MonitorURL()) + `]`, ""},
		{"one server", `"servers": [` + servers + `], "replicas": 1, "verify_sync": [` + fmt.Sprintf("%q", node.MonitorURL()) + `]`, "replicas"},
		{"no servers", `"replicas": 1`, "servers is required"},
		{"credentials in a server URL", `"servers": ["nats://hookgate:s3cret@127.0.0.1:4222"]`, "not in the URL"},
		{"token and user", `"servers": [` + servers + `], "token": "{env.HG_TEST_NATS_SECRET}", "user": "u", "password": "{env.HG_TEST_NATS_SECRET}"`, "one of credentials, token, or user"},
		{"password without user", `"servers": [` + servers + `], "password": "{env.HG_TEST_NATS_SECRET}"`, "password needs a user"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			loadStore(t, `{"backend": {"backend": "nats", `+tt.backend+`}}`, tt.wantErr, "nats:"+natsspool.DefaultPrefix+"@"+node.URL())
		})
	}
}
