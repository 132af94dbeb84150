package verifier

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Limits on envelope string fields, in bytes after unescaping.
const (
	MaxEventIDLen   = 128
	MaxEventTypeLen = 128
	MaxTenantIDLen  = 256 // organizationId and projectId
	maxTimestampLen = 64
)

// Envelope is the parsed, validated envelope of an event body.
type Envelope struct {
	ID             string    // eventId
	Type           string    // eventType
	Timestamp      time.Time // timestamp
	OrganizationID string    // organizationId, "" if absent
	ProjectID      string    // projectId, "" if absent
	Payload        []byte    // raw bytes of the payload value (a subslice of the body), nil if absent
}

// Indexes of the envelope members in scanner.fields.
const (
	fEventID = iota
	fEventType
	fTimestamp
	fOrganizationID
	fProjectID
	fPayload
	numFields
)

var fieldNames = [numFields]string{"eventId", "eventType", "timestamp", "organizationId", "projectId", "payload"}

// lookupField maps an (unescaped) top-level key to its field index, or -1.
// Names are case-sensitive: "EVENTID" is just an unknown member.
func lookupField(k []byte) int {
	switch string(k) {
	case "eventId":
		return fEventID
	case "eventType":
		return fEventType
	case "timestamp":
		return fTimestamp
	case "organizationId":
		return fOrganizationID
	case "projectId":
		return fProjectID
	case "payload":
		return fPayload
	}
	return -1
}

// ParseEnvelope checks body with the rules of CheckJSON, then the envelope
// rules: the top-level value is an object with
//   - eventId: a string, ValidEventID;
//   - eventType: a string, ValidEventType;
//   - timestamp: a string, RFC 3339 with an upper-case "T", at most 9
//     fractional digits and a zone ("Z" or ±hh:mm);
//   - organizationId, projectId: optional; strings of at most 256 bytes;
//   - payload: optional; any JSON value, kept as raw bytes;
//   - any other member: allowed and ignored (forward compatibility).
//
// It does not check a signature. Errors are *Error of kind EnvelopeInvalid.
func ParseEnvelope(body []byte) (*Envelope, error) {
	env := new(Envelope)
	if err := parseEnvelope(body, env); err != nil {
		return nil, err
	}
	return env, nil
}

// parseEnvelope fills env from body. All strings of env share one allocation.
func parseEnvelope(body []byte, env *Envelope) *Error {
	s := getScanner()
	s.envelope = true
	ok := s.scan(body, true)
	fields := s.fields
	var serr *Error
	if !ok {
		serr = s.err()
	}
	putScanner(s)
	if serr != nil {
		return serr
	}

	// The unescaped string fields are gathered in buf, then turned into one
	// string that the fields slice.
	var buf [MaxEventIDLen + MaxEventTypeLen + maxTimestampLen + 2*MaxTenantIDLen]byte
	out := buf[:0]
	var ends [fProjectID + 1]int
	for f := fEventID; f <= fProjectID; f++ {
		sp := fields[f]
		if sp.end == 0 {
			if f <= fTimestamp {
				return fieldError(fieldNames[f], "missing")
			}
			ends[f] = len(out)
			continue
		}
		if body[sp.start] != '"' {
			return fieldError(fieldNames[f], "not a string")
		}
		var ok bool
		start := len(out)
		out, ok = appendUnescapedLimit(out, body[sp.start+1:sp.end-1], fieldLimits[f])
		if !ok {
			return fieldError(fieldNames[f], "too long")
		}
		if err := checkField(f, out[start:]); err != nil {
			return err
		}
		ends[f] = len(out)
	}

	str := string(out)
	env.ID = str[:ends[fEventID]]
	env.Type = str[ends[fEventID]:ends[fEventType]]
	ts := str[ends[fEventType]:ends[fTimestamp]]
	env.OrganizationID = str[ends[fTimestamp]:ends[fOrganizationID]]
	env.ProjectID = str[ends[fOrganizationID]:ends[fProjectID]]
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return fieldError("timestamp", "not an RFC 3339 date-time with a time zone")
	}
	env.Timestamp = t
	if sp := fields[fPayload]; sp.end != 0 {
		env.Payload = body[sp.start:sp.end:sp.end]
	} else {
		env.Payload = nil
	}
	return nil
}

var fieldLimits = [...]int{
	fEventID:        MaxEventIDLen,
	fEventType:      MaxEventTypeLen,
	fTimestamp:      maxTimestampLen,
	fOrganizationID: MaxTenantIDLen,
	fProjectID:      MaxTenantIDLen,
}

