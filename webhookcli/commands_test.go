package webhookcli

import (
	"encoding/json"
	"errors"
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
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard" // the caddyfile adapter for --config, as in the binary
	"github.com/spf13/cobra"

	"github.com/hookgate/hookgate/adminapi"
	"github.com/hookgate/hookgate/internal/testnet"
)

// The admin API's answers the commands are shown.
var (
	statsFixture = adminapi.Stats{
		Storage: "/var/lib/hookgate/spool", Items: 5, Bytes: 1300,
		Records: adminapi.RecordStats{
			Dedupe: adminapi.RecordCount{Count: 20000, Bytes: 1160000}, Attempts: adminapi.RecordCount{Count: 300, Bytes: 14700},
			MaxBytes: 1 << 30, AttemptRecordsDropped: 2,
		},
		Routes: []adminapi.RouteStats{
			{Route: "in", Queued: 1, InFlight: 1, Scheduled: 1, Dead: 2, Bytes: 1229, OldestPendingAge: 182.4, Paused: true},
			{Route: "out"},
			{Route: "subscriber/acme", Subscriber: "acme", Dead: 1, Bytes: 71, OldestPendingAge: 0.35, Disabled: "subscriber_gone"},
		},
	}
	deadOne = adminapi.DeadLetter{ID: "7", Route: "in", EventID: "evt_one", Reason: "max_attempts", Attempts: 2, LastStatus: 503,
		Bytes: 300, ReceivedAt: instant("2026-03-01T10:00:00Z"), DeadAt: instant("2026-03-01T10:00:01.5Z")}
	deadFixture = adminapi.DeadPage{Dead: []adminapi.DeadLetter{deadOne, {
		ID: "9", Route: "in", EventID: "evt_two", Reason: "max_attempts", Attempts: 5,
		LastError: "dial tcp 127.0.0.1:9: connect: connection refused\nand\tmore text after it",
		Bytes:     300, ReceivedAt: instant("2026-03-01T10:01:00Z"), DeadAt: instant("2026-03-01T10:02:00Z"),
	}}, NextCursor: "9"}
	eventFixture = adminapi.Event{EventID: "evt_one", Routes: []adminapi.EventRoute{
		{Route: "in", State: adminapi.StateDead, ID: "7", Dead: &deadOne, Attempts: []adminapi.Attempt{
			{Attempt: 1, At: instant("2026-03-01T10:00:00.012Z"), DurationMs: 1.234, Status: 503},
			{Attempt: 2, At: instant("2026-03-01T10:00:01.4Z"), DurationMs: 2500, Error: "timeout awaiting response headers"},
		}},
		{Route: "subscriber/acme", State: adminapi.StatePending, ID: "8", Attempts: []adminapi.Attempt{}},
	}}
)

func instant(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// wire is v as the admin API sends it: JSON and a newline.
func wire(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b) + "\n"
}

// sent is a request body as the commands send it.
func sent(v any) string {
	return strings.TrimSuffix(wire(v), "\n")
}

type seenRequest struct {
	Method, Path, Body string
	Query              url.Values
	Host, Origin       string
}

type answer struct {
	code int
	body string
}

// fakeAPI is an HTTP server standing in for the admin API: it answers
// "METHOD /path" from a table and records every request.
type fakeAPI struct {
	srv     *httptest.Server
	mu      sync.Mutex
	seen    []seenRequest
	answers map[string]answer
}

// newFakeAPI serves on l, or on loopback TCP when l is nil.
func newFakeAPI(t *testing.T, l net.Listener) *fakeAPI {
	t.Helper()
	a := &fakeAPI{answers: map[string]answer{}}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.seen = append(a.seen, seenRequest{Method: r.Method, Path: r.URL.Path, Body: string(b), Query: r.URL.Query(),
			Host: r.Host, Origin: r.Header.Get("Origin")})
		ans, ok := a.answers[r.Method+" "+r.URL.Path]
		a.mu.Unlock()
		if !ok {
			ans = answer{404, wire(adminapi.Error{Message: "no such endpoint: " + r.URL.Path})}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ans.code)
		io.WriteString(w, ans.body)
	}))
	if l != nil {
		a.srv.Listener.Close()
		a.srv.Listener = l
	}
	a.srv.Start()
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAPI) answer(method, path string, code int, body string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.answers[method+" "+path] = answer{code, body}
}

