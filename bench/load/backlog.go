package main

// Backlog mode (issue 11): the gateway's route is paused, filled with N
// events, its memory read while they wait, then resumed and its drain timed
// until the upstream has every event.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	maxBacklog      = 1_000_000 // the spool's default max_items, which the gateway keeps
	maxBacklogSizes = 4         // per run

	adminTimeout  = 10 * time.Second      // one admin API request
	registerBound = 40 * time.Second      // for the route to appear after Caddy's start (the NATS backend's open is bounded by 30 s)
	pollGap       = 20 * time.Millisecond // between looks at the upstream or the stats
	settleBound   = 30 * time.Second      // for Caddy to go idle before a memory reading
)

// The targets of issue 11 (goals 1 and 3).
const (
	targetBig    = 1_000_000 // events queued for the RssAnon bound
	targetSmall  = 100_000   // the other end of the growth bound
	targetAnon   = 192 << 20 // RssAnon with targetBig queued, and after a drain
	targetGrowth = 48 << 20  // RssAnon(targetBig) − RssAnon(targetSmall)
	targetDrain  = 15_000    // delivered/s
	targetFill   = 8_000     // accepted/s
)

// statusFields are the /proc/<pid>/status lines the backlog mode reports.
var statusFields = []string{"VmRSS", "RssAnon", "RssFile", "RssShmem", "VmLck", "VmHWM"}

func parseBacklog(cfg *config, list string) error {
	if cfg.body < 1 || cfg.body > 1<<20 {
		return fmt.Errorf("-body must be 1..%d bytes (webhook_ingest's default max_body)", 1<<20)
	}
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > maxBacklog {
			return fmt.Errorf("bad backlog size %q: want 1..%d (the spool's default max_items)", s, maxBacklog)
		}
		if int64(n)*int64(cfg.body) > int64(cfg.maxBodyMiB)<<20 {
			return fmt.Errorf("a backlog of %d × %d bytes exceeds -max-body-mib %d", n, cfg.body, cfg.maxBodyMiB)
		}
		cfg.backlog = append(cfg.backlog, n)
	}
	if len(cfg.backlog) > maxBacklogSizes {
		return fmt.Errorf("at most %d backlog sizes per run", maxBacklogSizes)
	}
	return nil
}

// backlogTimeout is the default bound on a backlog run: two minutes per size
// for Caddy's start and stop and the waits for it to go idle, plus a
// millisecond per event for the fill and the drain (the gateway does several
// thousand a second each way).
func backlogTimeout(sizes []int) time.Duration {
	var d time.Duration
	for _, n := range sizes {
		d += 2*time.Minute + time.Duration(n)*time.Millisecond
	}
	return d
}

// backlogResult is one backlog size's figures.
type backlogResult struct {
	n            int
	queued       int // accepted events, all queued before the resume
	fill         *loadResult
	fillRate     float64          // accepted/s
	mem          map[string]int64 // statusFields with the backlog queued
	settled      settling         // from all queued to the reading
	peakFill     [2]int64         // largest RssAnon, RssFile sampled during the fill and settling
	peakDrain    [2]int64         // the same during the drain and settling
	disk         int64            // spool directory, bytes allocated
	heap         string           // heap profile path, if taken
	drainCPU     string           // CPU profile of the drain's first seconds, if taken
	drain        time.Duration    // resume to the last first arrival
	drainRate    float64          // delivered/s
	drainCPUPer  time.Duration    // Caddy's CPU (user+system) from the resume until every outcome is recorded, per event
	delivered    int64            // distinct event ids at the upstream
	dups         int64
	dead         int64
	memAfter     map[string]int64 // statusFields after the drain
	settledAfter settling
	diskAfter    int64
	sendErrors   int64
	health
}

