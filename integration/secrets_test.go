package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecretsStayHidden: a secret given as {env.NAME} never shows in the
// admin API's config, in `caddy adapt` output or in the process's logs, and
// neither does any signature sent, accepted or not, even at debug level with
// the signature filter the README documents (at debug level Caddy logs the
// headers of every request a handler rejects).
// debugWithSignatureFilter is the README's debug logging setup.
const debugWithSignatureFilter = `log {
		level DEBUG
		format filter {
			request>headers>X-Webhook-Signature delete
		}
	}`

func TestSecretsStayHidden(t *testing.T) {
	t.Parallel()
	secret := randomSecret(48)
	next := randomSecret(48)
	g := newGateway(t, "HG_TEST_SECRET="+string(secret), "HG_TEST_SECRET_NEXT="+string(next))
	g.forbid(string(secret), string(next))
	up := newUpstream(t)
	config := func(secrets string) string {
		return g.globals(debugWithSignatureFilter) + fmt.Sprintf(`http://%s {
	handle %s {
		webhook_ingest {
			secret %s
			events document.*
			forward %s {
				backoff 100ms 500ms
			}
		}
	}
}
`, g.site, hookPath, secrets, up.url("/in"))
	}
	g.start(config("{env.HG_TEST_SECRET}"))
	s := newSender(g, hookPath, secret)

	code, cfg, err := g.adminGet("/config/")
	if err != nil || code != 200 {
		t.Fatalf("GET /config/: %d %v", code, err)
	}
	if strings.Contains(cfg, string(secret)) {
		t.Errorf("GET /config/ shows the secret")
	}
	if !strings.Contains(cfg, "{env.HG_TEST_SECRET}") {
		t.Errorf("GET /config/ does not show the placeholder:\n%s", cfg)
	}

	file := g.writeConfig(config("{env.HG_TEST_SECRET}"))
	adapt := exec.Command(caddyBin, "adapt", "--config", file, "--adapter", "caddyfile")
	adapt.Env = append(os.Environ(), "HG_TEST_SECRET="+string(secret))
	out, err := adapt.CombinedOutput()
	if err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, out)
	}
	if strings.Contains(string(out), string(secret)) {
		t.Errorf("caddy adapt output shows the secret")
	}
	if !strings.Contains(string(out), "{env.HG_TEST_SECRET}") {
		t.Errorf("caddy adapt output lacks the placeholder:\n%s", out)
	}

	// Traffic of every kind, so that every logging path runs.
	var ids []string
	for i := 0; i < 5; i++ {
		d := s.event(typeOK)
		ids = append(ids, d.ID)
		expectAnswer(t, "valid", s.mustPost(t, d), 202, "accepted")
		expectAnswer(t, "duplicate", s.mustPost(t, d), 200, "duplicate")
	}
	bad := s.event(typeOK)
	s.signWith(bad, randomSecret(48))
	expectAnswer(t, "wrong secret", s.mustPost(t, bad), 401, "")
	conflict := s.eventWithID(ids[0], typeOK)
	conflict.Body = envelope(ids[0], typeOK, time.Now().Add(time.Minute), `,"v":2`)
	s.sign(conflict)
	expectAnswer(t, "conflict", s.mustPost(t, conflict), 409, "")
	stale := s.event(typeOK)
	stale.Body = envelope(stale.ID, typeOK, time.Now().Add(-3*time.Hour), "")
	s.sign(stale)
	expectAnswer(t, "stale", s.mustPost(t, stale), 401, "")
	waitDelivered(t, 10*time.Second, ids, up)

	// Rotate through the admin API: both secrets, then the new one.
	if code, body, err := g.load(config("{env.HG_TEST_SECRET_NEXT} {env.HG_TEST_SECRET}")); err != nil || code != 200 {
		t.Fatalf("reload: %d %s %v", code, body, err)
	}
	// The reload closes the old server's keep-alive connections; don't reuse
	// one. Caddy's /load returns once the old server's shutdown has begun, not
	// ended: a new connection may still land in the old listener's queue and
	// be reset, which a sender retries (mustPostAfterReload).
	s.client.CloseIdleConnections()
	old := s.event(typeOK)
	expectAnswer(t, "old secret during rotation", s.mustPostAfterReload(t, old), 202, "accepted")
	s.setSecret(next)
	d := s.event(typeOK)
	expectAnswer(t, "new secret during rotation", s.mustPost(t, d), 202, "accepted")
	if code, body, err := g.load(config("{env.HG_TEST_SECRET_NEXT}")); err != nil || code != 200 {
		t.Fatalf("reload: %d %s %v", code, body, err)
	}
	s.client.CloseIdleConnections()
	retired := s.event(typeOK)
	s.signWith(retired, secret)
	expectAnswer(t, "retired secret", s.mustPostAfterReload(t, retired), 401, "")
	waitDelivered(t, 10*time.Second, []string{old.ID, d.ID}, up)

	if _, cfg, _ = g.adminGet("/config/"); strings.Contains(cfg, string(secret)) || strings.Contains(cfg, string(next)) {
		t.Errorf("GET /config/ shows a secret after the rotation")
	}
	if !strings.Contains(g.logs(), `"level":"debug"`) {
		t.Errorf("no debug lines in the logs: the debug option did not take effect")
	}
	if leaks := g.leaks(); len(leaks) > 0 {
		t.Errorf("the logs contain secrets or signatures: %v", leaks)
	}

	t.Run("a literal secret in a Caddyfile is refused", func(t *testing.T) {
		lit := randomSecret(20)
		g2 := newGateway(t)
		file := g2.writeConfig(g2.globals("") + forwardSite(g2, string(lit), up.url("/in"), "", ""))
		out, err := exec.Command(caddyBin, "adapt", "--config", file, "--adapter", "caddyfile").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "write it as a placeholder") {
			t.Errorf("caddy adapt with a literal secret: %v\n%s", err, out)
		}
		if strings.Contains(string(out), string(lit)) {
			t.Errorf("the refusal shows the secret")
		}
	})

	t.Run("an unset secret variable fails to load", func(t *testing.T) {
		g3 := newGateway(t)
		file := g3.writeConfig(g3.globals("") + forwardSite(g3, "{env.HG_UNSET_SECRET_VAR}", up.url("/in"), "", ""))
		cmd := exec.Command(caddyBin, "run", "--config", file, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+filepath.Join(t.TempDir(), "home"))
		cmd.Dir = t.TempDir()
		done := make(chan error, 1)
		var buf syncBuffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("caddy run succeeded with an unset secret variable")
			}
			if !strings.Contains(buf.String(), "HG_UNSET_SECRET_VAR") {
				t.Errorf("the error does not name the placeholder:\n%s", buf.String())
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("caddy run kept running with an unset secret variable")
		}
	})
}
