package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

// cli runs `caddy webhook <args> --address <admin>` with the built binary
// and returns its standard output, standard error and exit code.
func (g *gateway) cli(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(caddyBin, append(append([]string{"webhook"}, args...), "--address", g.admin)...)
	cmd.Env = g.env
	cmd.Dir = g.dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running caddy webhook %v: %v", args, err)
	}
	t.Logf("$ caddy webhook %s\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

// mustCLI is cli that expects success.
func (g *gateway) mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, code := g.cli(t, args...)
	if code != 0 {
		t.Fatalf("caddy webhook %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// tableRow returns the fields of the first line of a table whose first
// field is first.
func tableRow(table, first string) []string {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == first {
			return f
		}
	}
	return nil
}

// TestCLIOperations: the operator commands of the real binary against a
// running gateway: an upstream outage leaves two dead letters that stats,
// dead list and events show; a paused route holds the replayed letters
// until resume; errors exit 1 with the API's message.
func TestCLIOperations(t *testing.T) {
	t.Parallel()
	g, secret, up := newInboundGateway(t)
	up.setRespond(func(*recorded) reply { return reply{Status: 503} })
	g.start(g.globals("") + publishSite(g, fmt.Sprintf(`	handle %s {
		webhook_ingest {
			name in
			secret {env.HG_SECRET}
			forward %s {
				max_attempts 2
				backoff 100ms 200ms
			}
		}
	}`, hookPath, up.url("/in"))))
	s := newSender(g, hookPath, secret)
	ids := s.sendAccepted(t, 2)
	testwait.Until(t, 5*time.Second, func() (bool, string) {
		dead, _, _, _ := g.routeStat(t, "in")
		return dead == 2, fmt.Sprintf("%d dead letters", dead)
	})

	// stats: the route's row, with its two dead letters.
	out := g.mustCLI(t, "stats")
	if !strings.HasPrefix(out, "ROUTE  ") || !strings.Contains(out, "QUEUED  IN FLIGHT  SCHEDULED  DEAD  BYTES") {
		t.Errorf("stats header:\n%s", out)
	}
	// in 0 0 0 2 <n> <unit> - ok
	if f := tableRow(out, "in"); len(f) != 9 || f[1] != "0" || f[4] != "2" || f[7] != "-" || f[8] != "ok" {
		t.Errorf("stats row of in: %q", f)
	}
	// The admin address can come from the configuration file, as for caddy stop.
	cfg := filepath.Join(g.dir, "Caddyfile.1")
	cmd := exec.Command(caddyBin, "webhook", "stats", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env, cmd.Dir = g.env, g.dir
	if b, err := cmd.Output(); err != nil || string(b) != out {
		t.Errorf("stats --config: %v\n%s", err, b)
	}
	var st struct {
		Routes []struct {
			Route string `json:"route"`
			Dead  int    `json:"dead"`
		} `json:"routes"`
	}
	if err := json.Unmarshal([]byte(g.mustCLI(t, "stats", "--json")), &st); err != nil || len(st.Routes) == 0 {
		t.Errorf("stats --json: %v %+v", err, st)
	}

	// dead list: both events, max_attempts after 2 attempts, last status 503.
	out = g.mustCLI(t, "dead", "list", "--route", "in")
	for _, id := range ids {
		line := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, id) {
				line = l
			}
		}
		if f := strings.Fields(line); len(f) < 8 || f[1] != "in" || f[2] != id || f[3] != "max_attempts" || f[4] != "2" || f[5] != "503" {
			t.Errorf("dead list line of %s: %q\n%s", id, line, out)
		}
	}
	if strings.Contains(out, "--cursor") {
		t.Errorf("dead list has a next page:\n%s", out)
	}
	out = g.mustCLI(t, "dead", "list", "--limit", "1")
	if !strings.Contains(out, ids[0]) || strings.Contains(out, ids[1]) || !strings.Contains(out, "more: --cursor ") {
		t.Errorf("dead list --limit 1:\n%s", out)
	}

	// events: the route's state and its two attempts, both 503.
	out = g.mustCLI(t, "events", ids[0])
	if !strings.HasPrefix(out, "event "+ids[0]+" on route in: dead (dead letter ") {
		t.Errorf("events:\n%s", out)
	}
	for n := range 2 {
		if f := tableRow(out, fmt.Sprint(n+1)); len(f) < 4 || f[3] != "503" {
			t.Errorf("events: attempt %d: %q\n%s", n+1, f, out)
		}
	}

	// pause; replay everything; nothing flows until resume.
	if out = g.mustCLI(t, "pause", "in"); out != "route in paused\n" {
		t.Errorf("pause: %q", out)
	}
	up.setRespond(nil)
	if out = g.mustCLI(t, "dead", "replay", "--all"); out != "replayed 2\n" {
		t.Errorf("replay: %q", out)
	}
	if f := tableRow(g.mustCLI(t, "stats"), "in"); len(f) != 9 || f[1] != "2" || f[4] != "0" || f[8] != "paused" {
		t.Errorf("stats row of the paused route: %q", f)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(up.delivered()); n != 0 {
		t.Fatalf("%d delivered while the route was paused", n)
	}
	if out = g.mustCLI(t, "resume", "in"); out != "route in resumed\n" {
		t.Errorf("resume: %q", out)
	}
	waitDelivered(t, 5*time.Second, ids, up)
	if out = g.mustCLI(t, "dead", "list"); out != "no dead letters\n" {
		t.Errorf("dead list after the replay: %q", out)
	}

	// Errors: the API's message, exit status 1.
	out, errOut, code := g.cli(t, "pause", "nope")
	if code != 1 || out != "" || !strings.Contains(errOut, "no route nope (HTTP 404)") {
		t.Errorf("pause nope: exit %d, %q %q", code, out, errOut)
	}
}
