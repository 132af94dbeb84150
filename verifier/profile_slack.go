package verifier

import (
	"encoding/hex"
	"net/http"
	"strconv"
)

// Slack headers.
const (
	slackSignatureHeader = "X-Slack-Signature"
	slackTimestampHeader = "X-Slack-Request-Timestamp"
	slackSigPrefix       = "v0="
	// maxChallenge bounds a url_verification challenge (Slack's are
	// about 50 characters).
	maxChallenge = 256
)

// slackScheme is Slack's Events API: X-Slack-Signature is "v0=<hex>", the
// HMAC-SHA256 of "v0:<X-Slack-Request-Timestamp>:<body>". The id is the
// body's "event_id", the type its "event"'s "type", the timestamp
// X-Slack-Request-Timestamp. A signed url_verification request carries no
// event: Verify returns its challenge (Event.Challenge) for the receiver
// to answer.
type slackScheme struct{}

func (slackScheme) key(secret []byte) ([]byte, error) { return rawKey(secret) }

func (slackScheme) sign(keys [][]byte, d Delivery) http.Header {
	ts := strconv.FormatInt(d.Time.Unix(), 10)
	return http.Header{
		slackSignatureHeader: {slackSigPrefix + hex.EncodeToString(hmacOf(keys[0], []byte("v0:"+ts+":"), d.Body))},
		slackTimestampHeader: {ts},
	}
}

func (slackScheme) verify(v *Verifier, h http.Header, body []byte) (*Event, error) {
	ts, rawTS, err := headerUnix(h, slackTimestampHeader)
	if err != nil {
		return nil, err
	}
	idx, err := v.verifyHeaderMAC(h, slackSignatureHeader, parseSlackSignature, []byte("v0:"+rawTS+":"), body)
	if err != nil {
		return nil, err
	}
	var vals [4][]byte
	if err := jsonObject(body, []string{"type", "event_id", "event", "challenge"}, vals[:]); err != nil {
		return nil, err
	}
	outer, err := stringMember(vals[0], "type", MaxEventTypeLen)
	if err != nil {
		return nil, err
	}
	ev := &Event{Type: outer, Timestamp: ts, SecretIndex: idx, Body: body}
	if outer == "url_verification" {
		ev.Challenge, err = stringMember(vals[3], "challenge", maxChallenge)
		if err == nil && !validChallenge(ev.Challenge) {
			err = fieldError("challenge", "not printable ASCII")
		}
	} else {
		ev.ID, ev.Type, err = slackEvent(vals[1], vals[2])
	}
	if err != nil {
		return nil, err
	}
	if err := v.fresh(ts); err != nil {
		return nil, err
	}
	return ev, nil
}

// slackEvent reads an event callback's id and its event's type.
func slackEvent(rawID, event []byte) (id, typ string, err *Error) {
	if id, err = idMember(rawID, "event_id"); err != nil {
		return "", "", err
	}
	if event == nil || event[0] != '{' {
		return "", "", fieldError("event", "missing or not an object")
	}
	var inner [1][]byte
	members(event, []string{"type"}, inner[:])
	typ, err = typeMember(inner[0], "event.type")
	return id, typ, err
}

// parseSlackSignature reads an X-Slack-Signature value: "v0=" and 64 hex
// digits. Errors are *Error of kind SignatureMalformed.
func parseSlackSignature(header string) ([32]byte, *Error) {
	if len(header) < len(slackSigPrefix) || header[:len(slackSigPrefix)] != slackSigPrefix {
		return [32]byte{}, newError(SignatureMalformed, "signature: missing \"v0=\" prefix")
	}
	mac, ok := hexMAC(header[len(slackSigPrefix):])
	if !ok {
		return mac, newError(SignatureMalformed, "signature: want 64 hex digits")
	}
	return mac, nil
}

// validChallenge reports whether c is non-empty printable ASCII without
// spaces.
func validChallenge(c string) bool {
	if c == "" {
		return false
	}
	for i := 0; i < len(c); i++ {
		if c[i] <= ' ' || c[i] > '~' {
			return false
		}
	}
	return true
}
