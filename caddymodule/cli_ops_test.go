package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
)

// The admin API's answers, as admin.go writes them.
const (
	opsStatsFixture = `{"storage":"/var/lib/hookgate/spool","items":5,"bytes":1300,` +
		`"records":{"dedupe":{"count":20000,"bytes":1160000},"attempts":{"count":300,"bytes":14700},"max_bytes":1073741824,"attempt_records_dropped":2},"routes":[` +
		`{"route":"in","queued":1,"in_flight":1,"scheduled":1,"dead":2,"bytes":1229,"oldest_pending_age_seconds":182.4,"paused":true},` +
		`{"route":"out","queued":0,"in_flight":0,"scheduled":0,"dead":0,"bytes":0,"oldest_pending_age_seconds":0,"paused":false},` +
		`{"route":"subscriber/acme","subscriber":"acme","queued":0,"in_flight":0,"scheduled":0,"dead":1,"bytes":71,"oldest_pending_age_seconds":0.35,"paused":false,"disabled":"subscriber_gone"}]}` + "\n"
	opsDeadFixture = `{"dead":[` +
		`{"id":"7","route":"in","event_id":"evt_one","reason":"max_attempts","attempts":2,"last_status":503,"bytes":300,"received_at":"2026-03-01T10:00:00Z","dead_at":"2026-03-01T10:00:01.5Z"},` +
		`{"id":"9","route":"in","event_id":"evt_two","reason":"max_attempts","attempts":5,"last_error":"dial tcp 127.0.0.1:9: connect: connection refused\nand\tmore text after it","bytes":300,"received_at":"2026-03-01T10:01:00Z","dead_at":"2026-03-01T10:02:00Z"}],` +
		`"next_cursor":"9"}` + "\n"
	opsEventFixture = `{"event_id":"evt_one","routes":[` +
		`{"route":"in","state":"dead","id":"7","dead":{"id":"7","route":"in","event_id":"evt_one","reason":"max_attempts","attempts":2,"last_status":503,"bytes":300,"received_at":"2026-03-01T10:00:00Z","dead_at":"2026-03-01T10:00:01.5Z"},"attempts":[` +
		`{"attempt":1,"at":"2026-03-01T10:00:00.012Z","duration_ms":1.234,"status":503},` +
		`{"attempt":2,"at":"2026-03-01T10:00:01.4Z","duration_ms":2500,"error":"timeout awaiting response headers"}]},` +
		`{"route":"subscriber/acme","state":"pending","id":"8","attempts":[]}]}` + "\n"
)

type opsRequest struct {
	Method, Path, Body string
	Query              url.Values
}

// opsAPI is an httptest server on loopback standing in for the admin API:
// it answers "METHOD /path" from a table and records every request.
type opsAPI struct {
	srv     *httptest.Server
	mu      sync.Mutex
	seen    []opsRequest
	answers map[string]struct {
		code int
		body string
	}
}

func newOpsAPI(t *testing.T) *opsAPI {
	t.Helper()
	a := &opsAPI{answers: map[string]struct {
		code int
		body string
	}{}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.seen = append(a.seen, opsRequest{Method: r.Method, Path: r.URL.Path, Body: string(b), Query: r.URL.Query()})
		ans, ok := a.answers[r.Method+" "+r.URL.Path]
		a.mu.Unlock()
		if !ok {
			ans.code, ans.body = 404, fmt.Sprintf(`{"error":"no such endpoint: %s"}`+"\n", r.URL.Path)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ans.code)
		io.WriteString(w, ans.body)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *opsAPI) answer(method, path string, code int, body string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.answers[method+" "+path] = struct {
		code int
		body string
	}{code, body}
}

func (a *opsAPI) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

// last returns the last request and forgets them all.
func (a *opsAPI) last(t *testing.T) opsRequest {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) == 0 {
		t.Fatal("no request reached the admin API")
	}
	r := a.seen[len(a.seen)-1]
	a.seen = nil
	return r
}

func (a *opsAPI) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// runOps runs `webhook <args>` with the operator commands and --address.
func runOps(t *testing.T, a *opsAPI, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "webhook", SilenceUsage: true}
	root.AddCommand(opsCommands()...)
	if a != nil {
		args = append(args, "--address", a.addr())
	}
	return run(t, root, args...)
}

