package spool

import (
	"net/http"
	"reflect"
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
	st := state{Flags: flagLeased, Route: 7, Attempt: 3, ReceivedMs: 5, Size: 1024, LastStatus: 503, LastError: "boom", DeadMs: 9, Reason: "max_age"}
	if got, err := decodeState(st.encode()); err != nil || got != st {
		t.Fatalf("state: %+v, %v", got, err)
	}
	a := Attempt{Number: 2, At: time.UnixMilli(1_795_000_000_123), Duration: 1500 * time.Microsecond, StatusCode: 429, Error: "x"}
	if got, err := decodeAttempt(2, a.encode()); err != nil || got != a {
		t.Fatalf("attempt: %+v, %v", got, err)
	}
}

// FuzzDecodeRecords feeds arbitrary bytes to the record decoders, as a
// damaged disk would: they must fail cleanly, never panic.
func FuzzDecodeRecords(f *testing.F) {
	f.Add((&message{Route: "r", EventID: "e", Header: http.Header{"A": {"b"}}, Body: []byte("{}")}).encode())
	f.Add((&state{Route: 1, Attempt: 2, LastError: "e", Reason: "r"}).encode())
	f.Add((&Attempt{Number: 1, StatusCode: 200}).encode())
	f.Add([]byte{recordVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeMessage(b)
		decodeState(b)
		decodeAttempt(1, b)
	})
}
