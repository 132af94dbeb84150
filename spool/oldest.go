package spool

import "container/heap"

// receiveSeconds tracks the receive times of a route's pending items at the
// resolution of a second, for the oldest pending age. Its memory follows the
// number of distinct seconds among the pending items, not the number of
// items: a million events received over two minutes take 120 entries.
type receiveSeconds struct {
	count map[int64]int64 // pending items per receive second (Unix seconds); no zero counts
	// order holds every second in count, oldest first, and may hold
	// seconds that left count since (dropped when they reach the top, or
	// when they outnumber the live ones).
	order secondHeap
}

func secondOf(ms int64) int64 {
	s := ms / 1000
	if ms < 0 && ms%1000 != 0 {
		s--
	}
	return s
}

// add counts an item received at ms.
func (r *receiveSeconds) add(ms int64) {
	sec := secondOf(ms)
	if r.count == nil {
		r.count = map[int64]int64{}
	}
	if r.count[sec] == 0 {
		heap.Push(&r.order, sec)
	}
	r.count[sec]++
}

// remove uncounts an item received at ms.
func (r *receiveSeconds) remove(ms int64) {
	sec := secondOf(ms)
	switch n := r.count[sec]; {
	case n > 1:
		r.count[sec] = n - 1
	case n == 1:
		delete(r.count, sec)
		r.prune()
	}
}

// prune drops seconds no longer counted from the top of the heap, and
// rebuilds the heap when most of what it holds is such seconds.
func (r *receiveSeconds) prune() {
	for len(r.order) > 0 && r.count[r.order[0]] == 0 {
		heap.Pop(&r.order)
	}
	if len(r.order) > 2*len(r.count)+64 {
		r.order = r.order[:0]
		for sec := range r.count {
			r.order = append(r.order, sec)
		}
		heap.Init(&r.order)
	}
}

// oldestMs returns the start of the oldest second with a pending item, 0 if
// there is none.
func (r *receiveSeconds) oldestMs() int64 {
	if len(r.order) == 0 {
		return 0
	}
	return r.order[0] * 1000
}

// secondHeap is a min-heap of seconds (container/heap).
type secondHeap []int64

func (h secondHeap) Len() int           { return len(h) }
func (h secondHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h secondHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *secondHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *secondHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
