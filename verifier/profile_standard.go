package verifier

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// Standard Webhooks headers (https://www.standardwebhooks.com).
const (
	swIDHeader        = "Webhook-Id"
	swTimestampHeader = "Webhook-Timestamp"
	swSignatureHeader = "Webhook-Signature"
	swSecretPrefix    = "whsec_"
)

// standardScheme is Standard Webhooks: webhook-signature holds
// space-separated "v1,<base64>" tokens, each HMAC-SHA256 of
// "<webhook-id>.<webhook-timestamp>.<body>"; other tokens (v1a, malformed)
// are ignored. The id is webhook-id (no "."), the timestamp webhook-timestamp
// (Unix seconds), the type the body's "type". A secret is "whsec_" and
// the base64 of the key (the prefix may be left out, as the reference
// library allows).
type standardScheme struct{}

func (standardScheme) key(secret []byte) ([]byte, error) {
	raw := bytes.TrimPrefix(secret, []byte(swSecretPrefix))
	k := make([]byte, base64.StdEncoding.DecodedLen(len(raw)))
	n, err := base64.StdEncoding.Decode(k, raw)
	if err != nil {
		return nil, errors.New("not whsec_ followed by standard base64")
	}
	return k[:n], nil
}

func (standardScheme) sign(keys [][]byte, d Delivery) http.Header {
	ts := strconv.FormatInt(d.Time.Unix(), 10)
	tokens := make([]string, len(keys))
	for i, k := range keys {
		tokens[i] = "v1," + base64.StdEncoding.EncodeToString(hmacOf(k, []byte(d.ID+"."+ts+"."), d.Body))
	}
	return http.Header{swIDHeader: {d.ID}, swTimestampHeader: {ts}, swSignatureHeader: {strings.Join(tokens, " ")}}
}

func (standardScheme) verify(v *Verifier, h http.Header, body []byte) (*Event, error) {
	id, err := headerID(h, swIDHeader)
	if err == nil && strings.IndexByte(id, '.') >= 0 {
		err = headerError(HeaderInvalid, swIDHeader, "contains \".\"")
	}
	if err != nil {
		return nil, err
	}
	ts, rawTS, err := headerUnix(h, swTimestampHeader)
	if err != nil {
		return nil, err
	}
	sig, err := single(h, swSignatureHeader, SignatureMissing, SignatureRepeated)
	if err != nil {
		return nil, err
	}
	wants, err := parseStandardSignature(sig)
	if err != nil {
		return nil, err
	}
	idx, err := v.verifyMAC([]byte(id+"."+rawTS+"."), body, wants)
	if err != nil {
		return nil, err
	}
	var vals [1][]byte
	if err := jsonObject(body, []string{"type"}, vals[:]); err != nil {
		return nil, err
	}
	typ, err := typeMember(vals[0], "type")
	if err != nil {
		return nil, err
	}
	if err := v.fresh(ts); err != nil {
		return nil, err
	}
	return &Event{ID: id, Type: typ, Timestamp: ts, SecretIndex: idx, Body: body}, nil
}

// parseStandardSignature reads a webhook-signature value: tokens separated
// by single spaces, each "<version>,<signature>". It keeps the "v1" ones
// that are standard base64 of 32 bytes and, like the reference libraries
// (which compare each token with the expected one), skips any other token:
// other versions (v1a), malformed and empty ones. At least one kept token
// and at most maxSignatures tokens in all, counted as they are read so
// that a long header costs no allocation; errors are *Error of kind
// SignatureMalformed.
func parseStandardSignature(header string) ([][32]byte, *Error) {
	var wants [][32]byte
	for n, rest, more := 0, header, true; more; n++ {
		if n == maxSignatures {
			return nil, newError(SignatureMalformed, "signature: more than 16 signatures")
		}
		var tok string
		tok, rest, more = strings.Cut(rest, " ")
		sig, ok := strings.CutPrefix(tok, "v1,")
		if !ok {
			continue
		}
		if mac, ok := base64MAC(sig); ok {
			wants = append(wants, mac)
		}
	}
	if len(wants) == 0 {
		return nil, newError(SignatureMalformed, "signature: no well-formed v1 signature")
	}
	return wants, nil
}
