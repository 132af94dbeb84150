package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

type loadSpec struct {
	url      string
	tpl      *template
	senders  int
	warmup   time.Duration
	duration time.Duration
	max      int // request cap, warm-up included
	want     int // expected status; 0 means any 2xx
	// rate, if set, paces the senders to this many requests/s in all, and
	// a latency counts from the request's scheduled time, so that a slow
	// answer delays (and counts against) the requests behind it.
	rate float64
}

type loadResult struct {
	start, end  time.Time     // of the load, warm-up included
	window      time.Duration // measured window: its start to the last answer of a request sent in it
	ok, okTotal int64
	p50, p99    time.Duration
	errors      int64
	errSample   string
	other       map[int]int64
	acceptedIDs []string // every event answered with the wanted status, warm-up included
}

// ring is how many body buffers each sender rotates through, so a buffer is
// rewritten only long after the transport finished writing it.
const ring = 4

type senderStats struct {
	lat       []uint32 // µs, measured window only
	ok        int64
	okTotal   int64
	accepted  []int32 // seq of the accepted events
	errors    int64
	errSample string
	other     map[int]int64
	lastEnd   time.Time // last answer to a request sent in the window
}

func generate(ctx context.Context, spec loadSpec) *loadResult {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        spec.senders,
		MaxIdleConnsPerHost: spec.senders,
		MaxConnsPerHost:     spec.senders,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	start := time.Now()
	windowStart := start.Add(spec.warmup)
	end := windowStart.Add(spec.duration)
	var sent atomic.Int64
	stats := make([]*senderStats, spec.senders)
	var wg sync.WaitGroup
	for s := range spec.senders {
		st := &senderStats{lat: make([]uint32, 0, 1<<14), other: map[int]int64{}}
		stats[s] = st
		wg.Add(1)
		go func() {
			defer wg.Done()
			send(ctx, client, spec, s, st, &sent, windowStart, end)
		}()
	}
	wg.Wait()
	r := &loadResult{start: start, end: time.Now(), other: map[int]int64{}}
	var lat []uint32
	var lastEnd time.Time
	for s, st := range stats {
		lat = append(lat, st.lat...)
		r.ok += st.ok
		r.okTotal += st.okTotal
		r.errors += st.errors
		if r.errSample == "" {
			r.errSample = st.errSample
		}
		for k, v := range st.other {
			r.other[k] += v
		}
		if st.lastEnd.After(lastEnd) {
			lastEnd = st.lastEnd
		}
		for _, seq := range st.accepted {
			r.acceptedIDs = append(r.acceptedIDs, idString(spec.tpl.cell, s, int(seq)))
		}
	}
	if !lastEnd.IsZero() {
		r.window = lastEnd.Sub(windowStart)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		pct := func(p float64) time.Duration {
			i := int(p * float64(len(lat)-1))
			return time.Duration(lat[i]) * time.Microsecond
		}
		r.p50, r.p99 = pct(0.50), pct(0.99)
	}
	return r
}

func send(ctx context.Context, client *http.Client, spec loadSpec, sender int, st *senderStats, sent *atomic.Int64, windowStart, end time.Time) {
	var bufs [ring][]byte
	for i := range bufs {
		bufs[i] = spec.tpl.newBuf()
	}
	h := sha256.New()
	var interval time.Duration
	var next time.Time // when the next request is due, when paced
	if spec.rate > 0 {
		interval = time.Duration(float64(spec.senders) / spec.rate * float64(time.Second))
		next = time.Now().Add(interval * time.Duration(sender) / time.Duration(spec.senders)) // spread the senders
	}
	for seq := 0; ; seq++ {
		if ctx.Err() != nil || sent.Add(1) > int64(spec.max) {
			return
		}
		if interval > 0 {
			select {
			case <-time.After(time.Until(next)):
			case <-ctx.Done():
				return
			}
		}
		now := time.Now()
		if !now.Before(end) {
			return
		}
		measured := !now.Before(windowStart)

		// Build and sign this request's body: its own eventId, a few bytes.
		buf := bufs[seq%ring]
		spec.tpl.setID(buf, sender, seq)
		sig := spec.tpl.sign(h, buf)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec.url, bytes.NewReader(buf))
		if err != nil {
			panic(err)
		}
		req.Header["Content-Type"] = []string{"application/json"}
		req.Header["X-Webhook-Signature"] = []string{sig}
		req.Header["X-Webhook-Event"] = []string{eventType}

		t0 := time.Now()
		if interval > 0 {
			t0 = next
			next = next.Add(interval)
		}
		resp, err := client.Do(req)
		var status int
		var snippet []byte
		if err == nil {
			status = resp.StatusCode
			if !statusOK(status, spec.want) {
				snippet, _ = io.ReadAll(io.LimitReader(resp.Body, 200))
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		t1 := time.Now()
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			st.errors++
			if st.errSample == "" {
				st.errSample = err.Error()
			}
		case !statusOK(status, spec.want):
			st.errors++
			st.other[status]++
			if st.errSample == "" {
				st.errSample = fmt.Sprintf("%d %q", status, bytes.TrimSpace(snippet))
			}
		default:
			st.okTotal++
			if spec.want != 0 {
				st.accepted = append(st.accepted, int32(seq))
			}
			if measured {
				st.ok++
				st.lat = append(st.lat, uint32(t1.Sub(t0)/time.Microsecond))
				st.lastEnd = t1
			}
		}
	}
}

func statusOK(status, want int) bool {
	if want == 0 {
		return status >= 200 && status <= 299
	}
	return status == want
}
