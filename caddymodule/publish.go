package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/outbound"
	"github.com/hookgate/hookgate/spool"
	"github.com/hookgate/hookgate/verifier"
)

func init() {
	caddy.RegisterModule(Publish{})
}

// Defaults of webhook_publish: the reference sender's 3 attempts in total.
const (
	defaultPublishAttempts   = 3
	defaultPublishBackoffMin = 5 * time.Second
	defaultPublishBackoffMax = 5 * time.Minute
	defaultPublishTimeout    = 30 * time.Second
	// ReasonGone is the dead-letter reason of deliveries to a subscriber
	// that answered 410 Gone; the subscriber stays disabled until enabled.
	ReasonGone = "subscriber_gone"
)

// Publish is the webhook_publish handler: an internal app POSTs
// {"eventType", "payload"[, "eventId"]}; the handler completes the
// envelope, spools one delivery per matching subscriber in one durable
// write, and answers 202. Each delivery is signed at send time in the
// subscriber's scheme and retried like the reference sender.
type Publish struct {
	// Organization and Project fill the envelope's organizationId and projectId.
	Organization string `json:"organization,omitempty"`
	Project      string `json:"project,omitempty"`
	// Attempts is the total number of attempts per delivery. Default 3.
	Attempts int `json:"attempts,omitempty"`
	// BackoffMin and BackoffMax bound the exponential backoff with full
	// jitter between attempts. Default 5s and 5m.
	BackoffMin caddy.Duration `json:"backoff_min,omitempty"`
	BackoffMax caddy.Duration `json:"backoff_max,omitempty"`
	// Timeout bounds one attempt. Default 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// AllowPrivate lists the special-purpose ranges (CIDRs or addresses)
	// subscribers may be in: loopback, private and the like are refused at
	// dial time otherwise.
	AllowPrivate []string `json:"allow_private,omitempty"`
	// DedupeWindow is how long a published eventId is remembered, so that
	// publishing it again does not send it again. Default 72h.
	DedupeWindow caddy.Duration `json:"dedupe_window,omitempty"`
	// MaxBody is the largest accepted request in bytes. Default 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`
	// Subscribers receive the events.
	Subscribers []Subscriber `json:"subscribers,omitempty"`

	app         *App
	clients     []*outbound.Client
	subscribers []subscriber
	maxBody     int64
	window      time.Duration
	log         *zap.Logger
	refusals    *zap.Logger // log, sampled (refusalLogger)
}

// Subscriber is one endpoint of webhook_publish.
type Subscriber struct {
	// Name identifies the subscriber in the spool, the stats and the admin
	// API; keep it stable and unique in the process.
	Name string `json:"name"`
	// URL is where deliveries are POSTed.
	URL string `json:"url"`
	// Scheme is how deliveries are signed and shaped: "ocriva" (the
	// default: the envelope, X-Webhook-Signature with the first secret) or
	// "standard-webhooks" ({"type", "timestamp", "data"} with type the
	// eventType and data the payload; webhook-id, webhook-timestamp and one
	// v1 signature per secret in webhook-signature).
	Scheme string `json:"scheme,omitempty"`
	// Secrets are placeholders ({env.NAME}, {file./path}), written as the
	// scheme writes them (standard-webhooks: whsec_…).
	Secrets []string `json:"secrets,omitempty"`
	// Events are the event types it receives (patterns). Default: all.
	Events []string `json:"events,omitempty"`
	// AllowPrivate lists more CIDRs or addresses this subscriber may resolve
	// to, on top of the handler's.
	AllowPrivate []string `json:"allow_private,omitempty"`
	// Header adds headers to every delivery.
	Header http.Header `json:"header,omitempty"`
}

type subscriber struct {
	name     string
	route    string
	events   verifier.Matcher
	standard bool // the standard-webhooks scheme
}

// publishSchemes are the subscribers' schemes, by name.
var publishSchemes = []string{verifier.Ocriva, verifier.StandardWebhooks}

// publishScope is the dedupe scope of published eventIds.
const publishScope = "publish"

// subscriberRoute is a subscriber's route name in the spool.
func subscriberRoute(name string) string { return "subscriber/" + name }

// CaddyModule returns the Caddy module information.
func (Publish) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.webhook_publish",
		New: func() caddy.Module { return new(Publish) },
	}
}