func expectRequest(t *testing.T, got opsRequest, method, path, body string, query url.Values) {
	t.Helper()
	if query == nil {
		query = url.Values{}
	}
	if got.Method != method || got.Path != path || got.Body != body || got.Query.Encode() != query.Encode() {
		t.Errorf("request %s %s?%s %q, want %s %s?%s %q", got.Method, got.Path, got.Query.Encode(), got.Body,
			method, path, query.Encode(), body)
	}
}

func expectOutput(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s printed:\n%s\nwant:\n%s", what, got, want)
	}
}

func TestCLIStats(t *testing.T) {
	a := newOpsAPI(t)
	a.answer("GET", "/webhooks/stats", 200, opsStatsFixture)
	out, err := runOps(t, a, "stats")
	if err != nil {
		t.Fatal(err)
	}
	expectRequest(t, a.last(t), "GET", "/webhooks/stats", "", nil)
	expectOutput(t, "stats", out, `ROUTE            QUEUED  IN FLIGHT  SCHEDULED  DEAD  BYTES    OLDEST  STATE
in               1       1          1          2     1.2 KiB  3m2s    paused
out              0       0          0          0     0 B      -       ok
subscriber/acme  0       0          0          1     71 B     350ms   disabled: subscriber_gone

storage /var/lib/hookgate/spool: 5 items, 1.3 KiB
records: 1.1 MiB of 1.0 GiB (dedupe: 20000, 1.1 MiB; attempts: 300, 14.4 KiB); 2 attempt records dropped
`)

	out, err = runOps(t, a, "stats", "--json")
	if err != nil || out != opsStatsFixture {
		t.Fatalf("stats --json: %q %v", out, err)
	}
	var js map[string]any
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatal(err)
	}

	// --storage is passed on.
	if _, err := runOps(t, a, "stats", "--storage", "/srv/spool"); err != nil {
		t.Fatal(err)
	}
	expectRequest(t, a.last(t), "GET", "/webhooks/stats", "", url.Values{"storage": {"/srv/spool"}})
}

func TestCLIDeadList(t *testing.T) {
	a := newOpsAPI(t)
	a.answer("GET", "/webhooks/dead", 200, opsDeadFixture)
	out, err := runOps(t, a, "dead", "list", "--route", "in", "--reason", "max_attempts", "--limit", "2", "--cursor", "5")
	if err != nil {
		t.Fatal(err)
	}
	expectRequest(t, a.last(t), "GET", "/webhooks/dead", "",
		url.Values{"route": {"in"}, "reason": {"max_attempts"}, "limit": {"2"}, "cursor": {"5"}})
	expectOutput(t, "dead list", out, `ID  ROUTE  EVENT ID  REASON        ATTEMPTS  LAST STATUS  LAST ERROR                                DEAD AT
7   in     evt_one   max_attempts  2         503          -                                         2026-03-01T10:00:01Z
9   in     evt_two   max_attempts  5         -            dial tcp 127.0.0.1:9: connect: connecti…  2026-03-01T10:02:00Z

more: --cursor 9
`)

	// No flags: no query parameters.
	if _, err := runOps(t, a, "dead", "list"); err != nil {
		t.Fatal(err)
	}
	expectRequest(t, a.last(t), "GET", "/webhooks/dead", "", nil)

	out, err = runOps(t, a, "dead", "list", "--json")
	if err != nil || out != opsDeadFixture {
		t.Fatalf("dead list --json: %q %v", out, err)
	}

	a.answer("GET", "/webhooks/dead", 200, `{"dead":[]}`)
	out, err = runOps(t, a, "dead", "list")
	if err != nil || out != "no dead letters\n" {
		t.Fatalf("empty dead list: %q %v", out, err)
	}
	// An answer without a trailing newline gets one with --json.
	out, err = runOps(t, a, "dead", "list", "--json")
	if err != nil || out != "{\"dead\":[]}\n" {
		t.Fatalf("empty dead list --json: %q %v", out, err)
	}
}

