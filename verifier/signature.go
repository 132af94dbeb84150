package verifier

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// SignatureHeader is the header that carries the body's HMAC.
const SignatureHeader = "X-Webhook-Signature"

// EventHeader is the (unsigned) header that repeats the body's eventType.
const EventHeader = "X-Webhook-Event"

const (
	sigPrefix = "sha256="
	sigLen    = len(sigPrefix) + 2*sha256.Size
)

// Sign returns the X-Webhook-Signature value for body: "sha256=" followed by
// the lowercase hex HMAC-SHA256 of the exact bytes of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	var sum [sha256.Size]byte
	var out [sigLen]byte
	copy(out[:], sigPrefix)
	hex.Encode(out[len(sigPrefix):], m.Sum(sum[:0]))
	return string(out[:])
}

// ParseSignature parses an X-Webhook-Signature value strictly: the lowercase
// prefix "sha256=" followed by exactly 64 hex digits (upper-case digits are
// accepted; they encode the same MAC). No whitespace, lists or other schemes.
// Errors are *Error of kind SignatureMalformed.
func ParseSignature(header string) ([32]byte, error) {
	mac, err := parseSignature(header)
	if err != nil {
		return mac, err
	}
	return mac, nil
}

// parseSignature is ParseSignature, with the error as an *Error.
func parseSignature(header string) ([32]byte, *Error) {
	var mac [32]byte
	if len(header) < len(sigPrefix) || header[:len(sigPrefix)] != sigPrefix {
		return mac, newError(SignatureMalformed, "signature: missing \"sha256=\" prefix")
	}
	if len(header) != sigLen {
		return mac, newError(SignatureMalformed, "signature: want 64 hex digits")
	}
	mac, ok := hexMAC(header[len(sigPrefix):])
	if !ok {
		return mac, newError(SignatureMalformed, "signature: invalid hex digit")
	}
	return mac, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
