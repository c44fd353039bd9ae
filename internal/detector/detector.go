package detector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/ccaas/presence-bridge/internal/source"
)

// StoredState is an agent's state as the StateStore holds it, with the
// store's revision of it (the fencing token of the next write).
type StoredState struct {
	State    AgentState
	Revision uint64
}

// StateStore keeps every agent's last published state durably. Put is a
// compare-and-set: it succeeds only when the agent's stored revision is
// expectedRevision (0: the agent has no state) and returns the new revision;
// otherwise it returns an error matching ErrConflict.
type StateStore interface {
	LoadAll(ctx context.Context) ([]StoredState, error)
	Get(ctx context.Context, agentID string) (StoredState, error)
	Put(ctx context.Context, state AgentState, expectedRevision uint64) (uint64, error)
}

// Errors of StateStore and Detector.Commit.
var (
	// ErrNotFound: the store has no state for the agent.
	ErrNotFound = errors.New("agent state not found")
	// ErrConflict: another writer changed the agent's state first.
	ErrConflict = errors.New("agent state revision conflict")
	// ErrDiscarded: the change was superseded (after a conflict or a failed
	// publish) and was not committed.
	ErrDiscarded = errors.New("change discarded")
)

// Options configures a Detector.
type Options struct {
	// Store keeps the state durably; required.
	Store StateStore
	// StaleAfter is how long an agent may go without a successful poll
	// before presence.stale; 0 disables stale detection.
	StaleAfter time.Duration
	// Logger receives one line per conflict or reset; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Change is the outcome of one observation, stale check or snapshot of one
// agent: the events to publish, in order, and the state to commit once they
// are acknowledged.
type Change struct {
	// AgentID is the agent.
	AgentID string
	// Events are the events to publish, consecutive sequences.
	Events []Event
	// State is the agent's state after the events.
	State AgentState

	base  *AgentState // state before the events
	epoch uint64
}

// Detector keeps the last state of every agent, turns observations into
// Changes, and commits them to its StateStore with a revision check. It is
// safe for concurrent use; changes of one agent must be committed (or
// abandoned) in the order the Detector returned them.
type Detector struct {
	opts    Options
	log     *slog.Logger
	started time.Time

	mu     sync.Mutex
	agents map[string]*agent
}

type agent struct {
	mu sync.Mutex
	// state is the latest state, including changes not yet committed; nil
	// before the agent's first event.
	state *AgentState
	// rev is the store revision of the last known stored state, storedSeq
	// its sequence.
	rev       uint64
	storedSeq uint64
	// stored is the last known stored state (committed or adopted).
	stored *AgentState
	// epoch increases when Abandon discards pending changes.
	epoch uint64
	// polled is true once this process has had an observation of the agent.
	polled      bool
	lastSuccess time.Time
	lastClass   source.ErrorClass
}

// New returns a Detector with no state; call Load to restore the store's.
func New(opts Options) (*Detector, error) {
	if opts.Store == nil {
		return nil, errors.New("detector: Options.Store is required")
	}
	if opts.StaleAfter < 0 {
		return nil, fmt.Errorf("detector: Options.StaleAfter is negative (%s)", opts.StaleAfter)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Detector{opts: opts, log: log, started: opts.Now(), agents: map[string]*agent{}}, nil
}

// Load restores every agent's state from the store, so that the first
// observation after a restart emits only what differs from it. It returns
// the number of agents loaded.
func (d *Detector) Load(ctx context.Context) (int, error) {
	all, err := d.opts.Store.LoadAll(ctx)
	if err != nil {
		return 0, fmt.Errorf("load agent states: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, st := range all {
		s := st.State.Clone()
		a := d.agentLocked(s.AgentID)
		a.mu.Lock()
		a.state, a.stored, a.rev, a.storedSeq = &s, &s, st.Revision, s.Sequence
		a.mu.Unlock()
	}
	return len(all), nil
}

// Reload re-reads the stored state of the given agents and adopts it where
// it is ahead of what the Detector holds. Call it before polling agents
// that another bridge may have advanced meanwhile (a shard whose lease this
// process just acquired), so that their next events continue the stored
// sequence instead of repeating it.
func (d *Detector) Reload(ctx context.Context, agentIDs []string) error {
	for _, id := range agentIDs {
		st, err := d.opts.Store.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reload agent %s: %w", id, err)
		}
		s := st.State.Clone()
		a := d.agent(id)
		a.mu.Lock()
		if a.state == nil || a.state.Sequence <= s.Sequence {
			a.state = &s
		}
		if st.Revision >= a.rev {
			a.stored, a.rev, a.storedSeq = &s, st.Revision, s.Sequence
		}
		a.mu.Unlock()
	}
	return nil
}

func (d *Detector) agent(id string) *agent {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.agentLocked(id)
}

func (d *Detector) agentLocked(id string) *agent {
	a := d.agents[id]
	if a == nil {
		a = &agent{lastSuccess: d.started}
		d.agents[id] = a
	}
	return a
}

// Observe takes one poll result. For a successful one it returns the Change
// describing what differs from the agent's latest state (with
// presence.resumed first when the agent was stale), or nil when nothing
// changed. A failed one is recorded for the stale check and returns nil.
func (d *Detector) Observe(o source.Observation) *Change {
	a := d.agent(o.AgentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.polled = true
	if o.Class != source.ClassOK || o.Snapshot == nil {
		a.lastClass = o.Class
		return nil
	}
	snap := *o.Snapshot
	if snap.AgentID == "" {
		snap.AgentID = o.AgentID
	}
	if snap.ObservedAt.IsZero() {
		snap.ObservedAt = o.At
	}
	a.lastSuccess, a.lastClass = snap.ObservedAt, ""
	next, events := Diff(a.state, snap)
	if len(events) == 0 {
		return nil
	}
	return a.advance(o.AgentID, next, events)
}

// advance makes next the agent's latest state; a.mu is held.
func (a *agent) advance(id string, next AgentState, events []Event) *Change {
	c := &Change{AgentID: id, Events: events, State: next.Clone(), base: a.state, epoch: a.epoch}
	a.state = &next
	return c
}

// StaleDue returns, sorted, the agents polled by this process, with a state,
// not yet stale, and without a successful poll for StaleAfter at now.
func (d *Detector) StaleDue(now time.Time) []string {
	if d.opts.StaleAfter <= 0 {
		return nil
	}
	var due []string
	for id, a := range d.snapshotAgents() {
		a.mu.Lock()
		if a.polled && a.state != nil && !a.state.Stale && now.Sub(a.lastSuccess) >= d.opts.StaleAfter {
			due = append(due, id)
		}
		a.mu.Unlock()
	}
	sort.Strings(due)
	return due
}

// MarkStale returns the presence.stale Change of an agent if it is still
// due at now (see StaleDue), or nil.
func (d *Detector) MarkStale(agentID string, now time.Time) *Change {
	if d.opts.StaleAfter <= 0 {
		return nil
	}
	a := d.agent(agentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.polled || a.state == nil || a.state.Stale || now.Sub(a.lastSuccess) < d.opts.StaleAfter {
		return nil
	}
	next, e := Stale(*a.state, now, a.lastSuccess, string(a.lastClass), d.opts.StaleAfter)
	return a.advance(agentID, next, []Event{e})
}

// SnapshotDue returns, sorted, the agents polled by this process that have
// a state: those a presence.snapshot round covers.
func (d *Detector) SnapshotDue() []string {
	var due []string
	for id, a := range d.snapshotAgents() {
		a.mu.Lock()
		if a.polled && a.state != nil {
			due = append(due, id)
		}
		a.mu.Unlock()
	}
	sort.Strings(due)
	return due
}

// Snapshot returns the presence.snapshot Change of an agent, or nil when the
// agent has no state.
func (d *Detector) Snapshot(agentID string, now time.Time) *Change {
	a := d.agent(agentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state == nil {
		return nil
	}
	next, e := Snapshot(*a.state, now)
	return a.advance(agentID, next, []Event{e})
}

// StaleAgents returns how many agents are currently stale.
func (d *Detector) StaleAgents() int {
	n := 0
	for _, a := range d.snapshotAgents() {
		a.mu.Lock()
		if a.state != nil && a.state.Stale {
			n++
		}
		a.mu.Unlock()
	}
	return n
}

// State returns an agent's latest state, including changes not yet
// committed, and whether it has one.
func (d *Detector) State(agentID string) (AgentState, bool) {
	a := d.agent(agentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state == nil {
		return AgentState{}, false
	}
	return a.state.Clone(), true
}

func (d *Detector) snapshotAgents() map[string]*agent {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[string]*agent, len(d.agents))
	for id, a := range d.agents {
		m[id] = a
	}
	return m
}

// Commit writes a published Change's state to the store, fenced by the
// revision of the agent's last known stored state, so that the stored
// sequence only ever grows. When another writer (a second bridge polling
// the same agent) changed the stored state first, Commit re-reads it: if the
// stored sequence is at or beyond the change's, the Detector adopts the
// stored state (unless its own pending changes go further), and returns
// ErrConflict (wrapped); if the stored sequence is behind, the change's
// events extend what the stream holds beyond it, and Commit writes again on
// top of the stored revision. A change whose sequence the stored state
// already covers, or one superseded by Abandon, is not written: Commit
// returns ErrDiscarded (wrapped). Other errors leave the state uncommitted;
// the agent's next commit catches up.
func (d *Detector) Commit(ctx context.Context, c *Change) error {
	a := d.agent(c.AgentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	if c.epoch != a.epoch || c.State.Sequence <= a.storedSeq {
		return fmt.Errorf("commit agent %s sequence %d (stored %d): %w", c.AgentID, c.State.Sequence, a.storedSeq, ErrDiscarded)
	}
	const attempts = 5
	var err error
	for range attempts {
		var rev uint64
		rev, err = d.opts.Store.Put(ctx, c.State, a.rev)
		if err == nil {
			st := c.State.Clone()
			a.rev, a.storedSeq, a.stored = rev, st.Sequence, &st
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return fmt.Errorf("commit agent %s sequence %d: %w", c.AgentID, c.State.Sequence, err)
		}
		stored, gerr := d.opts.Store.Get(ctx, c.AgentID)
		switch {
		case errors.Is(gerr, ErrNotFound):
			a.rev = 0 // deleted by someone: create it again
			continue
		case gerr != nil:
			return fmt.Errorf("commit agent %s sequence %d: re-read after %w: %w", c.AgentID, c.State.Sequence, err, gerr)
		}
		st := stored.State.Clone()
		a.rev, a.storedSeq, a.stored = stored.Revision, st.Sequence, &st
		if stored.State.Sequence < c.State.Sequence {
			continue // our events go further: write on top
		}
		if a.state == nil || a.state.Sequence <= stored.State.Sequence {
			s := stored.State.Clone()
			a.state = &s
		}
		d.log.Info("agent state advanced by another writer; adopted it and dropped the events it covers",
			"agent", c.AgentID, "sequence", c.State.Sequence, "stored_sequence", stored.State.Sequence)
		return fmt.Errorf("commit agent %s sequence %d: stored sequence %d: %w", c.AgentID, c.State.Sequence, stored.State.Sequence, err)
	}
	return fmt.Errorf("commit agent %s sequence %d: %d attempts: %w", c.AgentID, c.State.Sequence, attempts, err)
}

// Abandon undoes a Change whose events were not published: the agent's
// latest state goes back to what it was before the change, and the changes
// that followed it are discarded. The next observation re-emits what still
// differs, with the same sequences (and so the same event IDs).
func (d *Detector) Abandon(c *Change) {
	a := d.agent(c.AgentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	if c.epoch != a.epoch {
		return
	}
	a.epoch++
	if c.base != nil && c.base.Sequence >= a.storedSeq {
		a.state = c.base
	} else {
		a.state = a.stored
	}
}