func TestCLIDeadReplay(t *testing.T) {
	a := newOpsAPI(t)
	a.answer("POST", "/webhooks/dead/replay", 200, `{"replayed":2}`+"\n")
	for _, c := range []struct {
		args []string
		body string
	}{
		{[]string{"--route", "in", "--reason", "max_attempts"}, `{"route":"in","reason":"max_attempts"}`},
		{[]string{"--route", "in"}, `{"route":"in"}`},
		{[]string{"--reason", "subscriber_gone"}, `{"reason":"subscriber_gone"}`},
		{[]string{"--id", "3", "--id", "4"}, `{"ids":["3","4"]}`},
		{[]string{"--id", "3,4"}, `{"ids":["3","4"]}`},
		{[]string{"--all"}, `{"all":true}`},
	} {
		out, err := runOps(t, a, append([]string{"dead", "replay"}, c.args...)...)
		if err != nil || out != "replayed 2\n" {
			t.Errorf("replay %v: %q %v", c.args, out, err)
		}
		expectRequest(t, a.last(t), "POST", "/webhooks/dead/replay", c.body, nil)
	}
	out, err := runOps(t, a, "dead", "replay", "--all", "--json")
	if err != nil || out != `{"replayed":2}`+"\n" {
		t.Fatalf("replay --json: %q %v", out, err)
	}
	a.last(t)

	// Nothing chosen, or more than one way: refused before any request.
	for _, args := range [][]string{{}, {"--all", "--route", "in"}, {"--id", "1", "--all"}, {"--id", "1", "--reason", "x"}} {
		if _, err := runOps(t, a, append([]string{"dead", "replay"}, args...)...); err == nil || !strings.Contains(err.Error(), "give --id") {
			t.Errorf("replay %v: %v", args, err)
		}
	}
	if n := a.count(); n != 0 {
		t.Errorf("%d requests for refused replays", n)
	}
}

func TestCLIDeadDelete(t *testing.T) {
	a := newOpsAPI(t)
	a.answer("DELETE", "/webhooks/dead/7", 200, `{"deleted":1}`+"\n")
	out, err := runOps(t, a, "dead", "delete", "7")
	if err != nil || out != "deleted 1\n" {
		t.Fatalf("delete: %q %v", out, err)
	}
	expectRequest(t, a.last(t), "DELETE", "/webhooks/dead/7", "", nil)

	out, err = runOps(t, a, "dead", "delete", "999")
	if err == nil || !strings.Contains(err.Error(), "no such endpoint: /webhooks/dead/999") || out != "" {
		t.Fatalf("delete of an unknown id: %q %v", out, err)
	}
	if _, err := runOps(t, a, "dead", "delete"); err == nil {
		t.Fatal("delete without an id")
	}
}

func TestCLIEvents(t *testing.T) {
	a := newOpsAPI(t)
	a.answer("GET", "/webhooks/events/evt_one", 200, opsEventFixture)
	out, err := runOps(t, a, "events", "evt_one")
	if err != nil {
		t.Fatal(err)
	}
	expectRequest(t, a.last(t), "GET", "/webhooks/events/evt_one", "", nil)
	expectOutput(t, "events", out, `event evt_one on route in: dead (dead letter 7: max_attempts since 2026-03-01T10:00:01Z)
ATTEMPT  AT                        DURATION  STATUS  ERROR
1        2026-03-01T10:00:00.012Z  1.234ms   503     -
2        2026-03-01T10:00:01.400Z  2.5s      -       timeout awaiting response headers

event evt_one on route subscriber/acme: pending
no attempts yet
`)

	if _, err := runOps(t, a, "events", "evt_one", "--route", "subscriber/acme"); err != nil {
		t.Fatal(err)
	}
	expectRequest(t, a.last(t), "GET", "/webhooks/events/evt_one", "", url.Values{"route": {"subscriber/acme"}})

	out, err = runOps(t, a, "events", "evt_one", "--json")
	if err != nil || out != opsEventFixture {
		t.Fatalf("events --json: %q %v", out, err)
	}
}

