package verifier

import (
	"errors"
	"net/http"
)

// Kind classifies a verification failure.
type Kind uint8

// Failure kinds, in the order Verify checks them.
const (
	// KindUnknown is what KindOf returns for nil and for errors that are not *Error.
	KindUnknown Kind = iota
	// SignatureMissing: no X-Webhook-Signature header (401).
	SignatureMissing
	// SignatureRepeated: more than one X-Webhook-Signature value (400).
	SignatureRepeated
	// SignatureMalformed: the header is not "sha256=" followed by 64 hex digits (401).
	SignatureMalformed
	// SignatureMismatch: the MAC matches none of the configured secrets (401).
	SignatureMismatch
	// EnvelopeInvalid: the body breaks a strict-JSON or an envelope field rule (400).
	EnvelopeInvalid
	// EventHeaderMissing: no X-Webhook-Event header (400).
	EventHeaderMissing
	// EventHeaderRepeated: more than one X-Webhook-Event value (400).
	EventHeaderRepeated
	// EventHeaderMismatch: X-Webhook-Event differs from the signed eventType (400).
	EventHeaderMismatch
	// TimestampStale: the event timestamp is older than the tolerance (401).
	TimestampStale
	// TimestampFuture: the event timestamp is further ahead than the tolerance (401).
	TimestampFuture
	// HeaderMissing: a header the profile needs for the id, type or timestamp is absent (400).
	HeaderMissing
	// HeaderRepeated: such a header has more than one value (400).
	HeaderRepeated
	// HeaderInvalid: such a header's value is malformed (400).
	HeaderInvalid
)

var kindNames = [...]string{
	KindUnknown:         "unknown",
	SignatureMissing:    "signature_missing",
	SignatureRepeated:   "signature_repeated",
	SignatureMalformed:  "signature_malformed",
	SignatureMismatch:   "signature_mismatch",
	EnvelopeInvalid:     "envelope_invalid",
	EventHeaderMissing:  "event_header_missing",
	EventHeaderRepeated: "event_header_repeated",
	EventHeaderMismatch: "event_header_mismatch",
	TimestampStale:      "timestamp_stale",
	TimestampFuture:     "timestamp_future",
	HeaderMissing:       "header_missing",
	HeaderRepeated:      "header_repeated",
	HeaderInvalid:       "header_invalid",
}

// String returns a stable snake_case name, suitable as a metric label.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Status returns the HTTP status a receiver answers with for this kind
// (docs/ingest.md, check order rows 4-7); 500 for KindUnknown.
func (k Kind) Status() int {
	switch k {
	case SignatureMissing, SignatureMalformed, SignatureMismatch, TimestampStale, TimestampFuture:
		return http.StatusUnauthorized
	case SignatureRepeated, EnvelopeInvalid, EventHeaderMissing, EventHeaderRepeated, EventHeaderMismatch,
		HeaderMissing, HeaderRepeated, HeaderInvalid:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// Error is the error returned by Verify, ParseSignature, ParseEnvelope and
// CheckJSON. Its message is short and safe to return to a client or to log:
// it never contains a secret, a signature value or bytes of the body (only
// envelope field names, which are constants of this package, and offsets).
type Error struct {
	// Kind classifies the failure.
	Kind Kind
	// Field is the envelope field ("eventId", ...) or the header concerned, if any.
	Field string
	// Offset is the byte offset in the body where a JSON error was found, or -1.
	Offset int
	msg    string
}

// Error returns the short, safe message.
func (e *Error) Error() string { return e.msg }

// Status returns the HTTP status for the failure (see Kind.Status).
func (e *Error) Status() int { return e.Kind.Status() }

// KindOf returns the Kind of err if err is (or wraps) an *Error, and
// KindUnknown otherwise (including for nil).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindUnknown
}

func newError(k Kind, msg string) *Error {
	return &Error{Kind: k, Offset: -1, msg: msg}
}

func fieldError(field, msg string) *Error {
	return &Error{Kind: EnvelopeInvalid, Field: field, Offset: -1, msg: "envelope: " + field + ": " + msg}
}
