package spool

import "testing"

func TestReceiveSeconds(t *testing.T) {
	type step struct {
		add    bool
		ms     int64
		oldest int64 // after the step
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"empty after its only item", []step{{true, 5_500, 5_000}, {false, 5_500, 0}}},
		{"in order, drained from the front", []step{
			{true, 1_000, 1_000}, {true, 1_999, 1_000}, {true, 2_000, 1_000}, {true, 3_100, 1_000},
			{false, 1_000, 1_000}, {false, 1_999, 2_000}, {false, 2_000, 3_000}, {false, 3_100, 0},
		}},
		{"an older item arrives later (a replay)", []step{
			{true, 9_000, 9_000}, {true, 2_000, 2_000}, {false, 2_000, 9_000},
		}},
		{"a second that empties and fills again", []step{
			{true, 4_000, 4_000}, {true, 7_000, 4_000}, {false, 4_000, 7_000}, {true, 4_200, 4_000},
			{false, 7_000, 4_000}, {false, 4_200, 0},
		}},
		{"a removal of what was never added is ignored", []step{{false, 1_000, 0}, {true, 3_000, 3_000}, {false, 1_000, 3_000}}},
		{"before 1970", []step{{true, -1, -1_000}, {true, 500, -1_000}, {false, -1, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r receiveSeconds
			for i, st := range tt.steps {
				if st.add {
					r.add(st.ms)
				} else {
					r.remove(st.ms)
				}
				if got := r.oldestMs(); got != st.oldest {
					t.Fatalf("step %d (%+v): oldest %d, want %d", i, st, got, st.oldest)
				}
			}
			if len(r.order) > 2*len(r.count)+64 {
				t.Fatalf("%d seconds in the heap, %d counted", len(r.order), len(r.count))
			}
		})
	}
}

// TestReceiveSecondsMemoryFollowsSeconds: a backlog received within a few
// seconds costs a few entries, however many items it holds.
func TestReceiveSecondsMemoryFollowsSeconds(t *testing.T) {
	var r receiveSeconds
	for i := range int64(100_000) {
		r.add(1_700_000_000_000 + i/40) // 100k items over 2.5 s
	}
	if len(r.count) != 3 || len(r.order) != 3 {
		t.Fatalf("%d entries for 3 seconds", len(r.count))
	}
}

// TestReceiveSecondsForgetsDeliveredSeconds: what was received and
// delivered leaves nothing behind, even with no one asking for the oldest
// age, and even behind an item that stays pending.
func TestReceiveSecondsForgetsDeliveredSeconds(t *testing.T) {
	var r receiveSeconds
	r.add(0) // pending throughout
	for sec := range int64(100_000) {
		ms := 1_000 + sec*1000
		r.add(ms)
		r.remove(ms)
	}
	if len(r.count) != 1 || len(r.order) > 2+64 {
		t.Fatalf("%d seconds counted, %d in the heap after 100k delivered", len(r.count), len(r.order))
	}
	if got := r.oldestMs(); got != 0 {
		t.Fatalf("oldest %d, want 0", got)
	}
	r.remove(0)
	if len(r.count) != 0 || len(r.order) != 0 || r.oldestMs() != 0 {
		t.Fatalf("left %d counted, %d in the heap", len(r.count), len(r.order))
	}
}
