package webhookcli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestCLIReachesCaddysAdminSocket: Caddy's own admin endpoint on a unix
// socket accepts the commands' requests (its Host check passes) and its
// answer reaches the command: without Hookgate's modules there is no
// /webhooks/, so the answer is Caddy's 404. (The integration tests call it
// over TCP.)
func TestCLIReachesCaddysAdminSocket(t *testing.T) {
	addr := "unix/" + filepath.Join(t.TempDir(), "admin.sock") + "|0600"
	cfg, err := json.Marshal(map[string]any{"admin": map[string]any{"listen": addr}})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Error(err)
		}
	})
	_, err = runAt(t, "stats", "--address", addr)
	if err == nil || !strings.HasSuffix(err.Error(), ": HTTP 404: 404 page not found") {
		t.Fatalf("stats: %v, want Caddy's 404", err)
	}
}
