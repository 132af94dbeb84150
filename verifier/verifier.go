package verifier

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"hash"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// MinSecretLen is the shortest secret New accepts, in bytes.
const MinSecretLen = 16

// Config configures a Verifier.
type Config struct {
	// Secrets holds one or more HMAC secrets; during a rotation a body
	// signed with any of them is accepted. Each must be at least
	// MinSecretLen bytes.
	Secrets [][]byte
	// InsecureNoSignature disables signature checking (and then Secrets
	// must be empty). The X-Webhook-Signature header is ignored; every other
	// check still runs. Meant for explicit, logged opt-outs only.
	InsecureNoSignature bool
	// Tolerance is the freshness window for the envelope timestamp, checked
	// in both directions. 0 disables the check.
	Tolerance time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks inbound webhook requests. It is safe for concurrent use.
type Verifier struct {
	macs      []*macPool
	insecure  bool
	tolerance time.Duration
	now       func() time.Time
}

// macPool keeps keyed HMAC states for one secret, so that Verify neither
// re-derives the key pads nor allocates.
type macPool struct{ pool sync.Pool }

type macState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// New validates cfg and returns a Verifier. Configuration errors are plain
// errors (not *Error); they name the index of a bad secret, never its value.
// The secrets are copied.
func New(cfg Config) (*Verifier, error) {
	if cfg.Tolerance < 0 {
		return nil, errors.New("verifier: negative tolerance")
	}
	if cfg.InsecureNoSignature {
		if len(cfg.Secrets) > 0 {
			return nil, errors.New("verifier: secrets given together with InsecureNoSignature")
		}
	} else if len(cfg.Secrets) == 0 {
		return nil, errors.New("verifier: no secret configured (set InsecureNoSignature to opt out explicitly)")
	}
	v := &Verifier{insecure: cfg.InsecureNoSignature, tolerance: cfg.Tolerance, now: cfg.Now}
	if v.now == nil {
		v.now = time.Now
	}
	for i, s := range cfg.Secrets {
		if len(s) == 0 {
			return nil, errors.New("verifier: secret " + strconv.Itoa(i) + " is empty")
		}
		if len(s) < MinSecretLen {
			return nil, errors.New("verifier: secret " + strconv.Itoa(i) + " is shorter than " +
				strconv.Itoa(MinSecretLen) + " bytes")
		}
		key := append([]byte(nil), s...)
		p := &macPool{}
		p.pool.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
		v.macs = append(v.macs, p)
	}
	return v, nil
}

// Event is a verified event.
type Event struct {
	ID             string    // eventId
	Type           string    // eventType
	Timestamp      time.Time // timestamp
	OrganizationID string    // organizationId, "" if absent
	ProjectID      string    // projectId, "" if absent
	// SecretIndex is the index in Config.Secrets of the secret that
	// matched (the lowest if several did); -1 in insecure mode.
	SecretIndex int
	// Body is the request body, untouched (the slice passed to Verify).
	Body []byte
	// Payload is the raw payload value, a subslice of Body; nil if absent.
	Payload []byte
}

// Verify checks a request's headers and raw body, in this order:
//  1. exactly one X-Webhook-Signature value, well formed (ParseSignature),
//     equal in constant time to HMAC-SHA256 of body under one of the
//     secrets (skipped in insecure mode);
//  2. the body is a valid envelope (ParseEnvelope);
//  3. exactly one X-Webhook-Event value, equal to the body's eventType;
//  4. the timestamp is within Tolerance of now, in both directions.
//
// The first failure is returned as an *Error; use KindOf or Error.Status.
// body is neither modified nor copied, and is never re-encoded.
func (v *Verifier) Verify(h http.Header, body []byte) (*Event, error) {
	idx := -1
	if !v.insecure {
		vals := h.Values(SignatureHeader)
		switch len(vals) {
		case 0:
			return nil, newError(SignatureMissing, "signature: missing "+SignatureHeader+" header")
		case 1:
		default:
			return nil, newError(SignatureRepeated, "signature: repeated "+SignatureHeader+" header")
		}
		want, err := ParseSignature(vals[0])
		if err != nil {
			return nil, err
		}
		if idx = v.match(body, &want); idx < 0 {
			return nil, newError(SignatureMismatch, "signature: mismatch")
		}
	}

	var env Envelope
	if err := parseEnvelope(body, &env); err != nil {
		return nil, err
	}
	return v.checkEvent(h, body, env, idx)
}

// checkEvent runs the checks after the signature and the envelope: the
// event header against the signed eventType, and the timestamp's freshness.
func (v *Verifier) checkEvent(h http.Header, body []byte, env Envelope, idx int) (*Event, error) {

	evs := h.Values(EventHeader)
	switch {
	case len(evs) == 0:
		return nil, newError(EventHeaderMissing, "event: missing "+EventHeader+" header")
	case len(evs) > 1:
		return nil, newError(EventHeaderRepeated, "event: repeated "+EventHeader+" header")
	case evs[0] != env.Type:
		return nil, newError(EventHeaderMismatch, "event: "+EventHeader+" header differs from the body's eventType")
	}

	if v.tolerance > 0 {
		now := v.now()
		// Compare instants rather than subtracting: Sub saturates, and
		// negating a saturated Duration overflows.
		if env.Timestamp.Before(now.Add(-v.tolerance)) {
			return nil, newError(TimestampStale, "timestamp: older than the tolerance")
		}
		if env.Timestamp.After(now.Add(v.tolerance)) {
			return nil, newError(TimestampFuture, "timestamp: too far in the future")
		}
	}

	return &Event{
		ID:             env.ID,
		Type:           env.Type,
		Timestamp:      env.Timestamp,
		OrganizationID: env.OrganizationID,
		ProjectID:      env.ProjectID,
		SecretIndex:    idx,
		Body:           body,
		Payload:        env.Payload,
	}, nil
}

// match returns the index of the lowest secret whose MAC of body equals
// want, or -1. It computes and compares every MAC (compare in constant
// time, select without branching), so the time taken does not depend on
// which secret matched.
func (v *Verifier) match(body []byte, want *[32]byte) int {
	idx := -1
	for i, p := range v.macs {
		st := p.pool.Get().(*macState)
		st.h.Write(body)
		eq := subtle.ConstantTimeCompare(st.h.Sum(st.sum[:0]), want[:]) // what hmac.Equal uses
		st.h.Reset()
		p.pool.Put(st)
		unset := int((uint(idx) >> (strconv.IntSize - 1)) & 1) // 1 while idx == -1
		idx = subtle.ConstantTimeSelect(eq&unset, i, idx)
	}
	return idx
}
