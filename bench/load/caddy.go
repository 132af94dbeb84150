package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// caddyProc is one running Caddy under test.
type caddyProc struct {
	*child
	dir     string
	addr    string // the site, 127.0.0.1:port
	admin   string // the admin endpoint, 127.0.0.1:port
	logPath string
}

// benchRoute is the name of the gateway's webhook_ingest route.
const benchRoute = "bench"

// child is a process the load tool started: Caddy or nats-server.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// live tracks the running children so a signal can stop them.
var live struct {
	sync.Mutex
	procs map[*child]bool
}

// startChild starts bin in dir with its output in the file output and the
// tool's environment plus env. The child dies with the load tool, whatever
// kills it (PDEATHSIG).
func startChild(dir, output string, env []string, bin string, args ...string) (*child, error) {
	out, err := os.Create(output)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	live.Lock()
	if live.procs == nil {
		live.procs = map[*child]bool{}
	}
	live.procs[c] = true
	live.Unlock()
	go func() { cmd.Wait(); out.Close(); close(c.exited) }()
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the child to exit and kills it if it has not after 10 s.
func (c *child) stop() {
	if c == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	live.Lock()
	delete(live.procs, c)
	live.Unlock()
}

func killAll() {
	live.Lock()
	defer live.Unlock()
	for c := range live.procs {
		c.cmd.Process.Kill()
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startCaddy writes a Caddyfile for mode into a fresh directory under root
// and starts bin with it; it returns once the site answers. The gateway
// keeps its events in Badger in that directory, or, if backend is set, in
// that backend (a "backend nats {...}" block, see natsBackend).
func startCaddy(ctx context.Context, bin, root, mode string, cellName string, upstreamAddr, secret, backend string) (*caddyProc, error) {
	dir, err := os.MkdirTemp(root, cellName+"-")
	if err != nil {
		return nil, err
	}
	sitePort, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &caddyProc{
		dir:     dir,
		addr:    fmt.Sprintf("127.0.0.1:%d", sitePort),
		admin:   fmt.Sprintf("127.0.0.1:%d", adminPort),
		logPath: filepath.Join(dir, "caddy.log"),
	}
	var global, site string
	switch mode {
	case modeProxy:
		site = fmt.Sprintf("\treverse_proxy %s\n", upstreamAddr)
	case modeGateway:
		if backend == "" {
			backend = fmt.Sprintf("storage %s\n\t\tmin_free_disk 64MiB", filepath.Join(dir, "spool"))
		}
		global = fmt.Sprintf("\twebhooks {\n\t\t%s\n\t\tmax_bytes 16GiB\n\t}\n", backend)
		site = fmt.Sprintf(`	webhook_ingest {
		name %s
		secret {env.BENCH_SECRET}
		tolerance 1h
		forward http://%s/ {
			concurrency 64
			timeout 10s
		}
	}
`, benchRoute, upstreamAddr)
	default:
		return nil, fmt.Errorf("unknown mode %q", mode)
	}
	caddyfile := fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
	auto_https off
	persist_config off
	log {
		output file %s
	}
%s}

http://:%d {
%s}
`, p.admin, p.logPath, global, sitePort, site)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(caddyfile), 0o600); err != nil {
		return nil, err
	}
	p.child, err = startChild(dir, filepath.Join(dir, "stderr.log"), []string{
		"BENCH_SECRET=" + secret,
		"HOME=" + dir,
		"XDG_DATA_HOME=" + filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
	}, bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	if err != nil {
		return nil, err
	}

	// Ready when the site answers anything (405 for the gateway's GET).
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("caddy (%s) exited during startup: %s", mode, tail(filepath.Join(dir, "stderr.log"), p.logPath))
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		default:
		}
		if resp, err := client.Get("http://" + p.addr + "/"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			client.CloseIdleConnections()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("caddy (%s) not ready after 20s: %s", mode, tail(filepath.Join(dir, "stderr.log"), p.logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procStatus reads the named fields of /proc/<pid>/status (all of them
// sizes in kB there) and returns them in bytes; a field it lacks is absent.
func (c *child) procStatus(names ...string) map[string]int64 {
	out := make(map[string]int64, len(names))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid()))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !slices.Contains(names, k) {
			continue
		}
		if f := strings.Fields(v); len(f) > 0 {
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				out[k] = kb << 10
			}
		}
	}
	return out
}

// peakRSS is the process's VmHWM in bytes.
func (c *child) peakRSS() int64 {
	if v, ok := c.procStatus("VmHWM")["VmHWM"]; ok {
		return v
	}
	return -1
}

// memSampler records the largest anonymous and file-backed resident sizes
// seen while it runs (VmHWM has only the total peak).
type memSampler struct {
	stop      chan struct{}
	done      chan struct{}
	once      sync.Once
	anon, fil int64
}

func (p *caddyProc) sampleMem(every time.Duration) *memSampler {
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			anon, fil := p.rss()
			m.anon, m.fil = max(m.anon, anon), max(m.fil, fil)
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// finish stops the sampling (if it runs) and returns the peaks.
func (m *memSampler) finish() (anon, file int64) {
	m.once.Do(func() { close(m.stop) })
	<-m.done
	return m.anon, m.fil
}

// rss is the process's current RssAnon and RssFile in bytes.
func (p *caddyProc) rss() (anon, file int64) {
	st := p.procStatus("RssAnon", "RssFile")
	return st["RssAnon"], st["RssFile"]
}

// procStat is the process's CPU time and page faults so far.
type procStat struct {
	user, sys time.Duration
	minflt    int64
}

func (c *child) stat() procStat {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid()))
	if err != nil {
		return procStat{}
	}
	// Fields after the ")" that closes the command name start at field 3;
	// minflt, utime and stime are fields 10, 14 and 15 of the whole line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procStat{}
	}
	num := func(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
	const hz = 100 // USER_HZ on Linux
	return procStat{
		user:   time.Duration(num(f[11])) * time.Second / hz,
		sys:    time.Duration(num(f[12])) * time.Second / hz,
		minflt: num(f[7]),
	}
}

// logCounts counts the log lines at warn and error level.
func (p *caddyProc) logCounts() (warn, errs int, sample string) {
	f, err := os.Open(p.logPath)
	if err != nil {
		return 0, 0, ""
	}
	defer f.Close()
	var warnSample string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case benign(line):
		case strings.Contains(line, `"level":"warn"`):
			warn++
			if warnSample == "" {
				warnSample = line
			}
		case strings.Contains(line, `"level":"error"`), strings.Contains(line, `"level":"fatal"`), strings.Contains(line, `"level":"panic"`):
			errs++
			if sample == "" {
				sample = line
			}
		}
	}
	if sample == "" {
		sample = warnSample
	}
	return warn, errs, sample
}

// benign are the warnings every run logs: plain HTTP on loopback, shutdown,
// and the durability checks that the gateway on a single NATS node fails
// by design (replicas 1, accept_risk).
func benign(line string) bool {
	for _, m := range []string{"HTTP/2 skipped because it requires TLS", "HTTP/3 skipped because it requires TLS", `"msg":"exiting; byeee`,
		`has 1 replicas: fewer than 3 do not survive the loss of a server's disk"`} {
		if strings.Contains(line, m) {
			return true
		}
	}
	return false
}

// profile fetches a CPU profile of seconds from the admin endpoint into path.
func (p *caddyProc) profile(seconds int, path string) error {
	return p.saveAdmin(fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), path, time.Duration(seconds+30)*time.Second)
}

// adminDo sends a request to the admin endpoint and returns the body of
// its answer (at most 64 MiB) if the status is 200.
func (p *caddyProc) adminDo(ctx context.Context, method, path string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := httpDo(ctx, http.DefaultClient, method, "http://"+p.admin+path, 64<<20)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return b, nil
}

// httpDo sends a request without a body and returns the body of its
// answer (at most limit bytes) if the status is 200.
func httpDo(ctx context.Context, client *http.Client, method, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %.200s", resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// saveAdmin writes the answer to a GET of the admin endpoint's path into file.
func (p *caddyProc) saveAdmin(path, file string, timeout time.Duration) error {
	b, err := p.adminDo(context.Background(), http.MethodGet, path, timeout)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

// tail returns the last lines of the given files, for error messages.
func tail(paths ...string) string {
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 5 {
			lines = lines[len(lines)-5:]
		}
		out = append(out, lines...)
	}
	return strings.Join(out, "\n")
}