func checkField(f int, v []byte) *Error {
	switch f {
	case fEventID:
		if len(v) == 0 {
			return fieldError("eventId", "empty")
		}
		if !validID(v) {
			return fieldError("eventId", "invalid characters")
		}
	case fEventType:
		if !validType(v) {
			return fieldError("eventType", "not a dotted token")
		}
	case fTimestamp:
		if !rfc3339Shape(v) {
			return fieldError("timestamp", "not an RFC 3339 date-time with a time zone")
		}
	}
	return nil
}

// ValidEventID reports whether s is a valid eventId: 1 to 128 characters
// from [A-Za-z0-9._:-].
func ValidEventID(s string) bool {
	return len(s) >= 1 && len(s) <= MaxEventIDLen && validID(s)
}

// ValidEventType reports whether s is a valid eventType: dot-separated
// non-empty tokens of [A-Za-z0-9_-], at most 128 bytes in all.
func ValidEventType(s string) bool {
	return len(s) <= MaxEventTypeLen && validType(s)
}

func validID[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if !idChar[s[i]] {
			return false
		}
	}
	return true
}

func validType[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	prevDot := true // a token may not start empty
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		if !tokenChar[c] {
			return false
		}
		prevDot = false
	}
	return !prevDot
}

var idChar, tokenChar = func() (id, tok [256]bool) {
	for c := range 256 {
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		id[c] = alnum || c == '.' || c == '_' || c == ':' || c == '-'
		tok[c] = alnum || c == '_' || c == '-'
	}
	return
}()

// rfc3339Shape checks the exact RFC 3339 date-time grammar before
// time.Parse, whose fallback parser is laxer (it accepts a comma before the
// fraction, one-digit hours and zone offsets like +24:00):
// YYYY-MM-DDTHH:MM:SS[.1-9 digits](Z|+hh:mm|-hh:mm), "T" and "Z" upper-case,
// offset hours 00-23 and minutes 00-59. Ranges of the date and time are left
// to time.Parse.
func rfc3339Shape(b []byte) bool {
	const pat = "dddd-dd-ddTdd:dd:dd"
	if len(b) < len(pat)+1 {
		return false
	}
	for i := 0; i < len(pat); i++ {
		if pat[i] == 'd' {
			if b[i]-'0' > 9 {
				return false
			}
		} else if b[i] != pat[i] {
			return false
		}
	}
	b = b[len(pat):]
	if b[0] == '.' {
		j := 1
		for j < len(b) && b[j]-'0' <= 9 {
			j++
		}
		if j == 1 || j > 10 {
			return false
		}
		b = b[j:]
	}
	if len(b) == 1 {
		return b[0] == 'Z'
	}
	if len(b) != 6 || (b[0] != '+' && b[0] != '-') || b[3] != ':' {
		return false
	}
	for _, j := range [4]int{1, 2, 4, 5} {
		if b[j]-'0' > 9 {
			return false
		}
	}
	return (b[1]-'0')*10+b[2]-'0' <= 23 && (b[4]-'0')*10+b[5]-'0' <= 59
}

// EncodeEnvelope builds an event body from its members, in the sender's
// order: eventType, eventId, timestamp, organizationId, projectId, any
// others (sorted), then payload. The values are raw JSON, written as they
// are; ParseEnvelope checks the result like any other body.
func EncodeEnvelope(fields map[string]json.RawMessage) []byte {
	n := 0
	for _, v := range fields {
		n += len(v) + 24
	}
	buf := bytes.NewBuffer(make([]byte, 0, n+2))
	buf.WriteByte('{')
	first := true
	write := func(k string) {
		v, ok := fields[k]
		if !ok {
			return
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		buf.Write(quoted(k))
		buf.WriteByte(':')
		buf.Write(v)
	}
	known := []string{"eventType", "eventId", "timestamp", "organizationId", "projectId"}
	for _, k := range known {
		write(k)
	}
	var others []string
	for k := range fields {
		if k != "payload" && !slices.Contains(known, k) {
			others = append(others, k)
		}
	}
	slices.Sort(others)
	for _, k := range others {
		write(k)
	}
	write("payload")
	buf.WriteByte('}')
	return buf.Bytes()
}

// FormatTimestamp formats a timestamp as the sender does: RFC 3339, UTC,
// milliseconds.
func FormatTimestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// NewEventID makes an id in the sender's format: evt_<unix ms>_<random>,
// with 10 random characters (about 51 bits), so that ids made in the same
// millisecond do not collide.
func NewEventID(now time.Time) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 10)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return fmt.Sprintf("evt_%d_%s", now.UnixMilli(), b)
}

// quoted encodes s as a JSON string.
func quoted(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}
