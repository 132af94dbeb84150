package spool

import (
	"sync"
	"time"
)

// recentBytes bounds the messages the spool keeps in memory for their first
// delivery through the dispatcher, and recentFor how long one is kept.
const (
	recentBytes = 4 << 20
	recentFor   = 5 * time.Second
)

// recentMessages keeps the messages of items just committed, so that
// their first delivery takes them from memory instead of reading them back:
// under load most items wait a moment for a slot, and reading each one from
// the database again was an eighth of the spool's CPU. It is bounded in bytes;
// an item whose message is not kept is read as before.
//
// When it is full it keeps what it has and takes no more: the dispatcher
// delivers the oldest items first, so under a growing backlog the messages
// it needs next are the ones kept longest. A message not taken within
// recentFor (its route paused, say) makes room for new ones.
//
// A message never changes once stored and an item id is never reused, so a
// message found here is the item's.
type recentMessages struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	byID  map[uint64]keptMessage
	order []recentEntry // in the order added, some of them taken already
}

// keptMessage is a message and the length of its encoding.
type keptMessage struct {
	msg  *message
	size int
}

type recentEntry struct {
	id uint64
	at time.Time
}

// recentCost is what a kept message holding size bytes counts against the
// bound: its bytes and the map entry's.
func recentCost(size int) int64 { return int64(size) + 48 }

func newRecentMessages(max int64) *recentMessages {
	return &recentMessages{max: max, byID: map[uint64]keptMessage{}}
}

// put keeps item id's message, which holds size bytes and must not change
// after, if there is room.
func (r *recentMessages) put(id uint64, msg *message, size int, now time.Time) {
	cost := recentCost(size)
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.order) > 0 {
		e := r.order[0]
		if _, kept := r.byID[e.id]; kept && now.Sub(e.at) < recentFor {
			break
		}
		r.drop(e.id)
		r.order = r.order[1:]
	}
	if r.bytes+cost > r.max {
		return
	}
	r.byID[id] = keptMessage{msg, size}
	r.order = append(r.order, recentEntry{id, now})
	r.bytes += cost
	// Ids taken out of order stay in order until they reach its front:
	// rebuild it when they are most of it.
	if len(r.order) > 2*len(r.byID)+64 {
		kept := make([]recentEntry, 0, len(r.byID)*2)
		for _, e := range r.order {
			if _, ok := r.byID[e.id]; ok {
				kept = append(kept, e)
			}
		}
		r.order = kept
	}
}

// take returns item id's message and forgets it, or nil if it is not kept.
func (r *recentMessages) take(id uint64) *message {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.byID[id]
	if ok {
		r.drop(id)
	}
	return k.msg
}

func (r *recentMessages) drop(id uint64) {
	if k, ok := r.byID[id]; ok {
		r.bytes -= recentCost(k.size)
		delete(r.byID, id)
	}
}
