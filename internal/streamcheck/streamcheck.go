// Package streamcheck holds the invariants of the bridge's event stream that
// the tests check on what they read back: every agent's events carry the
// sequences 1..n in stream order under unique IDs, and every change follows
// on from the agent's prior change of the same type. The checks take the
// tests' own event types through a function that says what the check needs
// of an event. Only tests import this package.
package streamcheck

import (
	"fmt"
	"slices"

	"github.com/ccaas/presence-bridge/internal/detector"
)

// Event is what the checks read of one event of the stream.
type Event struct {
	ID, Agent, Type string
	// Sequence is the agent's sequence number the event carries.
	Sequence uint64
	// Previous and Current are the data's previous and current, each
	// rendered the same way for every event (e.g. canonical JSON); only the
	// chained types' are read.
	Previous, Current string
}

// ChainedTypes are the event types whose data carries previous and current:
// each event's previous must be the current of the agent's prior event of
// the same type, and only the first may have previous null.
var ChainedTypes = []string{detector.TypePresenceChanged, detector.TypeSessionsChanged, detector.TypeChannelsChanged}

// Sequences checks that the events' IDs are unique and that every agent's
// events appear with sequences 1..n in order, and returns the events by
// agent, in stream order, with a sentence per violation.
func Sequences[E any](events []E, of func(E) Event) (map[string][]E, []string) {
	var problems []string
	ids := map[string]bool{}
	by := map[string][]E{}
	for _, e := range events {
		ev := of(e)
		if ids[ev.ID] {
			problems = append(problems, fmt.Sprintf("duplicate event %s (%s)", ev.ID, ev.Type))
		}
		ids[ev.ID] = true
		if want := uint64(len(by[ev.Agent]) + 1); ev.Sequence != want {
			problems = append(problems, fmt.Sprintf("agent %s: event %s (%s) has sequence %d where %d was due",
				ev.Agent, ev.ID, ev.Type, ev.Sequence, want))
		}
		by[ev.Agent] = append(by[ev.Agent], e)
	}
	return by, problems
}

// Chained checks that each event of ChainedTypes has as previous the current
// of its agent's prior event of the same type ("null" for the first): no
// event contradicts the stream. events are in stream order (all agents, or
// one). It returns a sentence per violation.
func Chained[E any](events []E, of func(E) Event) []string {
	var problems []string
	last := map[[2]string]string{} // agent, type → current
	for _, e := range events {
		ev := of(e)
		if !slices.Contains(ChainedTypes, ev.Type) {
			continue
		}
		key := [2]string{ev.Agent, ev.Type}
		want, seen := last[key]
		if !seen {
			want = "null"
		}
		if ev.Previous != want {
			problems = append(problems, fmt.Sprintf("agent %s: %s %s (sequence %d) has previous %s, but the stream's prior %s said current %s",
				ev.Agent, ev.Type, ev.ID, ev.Sequence, ev.Previous, ev.Type, want))
		}
		last[key] = ev.Current
	}
	return problems
}
