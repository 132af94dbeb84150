package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/outbound"
	"github.com/hookgate/hookgate/spool"
	"github.com/hookgate/hookgate/verifier"
)

func init() {
	caddy.RegisterModule(Ingest{})
}

// Defaults of webhook_ingest.
const (
	defaultReadTimeout = 15 * time.Second
	// clockSkew is the margin the dedupe window must keep over the
	// tolerance, so that a replay is either a duplicate or stale.
	clockSkew = 5 * time.Minute
)

// Ingest is the webhook_ingest handler. It verifies a delivery's signature,
// envelope, event header and freshness, dedupes it by route and eventId,
// spools it durably and answers 202; the spool forwards it to the upstream
// with retries. Without a forward target it only verifies and dedupes, then
// hands the request to the next handler (verify-only mode). The checks and
// their statuses are in docs/ingest.md.
//
// This handler sets these placeholders, for access logs and handle_errors:
//
// Placeholder | Description
// ------------|-------------
// `{http.webhook.event_id}` | the event id, once the delivery is verified
// `{http.webhook.event_type}` | the event type, likewise
// `{http.webhook.outcome}` | accepted, duplicate, ignored, conflict, handed_on, handed_on_failed, in_progress, challenge (Slack's url_verification, answered), unavailable, error, or the rejection's reason (method, content_type, too_large, body, signature_mismatch, timestamp_stale, header_missing, header_repeated, header_invalid, …)
type Ingest struct {
	// Name identifies the route in the spool, the stats and the dedupe scope;
	// keep it stable across reloads. Default: the forward URL's scheme, host
	// and port (its path, credentials and query may hold tokens, and the name
	// shows in logs, metrics and the admin API). Required in verify-only mode.
	Name string `json:"name,omitempty"`
	// Profile is the sender's scheme: ocriva (the default),
	// standard-webhooks, github, stripe, shopify or slack. It decides the
	// signature, where the event id, type and timestamp are read, how a
	// secret is written and the default tolerance (README, "Profiles").
	Profile string `json:"profile,omitempty"`
	// Secrets are the HMAC secrets, written as the profile's sender writes
	// them; a delivery signed with any of them is
	// accepted (rotation). Write them as placeholders ({env.NAME},
	// {file./path}): they are resolved at provision time and never stored
	// resolved in the configuration.
	Secrets []string `json:"secrets,omitempty"`
	// InsecureNoSignature accepts unsigned deliveries (ocriva profile
	// only). Every other check still runs; a sender's X-Webhook-Signature,
	// unchecked, is not passed on. A warning is logged at every start.
	InsecureNoSignature bool `json:"insecure_no_signature,omitempty"`
	// Events are the accepted event types (document.processed, document.*,
	// *); others are answered 200 "ignored" and dropped. Default: all.
	Events []string `json:"events,omitempty"`
	// Tolerance is how far the event's timestamp may be from now, in
	// either direction. Default: the profile's (1h for ocriva and shopify,
	// 5m for the others); 0 disables the check. github signs no timestamp:
	// it must be unset or 0 there.
	Tolerance *caddy.Duration `json:"tolerance,omitempty"`
	// DedupeWindow is how long an event id is remembered. Default 72h; it
	// must be at least the tolerance plus 5 minutes, whatever the profile.
	DedupeWindow caddy.Duration `json:"dedupe_window,omitempty"`
	// MaxBody is the largest accepted body in bytes. Default 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`
	// ReadTimeout bounds reading the body. Default 15s.
	ReadTimeout caddy.Duration `json:"read_timeout,omitempty"`
	// Forward is the upstream that receives the events. Absent: verify-only.
	Forward *Forward `json:"forward,omitempty"`

	verifier     *verifier.Verifier
	profile      *verifier.Profile
	events       verifier.Matcher
	dedupeWindow time.Duration
	maxBody      int64
	readTimeout  time.Duration
	app          *App
	client       *outbound.Client
	log          *zap.Logger
	refusals     *zap.Logger // log, sampled (refusalLogger)
}