func (a *fakeAPI) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

// last returns the last request and forgets them all.
func (a *fakeAPI) last(t *testing.T) seenRequest {
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

func (a *fakeAPI) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// runAt runs `webhook <args>` with every subcommand and returns what it
// printed.
func runAt(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "webhook", SilenceUsage: true}
	root.AddCommand(Commands()...)
	return runCommand(t, root, args...)
}

// run runs `webhook <args> --address <a>`.
func run(t *testing.T, a *fakeAPI, args ...string) (string, error) {
	t.Helper()
	return runAt(t, append(args, "--address", a.addr())...)
}

func expectRequest(t *testing.T, got seenRequest, method, path, body string, query url.Values) {
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
	a := newFakeAPI(t, nil)
	a.answer("GET", "/webhooks/stats", 200, wire(statsFixture))
	out, err := run(t, a, "stats")
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

	out, err = run(t, a, "stats", "--json")
	if err != nil || out != wire(statsFixture) {
		t.Fatalf("stats --json: %q %v", out, err)
	}
	var js map[string]any
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatal(err)
	}

	// --storage is passed on.
	if _, err := run(t, a, "stats", "--storage", "/srv/spool"); err != nil {
		t.Fatal(err)
	}
	expectRequest(t, a.last(t), "GET", "/webhooks/stats", "", url.Values{"storage": {"/srv/spool"}})
}

func TestCLIDeadList(t *testing.T) {
	a := newFakeAPI(t, nil)
	a.answer("GET", "/webhooks/dead", 200, wire(deadFixture))
	out, err := run(t, a, "dead", "list", "--route", "in", "--reason", "max_attempts", "--limit", "2", "--cursor", "5")
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
	if _, err := run(t, a, "dead", "list"); err != nil {
		t.Fatal(err)
	}
	expectRequest(t, a.last(t), "GET", "/webhooks/dead", "", nil)

	out, err = run(t, a, "dead", "list", "--json")
	if err != nil || out != wire(deadFixture) {
		t.Fatalf("dead list --json: %q %v", out, err)
	}

	empty := sent(adminapi.DeadPage{Dead: []adminapi.DeadLetter{}})
	a.answer("GET", "/webhooks/dead", 200, empty)
	out, err = run(t, a, "dead", "list")
	if err != nil || out != "no dead letters\n" {
		t.Fatalf("empty dead list: %q %v", out, err)
	}
	// An answer without a trailing newline gets one with --json.
	out, err = run(t, a, "dead", "list", "--json")
	if err != nil || out != empty+"\n" {
		t.Fatalf("empty dead list --json: %q %v", out, err)
	}
}

func TestCLIDeadReplay(t *testing.T) {
	a := newFakeAPI(t, nil)
	a.answer("POST", "/webhooks/dead/replay", 200, wire(adminapi.Replayed{Replayed: 2}))
	for _, c := range []struct {
		args []string
		body string
	}{
		{[]string{"--route", "in", "--reason", "max_attempts"}, sent(adminapi.ReplayRequest{Route: "in", Reason: "max_attempts"})},
		{[]string{"--route", "in"}, sent(adminapi.ReplayRequest{Route: "in"})},
		{[]string{"--reason", "subscriber_gone"}, sent(adminapi.ReplayRequest{Reason: "subscriber_gone"})},
		{[]string{"--id", "3", "--id", "4"}, sent(adminapi.ReplayRequest{IDs: []string{"3", "4"}})},
		{[]string{"--id", "3,4"}, sent(adminapi.ReplayRequest{IDs: []string{"3", "4"}})},
		{[]string{"--all"}, sent(adminapi.ReplayRequest{All: true})},
	} {
		out, err := run(t, a, append([]string{"dead", "replay"}, c.args...)...)
		if err != nil || out != "replayed 2\n" {
			t.Errorf("replay %v: %q %v", c.args, out, err)
		}
		expectRequest(t, a.last(t), "POST", "/webhooks/dead/replay", c.body, nil)
	}
	out, err := run(t, a, "dead", "replay", "--all", "--json")
	if err != nil || out != wire(adminapi.Replayed{Replayed: 2}) {
		t.Fatalf("replay --json: %q %v", out, err)
	}
	a.last(t)

	// Nothing chosen, or more than one way: refused before any request.
	for _, args := range [][]string{{}, {"--all", "--route", "in"}, {"--id", "1", "--all"}, {"--id", "1", "--reason", "x"}} {
		if _, err := run(t, a, append([]string{"dead", "replay"}, args...)...); err == nil || !strings.Contains(err.Error(), "give --id") {
			t.Errorf("replay %v: %v", args, err)
		}
	}
	if n := a.count(); n != 0 {
		t.Errorf("%d requests for refused replays", n)
	}
}