// Provision resolves secrets and headers and registers one spool route per
// subscriber.
func (p *Publish) Provision(ctx caddy.Context) error {
	p.log = ctx.Logger()
	p.refusals = refusalLogger(p.log)
	if err := p.validate(); err != nil {
		return err
	}
	allow, err := outbound.ParsePrefixes(p.AllowPrivate)
	if err != nil {
		return fmt.Errorf("webhook_publish: allow_private: %w", err)
	}
	p.maxBody = p.MaxBody
	if p.maxBody <= 0 {
		p.maxBody = defaultMaxBody
	}
	p.window = durationOr(p.DedupeWindow, defaultDedupeWindow)
	appIface, err := ctx.App("webhooks")
	if err != nil {
		return err
	}
	p.app = appIface.(*App)
	if err := p.app.checkMaxBody(p.maxBody); err != nil {
		return fmt.Errorf("webhook_publish: %w", err)
	}
	attempts := p.Attempts
	if attempts <= 0 {
		attempts = defaultPublishAttempts
	}
	policy := spool.Policy{
		MaxAttempts: attempts,
		BackoffMin:  durationOr(p.BackoffMin, defaultPublishBackoffMin),
		BackoffMax:  durationOr(p.BackoffMax, defaultPublishBackoffMax),
		// Like the reference sender: anything but a 2xx is retried (a 410
		// disables the subscriber instead).
		Retryable: func(spool.Outcome) bool { return true },
	}
	for _, sub := range p.Subscribers {
		secrets, err := resolveSecrets(sub.Secrets, p.log)
		if err != nil {
			return fmt.Errorf("webhook_publish: subscriber %s: %w", sub.Name, err)
		}
		scheme, _ := verifier.LookupProfile(sub.Scheme)
		for i, s := range secrets {
			k, err := scheme.Key(s)
			if err != nil {
				return fmt.Errorf("webhook_publish: subscriber %s: secret %d: %w", sub.Name, i, err)
			}
			if len(k) < verifier.MinSecretLen {
				return fmt.Errorf("webhook_publish: subscriber %s: secret %d is shorter than %d bytes", sub.Name, i, verifier.MinSecretLen)
			}
		}
		events, err := verifier.CompilePatterns(sub.Events)
		if err != nil {
			return fmt.Errorf("webhook_publish: subscriber %s: events: %w", sub.Name, err)
		}
		header, err := resolveHeaders("header", sub.Header)
		if err != nil {
			return fmt.Errorf("webhook_publish: subscriber %s: %w", sub.Name, err)
		}
		subAllow, err := outbound.ParsePrefixes(sub.AllowPrivate)
		if err != nil {
			return fmt.Errorf("webhook_publish: subscriber %s: allow_private: %w", sub.Name, err)
		}
		fw := outbound.New(sub.URL, outbound.Options{
			Header:      header,
			UserAgent:   userAgent,
			Concurrency: spool.DefaultConcurrency,
			Sign:        signer(scheme, secrets),
			GoneReason:  ReasonGone,
			Guard:       &outbound.Guard{Allow: append(slices.Clip(allow), subAllow...)},
		})
		route := subscriberRoute(sub.Name)
		// What decides how the subscriber's route delivers: its own settings
		// and the publisher's retry and dial settings.
		settings := struct {
			Subscriber
			Attempts                     int
			BackoffMin, BackoffMax, Time caddy.Duration
			AllowPrivate                 []string
		}{sub, p.Attempts, p.BackoffMin, p.BackoffMax, p.Timeout, p.AllowPrivate}
		p.clients = append(p.clients, fw)
		if err := p.app.addRoute(route, settings, &spool.Route{
			Deliverer:   fw,
			Policy:      policy,
			Timeout:     durationOr(p.Timeout, defaultPublishTimeout),
			Target:      outbound.RedactURL(sub.URL),
			LogAttempts: true,
		}); err != nil {
			return fmt.Errorf("webhook_publish: subscriber %s: %w", sub.Name, err)
		}
		p.subscribers = append(p.subscribers, subscriber{name: sub.Name, route: route, events: events,
			standard: scheme.Name == verifier.StandardWebhooks})
		p.log.Info("subscriber registered", zap.String("subscriber", sub.Name), zap.String("url", outbound.RedactURL(sub.URL)))
	}
	return nil
}