// CaddyModule returns the Caddy module information.
func (Ingest) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.webhook_ingest",
		New: func() caddy.Module { return new(Ingest) },
	}
}

// Provision resolves the secrets, builds the verifier and registers the
// route's forward settings with the spool.
func (h *Ingest) Provision(ctx caddy.Context) error {
	h.log = ctx.Logger()
	h.refusals = refusalLogger(h.log)
	if h.Name == "" && h.Forward != nil {
		h.Name = outbound.RedactURL(h.Forward.URL)
		h.log.Warn("webhook_ingest has no name: its route is named after the forward URL's scheme, host and port, so changing them starts a new route "+
			"(new dedupe records; the old route's pending events wait for it and become dead letters); set name to avoid this",
			zap.String("route", h.Name))
	}
	if err := h.validate(); err != nil {
		return err
	}
	secrets, err := resolveSecrets(h.Secrets, h.log)
	if err != nil {
		return err
	}
	h.verifier, err = verifier.New(verifier.Config{Profile: h.Profile, Secrets: secrets,
		InsecureNoSignature: h.InsecureNoSignature, Tolerance: h.tolerance()})
	if err != nil {
		return fmt.Errorf("webhook_ingest %s: %w", h.Name, err)
	}
	h.profile = h.verifier.Profile()
	if !h.profile.SignedID {
		h.log.Warn("this profile signs neither the event id nor its time: replay protection is the dedupe window on the unsigned id only; "+
			"a delivery captured on the way can be sent again at once with another id, or with the same id once it is forgotten",
			zap.String("route", h.Name), zap.String("profile", h.profile.Name), zap.Duration("dedupe_window", h.dedupeWindowOrDefault()))
	}
	if h.InsecureNoSignature {
		h.log.Warn("insecure_no_signature: this route accepts unsigned webhooks", zap.String("route", h.Name))
	}
	if h.events, err = verifier.CompilePatterns(h.Events); err != nil {
		return fmt.Errorf("webhook_ingest %s: events: %w", h.Name, err)
	}
	h.dedupeWindow = h.dedupeWindowOrDefault()
	h.readTimeout = durationOr(h.ReadTimeout, defaultReadTimeout)
	h.maxBody = h.MaxBody
	if h.maxBody <= 0 {
		h.maxBody = defaultMaxBody
	}
	appIface, err := ctx.App("webhooks")
	if err != nil {
		return err
	}
	h.app = appIface.(*App)
	if err := h.app.checkMaxBody(h.maxBody); err != nil {
		return fmt.Errorf("webhook_ingest %s: %w", h.Name, err)
	}
	var route *spool.Route
	if h.Forward != nil {
		header, err := resolveHeaders("header_up", h.Forward.HeaderUp)
		if err != nil {
			return fmt.Errorf("webhook_ingest %s: %w", h.Name, err)
		}
		var r spool.Route
		r, h.client = h.Forward.route(header)
		route = &r
	}
	if err := h.app.addRoute(h.Name, h, route); err != nil {
		return fmt.Errorf("webhook_ingest: %w", err)
	}
	return nil
}

