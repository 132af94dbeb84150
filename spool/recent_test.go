package spool

import (
	"context"
	"testing"
	"time"
)

// TestRecentMessagesBound: the cache takes messages while they fit, keeps
// the oldest when full, gives each one out once, and lets one that waited
// past recentFor make room.
func TestRecentMessagesBound(t *testing.T) {
	msg, size := &message{Body: make([]byte, 100)}, 100
	t0 := time.Now()
	tests := []struct {
		name string
		run  func(r *recentMessages)
		kept []uint64 // ids take finds, in this order
		gone []uint64
	}{
		{"fits", func(r *recentMessages) {
			r.put(1, msg, size, t0)
			r.put(2, msg, size, t0)
		}, []uint64{1, 2}, nil},
		{"full keeps the oldest", func(r *recentMessages) {
			for id := uint64(1); id <= 4; id++ {
				r.put(id, msg, size, t0)
			}
		}, []uint64{1, 2, 3}, []uint64{4}},
		{"taken makes room", func(r *recentMessages) {
			for id := uint64(1); id <= 3; id++ {
				r.put(id, msg, size, t0)
			}
			r.take(2)
			r.put(4, msg, size, t0)
		}, []uint64{1, 3, 4}, []uint64{2}},
		{"old makes room", func(r *recentMessages) {
			for id := uint64(1); id <= 3; id++ {
				r.put(id, msg, size, t0)
			}
			r.put(4, msg, size, t0.Add(recentFor))
		}, []uint64{4}, []uint64{1, 2, 3}},
		{"too large", func(r *recentMessages) {
			r.put(1, msg, 10*size, t0)
		}, nil, []uint64{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecentMessages(3 * recentCost(size))
			tt.run(r)
			for _, id := range tt.gone {
				if r.take(id) != nil {
					t.Errorf("take(%d) found a message that should be gone", id)
				}
			}
			for _, id := range tt.kept {
				if r.take(id) == nil {
					t.Errorf("take(%d) = nil, want the message", id)
				}
				if r.take(id) != nil {
					t.Errorf("take(%d) twice found it twice", id)
				}
			}
			if r.bytes != 0 || len(r.byID) != 0 {
				t.Errorf("after taking everything: %d bytes, %d messages kept", r.bytes, len(r.byID))
			}
		})
	}
}

// TestRecentMessagesOrderIsBounded: ids taken out of order do not pile up
// in the cache's order.
func TestRecentMessagesOrderIsBounded(t *testing.T) {
	r := newRecentMessages(1 << 20)
	now := time.Now()
	r.put(0, &message{}, 5, now) // never taken: it holds the front
	for id := uint64(1); id < 10_000; id++ {
		r.put(id, &message{}, 1, now)
		r.take(id)
	}
	if n := len(r.order); n > 2*len(r.byID)+64 {
		t.Fatalf("order holds %d ids for %d messages", n, len(r.byID))
	}
}

// TestAQueuedItemIsDeliveredFromMemory: an item that waited for the
// dispatcher is delivered with the message it was enqueued with, taken
// from memory, and the message is then let go.
func TestAQueuedItemIsDeliveredFromMemory(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	res := mustEnqueue(t, s, entry("r", "evt_1", `{"n":1}`))
	s.recent.mu.Lock()
	kept := s.recent.byID[res.ID]
	s.recent.mu.Unlock()
	if kept.msg == nil {
		t.Fatal("the queued item's message is not kept")
	}
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if a := rec.next(t, 10*time.Second); a.EventID != "evt_1" || a.Body != `{"n":1}` || a.Header.Get("X-Webhook-Event") != "test.event" {
		t.Fatalf("delivered %+v", a)
	}
	s.recent.mu.Lock()
	defer s.recent.mu.Unlock()
	if len(s.recent.byID) != 0 {
		t.Fatalf("%d messages still kept after their delivery", len(s.recent.byID))
	}
}

// TestRecentMessagesCountTheBodysBuffer: a kept message counts the buffer
// its body was read into, not only the body's length, so that small bodies
// in large buffers cannot hold more memory than the bound.
func TestRecentMessagesCountTheBodysBuffer(t *testing.T) {
	s := openTest(t, Options{})
	if err := s.Pause(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	e := entry("r", "evt_1", "")
	e.Body = append(make([]byte, 0, 64<<10), `{"n":1}`...)
	res := mustEnqueue(t, s, e)
	s.recent.mu.Lock()
	defer s.recent.mu.Unlock()
	if s.recent.byID[res.ID].msg == nil {
		t.Fatal("the queued item's message is not kept")
	}
	if s.recent.bytes < 64<<10 {
		t.Fatalf("a 7-byte body in a 64 KiB buffer counts %d bytes", s.recent.bytes)
	}
}
