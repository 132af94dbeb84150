package verifier

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"time"
)

// Profile names: the senders whose schemes a Verifier speaks.
const (
	Ocriva           = "ocriva"
	StandardWebhooks = "standard-webhooks"
	GitHub           = "github"
	Stripe           = "stripe"
	Shopify          = "shopify"
	Slack            = "slack"
)

// maxSignatures bounds the signatures one header may list (Standard
// Webhooks, Stripe): each is compared with every secret's MAC.
const maxSignatures = 16

// Profile is one sender's scheme: how a delivery is signed, where its event
// id, type and timestamp are, and how a secret is written.
type Profile struct {
	// Name is the profile's name in configurations.
	Name string
	// DefaultTolerance is the timestamp's freshness window when none is
	// configured; 0 for a scheme without a timestamp.
	DefaultTolerance time.Duration
	// Timestamped is false for a scheme that signs no timestamp (github):
	// there, replay protection is the dedupe window alone.
	Timestamped bool
	// SignedID is false for a scheme whose event id is outside the
	// signature (github, shopify): a captured delivery sent again with a
	// fresh id passes the dedupe, which is then the only replay protection.
	SignedID bool
	// SignatureHeader is the header that carries the signature.
	SignatureHeader string
	// Headers are the scheme's own headers, the signature's among them,
	// which the upstream receives as the sender wrote them.
	Headers []string
	scheme  scheme
}

// scheme is what a profile does.
type scheme interface {
	// key turns a configured secret into its HMAC key.
	key(secret []byte) ([]byte, error)
	// verify checks a delivery's headers and raw body.
	verify(v *Verifier, h http.Header, body []byte) (*Event, error)
	// sign returns the headers a sender sets on d, signed with the keys.
	sign(keys [][]byte, d Delivery) http.Header
}

// Delivery is what a sender signs (Profile.Sign): for the test sender, the
// publisher and tests.
type Delivery struct {
	ID   string    // the event id, for schemes that carry it in a header
	Type string    // the event type, likewise
	Time time.Time // the signing time, for schemes that sign one
	Body []byte
}

var profiles = []*Profile{
	{
		Name: Ocriva, SignatureHeader: SignatureHeader, DefaultTolerance: time.Hour, Timestamped: true, SignedID: true,
		Headers: []string{SignatureHeader, EventHeader},
		scheme:  ocrivaScheme{},
	},
	{
		Name: StandardWebhooks, SignatureHeader: swSignatureHeader, DefaultTolerance: 5 * time.Minute, Timestamped: true, SignedID: true,
		Headers: []string{swIDHeader, swTimestampHeader, swSignatureHeader},
		scheme:  standardScheme{},
	},
	{
		Name: GitHub, SignatureHeader: githubSignatureHeader,
		Headers: []string{githubSignatureHeader, githubDeliveryHeader, githubEventHeader, "X-Github-Hook-Id",
			"X-Github-Hook-Installation-Target-Id", "X-Github-Hook-Installation-Target-Type"},
		scheme: githubScheme{},
	},
	{
		Name: Stripe, SignatureHeader: stripeSignatureHeader, DefaultTolerance: 5 * time.Minute, Timestamped: true, SignedID: true,
		Headers: []string{stripeSignatureHeader},
		scheme:  stripeScheme{},
	},
	{
		Name: Shopify, SignatureHeader: shopifySignatureHeader, DefaultTolerance: time.Hour, Timestamped: true,
		Headers: []string{shopifySignatureHeader, shopifyWebhookIDHeader, shopifyTopicHeader, shopifyTriggeredAtHeader,
			"X-Shopify-Shop-Domain", "X-Shopify-Api-Version", "X-Shopify-Event-Id"},
		scheme: shopifyScheme{},
	},
	{
		Name: Slack, SignatureHeader: slackSignatureHeader, DefaultTolerance: 5 * time.Minute, Timestamped: true, SignedID: true,
		Headers: []string{slackSignatureHeader, slackTimestampHeader, "X-Slack-Retry-Num", "X-Slack-Retry-Reason"},
		scheme:  slackScheme{},
	},
}

// LookupProfile returns a copy of the named profile; "" names ocriva.
func LookupProfile(name string) (*Profile, bool) {
	if name == "" {
		name = Ocriva
	}
	i := slices.IndexFunc(profiles, func(p *Profile) bool { return p.Name == name })
	if i < 0 {
		return nil, false
	}
	return profiles[i].clone(), true
}

// clone returns a copy of p that shares nothing a caller may change.
func (p *Profile) clone() *Profile {
	c := *p
	c.Headers = slices.Clone(p.Headers)
	return &c
}

// ProfileNames lists the profiles' names.
func ProfileNames() []string {
	names := make([]string, len(profiles))
	for i, p := range profiles {
		names[i] = p.Name
	}
	return names
}

// Key returns the HMAC key that secret, written as the profile's senders
// write it, stands for; a plain error (naming no value) if it is malformed.
func (p *Profile) Key(secret []byte) ([]byte, error) { return p.scheme.key(secret) }

// Sign returns the headers a sender of this profile sets on d: its
// signature, made with each of the secrets where the scheme takes several
// (with the first otherwise), and the id, type and timestamp headers the
// scheme has.
func (p *Profile) Sign(secrets [][]byte, d Delivery) (http.Header, error) {
	if len(secrets) == 0 {
		return nil, errors.New("verifier: no secret to sign with")
	}
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		k, err := p.scheme.key(s)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return p.scheme.sign(keys, d), nil
}