// validate checks the handler's settings. UnmarshalCaddyfile and Provision
// both call it, so that a JSON config is held to the Caddyfile's rules;
// Provision calls it before it registers the route, which Caddy's Validate
// phase would come too late for.
func (h *Ingest) validate() error {
	switch {
	case len(h.Secrets) == 0 && !h.InsecureNoSignature:
		return errors.New("webhook_ingest: a secret is required (or insecure_no_signature, explicitly)")
	case len(h.Secrets) > 0 && h.InsecureNoSignature:
		return errors.New("webhook_ingest: secret and insecure_no_signature exclude each other")
	case h.Name == "" && h.Forward == nil:
		return errors.New("webhook_ingest: name is required without forward (verify-only mode)")
	case h.Name == publishScope || strings.HasPrefix(h.Name, subscriberRoute("")):
		return fmt.Errorf("webhook_ingest: the name %q is reserved for webhook_publish", h.Name)
	}
	profile, ok := verifier.LookupProfile(h.Profile)
	switch {
	case !ok:
		return fmt.Errorf("webhook_ingest: unknown profile %q (known: %s)", h.Profile, strings.Join(verifier.ProfileNames(), ", "))
	case h.InsecureNoSignature && profile.Name != verifier.Ocriva:
		return fmt.Errorf("webhook_ingest: insecure_no_signature is for the ocriva profile only")
	case !profile.Timestamped && h.tolerance() > 0:
		return fmt.Errorf("webhook_ingest: profile %s signs no timestamp: tolerance must be unset or 0", profile.Name)
	}
	if err := checkSpoolable(h.MaxBody); err != nil {
		return fmt.Errorf("webhook_ingest: %w", err)
	}
	tolerance := h.tolerance()
	if window := h.dedupeWindowOrDefault(); window < tolerance+clockSkew {
		return fmt.Errorf("webhook_ingest: dedupe_window %v must be at least tolerance %v plus %v of clock skew", window, tolerance, clockSkew)
	}
	if h.Forward != nil {
		return h.Forward.validate()
	}
	return nil
}

// tolerance is how old an event may be, the profile's default if unset (0
// for an unknown profile, which validate refuses).
func (h *Ingest) tolerance() time.Duration {
	if h.Tolerance != nil {
		return time.Duration(*h.Tolerance)
	}
	if p, ok := verifier.LookupProfile(h.Profile); ok {
		return p.DefaultTolerance
	}
	return 0
}

// dedupeWindowOrDefault is the dedupe window, the default if unset.
func (h *Ingest) dedupeWindowOrDefault() time.Duration {
	return durationOr(h.DedupeWindow, defaultDedupeWindow)
}

// Cleanup retires the route's delivery client (the webhooks app unregisters
// the route).
func (h *Ingest) Cleanup() error {
	if h.client != nil {
		h.client.Close()
	}
	return nil
}

// ServeHTTP runs the checks of docs/ingest.md, "The check order", in order.
func (h *Ingest) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	start := time.Now()
	held := h.app.unverified.hold()
	defer held.release()
	body, status, reason, err := readRequest(w, r, h.maxBody, h.readTimeout, &held)
	if errors.Is(err, errBusy) {
		return h.answerSpoolFailure(w, r, err)
	}
	if err != nil {
		return h.reject(r, status, reason, err)
	}
	ev, err := h.verifier.Verify(r.Header, body)
	held.release() // verified or refused: the body no longer counts
	if err != nil {
		return h.reject(r, verifier.KindOf(err).Status(), verifier.KindOf(err).String(), err)
	}
	if h.InsecureNoSignature {
		// Unchecked, a signature is whatever the sender chose: the
		// upstream must not take it for one the gateway verified.
		r.Header.Del(verifier.SignatureHeader)
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if ev.Challenge != "" {
		// Slack's url_verification: signed and fresh, answered here, not
		// an event.
		h.outcome(repl, "challenge")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, err := io.WriteString(w, ev.Challenge)
		return err
	}
	if repl != nil {
		repl.Set("http.webhook.event_id", ev.ID)
		repl.Set("http.webhook.event_type", ev.Type)
	}
	if !h.events.Match(ev.Type) {
		return h.writeAnswer(w, repl, http.StatusOK, "ignored", ev.ID, "")
	}
	sp, err := h.app.storeFor(r.Context())
	if err != nil {
		return h.answerSpoolFailure(w, r, err)
	}
	if h.Forward == nil {
		return h.handOn(w, r, next, repl, sp, ev)
	}
	res, err := sp.Enqueue(r.Context(), spool.Entry{
		Route:        h.Name,
		EventID:      ev.ID,
		Header:       forwardHeaders(r.Header, h.profile, ev.Type),
		Body:         body,
		DedupeWindow: h.dedupeWindow,
	})
	if err != nil {
		return h.answerSpoolFailure(w, r, err)
	}
	if res.Status != spool.Conflict {
		observeAck(h.Name, start)
	}
	return h.answerStatus(w, r, repl, res.Status, ev.ID)
}

