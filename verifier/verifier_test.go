package verifier

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

var testSecret = []byte("test-secret-0123456789abcdef")
var otherSecret = []byte("other-secret-0123456789abcdef")

var baseTime = time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)

var defaultMembers = [][2]string{
	{"eventId", `"evt_1743418800000_inv9x2"`},
	{"eventType", `"document.processed"`},
	{"timestamp", `"2026-03-31T12:00:00.000Z"`},
	{"organizationId", `"org_abc123"`},
	{"projectId", `"proj_xyz789"`},
	{"payload", `{"id":"doc_1","extractedData":{"totalAmount":15420.00}}`},
}

// envelope builds an envelope body. repl holds pairs of a member name and a
// raw JSON value: the value replaces the default one, "-" drops the member,
// and names that are not default members are appended.
func envelope(repl ...string) string {
	members := append([][2]string(nil), defaultMembers...)
outer:
	for i := 0; i+1 < len(repl); i += 2 {
		for j := range members {
			if members[j][0] == repl[i] {
				members[j][1] = repl[i+1]
				continue outer
			}
		}
		members = append(members, [2]string{repl[i], repl[i+1]})
	}
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for _, m := range members {
		if m[1] == "-" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(`"` + m[0] + `":` + m[1]) // names are raw JSON string contents
	}
	b.WriteByte('}')
	return b.String()
}

func nest(depth int) string { // depth arrays around 1
	return strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth)
}

