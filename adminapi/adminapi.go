// Package adminapi names the requests and answers of Hookgate's admin API,
// served under /webhooks/ on Caddy's admin endpoint (README, "Operating"):
// the server (caddymodule's AdminAPI) encodes them and the `caddy webhook`
// commands decode them. It imports the standard library only.
package adminapi

import (
	"fmt"
	"time"
)

// Stats answers GET /webhooks/stats.
type Stats struct {
	Storage string       `json:"storage"` // the store's name, e.g. "badger:/var/lib/caddy/webhooks"
	Items   int64        `json:"items"`
	Bytes   int64        `json:"bytes"`
	Records RecordStats  `json:"records"`
	Routes  []RouteStats `json:"routes"`
}

// RouteStats is one route, or one subscriber of the publisher, in Stats.
type RouteStats struct {
	Route            string  `json:"route"`
	Subscriber       string  `json:"subscriber,omitempty"` // set for the route subscriber/<name>
	Queued           int64   `json:"queued"`
	InFlight         int64   `json:"in_flight"`
	Scheduled        int64   `json:"scheduled"`
	Dead             int64   `json:"dead"`
	Bytes            int64   `json:"bytes"`
	OldestPendingAge float64 `json:"oldest_pending_age_seconds"`
	Paused           bool    `json:"paused"`
	Disabled         string  `json:"disabled,omitempty"`    // the reason, when a 410 disabled it
	VerifyOnly       bool    `json:"verify_only,omitempty"` // no queue: dedupe records only
}

// RecordStats are the dedupe and attempt records in Stats, against their
// budget (max_record_bytes).
type RecordStats struct {
	Dedupe                RecordCount `json:"dedupe"`
	Attempts              RecordCount `json:"attempts"`
	MaxBytes              int64       `json:"max_bytes"`
	AttemptRecordsDropped int64       `json:"attempt_records_dropped"`
}

// RecordCount is one kind of record: how many and the bytes they count.
type RecordCount struct {
	Count int64 `json:"count"`
	Bytes int64 `json:"bytes"`
}

// DeadPage answers GET /webhooks/dead: one page of dead letters.
type DeadPage struct {
	Dead       []DeadLetter `json:"dead"`
	NextCursor string       `json:"next_cursor,omitempty"` // the cursor of the next page, if any
}

// DeadLetter is one dead letter.
type DeadLetter struct {
	ID         string    `json:"id"`
	Route      string    `json:"route"`
	EventID    string    `json:"event_id"`
	Reason     string    `json:"reason"`
	Attempts   int       `json:"attempts"`
	LastStatus int       `json:"last_status,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	Bytes      int64     `json:"bytes"`
	ReceivedAt time.Time `json:"received_at"`
	DeadAt     time.Time `json:"dead_at"`
}

// ReplayRequest is the body of POST /webhooks/dead/replay. It selects dead
// letters by IDs, or by a Route and/or Reason filter, or All.
type ReplayRequest struct {
	IDs    []string `json:"ids,omitempty"`
	Route  string   `json:"route,omitempty"`
	Reason string   `json:"reason,omitempty"`
	All    bool     `json:"all,omitempty"`
}

// Replayed answers POST /webhooks/dead/replay.
type Replayed struct {
	Replayed int `json:"replayed"`
}

// Deleted answers DELETE /webhooks/dead/{id}.
type Deleted struct {
	Deleted int `json:"deleted"`
}

// Event answers GET /webhooks/events/{eventId}: the event on each route
// that knows it.
type Event struct {
	EventID string       `json:"event_id"`
	Routes  []EventRoute `json:"routes"`
}

// EventRoute is one route's view of an event.
type EventRoute struct {
	Route    string      `json:"route"`
	State    EventState  `json:"state"`
	ID       string      `json:"id,omitempty"`   // the spool's item id, while it has one
	Dead     *DeadLetter `json:"dead,omitempty"` // set in StateDead
	Attempts []Attempt   `json:"attempts"`
}

// EventState is where an event stands on a route: the spool's ItemState.
type EventState string

// The event states.
const (
	StatePending   EventState = "pending"   // queued, in flight or scheduled for a retry
	StateDead      EventState = "dead"      // a dead letter
	StateDelivered EventState = "delivered" // delivered; remembered until its dedupe window ends
	StateDeleted   EventState = "deleted"   // a dead letter that was deleted or purged
)

// Attempt is one delivery attempt of an event.
type Attempt struct {
	Attempt    int       `json:"attempt"`
	At         time.Time `json:"at"`
	DurationMs float64   `json:"duration_ms"`
	Status     int       `json:"status,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// RoutePaused answers POST /webhooks/routes/{name}/pause and /resume.
type RoutePaused struct {
	Paused bool   `json:"paused"`
	Route  string `json:"route"`
}

// SubscriberEnabled answers POST /webhooks/subscribers/{name}/enable.
type SubscriberEnabled struct {
	Enabled    bool   `json:"enabled"`
	Replayed   int    `json:"replayed"` // the dead letters that waited for it, queued again
	Subscriber string `json:"subscriber"`
}

// Error is an error answer: its body is {"error": Message}, as Caddy's admin
// endpoint writes every API error, and Status is its HTTP status.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}