// forwardHeaders are the delivery's headers kept for the upstream: its
// Content-Type, the profile's own headers as the sender wrote them, and
// X-Webhook-Event with the verified event type (the spool's client adds
// X-Webhook-Id and X-Webhook-Attempt).
func forwardHeaders(in http.Header, p *verifier.Profile, eventType string) http.Header {
	out := make(http.Header, len(p.Headers)+2)
	for _, k := range append([]string{"Content-Type"}, p.Headers...) {
		if v := in.Values(k); len(v) > 0 {
			out[k] = v
		}
	}
	out.Set(verifier.EventHeader, eventType)
	return out
}

// handOn is verify-only mode: dedupe, then let the next handler answer and
// remember the event only if it answered 2xx. A concurrent delivery of the
// same event gets 409 with Retry-After while the first is being handled.
func (h *Ingest) handOn(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, repl *caddy.Replacer, sp spool.Backend, ev *verifier.Event) error {
	// Claim the event before checking it was seen: the claim is held until
	// it is remembered, so no second delivery can slip in between.
	key := h.Name + "\x00" + ev.ID
	if !handingOn.start(key) {
		w.Header().Set("Retry-After", "1")
		return h.reject(r, http.StatusConflict, "in_progress", errors.New("this event is being handled"))
	}
	defer handingOn.done(key)
	st, err := sp.Seen(r.Context(), h.Name, ev.ID, ev.Body)
	if err != nil {
		return h.answerSpoolFailure(w, r, err)
	}
	if st != spool.Accepted {
		return h.answerStatus(w, r, repl, st, ev.ID)
	}
	// A new event that could not be remembered after it is handed on is
	// refused before, as a spooled one would be.
	if err := sp.CanRemember(); err != nil {
		return h.answerSpoolFailure(w, r, err)
	}

	// The next handler gets the normalised headers too, from what was
	// verified: a sender's own values are replaced, or dropped.
	r.Header.Set(verifier.EventHeader, ev.Type)
	r.Header.Set(outbound.HeaderID, ev.ID)
	r.Header.Del(outbound.HeaderAttempt)
	r.Body = io.NopCloser(bytes.NewReader(ev.Body))
	r.ContentLength = int64(len(ev.Body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(ev.Body)), nil }
	rec := &statusRecorder{ResponseWriter: w}
	if err := next.ServeHTTP(rec, r); err != nil {
		return err
	}
	if rec.status == 0 {
		rec.status = http.StatusOK // nothing written: the server answers 200
	}
	if rec.status < 200 || rec.status > 299 {
		h.outcome(repl, "handed_on_failed")
		return nil
	}
	h.outcome(repl, "handed_on")
	// The upstream has the event: record it even if the sender hangs up now.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	if _, err := sp.Remember(ctx, spool.Entry{Route: h.Name, EventID: ev.ID, Body: ev.Body, DedupeWindow: h.dedupeWindow}); err != nil {
		// The upstream has it; a retry by the sender is delivered again.
		h.log.Error("recording a handed-on event as seen failed", zap.String("route", h.Name), zap.String("event_id", ev.ID), zap.Error(err))
	}
	return nil
}

// statusRecorder notes the final status the next handler answered with,
// however it wrote it: WriteHeader, Write, a flush, or io.Copy, which goes
// through Write as the recorder has no ReadFrom (a wrapper's ReadFrom would
// write around it). Other http.ResponseController methods reach the
// wrapped writer through Unwrap.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 && code >= 200 { // 1xx answers are not final
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.implicitOK()
	return s.ResponseWriter.Write(b)
}

// FlushError flushes the answer, which sends a 200 if no status was written.
func (s *statusRecorder) FlushError() error {
	s.implicitOK()
	return http.NewResponseController(s.ResponseWriter).Flush()
}

// Flush is FlushError for http.Flusher.
func (s *statusRecorder) Flush() { _ = s.FlushError() }

