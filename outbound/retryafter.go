package outbound

import (
	"net/http"
	"strconv"
	"time"
)

// MaxRetryAfter caps what an upstream can ask for; the retry policy then
// bounds it again by its backoff maximum.
const MaxRetryAfter = 7 * 24 * time.Hour

// ParseRetryAfter reads a Retry-After value, seconds or an HTTP date; 0 if
// absent, malformed or in the past, at most MaxRetryAfter.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(MaxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), MaxRetryAfter)
	}
	return 0
}
