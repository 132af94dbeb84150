// Package testwait holds the tests' wait for a condition: the packages'
// tests synchronise on what they can observe, polled with a bound, never on
// sleeps of a guessed length.
package testwait

import (
	"testing"
	"time"
)

// Until polls cond until it holds, failing the test once timeout has
// passed; cond says what is still missing.
func Until(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not after %v: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Recv waits up to timeout for a value from ch and returns it, failing the
// test otherwise; missing says what did not come.
func Recv[T any](t testing.TB, ch <-chan T, timeout time.Duration, missing string) T {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("not after %v: %s", timeout, missing)
		var zero T
		return zero
	}
}
