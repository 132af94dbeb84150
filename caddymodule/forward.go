package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/hookgate/hookgate/spool"
	"github.com/hookgate/hookgate/verifier"
)

// Forward is where and how a webhook_ingest route delivers its events.
type Forward struct {
	// URL is the upstream's address (http or https).
	URL string `json:"url"`
	// MaxAttempts is the total number of attempts. Default 10.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxAge is how long an event is retried at most. Default 24h.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
	// BackoffMin is the first retry's delay. Default 1s.
	BackoffMin caddy.Duration `json:"backoff_min,omitempty"`
	// BackoffMax caps the delay between attempts. Default 10m.
	BackoffMax caddy.Duration `json:"backoff_max,omitempty"`
	// Timeout bounds one attempt. Default 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Concurrency bounds this route's attempts in flight. Default 8.
	Concurrency int `json:"concurrency,omitempty"`
	// HeaderUp adds or replaces headers on the forwarded request.
	HeaderUp http.Header `json:"header_up,omitempty"`
}

// Headers of the forwarded request.
const (
	headerID      = "X-Webhook-Id"
	headerAttempt = "X-Webhook-Attempt"
)

// maxResponseBody is how much of an upstream's answer is read (and dropped)
// so that its connection can be reused.
const maxResponseBody = 64 << 10

func (f *Forward) validate() error {
	u, err := url.Parse(f.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("forward: %q is not an http(s) URL", f.URL)
	}
	if f.MaxAttempts < 0 || f.Concurrency < 0 || f.MaxAge < 0 || f.BackoffMin < 0 || f.BackoffMax < 0 || f.Timeout < 0 {
		return errors.New("forward: settings must not be negative")
	}
	if f.BackoffMax > 0 && f.BackoffMin > f.BackoffMax {
		return errors.New("forward: backoff minimum is above its maximum")
	}
	return nil
}

// resolveHeaders expands {env.*} and {file.*} placeholders in header_up
// values, so that a token for the upstream can stay out of the config.
func (f *Forward) resolveHeaders() (http.Header, error) {
	if len(f.HeaderUp) == 0 {
		return nil, nil
	}
	repl := caddy.NewReplacer()
	out := make(http.Header, len(f.HeaderUp))
	for k, vs := range f.HeaderUp {
		for _, v := range vs {
			rv, err := repl.ReplaceOrErr(v, false, true)
			if err != nil {
				return nil, fmt.Errorf("header_up %s: %w", k, err)
			}
			out[http.CanonicalHeaderKey(k)] = append(out[http.CanonicalHeaderKey(k)], rv)
		}
	}
	return out, nil
}

// route builds the spool route for this target, with header_up values
// already resolved.
func (f *Forward) route(header http.Header) (spool.Route, *forwarder) {
	concurrency := f.Concurrency
	if concurrency <= 0 {
		concurrency = spool.DefaultConcurrency
	}
	fw := &forwarder{url: f.URL, header: header, client: newDeliveryClient(concurrency, nil)}
	return spool.Route{
		Deliverer:   fw,
		Concurrency: concurrency,
		Timeout:     time.Duration(f.Timeout),
		Target:      redactURL(f.URL),
		Policy: spool.Policy{
			MaxAttempts: f.MaxAttempts,
			MaxAge:      time.Duration(f.MaxAge),
			BackoffMin:  time.Duration(f.BackoffMin),
			BackoffMax:  time.Duration(f.BackoffMax),
		},
	}, fw
}

// newDeliveryClient makes the HTTP client of one delivery target: no proxy
// from the environment (it would also hide the dialed address from the
// guard), no redirects followed (a 3xx is a failed attempt; following one
// would re-send the body and signature elsewhere), no Accept-Encoding of
// its own (answers are dropped unread), TLS verified, and, with a guard,
// every dialed address checked.
func newDeliveryClient(concurrency int, guard *addressGuard) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if guard != nil {
		dialer.Control = guard.control
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			DisableCompression:    true,
			MaxIdleConnsPerHost:   concurrency,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// forwarder delivers spooled events to an upstream: the original body and
// signature, plus X-Webhook-Id, X-Webhook-Attempt and the User-Agent
// Hookgate/<version>, then the configured headers. Redirects are not
// followed: a 3xx is a failed attempt.
//
// Each configuration has its own forwarders. Once its configuration is
// unloaded a forwarder is retired: attempts still in flight finish, and the
// last one closes the transport's idle connections, so that reloads do not
// leave connections and their goroutines behind.
type forwarder struct {
	url    string
	header http.Header
	client *http.Client
	// signWith, when set, signs each attempt's body with this secret
	// (outbound deliveries); otherwise the sender's signature is passed on.
	signWith []byte
	// goneReason, when set, makes a 410 answer a dead letter at once with
	// this reason and disables the route (a subscriber that has gone away).
	goneReason string
	inFlight   atomic.Int64
	retired    atomic.Bool
}

// Deliver makes one attempt.
func (f *forwarder) Deliver(ctx context.Context, d *spool.Delivery) spool.Outcome {
	f.inFlight.Add(1)
	defer func() {
		if f.inFlight.Add(-1) == 0 && f.retired.Load() {
			f.client.CloseIdleConnections()
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(d.Body))
	if err != nil {
		return spool.Outcome{Err: err}
	}
	for k, vs := range d.Header {
		req.Header[k] = vs
	}
	req.Header.Set(headerID, d.EventID)
	req.Header.Set(headerAttempt, strconv.Itoa(d.Attempt))
	req.Header.Set("User-Agent", userAgent)
	for k, vs := range f.header {
		req.Header[k] = vs
	}
	if f.signWith != nil {
		req.Header.Set(verifier.SignatureHeader, verifier.Sign(f.signWith, d.Body))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		// The URL stays out of the error: it goes to logs and dead letters.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return spool.Outcome{Err: err}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	resp.Body.Close()
	out := spool.Outcome{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	if resp.StatusCode == http.StatusGone && f.goneReason != "" {
		out.DeadReason, out.DisableRoute = f.goneReason, true
	}
	return out
}

// redactURL is how a delivery target appears in logs: scheme and host only,
// without credentials, path or query, which may carry tokens.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	return u.Scheme + "://" + u.Host
}

// close retires the forwarder.
func (f *forwarder) close() {
	f.retired.Store(true)
	if f.inFlight.Load() == 0 {
		f.client.CloseIdleConnections()
	}
}

// maxRetryAfter caps what an upstream can ask for; the retry policy then
// bounds it again by its backoff maximum.
const maxRetryAfter = 7 * 24 * time.Hour

// parseRetryAfter reads a Retry-After value, seconds or an HTTP date; 0 if
// absent, malformed or in the past, at most maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}