func runBacklog(ctx context.Context, cfg config, root string, up *upstream, secret, load0 string) int {
	fmt.Printf("Hookgate backlog benchmark: route paused, filled by %d senders with %s bodies, resumed; loopback only\n",
		cfg.senders, sizeName(cfg.body))
	fmt.Printf("machine: %d CPUs (load generator, upstream and Caddy share them), load average at start: %s; bound %v\n\n",
		runtime.NumCPU(), load0, cfg.total)
	var results []*backlogResult
	for i, n := range cfg.backlog {
		fmt.Fprintf(os.Stderr, "load: backlog of %d ...\n", n)
		r, err := runBacklogCell(ctx, cfg, root, up, n, byte('a'+i), secret)
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("%w (the run exceeded -timeout %v)", err, cfg.total)
			}
			fmt.Fprintf(os.Stderr, "load: backlog of %d: %v\n", n, err)
			if len(results) > 0 {
				fmt.Println("(the sizes measured before the failure)")
				reportBacklog(cfg, results, load0)
			}
			return 1
		}
		results = append(results, r)
	}
	return reportBacklog(cfg, results, load0)
}

func runBacklogCell(ctx context.Context, cfg config, root string, up *upstream, n int, cell byte, secret string) (*backlogResult, error) {
	tpl, err := newTemplate([]byte(secret), cfg.body, cell)
	if err != nil {
		return nil, err
	}
	p, err := startCaddy(ctx, cfg.caddyBin, root, modeGateway, fmt.Sprintf("backlog-%d", n), up.addr, secret, "")
	if err != nil {
		return nil, err
	}
	defer p.stop()
	up.reset(cfg.body)

	if err := p.awaitRoute(ctx); err != nil {
		return nil, err
	}
	if _, err := p.adminDo(ctx, http.MethodPost, "/webhooks/routes/"+benchRoute+"/pause", adminTimeout); err != nil {
		return nil, err
	}

	deadline, _ := ctx.Deadline()
	fillMem := p.sampleMem(100 * time.Millisecond)
	defer fillMem.finish()
	lr := generate(ctx, loadSpec{
		url:      "http://" + p.addr + "/",
		tpl:      tpl,
		senders:  cfg.senders,
		duration: time.Until(deadline),
		max:      n,
		want:     http.StatusAccepted,
	})
	if ctx.Err() != nil {
		return nil, fmt.Errorf("fill: %w", ctx.Err())
	}
	r := &backlogResult{n: n, queued: len(lr.acceptedIDs), fill: lr, sendErrors: lr.errors}
	if lr.window > 0 {
		r.fillRate = float64(lr.ok) / lr.window.Seconds()
	}

	// A 202 means durable; wait until the spool counts every one as queued.
	if err := await(ctx, func() (bool, error) {
		if got := up.snap().requests; got > 0 {
			return false, fmt.Errorf("the upstream got %d requests while the route was paused", got)
		}
		rs, _, err := p.routeStat(ctx, benchRoute)
		return rs.Queued >= int64(r.queued), err
	}); err != nil {
		return nil, fmt.Errorf("waiting for %d queued: %w", r.queued, err)
	}
	r.settled = settle(ctx, p)
	r.mem = p.procStatus(statusFields...)
	r.peakFill[0], r.peakFill[1] = fillMem.finish()
	if r.disk, err = diskUsage(filepath.Join(p.dir, "spool")); err != nil {
		return nil, err
	}
	if cfg.profileDir != "" {
		path := filepath.Join(cfg.profileDir, fmt.Sprintf("backlog-%d-heap.pprof", n))
		if err := p.saveAdmin("/debug/pprof/heap", path, time.Minute); err != nil {
			fmt.Fprintln(os.Stderr, "load: heap profile:", err)
		} else {
			r.heap = path
		}
	}

	drainMem := p.sampleMem(100 * time.Millisecond)
	defer drainMem.finish()
	resumed, cpu0 := time.Now(), p.stat()
	if _, err := p.adminDo(ctx, http.MethodPost, "/webhooks/routes/"+benchRoute+"/resume", adminTimeout); err != nil {
		return nil, err
	}
	var profiled chan error
	if cfg.profileDir != "" {
		// The drain's first seconds (at most 5, and less than a short
		// drain takes at 10k events/s).
		path := filepath.Join(cfg.profileDir, fmt.Sprintf("backlog-%d-drain-cpu.pprof", n))
		profiled = make(chan error, 1)
		go func() { profiled <- p.profile(min(5, max(1, n/20_000)), path) }()
		defer func() {
			if err := <-profiled; err != nil {
				fmt.Fprintln(os.Stderr, "load: drain CPU profile:", err)
			} else {
				r.drainCPU = path
			}
		}()
	}
	if err := await(ctx, func() (bool, error) {
		if up.snap().distinct >= int64(r.queued) && up.missing(lr.acceptedIDs) == 0 {
			return true, nil
		}
		rs, _, err := p.routeStat(ctx, benchRoute)
		if err == nil && rs.Dead > 0 {
			err = fmt.Errorf("%d events became dead letters", rs.Dead)
		}
		return false, err
	}); err != nil {
		return nil, fmt.Errorf("drain: %d of %d events had not reached the upstream: %w", up.missing(lr.acceptedIDs), r.queued, err)
	}
	s := up.snap()
	r.delivered, r.dups, r.badLength = s.distinct, s.dups, s.badLength
	if r.drain = s.last.Sub(resumed); r.drain > 0 {
		r.drainRate = float64(s.distinct) / r.drain.Seconds()
	}

	// After the drain: once the spool has recorded every outcome.
	if err := await(ctx, func() (bool, error) {
		rs, _, err := p.routeStat(ctx, benchRoute)
		r.dead = rs.Dead
		return rs.Queued+rs.InFlight+rs.Scheduled == 0, err
	}); err != nil {
		return nil, fmt.Errorf("waiting for an empty queue after the drain: %w", err)
	}
	if cpu1 := p.stat(); r.delivered > 0 {
		r.drainCPUPer = (cpu1.user + cpu1.sys - cpu0.user - cpu0.sys) / time.Duration(r.delivered)
	}
	r.settledAfter = settle(ctx, p)
	r.memAfter = p.procStatus(statusFields...)
	r.peakDrain[0], r.peakDrain[1] = drainMem.finish()
	if r.diskAfter, err = diskUsage(filepath.Join(p.dir, "spool")); err != nil {
		return nil, err
	}
	p.stop()
	r.logWarn, r.logErr, r.logSample = p.logCounts()
	return r, nil
}