func TestCLIDeadDelete(t *testing.T) {
	a := newFakeAPI(t, nil)
	a.answer("DELETE", "/webhooks/dead/7", 200, wire(adminapi.Deleted{Deleted: 1}))
	out, err := run(t, a, "dead", "delete", "7")
	if err != nil || out != "deleted 1\n" {
		t.Fatalf("delete: %q %v", out, err)
	}
	expectRequest(t, a.last(t), "DELETE", "/webhooks/dead/7", "", nil)

	out, err = run(t, a, "dead", "delete", "999")
	if err == nil || !strings.Contains(err.Error(), "no such endpoint: /webhooks/dead/999") || out != "" {
		t.Fatalf("delete of an unknown id: %q %v", out, err)
	}
	if _, err := run(t, a, "dead", "delete"); err == nil {
		t.Fatal("delete without an id")
	}
}

func TestCLIEvents(t *testing.T) {
	a := newFakeAPI(t, nil)
	a.answer("GET", "/webhooks/events/evt_one", 200, wire(eventFixture))
	out, err := run(t, a, "events", "evt_one")
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

	if _, err := run(t, a, "events", "evt_one", "--route", "subscriber/acme"); err != nil {
		t.Fatal(err)
	}
	expectRequest(t, a.last(t), "GET", "/webhooks/events/evt_one", "", url.Values{"route": {"subscriber/acme"}})

	out, err = run(t, a, "events", "evt_one", "--json")
	if err != nil || out != wire(eventFixture) {
		t.Fatalf("events --json: %q %v", out, err)
	}
}

func TestCLIPauseResumeEnable(t *testing.T) {
	a := newFakeAPI(t, nil)
	a.answer("POST", "/webhooks/routes/in/pause", 200, wire(adminapi.RoutePaused{Route: "in", Paused: true}))
	a.answer("POST", "/webhooks/routes/in/resume", 200, wire(adminapi.RoutePaused{Route: "in"}))
	a.answer("POST", "/webhooks/subscribers/acme/enable", 200, wire(adminapi.SubscriberEnabled{Subscriber: "acme", Enabled: true, Replayed: 3}))
	for _, c := range []struct {
		args       []string
		path, want string
	}{
		{[]string{"pause", "in"}, "/webhooks/routes/in/pause", "route in paused\n"},
		{[]string{"resume", "in"}, "/webhooks/routes/in/resume", "route in resumed\n"},
		{[]string{"enable", "acme"}, "/webhooks/subscribers/acme/enable", "subscriber acme enabled; replayed 3\n"},
	} {
		out, err := run(t, a, c.args...)
		if err != nil || out != c.want {
			t.Errorf("%v: %q %v, want %q", c.args, out, err, c.want)
		}
		expectRequest(t, a.last(t), "POST", c.path, "", nil)
	}
	out, err := run(t, a, "pause", "in", "--json")
	if err != nil || out != wire(adminapi.RoutePaused{Route: "in", Paused: true}) {
		t.Fatalf("pause --json: %q %v", out, err)
	}
}

