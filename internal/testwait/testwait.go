// Package testwait waits in tests for a condition with a deadline: it polls
// the condition every few milliseconds and fails the test with what it
// waited for when the deadline passes. The poll interval is the only pause;
// it never stands in for synchronisation. Only tests import this package.
package testwait

import (
	"testing"
	"time"
)

// PollInterval is how often Until and Eventually evaluate their condition.
const PollInterval = 5 * time.Millisecond

// Until polls cond until it holds; when it still does not hold after within,
// the test stops with "timed out after <within> waiting for <what>".
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(within, cond) {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

// UntilStated is Until for a condition that also says what it saw; the
// failure ends with what it said last: "… (last: <state>)".
func UntilStated(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	if !poll(within, func() bool {
		ok, state := cond()
		last = state
		return ok
	}) {
		t.Fatalf("timed out after %s waiting for %s (last: %s)", within, what, last)
	}
}

// Eventually is Until that reports a timeout as a test error and returns
// false instead of stopping the test, so that the checks that follow still
// say what went wrong.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) bool {
	t.Helper()
	if !poll(within, cond) {
		t.Errorf("timed out after %s waiting for %s", within, what)
		return false
	}
	return true
}

// poll reports whether cond held before within passed; cond is evaluated
// once more at the deadline.
func poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}