func TestVectors(t *testing.T) {
	vec := loadVectors(t)
	v := mustNew(t, Config{Secrets: [][]byte{vec.secret}, Tolerance: 5 * time.Minute, Now: fixedClock(vec.ts)})
	ev, err := v.Verify(headers(vec.sig, "document.processed"), vec.body)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != "evt_1743418800000_inv9x2" || ev.Type != "document.processed" || !ev.Timestamp.Equal(vec.ts) ||
		ev.OrganizationID != "org_abc123" || ev.ProjectID != "proj_xyz789" || ev.SecretIndex != 0 {
		t.Fatalf("event = %+v", ev)
	}
	if &ev.Body[0] != &vec.body[0] || len(ev.Body) != len(vec.body) {
		t.Fatal("Body is not the slice passed in")
	}
	if !bytes.HasPrefix(ev.Payload, []byte(`{"id":"doc_march_inv"`)) || !bytes.HasSuffix(ev.Payload, []byte(`"2026-03-31T12:00:00.000Z"}`)) {
		t.Fatalf("payload = %s", ev.Payload)
	}
	off := bytes.Index(vec.body, ev.Payload)
	if off < 0 || &vec.body[off] != &ev.Payload[0] {
		t.Fatal("Payload is not a subslice of Body")
	}

	t.Run("every body byte flipped", func(t *testing.T) {
		body := bytes.Clone(vec.body)
		for i := range body {
			body[i] ^= 0x01
			_, err := v.Verify(headers(vec.sig, "document.processed"), body)
			body[i] ^= 0x01
			if KindOf(err) != SignatureMismatch {
				t.Fatalf("byte %d flipped: err = %v", i, err)
			}
		}
	})
	t.Run("every signature byte changed", func(t *testing.T) {
		sig := []byte(vec.sig)
		for i := range sig {
			for _, x := range []byte{0x01, 0x20, 0x80} {
				sig[i] ^= x
				_, err := v.Verify(headers(string(sig), "document.processed"), vec.body)
				k := KindOf(err)
				// Flipping 0x20 turns a-f into A-F: the same MAC, so success.
				sameMAC := i >= 7 && x == 0x20 && bytes.ContainsRune([]byte("ABCDEF"), rune(sig[i]))
				if sameMAC {
					if err != nil {
						t.Fatalf("byte %d ^ %#x (case change): %v", i, x, err)
					}
				} else if k != SignatureMismatch && k != SignatureMalformed {
					t.Fatalf("byte %d ^ %#x: err = %v", i, x, err)
				}
				sig[i] ^= x
			}
		}
	})
	t.Run("upper-case hex accepted", func(t *testing.T) {
		if _, err := v.Verify(headers("sha256="+strings.ToUpper(vec.sig[7:]), "document.processed"), vec.body); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("stale without injected clock", func(t *testing.T) {
		v := mustNew(t, Config{Secrets: [][]byte{vec.secret}, Tolerance: 5 * time.Minute})
		_, err := v.Verify(headers(vec.sig, "document.processed"), vec.body)
		wantKind(t, err, TimestampStale, 401)
	})
}

func TestVerify(t *testing.T) {
	type tc struct {
		name   string
		body   string
		hdr    func(body string) http.Header // default: signed with testSecret, event document.processed
		cfg    func(*Config)
		now    time.Time // default baseTime
		kind   Kind
		status int
		check  func(t *testing.T, ev *Event)
	}
	signed := func(secret []byte) func(string) http.Header {
		return func(body string) http.Header {
			return headers(Sign(secret, []byte(body)), "document.processed")
		}
	}
	withHeader := func(name string, values ...string) func(string) http.Header {
		return func(body string) http.Header {
			h := signed(testSecret)(body)
			h.Del(name)
			for _, v := range values {
				h.Add(name, v)
			}
			return h
		}
	}
	sigOf := func(body string) string { return Sign(testSecret, []byte(body)) }
	ok := KindUnknown
	env := envelope()
	long := func(n int) string { return `"` + strings.Repeat("a", n) + `"` }

	tests := []tc{
		{name: "valid", body: env, kind: ok, check: func(t *testing.T, ev *Event) {
			if ev.ID != "evt_1743418800000_inv9x2" || ev.SecretIndex != 0 || string(ev.Payload) != `{"id":"doc_1","extractedData":{"totalAmount":15420.00}}` {
				t.Fatalf("%+v", ev)
			}
		}},

		// Signature header.
		{name: "signature missing", body: env, hdr: withHeader(SignatureHeader), kind: SignatureMissing, status: 401},
		{name: "signature repeated (same value)", body: env, hdr: withHeader(SignatureHeader, sigOf(env), sigOf(env)), kind: SignatureRepeated, status: 400},
		{name: "signature repeated (bad, good)", body: env, hdr: withHeader(SignatureHeader, "sha256=00", sigOf(env)), kind: SignatureRepeated, status: 400},
		{name: "signature empty", body: env, hdr: withHeader(SignatureHeader, ""), kind: SignatureMalformed, status: 401},
		{name: "signature no prefix", body: env, hdr: withHeader(SignatureHeader, sigOf(env)[7:]), kind: SignatureMalformed, status: 401},
		{name: "signature SHA256= prefix", body: env, hdr: withHeader(SignatureHeader, "SHA256="+sigOf(env)[7:]), kind: SignatureMalformed, status: 401},
		{name: "signature base64", body: env, hdr: withHeader(SignatureHeader, "sha256=7A1sNMW0Cc7dsdw+/GZStcnRJeXeJNg9TiFZmo0kCHo="), kind: SignatureMalformed, status: 401},
		{name: "signature 63 hex", body: env, hdr: withHeader(SignatureHeader, sigOf(env)[:70]), kind: SignatureMalformed, status: 401},
		{name: "signature 65 hex", body: env, hdr: withHeader(SignatureHeader, sigOf(env)+"0"), kind: SignatureMalformed, status: 401},
		{name: "signature non-hex", body: env, hdr: withHeader(SignatureHeader, sigOf(env)[:70]+"x"), kind: SignatureMalformed, status: 401},
		{name: "signature internal space", body: env, hdr: withHeader(SignatureHeader, "sha256= "+sigOf(env)[8:]), kind: SignatureMalformed, status: 401},
		{name: "signature comma list", body: env, hdr: withHeader(SignatureHeader, sigOf(env)+","+sigOf(env)), kind: SignatureMalformed, status: 401},
		{name: "signature mismatch", body: env, hdr: withHeader(SignatureHeader, "sha256="+strings.Repeat("0", 64)), kind: SignatureMismatch, status: 401},
		{name: "signature wrong secret", body: env, hdr: signed(otherSecret), kind: SignatureMismatch, status: 401},
		{name: "signature over other body", body: env, hdr: withHeader(SignatureHeader, sigOf(env+" ")), kind: SignatureMismatch, status: 401},
		{name: "signature upper-case hex", body: env, hdr: withHeader(SignatureHeader, "sha256="+strings.ToUpper(sigOf(env)[7:])), kind: ok},
		{name: "rotation: second secret matches", body: env, hdr: signed(testSecret),
			cfg: func(c *Config) { c.Secrets = [][]byte{otherSecret, testSecret} }, kind: ok,
			check: func(t *testing.T, ev *Event) {
				if ev.SecretIndex != 1 {
					t.Fatalf("SecretIndex = %d", ev.SecretIndex)
				}
			}},
		{name: "rotation: first secret matches", body: env, hdr: signed(otherSecret),
			cfg: func(c *Config) { c.Secrets = [][]byte{otherSecret, testSecret} }, kind: ok,
			check: func(t *testing.T, ev *Event) {
				if ev.SecretIndex != 0 {
					t.Fatalf("SecretIndex = %d", ev.SecretIndex)
				}
			}},
		{name: "rotation: none matches", body: env, hdr: signed([]byte("third-secret-0123456789")),
			cfg: func(c *Config) { c.Secrets = [][]byte{otherSecret, testSecret} }, kind: SignatureMismatch, status: 401},
		{name: "signature checked before envelope", body: `not json`, hdr: signed(otherSecret), kind: SignatureMismatch, status: 401},

		// Envelope: shape and strict JSON.
		{name: "empty body", body: ``, kind: EnvelopeInvalid, status: 400},
		{name: "string", body: `"document.processed"`, kind: EnvelopeInvalid, status: 400},
		{name: "number", body: `1`, kind: EnvelopeInvalid, status: 400},
		{name: "null", body: `null`, kind: EnvelopeInvalid, status: 400},
		{name: "array", body: `[` + env + `]`, kind: EnvelopeInvalid, status: 400},
		{name: "two objects", body: env + env, kind: EnvelopeInvalid, status: 400},
		{name: "trailing garbage", body: env + `x`, kind: EnvelopeInvalid, status: 400},
		{name: "trailing NUL", body: env + "\x00", kind: EnvelopeInvalid, status: 400},
		{name: "trailing comma", body: env[:len(env)-1] + `,}`, kind: EnvelopeInvalid, status: 400},
		{name: "BOM", body: "\xef\xbb\xbf" + env, kind: EnvelopeInvalid, status: 400},
		{name: "surrounding whitespace ok", body: " \r\n\t" + env + "\n ", kind: ok},
		{name: "truncated", body: env[:len(env)-1], kind: EnvelopeInvalid, status: 400},
		{name: "duplicate eventId", body: envelope("eventId", `"a"`)[:1] + `"eventId":"b",` + envelope("eventId", `"a"`)[1:], kind: EnvelopeInvalid, status: 400},
		{name: "duplicate eventId same value", body: `{"eventId":"evt_1",` + envelope("eventId", `"evt_1"`)[1:], kind: EnvelopeInvalid, status: 400},
		{name: "duplicate via escape", body: envelope("event\\u0049d", `"evt_2"`), kind: EnvelopeInvalid, status: 400},
		{name: "duplicate unknown key", body: `{"x":0,` + envelope("x", `1`)[1:], kind: EnvelopeInvalid, status: 400},
		{name: "duplicate nested key", body: envelope("payload", `{"a":{"b":1,"c":2,"b":3}}`), kind: EnvelopeInvalid, status: 400},
		{name: "duplicate key in array element", body: envelope("payload", `[{"a":1},{"a":1,"a":1}]`), kind: EnvelopeInvalid, status: 400},
		{name: "same key in sibling objects ok", body: envelope("payload", `[{"a":1},{"a":1}]`), kind: ok},
		{name: "eventID is an unknown member", body: envelope("eventID2", `"other"`, "event_id", `5`), kind: ok, check: func(t *testing.T, ev *Event) {
			if ev.ID != "evt_1743418800000_inv9x2" {
				t.Fatal(ev.ID)
			}
		}},
		// encoding/json matches names to fields case-insensitively: a Go
		// upstream would read the last of these as its eventId.
		{name: "EVENTID next to eventId", body: envelope("EVENTID", `"other"`), kind: EnvelopeInvalid, status: 400},
		{name: "eventid next to eventId", body: envelope("eventid", `"evt_1743418800000_inv9x2"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp with a long s", body: envelope("time\u017ftamp", `"2020-01-01T00:00:00Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "case variants in the payload", body: envelope("payload", `{"items":[{"Sku":1,"sKU":2}]}`), kind: EnvelopeInvalid, status: 400},
		{name: "unknown members allowed", body: envelope("version", `2`, "meta", `{"a":[1,{"b":null}]}`), kind: ok},
		{name: "invalid UTF-8 in key", body: envelope("x\xff", `1`), kind: EnvelopeInvalid, status: 400},
		{name: "invalid UTF-8 in value", body: envelope("payload", "\"\xc3\x28\""), kind: EnvelopeInvalid, status: 400},
		{name: "overlong UTF-8", body: envelope("payload", "\"\xc0\xaf\""), kind: EnvelopeInvalid, status: 400},
		{name: "UTF-8 encoded surrogate", body: envelope("payload", "\"\xed\xa0\x80\""), kind: EnvelopeInvalid, status: 400},
		{name: "truncated UTF-8", body: envelope("payload", "\"\xe0\xb8\""), kind: EnvelopeInvalid, status: 400},
		{name: "valid UTF-8 ok", body: envelope("payload", `"ใบแจ้งหนี้ €5 😀"`), kind: ok},
		{name: "raw control character", body: envelope("payload", "\"a\x01b\""), kind: EnvelopeInvalid, status: 400},
		{name: "raw tab in string", body: envelope("payload", "\"a\tb\""), kind: EnvelopeInvalid, status: 400},
		{name: "bad escape \\x", body: envelope("payload", `"\x41"`), kind: EnvelopeInvalid, status: 400},
		{name: "bad escape \\U", body: envelope("payload", `"\U0041"`), kind: EnvelopeInvalid, status: 400},
		{name: "short \\u", body: envelope("payload", `"\u12"`), kind: EnvelopeInvalid, status: 400},
		{name: "non-hex \\u", body: envelope("payload", `"\u12g4"`), kind: EnvelopeInvalid, status: 400},
		{name: "lone high surrogate", body: envelope("payload", `"\ud800"`), kind: EnvelopeInvalid, status: 400},
		{name: "lone low surrogate", body: envelope("payload", `"\udc00"`), kind: EnvelopeInvalid, status: 400},
		{name: "high surrogate + BMP", body: envelope("payload", `"\ud800\u0041"`), kind: EnvelopeInvalid, status: 400},
		{name: "reversed surrogates", body: envelope("payload", `"\udc00\ud800"`), kind: EnvelopeInvalid, status: 400},
		{name: "lone surrogate in key", body: envelope(`\ud800`, `1`), kind: EnvelopeInvalid, status: 400},
		{name: "surrogate pair ok", body: envelope("payload", `"\ud83d\ude00 \u00e9 \"\\\/\b\f\n\r\t"`), kind: ok},
		{name: "depth 64 ok", body: envelope("payload", nest(63)), kind: ok},
		{name: "depth 65", body: envelope("payload", nest(64)), kind: EnvelopeInvalid, status: 400},
		{name: "depth 10000", body: envelope("payload", nest(10000)), kind: EnvelopeInvalid, status: 400},
		{name: "bad number", body: envelope("payload", `01`), kind: EnvelopeInvalid, status: 400},
		{name: "bad literal", body: envelope("payload", `nul`), kind: EnvelopeInvalid, status: 400},
		{name: "NaN", body: envelope("payload", `NaN`), kind: EnvelopeInvalid, status: 400},
		{name: "single quotes", body: envelope("payload", `'a'`), kind: EnvelopeInvalid, status: 400},
		{name: "payload absent", body: envelope("payload", "-"), kind: ok, check: func(t *testing.T, ev *Event) {
			if ev.Payload != nil {
				t.Fatalf("payload = %q", ev.Payload)
			}
		}},
		{name: "payload null", body: envelope("payload", "null"), kind: ok, check: func(t *testing.T, ev *Event) {
			if string(ev.Payload) != "null" {
				t.Fatalf("payload = %q", ev.Payload)
			}
		}},
		{name: "payload with spaces kept raw", body: `{"payload" : [ 1 , 2 ] ,` + envelope("payload", "-")[1:], kind: ok, check: func(t *testing.T, ev *Event) {
			if string(ev.Payload) != "[ 1 , 2 ]" {
				t.Fatalf("payload = %q", ev.Payload)
			}
		}},
		{name: "huge number kept raw", body: envelope("payload", `123456789012345678901234567890`), kind: ok, check: func(t *testing.T, ev *Event) {
			if string(ev.Payload) != "123456789012345678901234567890" {
				t.Fatalf("payload = %q", ev.Payload)
			}
		}},

		// Envelope: eventId.
		{name: "eventId missing", body: envelope("eventId", "-"), kind: EnvelopeInvalid, status: 400},
		{name: "eventId empty", body: envelope("eventId", `""`), kind: EnvelopeInvalid, status: 400},
		{name: "eventId 128 chars ok", body: envelope("eventId", long(128)), kind: ok},
		{name: "eventId 129 chars", body: envelope("eventId", long(129)), kind: EnvelopeInvalid, status: 400},
		{name: "eventId 128 escaped chars ok", body: envelope("eventId", `"`+strings.Repeat(`\u0061`, 128)+`"`), kind: ok},
		{name: "eventId 129 escaped chars", body: envelope("eventId", `"`+strings.Repeat(`\u0061`, 129)+`"`), kind: EnvelopeInvalid, status: 400},
		{name: "eventId space", body: envelope("eventId", `"evt 1"`), kind: EnvelopeInvalid, status: 400},
		{name: "eventId slash", body: envelope("eventId", `"evt/1"`), kind: EnvelopeInvalid, status: 400},
		{name: "eventId non-ASCII", body: envelope("eventId", `"évt"`), kind: EnvelopeInvalid, status: 400},
		{name: "eventId escaped NUL", body: envelope("eventId", `"evt\u0000"`), kind: EnvelopeInvalid, status: 400},
		{name: "eventId number", body: envelope("eventId", `123`), kind: EnvelopeInvalid, status: 400},
		{name: "eventId null", body: envelope("eventId", `null`), kind: EnvelopeInvalid, status: 400},
		{name: "eventId array", body: envelope("eventId", `["evt_1"]`), kind: EnvelopeInvalid, status: 400},
		{name: "eventId all charset ok", body: envelope("eventId", `"AZaz09._:-"`), kind: ok},
		{name: "eventId escape unescaped", body: envelope("eventId", `"evt\u005f1"`), kind: ok, check: func(t *testing.T, ev *Event) {
			if ev.ID != "evt_1" {
				t.Fatalf("ID = %q", ev.ID)
			}
		}},

		// Envelope: eventType.
		{name: "eventType missing", body: envelope("eventType", "-"), kind: EnvelopeInvalid, status: 400},
		{name: "eventType empty", body: envelope("eventType", `""`), hdr: withHeader(EventHeader, ""), kind: EnvelopeInvalid, status: 400},
		{name: "eventType double dot", body: envelope("eventType", `"document..processed"`), hdr: withHeader(EventHeader, "document..processed"), kind: EnvelopeInvalid, status: 400},
		{name: "eventType leading dot", body: envelope("eventType", `".document"`), hdr: withHeader(EventHeader, ".document"), kind: EnvelopeInvalid, status: 400},
		{name: "eventType trailing dot", body: envelope("eventType", `"document."`), hdr: withHeader(EventHeader, "document."), kind: EnvelopeInvalid, status: 400},
		{name: "eventType space", body: envelope("eventType", `"document processed"`), hdr: withHeader(EventHeader, "document processed"), kind: EnvelopeInvalid, status: 400},
		{name: "eventType star", body: envelope("eventType", `"document.*"`), hdr: withHeader(EventHeader, "document.*"), kind: EnvelopeInvalid, status: 400},
		{name: "eventType 129 bytes", body: envelope("eventType", long(129)), hdr: withHeader(EventHeader, strings.Repeat("a", 129)), kind: EnvelopeInvalid, status: 400},
		{name: "eventType 128 bytes ok", body: envelope("eventType", long(128)), hdr: withHeader(EventHeader, strings.Repeat("a", 128)), kind: ok},
		{name: "eventType number", body: envelope("eventType", `1`), kind: EnvelopeInvalid, status: 400},
		{name: "eventType single token ok", body: envelope("eventType", `"ping"`), hdr: withHeader(EventHeader, "ping"), kind: ok},
		{name: "eventType with - and _ ok", body: envelope("eventType", `"batch_job.completed-v2"`), hdr: withHeader(EventHeader, "batch_job.completed-v2"), kind: ok},

		// Envelope: timestamp.
		{name: "timestamp missing", body: envelope("timestamp", "-"), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp no zone", body: envelope("timestamp", `"2026-03-31T12:00:00.000"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp lowercase t", body: envelope("timestamp", `"2026-03-31t12:00:00Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp lowercase z", body: envelope("timestamp", `"2026-03-31T12:00:00z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp space separator", body: envelope("timestamp", `"2026-03-31 12:00:00Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp garbage", body: envelope("timestamp", `"yesterday"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp empty", body: envelope("timestamp", `""`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp unix number", body: envelope("timestamp", `1743418800000`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp unix string", body: envelope("timestamp", `"1743418800000"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp comma fraction", body: envelope("timestamp", `"2026-03-31T12:00:00,000Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp one-digit hour", body: envelope("timestamp", `"2026-03-31T2:00:00Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp offset +24:00", body: envelope("timestamp", `"2026-03-31T12:00:00+24:00"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp offset minutes 60", body: envelope("timestamp", `"2026-03-31T12:00:00+01:60"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp offset without colon", body: envelope("timestamp", `"2026-03-31T12:00:00+0000"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp Feb 30", body: envelope("timestamp", `"2026-02-30T12:00:00Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp hour 24", body: envelope("timestamp", `"2026-03-31T24:00:00Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp leap second", body: envelope("timestamp", `"2026-03-31T23:59:60Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp 10 fraction digits", body: envelope("timestamp", `"2026-03-31T12:00:00.0000000000Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp empty fraction", body: envelope("timestamp", `"2026-03-31T12:00:00.Z"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp trailing data", body: envelope("timestamp", `"2026-03-31T12:00:00ZZ"`), kind: EnvelopeInvalid, status: 400},
		{name: "timestamp no fraction ok", body: envelope("timestamp", `"2026-03-31T12:00:00Z"`), kind: ok},
		{name: "timestamp 9 fraction digits ok", body: envelope("timestamp", `"2026-03-31T12:00:00.123456789Z"`), kind: ok},
		{name: "timestamp offset ok", body: envelope("timestamp", `"2026-03-31T17:30:00+05:30"`), kind: ok, check: func(t *testing.T, ev *Event) {
			if !ev.Timestamp.Equal(baseTime) {
				t.Fatal(ev.Timestamp)
			}
		}},
		{name: "timestamp escaped ok", body: envelope("timestamp", `"2026-03-31\u005412:00:00Z"`), kind: ok},

		// Envelope: organizationId, projectId.
		{name: "organizationId number", body: envelope("organizationId", `123`), kind: EnvelopeInvalid, status: 400},
		{name: "organizationId null", body: envelope("organizationId", `null`), kind: EnvelopeInvalid, status: 400},
		{name: "organizationId object", body: envelope("organizationId", `{"id":"org"}`), kind: EnvelopeInvalid, status: 400},
		{name: "organizationId 257 bytes", body: envelope("organizationId", long(257)), kind: EnvelopeInvalid, status: 400},
		{name: "organizationId 256 bytes ok", body: envelope("organizationId", long(256)), kind: ok},
		{name: "projectId bool", body: envelope("projectId", `true`), kind: EnvelopeInvalid, status: 400},
		{name: "projectId 257 bytes", body: envelope("projectId", long(257)), kind: EnvelopeInvalid, status: 400},
		{name: "tenant fields absent ok", body: envelope("organizationId", "-", "projectId", "-"), kind: ok, check: func(t *testing.T, ev *Event) {
			if ev.OrganizationID != "" || ev.ProjectID != "" {
				t.Fatalf("%+v", ev)
			}
		}},

		// X-Webhook-Event.
		{name: "event header missing", body: env, hdr: withHeader(EventHeader), kind: EventHeaderMissing, status: 400},
		{name: "event header repeated", body: env, hdr: withHeader(EventHeader, "document.processed", "document.processed"), kind: EventHeaderRepeated, status: 400},
		{name: "event header mismatch", body: env, hdr: withHeader(EventHeader, "batch.completed"), kind: EventHeaderMismatch, status: 400},
		{name: "event header case differs", body: env, hdr: withHeader(EventHeader, "Document.Processed"), kind: EventHeaderMismatch, status: 400},
		{name: "event header empty", body: env, hdr: withHeader(EventHeader, ""), kind: EventHeaderMismatch, status: 400},
		{name: "event header checked after envelope", body: envelope("eventId", `""`), hdr: withHeader(EventHeader), kind: EnvelopeInvalid, status: 400},

		// Freshness.
		{name: "stale", body: env, now: baseTime.Add(5*time.Minute + time.Millisecond), kind: TimestampStale, status: 401},
		{name: "stale boundary ok", body: env, now: baseTime.Add(5 * time.Minute), kind: ok},
		{name: "future", body: env, now: baseTime.Add(-5*time.Minute - time.Millisecond), kind: TimestampFuture, status: 401},
		{name: "future boundary ok", body: env, now: baseTime.Add(-5 * time.Minute), kind: ok},
		{name: "year 9999 future", body: envelope("timestamp", `"9999-12-31T23:59:59.999999999Z"`), kind: TimestampFuture, status: 401},
		{name: "year 0 stale", body: envelope("timestamp", `"0000-01-01T00:00:00Z"`), kind: TimestampStale, status: 401},
		{name: "tolerance 0 disables (stale)", body: env, now: baseTime.Add(10 * 365 * 24 * time.Hour), cfg: func(c *Config) { c.Tolerance = 0 }, kind: ok},
		{name: "tolerance 0 disables (future)", body: envelope("timestamp", `"9999-12-31T23:59:59Z"`), cfg: func(c *Config) { c.Tolerance = 0 }, kind: ok},
		{name: "freshness checked after event header", body: env, hdr: withHeader(EventHeader), now: baseTime.Add(time.Hour), kind: EventHeaderMissing, status: 400},

		// Insecure mode.
		{name: "insecure: no signature", body: env, hdr: withHeader(SignatureHeader), cfg: insecure, kind: ok, check: func(t *testing.T, ev *Event) {
			if ev.SecretIndex != -1 {
				t.Fatalf("SecretIndex = %d", ev.SecretIndex)
			}
		}},
		{name: "insecure: garbage signature ignored", body: env, hdr: withHeader(SignatureHeader, "garbage"), cfg: insecure, kind: ok},
		{name: "insecure: repeated signature ignored", body: env, hdr: withHeader(SignatureHeader, "a", "b"), cfg: insecure, kind: ok},
		{name: "insecure: envelope still checked", body: envelope("eventId", `""`), hdr: withHeader(SignatureHeader), cfg: insecure, kind: EnvelopeInvalid, status: 400},
		{name: "insecure: event header still checked", body: env, hdr: withHeader(EventHeader, "x"), cfg: insecure, kind: EventHeaderMismatch, status: 400},
		{name: "insecure: freshness still checked", body: env, now: baseTime.Add(time.Hour), cfg: insecure, kind: TimestampStale, status: 401},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Secrets: [][]byte{testSecret}, Tolerance: 5 * time.Minute}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			now := tt.now
			if now.IsZero() {
				now = baseTime
			}
			cfg.Now = fixedClock(now)
			v := mustNew(t, cfg)
			hdr := tt.hdr
			if hdr == nil {
				hdr = signed(testSecret)
			}
			h := hdr(tt.body)
			body := []byte(tt.body)
			ev, err := v.Verify(h, body)
			wantKind(t, err, tt.kind, tt.status)
			if err != nil {
				if ev != nil {
					t.Fatal("event returned with an error")
				}
				msg := err.Error()
				for _, leak := range []string{string(testSecret), string(otherSecret), h.Get(SignatureHeader)} {
					if leak != "" && len(leak) > 8 && strings.Contains(msg, leak) {
						t.Fatalf("message %q leaks %q", msg, leak)
					}
				}
				return
			}
			if &ev.Body[0] != &body[0] {
				t.Fatal("Body is not the input slice")
			}
			if tt.check != nil {
				tt.check(t, ev)
			}
		})
	}
}

func insecure(c *Config) { c.Secrets = nil; c.InsecureNoSignature = true }

func TestErrorMessages(t *testing.T) {
	v := mustNew(t, Config{Secrets: [][]byte{testSecret}})
	tests := []struct{ body, want string }{
		{`{"eventId":"a","eventId":"b"}`, `envelope: duplicate key "eventId"`},
		{`{"EventID":"a","eventId":"b"}`, `envelope: duplicate key "eventId"`},
		{`{"zzmarker":1,"zzmarker":2}`, `envelope: invalid JSON: duplicate key at offset 14`},
		{envelope("eventId", `"a b"`), `envelope: eventId: invalid characters`},
		{envelope("eventId", `7`), `envelope: eventId: not a string`},
		{envelope("eventType", "-"), `envelope: eventType: missing`},
		{`[]`, `envelope: top-level value is not an object`},
		{`{} {}`, `envelope: invalid JSON: data after the JSON value at offset 3`},
		{envelope("payload", `"\ud800"`), `envelope: invalid JSON: unpaired UTF-16 surrogate escape in string at offset`},
	}
	for _, tt := range tests {
		_, err := v.Verify(headers(Sign(testSecret, []byte(tt.body)), "document.processed"), []byte(tt.body))
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("body %s: err = %v, want prefix %q", tt.body, err, tt.want)
		}
	}
	var e *Error
	_, err := v.Verify(headers("", ""), nil)
	if !errors.As(fmt.Errorf("wrapped: %w", err), &e) || e.Kind != SignatureMissing ||
		KindOf(fmt.Errorf("wrapped: %w", err)) != SignatureMissing {
		t.Fatal("errors.As / KindOf through wrapping")
	}
	if KindOf(nil) != KindUnknown || KindOf(errors.New("x")) != KindUnknown {
		t.Fatal("KindOf of foreign errors")
	}
}

func TestKind(t *testing.T) {
	status := map[Kind]int{
		SignatureMissing: 401, SignatureRepeated: 400, SignatureMalformed: 401, SignatureMismatch: 401,
		EnvelopeInvalid: 400, EventHeaderMissing: 400, EventHeaderRepeated: 400, EventHeaderMismatch: 400,
		TimestampStale: 401, TimestampFuture: 401, KindUnknown: 500,
	}
	seen := map[string]bool{}
	for k := KindUnknown; k <= TimestampFuture; k++ {
		if k.Status() != status[k] {
			t.Errorf("%v: status %d", k, k.Status())
		}
		if seen[k.String()] || k.String() == "" {
			t.Errorf("%d: bad name %q", k, k.String())
		}
		seen[k.String()] = true
	}
	if Kind(200).String() != "unknown" {
		t.Error("out-of-range kind name")
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" = no error
	}{
		{"one secret", Config{Secrets: [][]byte{testSecret}}, ""},
		{"16-byte secret", Config{Secrets: [][]byte{[]byte("0123456789abcdef")}}, ""},
		{"no secrets", Config{}, "no secret"},
		{"empty list", Config{Secrets: [][]byte{}}, "no secret"},
		{"empty secret", Config{Secrets: [][]byte{testSecret, {}}}, "secret 1 is empty"},
		{"nil secret", Config{Secrets: [][]byte{nil}}, "secret 0 is empty"},
		{"15-byte secret", Config{Secrets: [][]byte{[]byte("0123456789abcde")}}, "secret 0 is shorter than 16 bytes"},
		{"negative tolerance", Config{Secrets: [][]byte{testSecret}, Tolerance: -time.Second}, "negative tolerance"},
		{"insecure", Config{InsecureNoSignature: true}, ""},
		{"insecure with secrets", Config{InsecureNoSignature: true, Secrets: [][]byte{testSecret}}, "InsecureNoSignature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := New(tt.cfg)
			if tt.want == "" {
				if err != nil || v == nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			var e *Error
			if errors.As(err, &e) {
				t.Fatal("config error must not be *Error")
			}
			for _, s := range tt.cfg.Secrets {
				if len(s) > 0 && strings.Contains(err.Error(), string(s)) {
					t.Fatal("config error leaks a secret")
				}
			}
		})
	}
}

func TestSecretsCopied(t *testing.T) {
	secret := bytes.Clone(testSecret)
	v := mustNew(t, Config{Secrets: [][]byte{secret}})
	secret[0] ^= 1
	body := []byte(envelope())
	if _, err := v.Verify(headers(Sign(testSecret, body), "document.processed"), body); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	v := mustNew(t, Config{Secrets: [][]byte{otherSecret, testSecret}, Tolerance: time.Minute, Now: fixedClock(baseTime)})
	good := []byte(envelope())
	bad := []byte(envelope("eventId", `"evt_2"`))
	h := headers(Sign(testSecret, good), "document.processed")
	done := make(chan error)
	for g := range 8 {
		go func() {
			for i := range 200 {
				body := good
				if (g+i)%3 == 0 {
					body = bad
				}
				ev, err := v.Verify(h, body)
				if (&body[0] == &good[0]) != (err == nil) || (err == nil && ev.SecretIndex != 1) {
					done <- fmt.Errorf("goroutine %d iteration %d: %v", g, i, err)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	body := benchBody(4 << 10)
	v := mustNew(t, Config{Secrets: [][]byte{testSecret}, Tolerance: time.Minute, Now: fixedClock(baseTime)})
	h := headers(Sign(testSecret, body), "document.processed")
	if _, err := v.Verify(h, body); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := v.Verify(h, body); err != nil {
			t.Fatal(err)
		}
	})
	// The Event and the one string backing its fields.
	if allocs > 2 {
		t.Fatalf("Verify allocates %v times per call", allocs)
	}
	if a := testing.AllocsPerRun(100, func() { _ = CheckJSON(body) }); a != 0 {
		t.Fatalf("CheckJSON allocates %v times per call", a)
	}
}