// Unwrap returns the wrapped writer, for http.ResponseController.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// implicitOK notes the 200 that writing or flushing sends when no final
// status was written.
func (s *statusRecorder) implicitOK() {
	if s.status == 0 {
		s.status = http.StatusOK
	}
}

// handingOn holds the events being handed on in verify-only mode, by route
// name and event id, for the whole process: handlers of one route, in one
// configuration or across a reload, see each other's.
var handingOn = &inFlight{ids: map[string]struct{}{}}

// inFlight is a set of keys being handled.
type inFlight struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func (f *inFlight) start(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.ids[id]; busy {
		return false
	}
	f.ids[id] = struct{}{}
	return true
}

func (f *inFlight) done(id string) {
	f.mu.Lock()
	delete(f.ids, id)
	f.mu.Unlock()
}

// answerStatus answers an enqueue's or a dedupe check's outcome: 202
// accepted, 200 duplicate, or a 409 rejection.
func (h *Ingest) answerStatus(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, st spool.Status, id string) error {
	switch st {
	case spool.Accepted:
		return h.writeAnswer(w, repl, http.StatusAccepted, "accepted", id, "")
	case spool.Duplicate:
		return h.writeAnswer(w, repl, http.StatusOK, "duplicate", id, "")
	}
	h.log.Warn("an event id arrived again with a different body", zap.String("route", h.Name), zap.String("event_id", id))
	return h.reject(r, http.StatusConflict, "conflict", errors.New("this eventId was received with a different body"))
}

// answerSpoolFailure answers a failed spool write (see spoolFailure). These 5xx answers are written here
// rather than returned as handler errors: Caddy logs a handler error of 500
// or more at error level together with the request's headers, which would put
// the sender's signature into the log. (4xx errors are logged only at debug
// level; see the README on filtering them.)
func (h *Ingest) answerSpoolFailure(w http.ResponseWriter, r *http.Request, err error) error {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	code, retryAfter, msg := spoolFailure(err)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
		h.refusals.Warn("refusing events: "+msg, zap.String("route", h.Name), zap.Error(err))
		return h.writeAnswer(w, repl, code, "unavailable", "", msg)
	}
	if r.Context().Err() != nil {
		// The sender hung up while the write was pending; it may still have
		// been stored, and the sender's retry is then a duplicate.
		h.log.Debug("sender gone before the spool write finished", zap.String("route", h.Name))
	} else {
		h.log.Error("spool write failed", zap.String("route", h.Name), zap.Error(err))
	}
	return h.writeAnswer(w, repl, code, "error", "", msg)
}

// writeAnswer writes the handler's JSON answer, {"status", "eventId",
// "error"} with empty fields left out, and records status as the outcome.
// Every answer the handler writes itself goes through it; a rejection is a
// handler error instead (reject).
func (h *Ingest) writeAnswer(w http.ResponseWriter, repl *caddy.Replacer, code int, status, id, msg string) error {
	h.outcome(repl, status)
	return writeJSON(w, code, struct {
		Status  string `json:"status"`
		EventID string `json:"eventId,omitempty"`
		Error   string `json:"error,omitempty"`
	}{status, id, msg})
}

// reject returns a handler error, so that handle_errors can shape the
// response; err's message is safe to show.
func (h *Ingest) reject(r *http.Request, code int, outcome string, err error) error {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	h.outcome(repl, outcome)
	h.log.Debug("webhook rejected", zap.String("route", h.Name), zap.Int("status", code), zap.String("reason", outcome), zap.Error(err))
	return caddyhttp.Error(code, err)
}

// outcome records how a request ended, in the {http.webhook.outcome}
// placeholder and the requests metric.
func (h *Ingest) outcome(repl *caddy.Replacer, outcome string) {
	if repl != nil {
		repl.Set("http.webhook.outcome", outcome)
	}
	countRequest(h.Name, outcome)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Ingest)(nil)
	_ caddy.CleanerUpper          = (*Ingest)(nil)
	_ caddyhttp.MiddlewareHandler = (*Ingest)(nil)
)
