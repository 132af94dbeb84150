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
	// Profile names the sender's scheme (LookupProfile); "" is ocriva.
	Profile string
	// Secrets holds one or more secrets, written as the profile's senders
	// write them (Profile.Key); during a rotation a delivery signed with
	// any of them is accepted. Each key must be at least MinSecretLen bytes.
	Secrets [][]byte
	// InsecureNoSignature disables signature checking (and then Secrets
	// must be empty); ocriva only. The X-Webhook-Signature header is
	// ignored; every other check still runs. Meant for explicit, logged
	// opt-outs only.
	InsecureNoSignature bool
	// Tolerance is the freshness window for the timestamp, checked in both
	// directions. 0 disables the check; it must be 0 for a profile without
	// a timestamp.
	Tolerance time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks inbound webhook requests. It is safe for concurrent use.
type Verifier struct {
	profile   *Profile
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
	p, ok := LookupProfile(cfg.Profile)
	switch {
	case !ok:
		return nil, errors.New("verifier: unknown profile " + strconv.Quote(cfg.Profile))
	case cfg.Tolerance < 0:
		return nil, errors.New("verifier: negative tolerance")
	case cfg.Tolerance > 0 && !p.Timestamped:
		return nil, errors.New("verifier: profile " + p.Name + " signs no timestamp: the tolerance must be 0")
	case cfg.InsecureNoSignature && p.Name != Ocriva:
		return nil, errors.New("verifier: InsecureNoSignature is for the ocriva profile only")
	}
	if cfg.InsecureNoSignature {
		if len(cfg.Secrets) > 0 {
			return nil, errors.New("verifier: secrets given together with InsecureNoSignature")
		}
	} else if len(cfg.Secrets) == 0 {
		return nil, errors.New("verifier: no secret configured (set InsecureNoSignature to opt out explicitly)")
	}
	v := &Verifier{profile: p, insecure: cfg.InsecureNoSignature, tolerance: cfg.Tolerance, now: cfg.Now}
	if v.now == nil {
		v.now = time.Now
	}
	for i, s := range cfg.Secrets {
		if len(s) == 0 {
			return nil, errors.New("verifier: secret " + strconv.Itoa(i) + " is empty")
		}
		k, err := p.scheme.key(s)
		if err != nil {
			return nil, errors.New("verifier: secret " + strconv.Itoa(i) + ": " + err.Error())
		}
		if len(k) < MinSecretLen {
			return nil, errors.New("verifier: secret " + strconv.Itoa(i) + " is shorter than " +
				strconv.Itoa(MinSecretLen) + " bytes")
		}
		key := append([]byte(nil), k...)
		p := &macPool{}
		p.pool.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
		v.macs = append(v.macs, p)
	}
	return v, nil
}

// Profile returns a copy of the verifier's profile.
func (v *Verifier) Profile() *Profile { return v.profile.clone() }

// Event is a verified event. ID, Type and Timestamp are where the profile
// puts them (ocriva: the envelope's eventId, eventType and timestamp).
type Event struct {
	ID             string    // the event id, for dedupe; "" for a Challenge
	Type           string    // the event type, for events filters
	Timestamp      time.Time // the signed timestamp; zero for github
	OrganizationID string    // organizationId, "" if absent
	ProjectID      string    // projectId, "" if absent
	// SecretIndex is the index in Config.Secrets of the secret that
	// matched (the lowest if several did); -1 in insecure mode.
	SecretIndex int
	// Body is the request body, untouched (the slice passed to Verify).
	Body []byte
	// Payload is the raw payload value, a subslice of Body; nil if absent
	// (ocriva only).
	Payload []byte
	// Challenge is set for a Slack url_verification request, which the
	// receiver answers itself with this value; it carries no event.
	Challenge string
}

// Verify checks a request's headers and raw body with the profile's
// scheme; see the profile_*.go files for each. The ocriva profile checks,
// in this order:
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
	return v.profile.scheme.verify(v, h, body)
}

// match returns the index of the lowest secret whose MAC of prefix followed
// by body equals one of wants, or -1. It computes every MAC and compares it
// with every candidate (compare in constant time, select without
// branching), so the time taken does not depend on which secret matched.
func (v *Verifier) match(prefix, body []byte, wants [][32]byte) int {
	idx := -1
	for i, p := range v.macs {
		st := p.pool.Get().(*macState)
		st.h.Write(prefix)
		st.h.Write(body)
		sum := st.h.Sum(st.sum[:0])
		eq := 0
		for j := range wants {
			eq |= subtle.ConstantTimeCompare(sum, wants[j][:]) // what hmac.Equal uses
		}
		st.h.Reset()
		p.pool.Put(st)
		unset := int((uint(idx) >> (strconv.IntSize - 1)) & 1) // 1 while idx == -1
		idx = subtle.ConstantTimeSelect(eq&unset, i, idx)
	}
	return idx
}