// rawKey is the key of schemes that use the secret's bytes as they are.
func rawKey(secret []byte) ([]byte, error) { return secret, nil }

// hmacOf returns HMAC-SHA256 of the parts, concatenated, under key.
func hmacOf(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// single returns the one value of the header name: a missing header is an
// *Error of kind missing, several values one of kind repeated.
func single(h http.Header, name string, missing, repeated Kind) (string, *Error) {
	vals := h.Values(name)
	switch len(vals) {
	case 0:
		return "", headerError(missing, name, "missing")
	case 1:
		return vals[0], nil
	}
	return "", headerError(repeated, name, "repeated")
}

func headerError(k Kind, name, what string) *Error {
	return &Error{Kind: k, Field: name, Offset: -1, msg: "header " + name + ": " + what}
}

// headerID reads the header name as an event id (ValidEventID).
func headerID(h http.Header, name string) (string, *Error) {
	return headerValid(h, name, ValidEventID, "not 1-128 characters of A-Z a-z 0-9 . _ : -")
}

// headerType reads the header name as an event type (ValidEventType).
func headerType(h http.Header, name string) (string, *Error) {
	return headerValid(h, name, ValidEventType, "not a dotted token")
}

// headerValid reads the one value of the header name, which valid must
// accept (else an error saying it is invalid).
func headerValid(h http.Header, name string, valid func(string) bool, invalid string) (string, *Error) {
	v, err := single(h, name, HeaderMissing, HeaderRepeated)
	if err != nil {
		return "", err
	}
	if !valid(v) {
		return "", headerError(HeaderInvalid, name, invalid)
	}
	return v, nil
}

// headerUnix reads the header name as Unix seconds (parseUnix).
func headerUnix(h http.Header, name string) (time.Time, string, *Error) {
	v, err := single(h, name, HeaderMissing, HeaderRepeated)
	if err != nil {
		return time.Time{}, "", err
	}
	t, ok := parseUnix(v)
	if !ok {
		return time.Time{}, "", headerError(HeaderInvalid, name, "not Unix seconds")
	}
	return t, v, nil
}

// parseUnix parses Unix seconds written as 1 to 12 decimal digits, without
// sign, space or fraction.
func parseUnix(s string) (time.Time, bool) {
	if len(s) == 0 || len(s) > 12 {
		return time.Time{}, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		d := s[i] - '0'
		if d > 9 {
			return time.Time{}, false
		}
		n = n*10 + int64(d)
	}
	return time.Unix(n, 0), true
}

// hexMAC decodes exactly 64 hex digits.
func hexMAC(s string) ([32]byte, bool) {
	var out [32]byte
	if len(s) != 64 {
		return out, false
	}
	for i := 0; i < 64; i += 2 {
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return [32]byte{}, false
		}
		out[i/2] = hi<<4 | lo
	}
	return out, true
}

// base64MAC decodes the standard base64, padded, of 32 bytes.
func base64MAC(s string) ([32]byte, bool) {
	var buf [33]byte // what 44 characters without padding would decode to
	if len(s) != 44 {
		return [32]byte{}, false
	}
	n, err := base64.StdEncoding.Strict().Decode(buf[:], []byte(s))
	if err != nil || n != 32 {
		return [32]byte{}, false
	}
	return [32]byte(buf[:32]), true
}

// fresh checks t against the tolerance, in both directions.
func (v *Verifier) fresh(t time.Time) *Error {
	if v.tolerance <= 0 {
		return nil
	}
	now := v.now()
	// Compare instants rather than subtracting: Sub saturates, and
	// negating a saturated Duration overflows.
	if t.Before(now.Add(-v.tolerance)) {
		return newError(TimestampStale, "timestamp: older than the tolerance")
	}
	if t.After(now.Add(v.tolerance)) {
		return newError(TimestampFuture, "timestamp: too far in the future")
	}
	return nil
}

// verifySHA256Header checks the one value of the header name,
// "sha256=<hex>" (ParseSignature), against the MAC of body (ocriva's and
// github's signature), and returns the matching key's index (see match).
func (v *Verifier) verifySHA256Header(h http.Header, name string, body []byte) (int, *Error) {
	return v.verifyHeaderMAC(h, name, parseSignature, nil, body)
}

// verifyHeaderMAC checks the one value of the header name, read by parse as
// one MAC, against the MAC of prefix and body, and returns the matching
// key's index (see match).
func (v *Verifier) verifyHeaderMAC(h http.Header, name string, parse func(string) ([32]byte, *Error), prefix, body []byte) (int, *Error) {
	sig, err := single(h, name, SignatureMissing, SignatureRepeated)
	if err != nil {
		return -1, err
	}
	want, err := parse(sig)
	if err != nil {
		return -1, err
	}
	return v.verifyMAC(prefix, body, [][32]byte{want})
}

// verifyMAC checks that one of wants is the MAC of prefix and body under one
// of the keys, and returns that key's index (see match).
func (v *Verifier) verifyMAC(prefix, body []byte, wants [][32]byte) (int, *Error) {
	idx := v.match(prefix, body, wants)
	if idx < 0 {
		return -1, newError(SignatureMismatch, "signature: mismatch")
	}
	return idx, nil
}