func TestCLIErrors(t *testing.T) {
	a := newFakeAPI(t, nil)
	a.answer("POST", "/webhooks/routes/nope/pause", 404, wire(adminapi.Error{Message: "no route nope"}))
	a.answer("GET", "/webhooks/stats", 500, "plain failure\n")
	for _, args := range [][]string{{"pause", "nope"}, {"pause", "nope", "--json"}} {
		out, err := run(t, a, args...)
		var apiErr *adminapi.Error
		if !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.Message != "no route nope" ||
			err.Error() != "no route nope (HTTP 404)" || out != "" {
			t.Errorf("%v: %q %v", args, out, err)
		}
	}
	// An answer that is not the API's JSON error is shown as it is.
	if _, err := run(t, a, "stats"); err == nil || !strings.Contains(err.Error(), "HTTP 500: plain failure") {
		t.Errorf("stats with a plain error: %v", err)
	}
	// Nothing listening.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	if _, err := runAt(t, "stats", "--address", closed); err == nil || !strings.Contains(err.Error(), "admin API at "+closed) {
		t.Errorf("stats with nothing listening: %v", err)
	}
	// An endpoint that never answers: the command gives up after --timeout.
	hung := testnet.Silent(t, true)
	done := make(chan error, 1)
	go func() {
		_, err := runAt(t, "stats", "--address", hung.Addr().String(), "--timeout", "200ms")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "Timeout") {
			t.Errorf("stats against an endpoint that never answers: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stats against an endpoint that never answers still waiting after 10s, with --timeout 200ms")
	}
}

// TestCLIAddressFromConfig: without --address, the admin address comes from
// --config (and --adapter), as for `caddy stop`.
func TestCLIAddressFromConfig(t *testing.T) {
	a := newFakeAPI(t, nil)
	a.answer("GET", "/webhooks/stats", 200, wire(statsFixture))
	dir := t.TempDir()
	caddyfile := filepath.Join(dir, "Caddyfile")
	os.WriteFile(caddyfile, []byte("{\n\tadmin "+a.addr()+"\n}\n\nhttp://127.0.0.1:1 {\n\trespond ok\n}\n"), 0o600)
	jsonFile := filepath.Join(dir, "caddy.json")
	os.WriteFile(jsonFile, []byte(`{"admin":{"listen":"`+a.addr()+`"}}`), 0o600)
	for _, args := range [][]string{
		{"stats", "--config", caddyfile, "--adapter", "caddyfile"},
		{"stats", "-c", jsonFile},
	} {
		if out, err := runAt(t, args...); err != nil || !strings.HasPrefix(out, "ROUTE ") {
			t.Errorf("%v: %q %v", args, out, err)
			continue
		}
		expectRequest(t, a.last(t), "GET", "/webhooks/stats", "", nil)
	}
}

// TestCLIAdminAddresses: the request reaches the admin endpoint over TCP
// and over a unix socket (with or without permission bits) with the Host
// and Origin Caddy's admin endpoint accepts, as caddycmd's own commands
// send them.
func TestCLIAdminAddresses(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	overSocket := newFakeAPI(t, l)
	overTCP := newFakeAPI(t, nil)
	for _, tt := range []struct {
		api          *fakeAPI
		addr         string
		host, origin string
	}{
		{overTCP, overTCP.addr(), overTCP.addr(), "http://" + overTCP.addr()},
		{overTCP, "tcp/" + overTCP.addr(), overTCP.addr(), "http://" + overTCP.addr()},
		{overSocket, "unix/" + sock, "127.0.0.1", ""},
		{overSocket, "unix/" + sock + "|0200", "127.0.0.1", ""},
	} {
		tt.api.answer("GET", "/webhooks/stats", 200, wire(statsFixture))
		if out, err := runAt(t, "stats", "--address", tt.addr); err != nil || !strings.HasPrefix(out, "ROUTE ") {
			t.Errorf("%s: %q %v", tt.addr, out, err)
			continue
		}
		if got := tt.api.last(t); got.Host != tt.host || got.Origin != tt.origin {
			t.Errorf("%s: Host %q, Origin %q, want %q, %q", tt.addr, got.Host, got.Origin, tt.host, tt.origin)
		}
	}
	if _, err := runAt(t, "stats", "--address", "127.0.0.1:2019-2020"); err == nil || !strings.Contains(err.Error(), "invalid admin address") {
		t.Errorf("a port range: %v", err)
	}
}

func TestCLIHumanUnits(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1229: "1.2 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for s, want := range map[float64]string{0: "-", 0.0004: "0s", 0.35: "350ms", 4.25: "4.3s", 182.4: "3m2s", 7322: "2h2m2s"} {
		if got := humanAge(s); got != want {
			t.Errorf("humanAge(%v) = %q, want %q", s, got, want)
		}
	}
	if got := truncate("αβγδε", 3); got != "αβ…" {
		t.Errorf("truncate: %q", got)
	}
}
