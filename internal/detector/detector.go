package detector

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ccaas/presence-bridge/internal/source"
)

// ErrConflict marks a publish that found the agent's history on the stream
// moved on by another writer (or by a message that is not this process's):
// the change was not stored, and the agent's state must be adopted from the
// stream before its next change.
var ErrConflict = errors.New("the agent's history on the stream moved on")

// Options configures a Detector.
type Options struct {
	// StaleAfter is how long an agent may go without a successful poll
	// before presence.stale; 0 disables stale detection.
	StaleAfter time.Duration
	// Logger receives one line per adoption; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Interner shares the values agents hold alike; give the one the
	// presence client decodes with (source.ClientOptions.Interner), so the
	// answer it keeps per agent and the Detector's state share them. Nil
	// means one of the Detector's own.
	Interner *source.Interner
}

// Change is the outcome of one observation, stale check or snapshot of one
// agent: the events to publish, in order, and the agent's state after them.
type Change struct {
	// AgentID is the agent.
	AgentID string
	// Events are the events to publish, consecutive sequences.
	Events []Event
	// State is the agent's state after the events. It shares its channel
	// lists and times with the states the Detector holds: read it, copy it
	// (Clone) to modify what it points to.
	State AgentState
	// AfterStream is the stream sequence of the last event the change was
	// numbered after, as this process last confirmed it (0: none known). A
	// publisher that has published the agent's events itself knows better.
	AfterStream uint64

	base     *AgentState // state before the events
	produced *AgentState // the agent's latest state as this change left it
	epoch    uint64
}

// Detector keeps the last state of every agent it is given and turns
// observations into Changes. It holds memory only: no lock of it is ever
// held across I/O. Changes of one agent must be confirmed (or abandoned) in
// the order the Detector returned them.
type Detector struct {
	opts    Options
	log     *slog.Logger
	started time.Time

	intern *source.Interner

	mu     sync.Mutex
	agents map[string]*agent

	noQuiet bool // every poll diffed (tests compare the two ways)
}

type agent struct {
	mu sync.Mutex
	// state is the latest state, including changes not yet confirmed; nil
	// before the agent's first event.
	state *AgentState
	// base is the last state known to be on the stream (its StreamSequence
	// set where known); nil when none is.
	base *AgentState
	// epoch increases when pending changes are discarded (Abandon, Adopt).
	epoch uint64
	// snap is the latest successful observation, diffed again when the
	// agent's state is adopted from the stream, snapAt its time and
	// snapTook how long before snapAt its request was sent. snap is never
	// modified: it may be the poller's answer itself, shared with the
	// source (its ObservedAt is not read; snapAt is its time).
	snap     *source.Snapshot
	snapAt   time.Time
	snapTook time.Duration
	// noted are the snapshots taken while the agent's history was being
	// adopted (Note), in order; Adopt diffs each against the adopted
	// history, so no presence seen meanwhile is lost. Bounded by maxNoted.
	noted []notedSnapshot
	// polled is true once this process has had an observation of the agent.
	polled      bool
	lastSuccess time.Time
	lastClass   source.ErrorClass
	// hold is a presence polls see that the change feed has not reported
	// yet (see source.Observation.FeedHold).
	hold *heldPresence
	// quietState and quietSnap are the state and the snapshot (snap) of
	// the last poll that was diffed and changed nothing: while both are
	// still the agent's, a poll of the same content changes nothing either
	// (see quietLocked).
	quietState *AgentState
	quietSnap  *source.Snapshot
}