// settle waits until Caddy uses less than a tenth of a core over a second
// (its flushes and compactions are done), for at most settleBound.
func settle(ctx context.Context, p *caddyProc) settling {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, settleBound)
	defer cancel()
	prev, prevAt := p.stat(), start
	err := await(ctx, func() (bool, error) {
		if time.Since(prevAt) < time.Second {
			return false, nil
		}
		cur, now := p.stat(), time.Now()
		idle := cur.user+cur.sys-prev.user-prev.sys < now.Sub(prevAt)/10
		prev, prevAt = cur, now
		return idle, nil
	})
	return settling{time.Since(start), err == nil}
}

// settling is how long a memory reading waited for Caddy to go idle.
type settling struct {
	waited time.Duration
	idle   bool
}

func (s settling) String() string {
	if !s.idle {
		return fmt.Sprintf("%s later (Caddy was still busy)", s.waited.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("%s later, when Caddy was idle", s.waited.Round(100*time.Millisecond))
}

// await polls cond until it is done or fails, or ctx ends.
func await(ctx context.Context, cond func() (bool, error)) error {
	for {
		done, err := cond()
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollGap):
		}
	}
}

// routeStat is one route of the admin API's GET /webhooks/stats.
type routeStat struct {
	Route     string `json:"route"`
	Queued    int64  `json:"queued"`
	InFlight  int64  `json:"in_flight"`
	Scheduled int64  `json:"scheduled"`
	Dead      int64  `json:"dead"`
	Paused    bool   `json:"paused"`
}

// awaitRoute waits until the bench route is in /webhooks/stats: it
// registers when the webhooks app has started, its store open, which may
// be after the site first answers.
func (p *caddyProc) awaitRoute(ctx context.Context) error {
	regCtx, cancel := context.WithTimeout(ctx, registerBound)
	defer cancel()
	var lastErr error
	err := await(regCtx, func() (bool, error) {
		_, ok, err := p.routeStat(regCtx, benchRoute)
		lastErr = err
		return ok, nil
	})
	if err != nil {
		return fmt.Errorf("route %s not in /webhooks/stats: %v (last answer: %v): %s", benchRoute, err, lastErr, tail(p.logPath))
	}
	return nil
}