// validate checks what can be checked without resolving placeholders.
func (p *Publish) validate() error {
	if p.Attempts < 0 || p.BackoffMin < 0 || p.BackoffMax < 0 || p.Timeout < 0 || p.DedupeWindow < 0 || p.MaxBody < 0 {
		return errors.New("webhook_publish: settings must not be negative")
	}
	if p.BackoffMax > 0 && p.BackoffMin > p.BackoffMax {
		return errors.New("webhook_publish: backoff minimum is above its maximum")
	}
	if err := checkSpoolable(p.MaxBody); err != nil {
		return fmt.Errorf("webhook_publish: %w", err)
	}
	seen := map[string]bool{}
	for _, sub := range p.Subscribers {
		if sub.Name == "" || strings.ContainsAny(sub.Name, "/ ") {
			return fmt.Errorf("webhook_publish: subscriber name %q must be non-empty, without spaces or slashes", sub.Name)
		}
		if seen[sub.Name] {
			return fmt.Errorf("webhook_publish: subscriber %s is listed twice", sub.Name)
		}
		seen[sub.Name] = true
		u, err := url.Parse(sub.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("webhook_publish: subscriber %s: not an http(s) URL", sub.Name)
		}
		if len(sub.Secrets) == 0 {
			return fmt.Errorf("webhook_publish: subscriber %s needs a secret", sub.Name)
		}
		if sub.Scheme != "" && !slices.Contains(publishSchemes, sub.Scheme) {
			return fmt.Errorf("webhook_publish: subscriber %s: unknown scheme %q (known: %s)", sub.Name, sub.Scheme, strings.Join(publishSchemes, ", "))
		}
	}
	return nil
}

// signer signs each attempt in the scheme, at its own time: ocriva with
// the first secret, standard-webhooks with each (a rotation), the event id
// as webhook-id.
func signer(scheme *verifier.Profile, secrets [][]byte) func(*spool.Delivery) http.Header {
	return func(d *spool.Delivery) http.Header {
		h, _ := scheme.Sign(secrets, verifier.Delivery{ // the keys were checked at provision
			ID: d.EventID, Type: d.Header.Get(verifier.EventHeader), Time: time.Now(), Body: d.Body,
		})
		return h
	}
}

// Cleanup retires the subscribers' delivery clients (the webhooks app
// unregisters their routes).
func (p *Publish) Cleanup() error {
	for _, fw := range p.clients {
		fw.Close()
	}
	return nil
}

// publishRequest is what an internal app posts.
type publishRequest struct {
	eventType string
	eventID   string
	payload   json.RawMessage
}

// parsePublishRequest reads {"eventType", "payload"[, "eventId"]} with the
// verifier's strict JSON rules; any other member is refused.
func parsePublishRequest(body []byte) (publishRequest, error) {
	var req publishRequest
	if err := verifier.CheckJSON(body); err != nil {
		return req, err
	}
	var members map[string]json.RawMessage // exact names: CheckJSON has refused duplicates
	if err := json.Unmarshal(body, &members); err != nil {
		return req, errors.New("the request must be a JSON object")
	}
	for k := range members {
		if k != "eventType" && k != "eventId" && k != "payload" {
			return req, fmt.Errorf("unknown member %q (expected eventType, payload and optionally eventId)", k)
		}
	}
	if err := json.Unmarshal(members["eventType"], &req.eventType); err != nil || !verifier.ValidEventType(req.eventType) {
		return req, errors.New("eventType must be a dotted token of at most 128 characters")
	}
	if raw, ok := members["eventId"]; ok {
		if err := json.Unmarshal(raw, &req.eventID); err != nil || !verifier.ValidEventID(req.eventID) {
			return req, errors.New("eventId must be 1-128 characters of A-Z a-z 0-9 . _ : -")
		}
	}
	req.payload = members["payload"]
	if req.payload == nil {
		return req, errors.New("payload is required")
	}
	return req, nil
}