func TestCLIPauseResumeEnable(t *testing.T) {
	a := newOpsAPI(t)
	a.answer("POST", "/webhooks/routes/in/pause", 200, `{"paused":true,"route":"in"}`+"\n")
	a.answer("POST", "/webhooks/routes/in/resume", 200, `{"paused":false,"route":"in"}`+"\n")
	a.answer("POST", "/webhooks/subscribers/acme/enable", 200, `{"enabled":true,"replayed":3,"subscriber":"acme"}`+"\n")
	for _, c := range []struct {
		args       []string
		path, want string
	}{
		{[]string{"pause", "in"}, "/webhooks/routes/in/pause", "route in paused\n"},
		{[]string{"resume", "in"}, "/webhooks/routes/in/resume", "route in resumed\n"},
		{[]string{"enable", "acme"}, "/webhooks/subscribers/acme/enable", "subscriber acme enabled; replayed 3\n"},
	} {
		out, err := runOps(t, a, c.args...)
		if err != nil || out != c.want {
			t.Errorf("%v: %q %v, want %q", c.args, out, err, c.want)
		}
		expectRequest(t, a.last(t), "POST", c.path, "", nil)
	}
	out, err := runOps(t, a, "pause", "in", "--json")
	if err != nil || out != `{"paused":true,"route":"in"}`+"\n" {
		t.Fatalf("pause --json: %q %v", out, err)
	}
}

func TestCLIErrors(t *testing.T) {
	a := newOpsAPI(t)
	a.answer("POST", "/webhooks/routes/nope/pause", 404, `{"error":"no route nope"}`+"\n")
	a.answer("GET", "/webhooks/stats", 500, "plain failure\n")
	for _, args := range [][]string{{"pause", "nope"}, {"pause", "nope", "--json"}} {
		out, err := runOps(t, a, args...)
		if err == nil || err.Error() != "no route nope (HTTP 404)" || out != "" {
			t.Errorf("%v: %q %v", args, out, err)
		}
	}
	// An answer that is not the API's JSON error is shown as it is.
	if _, err := runOps(t, a, "stats"); err == nil || !strings.Contains(err.Error(), "HTTP 500: plain failure") {
		t.Errorf("stats with a plain error: %v", err)
	}
	// Nothing listening.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	root := &cobra.Command{Use: "webhook", SilenceUsage: true}
	root.AddCommand(opsCommands()...)
	if _, err := run(t, root, "stats", "--address", closed); err == nil || !strings.Contains(err.Error(), "admin API at "+closed) {
		t.Errorf("stats with nothing listening: %v", err)
	}
}

// TestCLIAddressFromConfig: without --address, the admin address comes from
// --config (and --adapter), as for `caddy stop`.
func TestCLIAddressFromConfig(t *testing.T) {
	a := newOpsAPI(t)
	a.answer("GET", "/webhooks/stats", 200, opsStatsFixture)
	dir := t.TempDir()
	caddyfile := filepath.Join(dir, "Caddyfile")
	os.WriteFile(caddyfile, []byte("{\n\tadmin "+a.addr()+"\n}\n\nhttp://127.0.0.1:1 {\n\trespond ok\n}\n"), 0o600)
	jsonFile := filepath.Join(dir, "caddy.json")
	os.WriteFile(jsonFile, []byte(`{"admin":{"listen":"`+a.addr()+`"}}`), 0o600)
	for _, args := range [][]string{
		{"stats", "--config", caddyfile, "--adapter", "caddyfile"},
		{"stats", "-c", jsonFile},
	} {
		var out bytes.Buffer
		root := &cobra.Command{Use: "webhook", SilenceUsage: true}
		root.AddCommand(opsCommands()...)
		root.SetOut(&out)
		root.SetErr(io.Discard)
		root.SetArgs(args)
		if err := root.Execute(); err != nil || !strings.HasPrefix(out.String(), "ROUTE ") {
			t.Errorf("%v: %q %v", args, out.String(), err)
			continue
		}
		expectRequest(t, a.last(t), "GET", "/webhooks/stats", "", nil)
	}
}

func TestCLIHumanUnits(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1229: "1.2 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := opsHumanBytes(n); got != want {
			t.Errorf("opsHumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for s, want := range map[float64]string{0: "-", 0.0004: "0s", 0.35: "350ms", 4.25: "4.3s", 182.4: "3m2s", 7322: "2h2m2s"} {
		if got := opsHumanAge(s); got != want {
			t.Errorf("opsHumanAge(%v) = %q, want %q", s, got, want)
		}
	}
	if got := opsTruncate("αβγδε", 3); got != "αβ…" {
		t.Errorf("opsTruncate: %q", got)
	}
}
