package spool

import (
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRecordsRoundTrip(t *testing.T) {
	m := &message{Route: "r", EventID: "evt_1", ReceivedMs: 1_795_000_000_000,
		Header: http.Header{"Content-Type": {"application/json"}, "X-Webhook-Event": {"a.b"}}, Body: []byte(`{"x":1}`)}
	got, err := decodeMessage(m.encode())
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("message: %+v, %v", got, err)
	}
	for _, st := range []state{
		{Flags: flagLeased, Route: 7, Attempt: 3, ReceivedMs: 5, Size: 1024, LastStatus: 503, LastError: "boom", DeadMs: 9, Reason: "max_age"},
		{Flags: flagSegment | flagPointer, Route: 1, Size: 1024, Earlier: 2, Ptr: bodyPtr{seg: 3, off: 1 << 30, n: 1024}},
	} {
		if got, err := decodeState(st.encode()); err != nil || got != st {
			t.Fatalf("state %+v: %+v, %v", st, got, err)
		}
	}
	a := Attempt{Number: 2, At: time.UnixMilli(1_795_000_000_123), Duration: 1500 * time.Microsecond, StatusCode: 429, Error: "x"}
	if got, err := decodeAttempt(2, a.encode()); err != nil || got != a {
		t.Fatalf("attempt: %+v, %v", got, err)
	}
}

// FuzzDecodeRecords builds records from its arguments and checks that they
// decode to what was encoded, and feeds raw to the decoders, as a damaged
// disk would: they must fail cleanly, never panic.
func FuzzDecodeRecords(f *testing.F) {
	f.Add([]byte{recordVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"r", "evt_1", "X-Webhook-Event", "a.b", []byte(`{"x":1}`), int64(1_795_000_000_000), int64(1024), uint64(503), uint8(1), "boom")
	f.Add((&message{Route: "r", EventID: "e", Header: http.Header{"A": {"b"}}, Body: []byte("{}")}).encode(),
		"", "", "", "", []byte(nil), int64(-1), int64(-1<<63), uint64(1<<64-1), uint8(0xff), strings.Repeat("e", 300))
	f.Add((&state{Route: 1, Attempt: 2, LastError: "e", Reason: "r"}).encode(),
		"route/with/slashes", "évt", "k", "", []byte{0}, int64(1<<63-1), int64(0), uint64(0), uint8(0), "")
	f.Add((&Attempt{Number: 1, StatusCode: 200}).encode(),
		"r", "e", "", "v", []byte("body"), int64(0), int64(1500), uint64(200), uint8(7), "x")
	f.Fuzz(func(t *testing.T, raw []byte, route, eventID, hkey, hval string, body []byte, n1, n2 int64, n3 uint64, small uint8, text string) {
		decodeMessage(raw)
		decodeState(raw)
		decodeAttempt(1, raw)

		m := &message{Route: route, EventID: eventID, ReceivedMs: n1, Body: body}
		if hkey != "" {
			m.Header = http.Header{hkey: {hval, text}, "X-Second": {}}
		}
		got, err := decodeMessage(m.encode())
		if err != nil || got.Route != m.Route || got.EventID != m.EventID || got.ReceivedMs != m.ReceivedMs ||
			!reflect.DeepEqual(got.Header, m.Header) || !bytes.Equal(got.Body, m.Body) {
			t.Fatalf("message %+v decoded as %+v, %v", m, got, err)
		}

		// Errors are kept to maxErrorLen bytes.
		st := state{Flags: small, Route: uint32(n3), Attempt: int(n3), ReceivedMs: n1, Size: n2,
			LastStatus: int(n3 >> 8), LastError: text, DeadMs: n2 ^ n1, Reason: hval,
			ClockMs: n1 - n2, PausedMs: n2 >> 3, Earlier: int(small)}
		if st.Flags&flagPointer != 0 {
			st.Ptr = bodyPtr{seg: uint32(n3 >> 32), off: uint32(n1), n: uint32(n2)}
		}
		want := st
		want.LastError = truncate(text, maxErrorLen)
		if got, err := decodeState(st.encode()); err != nil || got != want {
			t.Fatalf("state %+v decoded as %+v, %v", st, got, err)
		}

		// Times are kept to the millisecond, durations to the microsecond.
		a := Attempt{Number: int(small), At: time.UnixMilli(n1), Duration: time.Duration(n2/1000) * time.Microsecond,
			StatusCode: int(n3), Error: text}
		wantA := a
		wantA.Error = truncate(text, maxErrorLen)
		if got, err := decodeAttempt(a.Number, a.encode()); err != nil || got != wantA {
			t.Fatalf("attempt %+v decoded as %+v, %v", a, got, err)
		}
	})
}
