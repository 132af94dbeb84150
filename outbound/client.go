// Package outbound delivers spooled webhooks over HTTP: one Client per
// delivery target, with the rules both of Hookgate's directions share (no
// proxy, no redirects followed, answers read and dropped, the URL kept out
// of errors) and the ones each asks for in its Options (signing, the 410
// rule, the address guard). It implements spool.Deliverer and has no Caddy
// dependency.
package outbound

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hookgate/hookgate/spool"
)

// Headers of every delivery.
const (
	HeaderID      = "X-Webhook-Id"      // the event id
	HeaderAttempt = "X-Webhook-Attempt" // the attempt's number, from 1
)

// maxResponseBody is how much of an answer is read (and dropped) so that
// its connection can be reused.
const maxResponseBody = 64 << 10

// Options are what a Client adds to the shared rules.
type Options struct {
	// Header is set on every request, after the delivery's own headers.
	Header http.Header
	// UserAgent is every request's User-Agent.
	UserAgent string
	// Concurrency is how many idle connections to the target are kept.
	Concurrency int
	// Sign, if set, signs each attempt: the headers it returns are set on
	// the request, over the delivery's own; otherwise the delivery's
	// headers, with the sender's signature, go as they are.
	Sign func(d *spool.Delivery) http.Header
	// GoneReason, if set, makes a 410 answer a dead letter at once with
	// this reason and disables the route: a subscriber that went away.
	GoneReason string
	// Guard, if set, checks every address the client dials.
	Guard *Guard
}

// Client delivers to one target: the delivery's body and headers, plus
// X-Webhook-Id, X-Webhook-Attempt, the User-Agent, then Options.Header.
// Redirects are not followed: a 3xx is a failed attempt.
//
// Close retires it: attempts still in flight finish, and the last one
// closes the idle connections, so that a configuration reload leaves no
// connections and goroutines behind.
type Client struct {
	url      string
	opts     Options
	http     *http.Client
	inFlight atomic.Int64
	retired  atomic.Bool
}

// New makes a Client for the http(s) URL target.
func New(target string, o Options) *Client {
	return &Client{url: target, opts: o, http: newHTTPClient(max(o.Concurrency, 1), o.Guard)}
}

// newHTTPClient makes the HTTP client of one delivery target: no proxy
// from the environment (it would also hide the dialed address from the
// guard), no redirects followed (a 3xx is a failed attempt; following one
// would re-send the body and signature elsewhere), no Accept-Encoding of
// its own (answers are dropped unread), TLS verified, and, with a guard,
// every dialed address checked.
func newHTTPClient(concurrency int, guard *Guard) *http.Client {
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

// Deliver makes one attempt.
func (c *Client) Deliver(ctx context.Context, d *spool.Delivery) spool.Outcome {
	c.inFlight.Add(1)
	defer func() {
		if c.inFlight.Add(-1) == 0 && c.retired.Load() {
			c.http.CloseIdleConnections()
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(d.Body))
	if err != nil {
		return spool.Outcome{Err: err}
	}
	for k, vs := range d.Header {
		req.Header[k] = vs
	}
	req.Header.Set(HeaderID, d.EventID)
	req.Header.Set(HeaderAttempt, strconv.Itoa(d.Attempt))
	req.Header.Set("User-Agent", c.opts.UserAgent)
	for k, vs := range c.opts.Header {
		req.Header[k] = vs
	}
	if c.opts.Sign != nil {
		for k, vs := range c.opts.Sign(d) {
			req.Header[k] = vs
		}
	}
	resp, err := c.http.Do(req)
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
	out := spool.Outcome{StatusCode: resp.StatusCode, RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	if resp.StatusCode == http.StatusGone && c.opts.GoneReason != "" {
		out.DeadReason, out.DisableRoute = c.opts.GoneReason, true
	}
	return out
}

// Close retires the client.
func (c *Client) Close() {
	c.retired.Store(true)
	if c.inFlight.Load() == 0 {
		c.http.CloseIdleConnections()
	}
}

// RedactURL is how a delivery target appears in logs: scheme and host only,
// without credentials, path or query, which may carry tokens.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	return u.Scheme + "://" + u.Host
}
