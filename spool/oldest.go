package spool

import "container/heap"

// receiveSeconds tracks the receive times of a route's pending items at the
// resolution of a second, for the oldest pending age. Its memory follows the
// number of distinct seconds in the backlog, not the number of items: a
// million events received over two minutes take 120 entries.
type receiveSeconds struct {
	// count holds how many pending items were received in each Unix
	// second. A second whose count fell to 0 stays until the heap drops
	// it, so that no second is in the heap twice.
	count map[int64]int64
	order secondHeap // the seconds in count, oldest first
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
	if _, ok := r.count[sec]; !ok {
		heap.Push(&r.order, sec)
	}
	r.count[sec]++
}

// remove uncounts an item received at ms.
func (r *receiveSeconds) remove(ms int64) {
	if sec := secondOf(ms); r.count[sec] > 0 {
		r.count[sec]--
	}
}

// oldestMs returns the start of the oldest second with a pending item, 0 if
// there is none.
func (r *receiveSeconds) oldestMs() int64 {
	for len(r.order) > 0 {
		sec := r.order[0]
		if r.count[sec] > 0 {
			return sec * 1000
		}
		heap.Pop(&r.order)
		delete(r.count, sec)
	}
	return 0
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
