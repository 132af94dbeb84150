package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

// ingestWarnings counts webhook_ingest's warning lines that contain part.
func ingestWarnings(g *gateway, part string) int {
	n := 0
	for _, e := range logEntries(g, "") {
		if e.str("level") == "warn" && e.str("logger") == "http.handlers.webhook_ingest" && strings.Contains(e.str("msg"), part) {
			n++
		}
	}
	return n
}

// TestStartupWarnings: an unnamed route and insecure_no_signature are
// warned about at every load, and a secret written literally in a JSON
// configuration is accepted with a warning that does not show it.
func TestStartupWarnings(t *testing.T) {
	t.Parallel()
	g, _ := newSecretGateway(t, "HG_SECRET")
	up := newUpstream(t)
	// Configurations that differ in the named route only: Caddy ignores a
	// reload that changes nothing.
	config := func(maxAttempts int) string {
		return g.globals("") + publishSite(g,
			"\thandle /hooks/unnamed {\n\t\twebhook_ingest {\n\t\t\tsecret {env.HG_SECRET}\n\t\t\tforward "+up.url("/unnamed")+"\n\t\t}\n\t}",
			"\thandle /hooks/open {\n\t\twebhook_ingest {\n\t\t\tname open\n\t\t\tinsecure_no_signature\n\t\t\tforward "+up.url("/open")+"\n\t\t}\n\t}",
			ingestHandle("/hooks/named", "named", up.url("/named"), fmt.Sprintf("max_attempts %d", maxAttempts)))
	}
	const (
		unnamed  = "has no name"
		insecure = "insecure_no_signature"
		literal  = "a secret is written literally"
	)
	g.start(config(1))
	for load := 1; load <= 2; load++ {
		// The log reaches the test through a pipe, maybe after the load's
		// answer: wait for it.
		testwait.Until(t, 10*time.Second, func() (bool, string) {
			nu, ni := ingestWarnings(g, unnamed), ingestWarnings(g, insecure)
			return nu >= load && ni >= load, fmt.Sprintf("after load %d: %d warnings about the unnamed route, %d about insecure_no_signature", load, nu, ni)
		})
		if n := ingestWarnings(g, unnamed); n != load {
			t.Errorf("after load %d: %d warnings about the unnamed route, want %d", load, n, load)
		}
		if n := ingestWarnings(g, insecure); n != load {
			t.Errorf("after load %d: %d warnings about insecure_no_signature, want %d", load, n, load)
		}
		if load == 1 {
			if code, body, err := g.load(config(2)); err != nil || code != 200 {
				t.Fatalf("reload: %d %s %v", code, body, err)
			}
		}
	}
	if n := ingestWarnings(g, literal); n != 0 {
		t.Errorf("%d warnings about literal secrets for placeholders", n)
	}

	lit := string(randomSecret(32))
	g.forbid(lit)
	cfg, _ := json.Marshal(map[string]any{
		"admin": map[string]any{"listen": g.admin},
		"apps": map[string]any{
			"webhooks": map[string]any{"storage": g.storage, "min_free_disk": 1 << 20},
			"http": map[string]any{"servers": map[string]any{"srv": map[string]any{
				"listen":          []string{g.site},
				"automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{map[string]any{
					"handler": "webhook_ingest", "name": "literal", "secrets": []string{lit},
					"forward": map[string]any{"url": up.url("/literal")},
				}}}},
			}}},
		},
	})
	if code, body, err := g.loadAs("application/json", string(cfg)); err != nil || code != 200 {
		t.Fatalf("loading a JSON configuration with a literal secret: %d %s %v", code, body, err)
	}
	testwait.Until(t, 10*time.Second, func() (bool, string) {
		n := ingestWarnings(g, literal)
		return n >= 1, fmt.Sprintf("%d warnings about the literal secret", n)
	})
	if n := ingestWarnings(g, literal); n != 1 {
		t.Errorf("%d warnings about the literal secret, want 1", n)
	}
	s := newSender(g, "/hooks/literal", []byte(lit))
	d := s.event(typeOK)
	expectAnswer(t, "signed with the literal secret", s.mustPostAfterReload(t, d), 202, "accepted")
	waitDelivered(t, 10*time.Second, []string{d.ID}, up)
}
