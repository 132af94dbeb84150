package caddymodule

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// encodeEnvelope writes envelope members in the sender's order: eventType,
// eventId, timestamp, organizationId, projectId, any others (sorted), then
// payload. The values are raw JSON, written as they are.
func encodeEnvelope(fields map[string]json.RawMessage) []byte {
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
		buf.Write(quote(k))
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

// envelopeTime formats a timestamp as the sender does: RFC 3339, UTC,
// milliseconds.
func envelopeTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// newEventID makes an id in the sender's format: evt_<unix ms>_<random>,
// with 10 random characters (about 51 bits), so that ids made in the same
// millisecond do not collide.
func newEventID(now time.Time) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 10)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return fmt.Sprintf("evt_%d_%s", now.UnixMilli(), b)
}

// quote encodes s as a JSON string.
func quote(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