// ServeHTTP accepts an event and spools its deliveries.
func (p *Publish) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	start := time.Now()
	held := p.app.unverified.hold()
	defer held.release()
	body, status, _, err := readRequest(w, r, p.maxBody, defaultReadTimeout, &held)
	if errors.Is(err, errBusy) {
		return p.answerSpoolFailure(w, err)
	}
	if err != nil {
		return rejectPublish(w, status, err)
	}
	req, err := parsePublishRequest(body)
	held.release() // checked: the request no longer counts
	if err != nil {
		return rejectPublish(w, http.StatusBadRequest, err)
	}
	now := time.Now()
	if req.eventID == "" {
		req.eventID = verifier.NewEventID(now)
	}
	envelope := verifier.EncodeEnvelope(map[string]json.RawMessage{
		"eventType":      quote(req.eventType),
		"eventId":        quote(req.eventID),
		"timestamp":      quote(verifier.FormatTimestamp(now)),
		"organizationId": quote(p.Organization),
		"projectId":      quote(p.Project),
		"payload":        req.payload,
	})
	header := http.Header{"Content-Type": {"application/json"}, verifier.EventHeader: {req.eventType}}
	var standard []byte // the standard-webhooks body, made if a subscriber needs it
	standardHeader := http.Header{"Content-Type": {"application/json"}}
	// The first entry records the eventId for the whole process, whichever
	// subscribers it goes to: reusing an id for another request is refused
	// even if no subscriber of the first one would get the second.
	entries := []spool.Entry{{Route: publishScope, EventID: req.eventID, Fingerprint: body, DedupeWindow: p.window, DedupeOnly: true}}
	names := []string{}
	for _, sub := range p.subscribers {
		if !sub.events.Match(req.eventType) {
			continue
		}
		names = append(names, sub.name)
		e := spool.Entry{
			Route: sub.route, EventID: req.eventID, Header: header, Body: envelope,
			DedupeWindow: p.window, Fingerprint: body, // the same request again is a duplicate
		}
		if sub.standard {
			if strings.Contains(req.eventID, ".") { // it is signed as "<id>.<timestamp>.<body>"
				return rejectPublish(w, http.StatusBadRequest, fmt.Errorf("eventId must not contain \".\" for subscriber %s (standard-webhooks)", sub.name))
			}
			if standard == nil {
				standard = standardBody(req, now)
			}
			e.Header, e.Body = standardHeader, standard
		}
		entries = append(entries, e)
	}
	if len(names) == 0 {
		return answerPublish(w, http.StatusOK, publishAnswer{Status: "no_subscribers", EventID: req.eventID, Subscribers: names})
	}
	sp, err := p.app.storeFor(r.Context())
	var results []spool.Result
	if err == nil {
		results, err = sp.EnqueueAll(r.Context(), entries)
	}
	if err != nil {
		return p.answerSpoolFailure(w, err)
	}
	accepted := false
	for _, res := range results[1:] {
		accepted = accepted || res.Status == spool.Accepted
	}
	if slices.ContainsFunc(results, func(r spool.Result) bool { return r.Status == spool.Conflict }) {
		// Nothing was stored: the entries stand or fall together.
		return rejectPublish(w, http.StatusConflict, errors.New("this eventId was published with a different request"))
	}
	if !accepted {
		return answerPublish(w, http.StatusOK, publishAnswer{Status: "duplicate", EventID: req.eventID, Subscribers: names})
	}
	p.log.Debug("event published", zap.String("event_id", req.eventID), zap.String("event_type", req.eventType), zap.Strings("subscribers", names))
	observeAck(publishScope, start)
	return answerPublish(w, http.StatusAccepted, publishAnswer{Status: "accepted", EventID: req.eventID, Subscribers: names})
}

// standardBody is a Standard Webhooks event: {"type", "timestamp", "data"},
// the type the eventType, data the payload's bytes as they came.
func standardBody(req publishRequest, now time.Time) []byte {
	b := append([]byte(`{"type":`), quote(req.eventType)...)
	b = append(append(b, `,"timestamp":`...), quote(verifier.FormatTimestamp(now))...)
	return append(append(append(b, `,"data":`...), req.payload...), '}')
}

// answerSpoolFailure answers a failed spool write or a body refused with errBusy
// (see spoolFailure).
func (p *Publish) answerSpoolFailure(w http.ResponseWriter, err error) error {
	code, retryAfter, msg := spoolFailure(err)
	status := "error"
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
		p.refusals.Warn("refusing events: "+msg, zap.Error(err))
		status = "unavailable"
	} else {
		p.log.Error("spool write failed", zap.Error(err))
	}
	return answerPublish(w, code, publishAnswer{Status: status, Error: msg, Subscribers: []string{}})
}

// rejectPublish answers a refused publish with its reason in the body
// (`{"status":"rejected","error":…}`): the caller is an internal app that
// needs to know what to fix, and the request carries no signature that
// Caddy's error log could leak.
func rejectPublish(w http.ResponseWriter, code int, err error) error {
	return answerPublish(w, code, publishAnswer{Status: "rejected", Error: err.Error(), Subscribers: []string{}})
}

// answerPublish writes the answer and counts its outcome.
func answerPublish(w http.ResponseWriter, code int, a publishAnswer) error {
	outcome := a.Status
	if code == http.StatusConflict {
		outcome = "conflict"
	}
	countRequest(publishScope, outcome)
	return writeJSON(w, code, a)
}

// publishAnswer is webhook_publish's response body.
type publishAnswer struct {
	Status      string   `json:"status"`
	EventID     string   `json:"eventId,omitempty"`
	Subscribers []string `json:"subscribers"`
	Error       string   `json:"error,omitempty"`
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Publish)(nil)
	_ caddy.CleanerUpper          = (*Publish)(nil)
	_ caddyhttp.MiddlewareHandler = (*Publish)(nil)
)
