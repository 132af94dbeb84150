package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/hookgate/hookgate/outbound"
	"github.com/hookgate/hookgate/spool"
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

// resolveHeaders expands {env.*} and {file.*} placeholders in configured
// header values (header_up, a subscriber's header), so that a token for the
// target can stay out of the config; option names the option in errors.
func resolveHeaders(option string, h http.Header) (http.Header, error) {
	if len(h) == 0 {
		return nil, nil
	}
	repl := caddy.NewReplacer()
	out := make(http.Header, len(h))
	for k, vs := range h {
		for _, v := range vs {
			rv, err := repl.ReplaceOrErr(v, false, true)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", option, k, err)
			}
			out[http.CanonicalHeaderKey(k)] = append(out[http.CanonicalHeaderKey(k)], rv)
		}
	}
	return out, nil
}

// route builds the spool route for this target and its client, with
// header_up values already resolved. The upstream is the operator's own:
// no address guard.
func (f *Forward) route(header http.Header) (spool.Route, *outbound.Client) {
	concurrency := f.Concurrency
	if concurrency <= 0 {
		concurrency = spool.DefaultConcurrency
	}
	fw := outbound.New(f.URL, outbound.Options{Header: header, UserAgent: userAgent, Concurrency: concurrency})
	return spool.Route{
		Deliverer:   fw,
		Concurrency: concurrency,
		Timeout:     time.Duration(f.Timeout),
		Target:      outbound.RedactURL(f.URL),
		Policy: spool.Policy{
			MaxAttempts: f.MaxAttempts,
			MaxAge:      time.Duration(f.MaxAge),
			BackoffMin:  time.Duration(f.BackoffMin),
			BackoffMax:  time.Duration(f.BackoffMax),
		},
	}, fw
}
