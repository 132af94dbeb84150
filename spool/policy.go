package spool

import (
	"math/rand/v2"
	"net/http"
	"time"
)

// Default retry settings, used for zero fields of a Policy.
const (
	DefaultMaxAttempts = 10
	DefaultMaxAge      = 24 * time.Hour
	DefaultBackoffMin  = time.Second
	DefaultBackoffMax  = 10 * time.Minute
)

// Dead-letter reasons set by the spool.
const (
	ReasonMaxAttempts  = "max_attempts"  // the last allowed attempt failed
	ReasonMaxAge       = "max_age"       // the item is older than the route's max age
	ReasonRejected     = "rejected"      // an outcome the policy does not retry
	ReasonRouteRemoved = "route_removed" // the route left the configuration and did not come back in time
)

// DefaultRetryable retries transport errors, timeouts, 408, 425, 429 and 5xx.
func DefaultRetryable(o Outcome) bool {
	if o.Err != nil {
		return true
	}
	switch o.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	}
	return o.StatusCode >= 500
}

// Policy says how often and how long a route's items are retried.
type Policy struct {
	MaxAttempts int           // total attempts, first included
	MaxAge      time.Duration // age after which a failing item is dead; negative: no limit
	BackoffMin  time.Duration // the first retry's delay and the floor for Retry-After
	BackoffMax  time.Duration // the ceiling of every delay
	// Retryable decides which failed outcomes are retried; nil means DefaultRetryable.
	Retryable func(Outcome) bool
}

func (p Policy) withDefaults() Policy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.MaxAge == 0 {
		p.MaxAge = DefaultMaxAge
	}
	if p.BackoffMin <= 0 {
		p.BackoffMin = DefaultBackoffMin
	}
	if p.BackoffMax <= 0 {
		p.BackoffMax = max(DefaultBackoffMax, p.BackoffMin)
	}
	if p.BackoffMax < p.BackoffMin {
		p.BackoffMax = p.BackoffMin
	}
	if p.Retryable == nil {
		p.Retryable = DefaultRetryable
	}
	return p
}

// Delay returns the wait before the attempt after attempt number attempt
// (1-based) failed: exponential growth from BackoffMin with full jitter,
// capped at BackoffMax. A Retry-After is honoured within the same bounds.
func (p Policy) Delay(attempt int, retryAfter time.Duration) time.Duration {
	p = p.withDefaults()
	if retryAfter > 0 {
		return min(max(retryAfter, p.BackoffMin), p.BackoffMax)
	}
	ceiling := p.BackoffMin
	for i := 1; i < attempt && ceiling < p.BackoffMax; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, p.BackoffMax)
	if ceiling <= p.BackoffMin {
		return p.BackoffMin
	}
	return p.BackoffMin + rand.N(ceiling-p.BackoffMin+1)
}

// Verdict is what happens to an item after an attempt: it is done (Ack),
// dead (Reason), or retried after Delay.
type Verdict struct {
	Ack    bool
	Delay  time.Duration // retry after this long, when Reason is empty and Ack is false
	Reason string        // dead letter reason
}

// Decide applies the policy to the outcome of attempt number attempt
// (1-based) of an item received age ago. Every backend retries by it.
func (p Policy) Decide(o Outcome, attempt int, age time.Duration) Verdict {
	p = p.withDefaults()
	switch {
	case o.Succeeded():
		return Verdict{Ack: true}
	case o.DeadReason != "":
		return Verdict{Reason: o.DeadReason}
	case !p.Retryable(o):
		return Verdict{Reason: ReasonRejected}
	case attempt >= p.MaxAttempts:
		return Verdict{Reason: ReasonMaxAttempts}
	}
	delay := p.Delay(attempt, o.RetryAfter)
	if p.MaxAge > 0 && age+delay > p.MaxAge {
		return Verdict{Reason: ReasonMaxAge}
	}
	return Verdict{Delay: delay}
}
