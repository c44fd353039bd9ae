package detector

import (
	"context"
	"errors"
	"fmt"
)

// Fetch returns an agent's events on the stream whose sequences are above
// after, in sequence order (none when the stream holds nothing beyond it).
type Fetch func(ctx context.Context, agentID string, after uint64) ([]Event, error)

// Reconcile makes the stream the authority on an agent's state. The stream
// can hold events beyond the stored state that this Detector did not
// produce: a predecessor killed between publishing and committing left
// them, or another bridge published under the same IDs first (JetStream
// then drops this process's version as a duplicate, whatever it said). Left
// alone, the next events would follow on from a state consumers never saw.
//
// Reconcile fetches the agent's events above its stored sequence, folds them
// over the stored state with Apply, adopts the result as the agent's latest
// state (discarding pending changes, as Abandon does) and writes it to the
// store with the revision check. It reports whether the stream was ahead.
// Call it before the first observation of an agent in a process and after
// a commit conflict, with no change of the agent in flight.
func (d *Detector) Reconcile(ctx context.Context, agentID string, fetch Fetch) (bool, error) {
	a := d.agent(agentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	// Start from what the store holds now: another writer may have moved it.
	switch stored, err := d.opts.Store.Get(ctx, agentID); {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return false, fmt.Errorf("reconcile agent %s: %w", agentID, err)
	case stored.State.Sequence >= a.storedSeq:
		st := stored.State.Clone()
		a.stored, a.rev, a.storedSeq = &st, stored.Revision, st.Sequence
	}
	events, err := fetch(ctx, agentID, a.storedSeq)
	if err != nil {
		return false, fmt.Errorf("reconcile agent %s: read its events from the stream: %w", agentID, err)
	}
	next := a.stored
	for _, e := range events {
		if e.Sequence <= a.storedSeq {
			continue
		}
		s, err := Apply(next, e)
		if err != nil {
			return false, fmt.Errorf("reconcile agent %s: %w", agentID, err)
		}
		next = &s
	}
	if next == nil || next.Sequence == a.storedSeq {
		if a.state == nil || a.state.Sequence < a.storedSeq {
			a.state = a.stored
		}
		return false, nil
	}
	// The stream is ahead of the store: its events are what consumers saw.
	a.epoch++
	st := next.Clone()
	a.state = &st
	const attempts = 5
	for range attempts {
		rev, err := d.opts.Store.Put(ctx, st, a.rev)
		if err == nil {
			a.rev, a.storedSeq, a.stored = rev, st.Sequence, &st
			d.log.Info("agent's events on the stream went beyond its stored state; adopted them",
				"agent", agentID, "sequence", st.Sequence, "events", len(events))
			return true, nil
		}
		if !errors.Is(err, ErrConflict) {
			return true, fmt.Errorf("reconcile agent %s: store sequence %d: %w", agentID, st.Sequence, err)
		}
		stored, gerr := d.opts.Store.Get(ctx, agentID)
		switch {
		case errors.Is(gerr, ErrNotFound):
			a.rev = 0
			continue
		case gerr != nil:
			return true, fmt.Errorf("reconcile agent %s: re-read after %w: %w", agentID, err, gerr)
		}
		if stored.State.Sequence >= st.Sequence {
			// Another writer stored as far or further: take its state.
			s := stored.State.Clone()
			a.stored, a.rev, a.storedSeq, a.state = &s, stored.Revision, s.Sequence, &s
			return true, nil
		}
		a.rev = stored.Revision
	}
	return true, fmt.Errorf("reconcile agent %s: store sequence %d: %d attempts: %w", agentID, st.Sequence, attempts, ErrConflict)
}
