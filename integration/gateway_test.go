package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Ports for the tests' listeners come from below the kernel's ephemeral
// range (32768 and up on Linux), one after the other: the kernel hands out a
// port that freePort just closed to the next bind to port 0 now and then,
// and two parallel tests must not get the same one.
const (
	firstPort = 20000
	numPorts  = 12000
)

var lastPort atomic.Int32

func init() { lastPort.Store(int32(os.Getpid() % numPorts)) } // apart from another run's

// freePort returns a loopback port that was free a moment ago and that no
// other test of this process gets.
func freePort(t testing.TB) int {
	t.Helper()
	for range numPorts {
		port := firstPort + int(lastPort.Add(1))%numPorts
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free loopback port")
	return 0
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gateway is one Hookgate (Caddy) process at a time, restartable on the same
// ports and storage. Its stdout and stderr accumulate in one buffer over all
// its runs.
type gateway struct {
	t       *testing.T
	dir     string
	storage string
	admin   string // 127.0.0.1:port
	site    string // 127.0.0.1:port
	env     []string
	log     syncBuffer
	client  *http.Client

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{} // closed when the current process has exited
	runs  int
	files int

	// Values that must never appear in the logs: secrets (plain strings)
	// and the hex digests of every signature sent.
	secretMu sync.Mutex
	secrets  []string
	sigs     map[string]bool
}

// newGateway reserves ports and a storage directory. env entries (NAME=value)
// are added to the process's environment; the process is killed and its logs
// checked for secrets and signatures at cleanup.
func newGateway(t *testing.T, env ...string) *gateway {
	t.Helper()
	dir := t.TempDir()
	g := &gateway{
		t:       t,
		dir:     dir,
		storage: filepath.Join(dir, "spool"),
		admin:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		site:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		client:  &http.Client{Timeout: 15 * time.Second},
		sigs:    map[string]bool{},
	}
	home := filepath.Join(dir, "home")
	g.env = append(os.Environ(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
	)
	g.env = append(g.env, env...)
	t.Cleanup(func() {
		g.kill()
		g.checkLogsClean()
		if t.Failed() {
			logs := g.logs()
			if len(logs) > 12000 {
				logs = "...\n" + logs[len(logs)-12000:]
			}
			t.Logf("gateway logs (%s):\n%s", g.dir, logs)
		}
	})
	return g
}

// globals is the global options block every test config starts with; extra
// is added inside it.
// newSecretGateway is newGateway with a fresh 32-byte secret in the
// environment variable env, forbidden in the logs.
func newSecretGateway(t *testing.T, env string, extraEnv ...string) (*gateway, []byte) {
	secret := randomSecret(32)
	g := newGateway(t, append([]string{env + "=" + string(secret)}, extraEnv...)...)
	g.forbid(string(secret))
	return g, secret
}

// newInboundGateway is the usual start of an inbound test: a gateway with a
// fresh secret in HG_SECRET (see newSecretGateway), and an upstream for its
// routes to forward to.
func newInboundGateway(t *testing.T) (*gateway, []byte, *upstream) {
	g, secret := newSecretGateway(t, "HG_SECRET")
	return g, secret, newUpstream(t)
}

func (g *gateway) globals(extra string) string { return g.globalsWith("", extra) }

// globalsWith is globals with more lines in the webhooks block.
func (g *gateway) globalsWith(webhooks, extra string) string {
	return g.globalsOn(fmt.Sprintf("storage %s\n\t\tmin_free_disk 1MiB\n\t\t%s", g.storage, webhooks), extra)
}

// globalsOn is the global options block with webhooks as the webhooks
// block's body.
func (g *gateway) globalsOn(webhooks, extra string) string {
	return fmt.Sprintf(`{
	admin %s
	grace_period 2s
	default_bind 127.0.0.1
	skip_install_trust
	auto_https off
	webhooks {
		%s
	}
	%s
}
`, g.admin, webhooks, extra)
}

func (g *gateway) url(path string) string { return "http://" + g.site + path }

// writeConfig stores a config in the gateway's directory and returns its path.
func (g *gateway) writeConfig(config string) string {
	g.t.Helper()
	g.mu.Lock()
	g.files++
	name := filepath.Join(g.dir, fmt.Sprintf("Caddyfile.%d", g.files))
	g.mu.Unlock()
	if err := os.WriteFile(name, []byte(config), 0o600); err != nil {
		g.t.Fatalf("writing config: %v", err)
	}
	return name
}

// start runs the binary with config and waits until the admin endpoint and
// the site answer.
func (g *gateway) start(config string) {
	g.t.Helper()
	g.mu.Lock()
	if g.cmd != nil {
		g.mu.Unlock()
		g.t.Fatal("gateway already running")
	}
	g.mu.Unlock()
	file := g.writeConfig(config)
	cmd := exec.Command(caddyBin, "run", "--config", file, "--adapter", "caddyfile")
	cmd.Env = g.env
	cmd.Dir = g.dir
	cmd.Stdout = &g.log
	cmd.Stderr = &g.log
	g.mu.Lock()
	g.runs++
	fmt.Fprintf(&g.log, "=== integration: start #%d with %s ===\n", g.runs, filepath.Base(file))
	if err := cmd.Start(); err != nil {
		g.mu.Unlock()
		g.t.Fatalf("starting caddy: %v", err)
	}
	done := make(chan struct{})
	g.cmd, g.done = cmd, done
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(&g.log, "=== integration: process exited: %v ===\n", err)
		close(done)
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			g.t.Fatalf("caddy exited during startup:\n%s", g.logs())
		default:
		}
		if g.ready() {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("caddy not ready after 30s:\n%s", g.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *gateway) ready() bool {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + g.admin + "/config/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	resp, err = c.Get(g.url("/"))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

// kill sends SIGKILL and waits for the process to go; no-op if not running.
func (g *gateway) kill() {
	g.signal(syscall.SIGKILL, 10*time.Second)
}

// terminate sends SIGTERM and waits (up to timeout) for the process to exit.
func (g *gateway) terminate(timeout time.Duration) error {
	return g.signal(syscall.SIGTERM, timeout)
}

func (g *gateway) signal(sig syscall.Signal, timeout time.Duration) error {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.mu.Unlock()
	if cmd == nil {
		return nil
	}
	fmt.Fprintf(&g.log, "=== integration: sending %v ===\n", sig)
	_ = cmd.Process.Signal(sig)
	var err error
	select {
	case <-done:
	case <-time.After(timeout):
		err = fmt.Errorf("caddy did not exit within %v of %v", timeout, sig)
		_ = cmd.Process.Kill()
		<-done
	}
	g.mu.Lock()
	g.cmd, g.done = nil, nil
	g.mu.Unlock()
	return err
}

// load posts a Caddyfile to the admin endpoint's /load.
func (g *gateway) load(config string) (int, string, error) {
	return g.loadAs("text/caddyfile", config)
}

// loadAs posts a configuration of a content type to /load.
func (g *gateway) loadAs(contentType, config string) (int, string, error) {
	g.writeConfig(config) // kept for debugging
	req, err := http.NewRequest(http.MethodPost, "http://"+g.admin+"/load", strings.NewReader(config))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// adminGet fetches a path of the admin endpoint.
func (g *gateway) adminGet(path string) (int, string, error) {
	resp, err := g.client.Get("http://" + g.admin + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// goroutines reads the process's goroutine count from the admin endpoint's
// pprof handler, with the profile itself for failure messages.
func (g *gateway) goroutines() (int, string, error) {
	code, body, err := g.adminGet("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, "", err
	}
	if code != http.StatusOK {
		return 0, body, fmt.Errorf("pprof: status %d", code)
	}
	first, _, _ := strings.Cut(body, "\n")
	n, ok := strings.CutPrefix(first, "goroutine profile: total ")
	if !ok {
		return 0, body, fmt.Errorf("pprof: unexpected first line %q", first)
	}
	v, err := strconv.Atoi(strings.TrimSpace(n))
	return v, body, err
}

func (g *gateway) logs() string { return g.log.String() }

// forbid adds values (secrets) that must never appear in the logs.
func (g *gateway) forbid(values ...string) {
	g.secretMu.Lock()
	g.secrets = append(g.secrets, values...)
	g.secretMu.Unlock()
}

// sentSignature records a signature header value that was sent.
func (g *gateway) sentSignature(v string) {
	hex := strings.ToLower(strings.TrimPrefix(v, "sha256="))
	if len(hex) < 32 {
		return // too short to look for
	}
	g.secretMu.Lock()
	g.sigs[hex] = true
	g.secretMu.Unlock()
}

var hexRun = regexp.MustCompile(`[0-9a-fA-F]{32,}`)

// leaks describes the forbidden values found in the logs: which secret or
// signature (shortened), and the logger and message of the line.
func (g *gateway) leaks() []string {
	g.secretMu.Lock()
	defer g.secretMu.Unlock()
	// A signature is 64 hex digits; a log line could also hold a part of
	// one, so runs of 32 or more are compared by their first 32 digits.
	prefixes := make(map[string]bool, len(g.sigs))
	for sig := range g.sigs {
		prefixes[sig[:32]] = true
	}
	var found []string
	sc := bufio.NewScanner(strings.NewReader(g.logs()))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		what := ""
		for _, s := range g.secrets {
			if s != "" && strings.Contains(line, s) {
				what = "secret " + s[:4] + "…"
			}
		}
		for _, run := range hexRun.FindAllString(line, -1) {
			run = strings.ToLower(run)
			for i := 0; i+32 <= len(run) && what == ""; i++ {
				if prefixes[run[i:i+32]] {
					what = "signature " + run[i:i+12] + "…"
				}
			}
		}
		if what != "" {
			found = append(found, fmt.Sprintf("%s in a log line of logger %q, msg %q", what, jsonField(line, "logger"), jsonField(line, "msg")))
		}
	}
	return found
}

// jsonField returns a string member of a JSON log line, "" if absent.
func jsonField(line, key string) string {
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		return ""
	}
	v, _ := m[key].(string)
	return v
}

func (g *gateway) checkLogsClean() {
	if leaks := g.leaks(); len(leaks) > 0 {
		g.t.Errorf("the gateway's logs contain %d secret or signature values, e.g. %s", len(leaks), leaks[0])
	}
	if races := g.logLines("WARNING: DATA RACE"); len(races) > 0 {
		g.t.Errorf("the race detector found %d data races in the gateway (see its logs)", len(races))
	}
}

// logLines returns the log lines that contain every one of words
// (case-insensitive).
func (g *gateway) logLines(words ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(g.logs()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		l := strings.ToLower(sc.Text())
		for _, w := range words {
			if !strings.Contains(l, strings.ToLower(w)) {
				continue next
			}
		}
		out = append(out, sc.Text())
	}
	return out
}

// sleepCtx sleeps d unless ctx ends first; it reports whether it slept fully.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// isConnErr reports whether err looks like a transport failure (the
// gateway was down or went away), not an HTTP answer.
func isConnErr(err error) bool {
	var ne net.Error
	return err != nil && (errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "connection"))
}