// New returns a Detector with no state; Restore gives it the stored states.
func New(opts Options) (*Detector, error) {
	if opts.StaleAfter < 0 {
		return nil, fmt.Errorf("detector: Options.StaleAfter is negative (%s)", opts.StaleAfter)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Interner == nil {
		opts.Interner = source.NewInterner()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Detector{opts: opts, log: log, started: opts.Now(), intern: opts.Interner, agents: map[string]*agent{}}, nil
}

// StaleAfter is how long an agent may go without a successful poll before
// presence.stale (Options.StaleAfter); 0 when stale detection is off.
func (d *Detector) StaleAfter() time.Duration { return d.opts.StaleAfter }

// Restore takes agents' states as the state bucket holds them (at start, or
// when this process takes over a shard), so that the first observation
// emits only what differs. A state replaces what the Detector holds only
// when it goes further (a higher Sequence); the stream fence catches a
// stored state that is behind the stream.
func (d *Detector) Restore(states ...AgentState) {
	for _, st := range states {
		s := st.Clone()
		s.Channels = shareChannels(d.intern, s.Channels)
		a := d.agent(s.AgentID)
		a.mu.Lock()
		if a.base == nil || a.base.Sequence < s.Sequence {
			a.base = &s
		}
		if a.state == nil || a.state.Sequence < s.Sequence {
			a.state = &s
		}
		a.mu.Unlock()
	}
}

// Forget drops what the Detector holds of the given agents: this process
// no longer polls them, so no stale, snapshot or other event is produced
// for them. A change of theirs in flight may still be confirmed.
func (d *Detector) Forget(agentIDs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range agentIDs {
		delete(d.agents, id)
	}
}

func (d *Detector) agent(id string) *agent {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.agents[id]
	if a == nil {
		a = &agent{lastSuccess: d.opts.Now()} // since this process holds the agent
		d.agents[id] = a
	}
	return a
}

// Observe takes one poll result. For a successful one it returns the Change
// describing what differs from the agent's latest state (with
// presence.resumed first when the agent was stale), or nil when nothing
// changed. A failed one is recorded for the stale check and returns nil.
func (d *Detector) Observe(o source.Observation) *Change {
	return d.observe(o, true)
}

// Note records a poll result without producing a change: the agent's
// history is being adopted from the stream, and Adopt diffs the latest
// snapshot noted.
func (d *Detector) Note(o source.Observation) {
	d.observe(o, false)
}

func (d *Detector) observe(o source.Observation, produce bool) *Change {
	a := d.agent(o.AgentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	if o.Row != nil {
		return a.rowLocked(d.intern, o, produce)
	}
	a.polled = true
	if o.Class != source.ClassOK || o.Snapshot == nil {
		a.lastClass = o.Class
		return nil
	}
	if produce && !d.noQuiet && a.quietLocked(o) {
		return nil
	}
	at := o.Snapshot.ObservedAt
	if at.IsZero() {
		at = o.At
	}
	a.lastSuccess, a.lastClass = at, ""
	snap := o.Snapshot
	if !snap.ObservedAt.IsZero() || snap.AgentID != o.AgentID || (o.FeedHold > 0 && a.state != nil) {
		// Not the source's shared answer (which has the agent's ID and no
		// time), or FeedHold may replace its presence: the agent's own copy.
		own := *snap
		if own.AgentID == "" {
			own.AgentID = o.AgentID
		}
		own.ObservedAt = time.Time{}
		shareSnapshot(d.intern, o.AgentID, &own, a.snap, a.state)
		snap = &own
	}
	a.holdLocked(snap, at, o.FeedHold) // rewrites only the agent's own copy: a shared one never has a hold to apply
	a.snap, a.snapAt, a.snapTook = snap, at, took(o, at)
	a.quietState, a.quietSnap = nil, nil
	if !produce {
		if len(a.noted) == maxNoted {
			a.noted = append(a.noted[:0], a.noted[1:]...) // the oldest goes
		}
		a.noted = append(a.noted, notedSnapshot{snap: snap, at: at, took: a.snapTook})
		return nil
	}
	a.noted = nil
	diffed := a.state != nil && a.snapNewerLocked()
	c := a.diffLocked(d.intern, o.AgentID)
	if c == nil && diffed && a.hold == nil && o.Snapshot.PresenceID == a.state.Presence.ID &&
		o.Snapshot.PresenceName == a.state.Presence.Name && o.Snapshot.BaseStatus == a.state.Presence.BaseStatus {
		// Diffed, nothing changed, and the poll's presence is the state's
		// as it came (FeedHold replaced nothing).
		a.quietState, a.quietSnap = a.state, a.snap
	}
	return c
}

// quietLocked takes a successful poll that repeats the content of the
// last poll diffed without a change, against the same state, in O(1) and
// without allocating: the diff would find nothing again (Diff finds the
// same events whatever the time), FeedHold would replace nothing (the
// poll's presence is the state's), so only the time of the last
// successful poll moves. It reports whether it took the poll. Most polls
// repeat the last (the source shares the Snapshot of an unchanged answer).
// a.mu is held.
func (a *agent) quietLocked(o source.Observation) bool {
	s, q := o.Snapshot, a.quietSnap
	if q == nil || a.snap != q || a.state != a.quietState || a.hold != nil || len(a.noted) > 0 {
		return false
	}
	id := s.AgentID
	if id == "" {
		id = o.AgentID
	}
	if s != q && (id != q.AgentID || s.AgentName != q.AgentName || s.PresenceID != q.PresenceID || s.PresenceName != q.PresenceName ||
		s.BaseStatus != q.BaseStatus || s.ActiveBrowserSessions != q.ActiveBrowserSessions || s.LoginTime != q.LoginTime ||
		!slices.Equal(s.AllowedChannels, q.AllowedChannels) || !slices.Equal(s.DisabledChannels, q.DisabledChannels) ||
		!s.PresenceChangedAt.Equal(q.PresenceChangedAt)) {
		return false
	}
	at := s.ObservedAt
	if at.IsZero() {
		at = o.At
	}
	a.lastSuccess, a.lastClass, a.snapAt, a.snapTook = at, "", at, took(o, at)
	return true
}

// took is how long before at, the observation's time, its request was
// sent: its answer shows the agent at some instant in that span. Zero when
// the observation does not say.
func took(o source.Observation, at time.Time) time.Duration {
	if o.Sent.IsZero() || o.Sent.After(at) {
		return 0
	}
	return at.Sub(o.Sent)
}

// maxNoted bounds the snapshots kept while an agent's history is adopted.
const maxNoted = 64

// snapNewerLocked reports whether the latest snapshot is known to show the
// agent after its state's observation: its request was sent no earlier
// than that observation ended. An answer whose request was on its way when
// the state was observed (another writer's, adopted from the stream) may
// have been read before it, whenever it arrived: the next poll tells.
// a.state is not nil; a.mu is held.
func (a *agent) snapNewerLocked() bool {
	return !a.snapAt.Add(-a.snapTook).Before(a.state.ObservedAt)
}

// notedSnapshot is a snapshot noted while the agent's history was being
// adopted, its time and how long before it its request was sent.
type notedSnapshot struct {
	snap *source.Snapshot
	at   time.Time
	took time.Duration
}

// diffLocked diffs the latest snapshot against the latest state. A
// snapshot not known to be newer than the state (see snapNewerLocked) says
// nothing new: publishing it could take the agent back in time.
func (a *agent) diffLocked(in *source.Interner, id string) *Change {
	if a.snap == nil || (a.state != nil && !a.snapNewerLocked()) {
		return nil
	}
	snap := *a.snap
	snap.ObservedAt = a.snapAt
	next, events := Diff(a.state, snap)
	if len(events) == 0 {
		return nil
	}
	return a.advance(in, id, next, events)
}

// advance makes next the agent's latest state; a.mu is held. The state kept
// shares its channel lists through in.
func (a *agent) advance(in *source.Interner, id string, next AgentState, events []Event) *Change {
	// States are never modified in place (their lists and times are
	// replaced, not written to), so the Change shares next's.
	c := &Change{AgentID: id, Events: events, State: next, base: a.state, epoch: a.epoch}
	if a.base != nil {
		c.AfterStream = a.base.StreamSequence
	}
	next.Channels = shareChannels(in, next.Channels)
	a.state = &next
	c.produced = a.state
	return c
}

// StaleCheck walks the agents once. due are, sorted, the agents polled by
// this process, with a state, not yet stale, and without a successful poll
// for StaleAfter at now (MarkStale marks each, checking again); stale is
// how many agents are stale already. With StaleAfter 0 nothing is due.
func (d *Detector) StaleCheck(now time.Time) (due []string, stale int) {
	d.each(func(id string, a *agent) {
		switch {
		case a.state == nil:
		case a.state.Stale:
			stale++
		case d.opts.StaleAfter > 0 && a.polled && now.Sub(a.lastSuccess) >= d.opts.StaleAfter:
			due = append(due, id)
		}
	})
	sort.Strings(due)
	return due, stale
}

// MarkStale returns the presence.stale Change of an agent if it is still
// due at now (see StaleCheck), or nil.
func (d *Detector) MarkStale(agentID string, now time.Time) *Change {
	if d.opts.StaleAfter <= 0 {
		return nil
	}
	a := d.known(agentID)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.polled || a.state == nil || a.state.Stale || now.Sub(a.lastSuccess) < d.opts.StaleAfter {
		return nil
	}
	next, e := Stale(*a.state, now, a.lastSuccess, string(a.lastClass), d.opts.StaleAfter)
	return a.advance(d.intern, agentID, next, []Event{e})
}

// SnapshotDue returns, sorted, the agents polled by this process that have
// a state: those a presence.snapshot round covers.
func (d *Detector) SnapshotDue() []string {
	var due []string
	d.each(func(id string, a *agent) {
		if a.polled && a.state != nil {
			due = append(due, id)
		}
	})
	sort.Strings(due)
	return due
}

// Snapshot returns the presence.snapshot Change of an agent, or nil when the
// agent has no state or is not held.
func (d *Detector) Snapshot(agentID string, now time.Time) *Change {
	a := d.known(agentID)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state == nil {
		return nil
	}
	next, e := Snapshot(*a.state, now)
	return a.advance(d.intern, agentID, next, []Event{e})
}

// known returns the agent if the Detector holds it, or nil.
func (d *Detector) known(id string) *agent {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.agents[id]
}

// State returns an agent's latest state, including changes not yet
// confirmed, and whether it has one.
func (d *Detector) State(agentID string) (AgentState, bool) {
	a := d.known(agentID)
	if a == nil {
		return AgentState{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state == nil {
		return AgentState{}, false
	}
	return a.state.Clone(), true
}

// Base returns the agent's last state known to be on the stream, or nil.
func (d *Detector) Base(agentID string) *AgentState {
	a := d.known(agentID)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.base == nil {
		return nil
	}
	s := a.base.Clone()
	return &s
}

// each calls f for every agent held, with the agent's lock held, without
// copying the set: d.mu is held throughout, which is safe because d.mu is
// never taken while an agent's lock is held (every method looks its agent
// up first), and cheap enough for the stale check's one pass a second.
func (d *Detector) each(f func(id string, a *agent)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, a := range d.agents {
		a.mu.Lock()
		f(id, a)
		a.mu.Unlock()
	}
}

// Confirm records that a Change's events are on the stream, the last at
// stream sequence streamSeq, and returns the agent's state to record in the
// state bucket (with StreamSequence set).
func (d *Detector) Confirm(c *Change, streamSeq uint64) AgentState {
	st := c.State // a copy: states are never modified in place
	st.StreamSequence = streamSeq
	a := d.known(c.AgentID)
	if a == nil {
		return st // forgotten meanwhile: the view is still recorded
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// The states the Detector holds are never modified, so one copy of st
	// serves as both the base and the latest state.
	var kept *AgentState
	if a.base == nil || a.base.Sequence < st.Sequence {
		b := st
		b.Channels = shareChannels(d.intern, b.Channels)
		a.base, kept = &b, &b
		if a.state == c.produced {
			// Nothing followed the change: its state, now known to be on
			// the stream, is the latest too.
			a.state = kept
		}
	}
	if a.state == nil || a.state.Sequence < st.Sequence {
		if kept == nil {
			s := st
			s.Channels = shareChannels(d.intern, s.Channels)
			kept = &s
		}
		a.state = kept
	}
	return st
}

// Abandon undoes a Change whose events were not published: the agent's
// latest state goes back to what it was before the change, and the changes
// that followed it are discarded. It reports whether it did anything: a
// change already discarded (by an earlier Abandon or Adopt) is ignored.
func (d *Detector) Abandon(c *Change) bool {
	a := d.known(c.AgentID)
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if c.epoch != a.epoch {
		return false
	}
	a.epoch++
	if c.base != nil && (a.base == nil || c.base.Sequence >= a.base.Sequence) {
		a.state = c.base
	} else {
		a.state = a.base
	}
	return true
}

// Adopt makes st (nil: the agent has no event on the stream) the agent's
// state as the stream holds it, discarding pending changes, and diffs the
// latest snapshot against it: the returned Change, if any, follows on from
// the stream's history. It returns nil for an agent the Detector does not
// hold.
func (d *Detector) Adopt(agentID string, st *AgentState) *Change {
	a := d.known(agentID)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.epoch++
	if st == nil {
		a.base, a.state = nil, nil
	} else {
		// One copy serves as both: the states held are never modified.
		s := st.Clone()
		s.Channels = shareChannels(d.intern, s.Channels)
		a.base, a.state = &s, &s
	}
	d.log.Debug("adopted the agent's history from the stream", "agent", agentID, "sequence", seqOf(st), "stream_sequence", streamSeqOf(st))
	latest, latestAt, latestTook := a.snap, a.snapAt, a.snapTook
	noted := a.noted
	a.noted = nil
	var c *Change
	for _, n := range noted {
		a.snap, a.snapAt, a.snapTook = n.snap, n.at, n.took
		c = c.then(a.diffLocked(d.intern, agentID))
	}
	a.snap, a.snapAt, a.snapTook = latest, latestAt, latestTook
	return c.then(a.diffLocked(d.intern, agentID))
}

// then joins two consecutive changes of one agent into one: next's events
// follow c's, and its state is the result.
func (c *Change) then(next *Change) *Change {
	switch {
	case c == nil:
		return next
	case next == nil:
		return c
	}
	c.Events = append(c.Events, next.Events...)
	c.State = next.State
	c.produced = next.produced
	return c
}

func seqOf(s *AgentState) uint64 {
	if s == nil {
		return 0
	}
	return s.Sequence
}

func streamSeqOf(s *AgentState) uint64 {
	if s == nil {
		return 0
	}
	return s.StreamSequence
}
