package spool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, time.Second
	p := Policy{BackoffMin: lo, BackoffMax: hi}
	tests := []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		min, max   time.Duration // every delay within [min, max]
		above      time.Duration // and some delay above this (growth), unless 0
	}{
		{"Retry-After below the minimum", 1, 10 * time.Millisecond, lo, lo, 0},
		{"Retry-After below the minimum, later attempt", 6, time.Nanosecond, lo, lo, 0},
		{"Retry-After within the bounds", 2, 300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 0},
		{"Retry-After above the maximum", 3, time.Hour, hi, hi, 0},
		{"first retry", 1, 0, lo, lo, 0},
		{"second retry", 2, 0, lo, 2 * lo, lo},
		{"third retry", 3, 0, lo, 4 * lo, 2 * lo},
		{"fourth retry", 4, 0, lo, 8 * lo, 4 * lo},
		{"fifth retry, capped", 5, 0, lo, hi, 8 * lo},
		{"far retry, capped", 60, 0, lo, hi, 8 * lo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var highest time.Duration
			for range 2000 {
				d := p.Delay(tt.attempt, tt.retryAfter)
				if d < tt.min || d > tt.max {
					t.Fatalf("Delay(%d, %v) = %v, want within [%v, %v]", tt.attempt, tt.retryAfter, d, tt.min, tt.max)
				}
				highest = max(highest, d)
			}
			if tt.above > 0 && highest <= tt.above {
				t.Fatalf("Delay(%d) never exceeded %v in 2000 draws: no growth", tt.attempt, tt.above)
			}
		})
	}
	// A zero policy uses the defaults.
	if d := (Policy{}).Delay(1, time.Millisecond); d != DefaultBackoffMin {
		t.Errorf("default Delay with a short Retry-After = %v, want %v", d, DefaultBackoffMin)
	}
	if d := (Policy{}).Delay(1, 24*time.Hour); d != DefaultBackoffMax {
		t.Errorf("default Delay with a long Retry-After = %v, want %v", d, DefaultBackoffMax)
	}
}

func TestDefaultRetryable(t *testing.T) {
	retried := []int{
		http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusNotImplemented, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout, 599,
	}
	final := []int{
		http.StatusMultipleChoices, http.StatusMovedPermanently, http.StatusFound, http.StatusNotModified,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect,
		http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound,
		http.StatusMethodNotAllowed, http.StatusConflict, http.StatusGone, http.StatusRequestEntityTooLarge,
		http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, 499,
	}
	type row struct {
		o    Outcome
		want bool
	}
	tests := []row{
		{Outcome{Err: errors.New("connection refused")}, true},
		{Outcome{Err: context.DeadlineExceeded}, true},
	}
	for _, c := range retried {
		tests = append(tests, row{Outcome{StatusCode: c}, true})
	}
	for _, c := range final {
		tests = append(tests, row{Outcome{StatusCode: c}, false})
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %v", tt.o.StatusCode, tt.o.Err), func(t *testing.T) {
			if got := DefaultRetryable(tt.o); got != tt.want {
				t.Fatalf("DefaultRetryable(%+v) = %v, want %v", tt.o, got, tt.want)
			}
		})
	}
}
