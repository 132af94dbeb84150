package verifier

import (
	"encoding/json"
	"testing"
	"time"
)

// TestEncodeEnvelopeOrderAndValidity: members come in the sender's order,
// others sorted between projectId and payload, values as they were given;
// what is built parses back, with an id NewEventID made.
func TestEncodeEnvelopeOrderAndValidity(t *testing.T) {
	at := time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)
	id := NewEventID(at)
	env := EncodeEnvelope(map[string]json.RawMessage{
		"payload": json.RawMessage(`{"n":12345678901234567890}`), "projectId": quoted("p"), "eventId": quoted(id),
		"timestamp": quoted(FormatTimestamp(at)), "zeta": quoted("z"),
		"eventType": quoted("a.b"), "organizationId": quoted("o"),
	})
	want := `{"eventType":"a.b","eventId":"` + id + `","timestamp":"2026-03-31T12:00:00.000Z","organizationId":"o","projectId":"p","zeta":"z","payload":{"n":12345678901234567890}}`
	if string(env) != want {
		t.Fatalf("got  %s\nwant %s", env, want)
	}
	parsed, err := ParseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.ID != id || parsed.Type != "a.b" || !parsed.Timestamp.Equal(at) || string(parsed.Payload) != `{"n":12345678901234567890}` {
		t.Fatalf("parsed back as %+v", parsed)
	}
}