// routeStat returns the spool's figures for route, and whether it is listed.
func (p *caddyProc) routeStat(ctx context.Context, route string) (routeStat, bool, error) {
	b, err := p.adminDo(ctx, http.MethodGet, "/webhooks/stats", adminTimeout)
	if err != nil {
		return routeStat{}, false, err
	}
	var st struct {
		Routes []routeStat `json:"routes"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return routeStat{}, false, fmt.Errorf("/webhooks/stats: %w", err)
	}
	for _, rs := range st.Routes {
		if rs.Route == route {
			return rs, true, nil
		}
	}
	return routeStat{}, false, nil
}

// diskUsage is the space the files under dir take on disk (like du).
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // Badger removed it meanwhile
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}

func reportBacklog(cfg config, results []*backlogResult, load0 string) int {
	fmt.Printf("| events queued | RSS | RssAnon | RssFile | spool on disk | fill accepted/s | drain delivered/s | drain Caddy CPU/event | RssAnon after drain |\n")
	fmt.Printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range results {
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %.0f µs | %s |\n", count(int64(r.queued)),
			mib(r.mem["VmRSS"]), mib(r.mem["RssAnon"]), mib(r.mem["RssFile"]), mib(r.disk),
			count(int64(r.fillRate)), count(int64(r.drainRate)), float64(r.drainCPUPer.Nanoseconds())/1e3, mib(r.memAfter["RssAnon"]))
	}

	fmt.Println()
	fmt.Println("notes:")
	fmt.Println("- memory: the Caddy process's /proc/<pid>/status with the backlog queued on the paused route, read once Caddy is idle (under 10 % of a core over 1 s, waited for up to " + settleBound.String() + "); spool on disk: blocks allocated under its storage directory.")
	fmt.Println("- fill accepted/s: 202 answers ÷ (last answer − first request); drain delivered/s: distinct events at the upstream ÷ (last first arrival − resume); drain Caddy CPU/event: the Caddy process's user+system CPU from the resume until the stats show every outcome recorded ÷ events delivered (less sensitive than the rate to what else runs on the machine).")
	fmt.Println("- after drain: read once the spool's stats show the route's queue empty (every outcome recorded) and Caddy is idle; peaks: RssAnon and RssFile sampled every 100 ms.")
	fmt.Printf("- load average at start %s, at end %s; the load generator and the upstream run in one process on the same cores.\n", load0, loadavg())
	fail := false
	for _, r := range results {
		label := count(int64(r.n))
		fmt.Printf("- %s queued: fill over %s, p50/p99 ack %s/%s; peak RssAnon %s, RssFile %s; read %s: VmHWM %s, RssShmem %s, VmLck %s\n",
			label, r.fill.window.Round(time.Millisecond), ms(r.fill.p50), ms(r.fill.p99), mib(r.peakFill[0]), mib(r.peakFill[1]),
			r.settled, mib(r.mem["VmHWM"]), mib(r.mem["RssShmem"]), mib(r.mem["VmLck"]))
		fmt.Printf("- %s drained in %s: peak RssAnon %s, RssFile %s; read %s: RSS %s (RssAnon %s + RssFile %s + RssShmem %s), VmHWM %s, VmLck %s, spool on disk %s\n",
			label, r.drain.Round(time.Millisecond), mib(r.peakDrain[0]), mib(r.peakDrain[1]), r.settledAfter,
			mib(r.memAfter["VmRSS"]), mib(r.memAfter["RssAnon"]), mib(r.memAfter["RssFile"]), mib(r.memAfter["RssShmem"]),
			mib(r.memAfter["VmHWM"]), mib(r.memAfter["VmLck"]), mib(r.diskAfter))
		fmt.Printf("- %s: accepted %d, delivered %d distinct, %d redelivered, %d dead letters\n", label, r.queued, r.delivered, r.dups, r.dead)
		if r.heap != "" {
			fmt.Printf("- %s: heap profile with the backlog queued: %s\n", label, r.heap)
		}
		if r.sendErrors > 0 || r.queued < r.n {
			fmt.Printf("- %s: %d of %d events not accepted: %d unexpected answers or failed requests, e.g. %s; statuses %v\n",
				label, r.n-r.queued, r.n, r.sendErrors, r.fill.errSample, r.fill.other)
			fail = true
		}
		if r.health.report(label) {
			fail = true
		}
	}
	if len(results) > 1 {
		lo, hi := results[0], results[0]
		for _, r := range results {
			if r.queued < lo.queued {
				lo = r
			}
			if r.queued > hi.queued {
				hi = r
			}
		}
		if hi.queued > lo.queued {
			per := float64(hi.mem["RssAnon"]-lo.mem["RssAnon"]) / float64(hi.queued-lo.queued)
			fmt.Printf("- RssAnon per queued event from %s to %s: %.0f bytes (the growth target allows about %.0f)\n",
				count(int64(lo.queued)), count(int64(hi.queued)), per, float64(targetGrowth)/(targetBig-targetSmall))
		}
	}

	for _, r := range results {
		if r.heap != "" {
			printTop(fmt.Sprintf("Heap in use with %s queued", count(int64(r.queued))), r.heap, "-sample_index=inuse_space")
		}
		if r.drainCPU != "" {
			printTop(fmt.Sprintf("CPU while draining %s", count(int64(r.queued))), r.drainCPU)
		}
	}

	return verdict(fail, "errors", reportTargets(results), cfg.strict)
}

// reportTargets prints a PASS or FAIL line for each target of issue 11 the
// run measured and returns how many failed.
func reportTargets(results []*backlogResult) (missed int) {
	fmt.Println("\ntargets (issue 11, goals 1 and 3; fill and drain rates checked at every size, the issue's drain target is for 1,000,000):")
	check := func(ok bool, format string, args ...any) {
		verdict := "PASS"
		if !ok {
			verdict = "FAIL"
			missed++
		}
		fmt.Printf("%s  "+format+"\n", append([]any{verdict}, args...)...)
	}
	at := map[int]*backlogResult{}
	for _, r := range results {
		if r.queued == r.n {
			at[r.n] = r
		}
	}
	if big := at[targetBig]; big != nil {
		check(big.mem["RssAnon"] <= targetAnon, "RssAnon with %s queued ≤ %s: %s", count(targetBig), mib(targetAnon), mib1(big.mem["RssAnon"]))
		if small := at[targetSmall]; small != nil {
			growth := big.mem["RssAnon"] - small.mem["RssAnon"]
			check(growth <= targetGrowth, "RssAnon(%s) − RssAnon(%s) ≤ %s: %s", count(targetBig), count(targetSmall), mib(targetGrowth), mib1(growth))
		} else {
			fmt.Printf("----  RssAnon(%s) − RssAnon(%s) ≤ %s: not measured (needs both in -backlog)\n", count(targetBig), count(targetSmall), mib(targetGrowth))
		}
	} else {
		fmt.Printf("----  RssAnon with %s queued ≤ %s, and RssAnon(%s) − RssAnon(%s) ≤ %s: not measured (needs -backlog %d,%d)\n",
			count(targetBig), mib(targetAnon), count(targetBig), count(targetSmall), mib(targetGrowth), targetSmall, targetBig)
	}
	for _, r := range results {
		label := count(int64(r.queued))
		check(r.memAfter["RssAnon"] <= targetAnon, "%s: RssAnon after the drain ≤ %s: %s", label, mib(targetAnon), mib1(r.memAfter["RssAnon"]))
		check(r.mem["VmLck"] == 0 && r.memAfter["VmLck"] == 0, "%s: no locked pages (VmLck 0), so the file-backed ones stay reclaimable: %s queued, %s after the drain",
			label, mib1(r.mem["VmLck"]), mib1(r.memAfter["VmLck"]))
		check(r.fillRate >= targetFill, "%s: fill ≥ %s accepted/s: %s", label, count(targetFill), count(int64(r.fillRate)))
		check(r.drainRate >= targetDrain, "%s: drain ≥ %s delivered/s: %s", label, count(targetDrain), count(int64(r.drainRate)))
	}
	return missed
}

// mib1 is mib to a tenth, for the figures held against a target.
func mib1(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// count formats n with thousands separators.
func count(n int64) string {
	if n < 0 {
		return "-" + count(-n)
	}
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
