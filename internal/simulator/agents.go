package simulator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// ErrUnknownAgent is returned by the methods that change one agent when the
// simulated organisation has no agent with that ID.
var ErrUnknownAgent = errors.New("unknown agent")

// AgentState is the full state of one agent: what CCaaS_GetPresence returns
// for it, plus the base status of its presence.
type AgentState struct {
	// AgentID is the agent's systemuser ID, lower-case GUID.
	AgentID string
	// AgentName is the agent's full name.
	AgentName string
	// ActiveBrowserSessions is the number of browser tabs the agent has
	// open; 0 when logged out.
	ActiveBrowserSessions int
	// Timestamp is the time of the agent's last login, in seconds since the
	// epoch. It keeps its value after a logout.
	Timestamp int64
	// AllowedChannels lists the agent's channels that are enabled.
	AllowedChannels []string
	// DisabledChannels lists the agent's channels that are disabled.
	DisabledChannels []string
	// PresenceID is the current presence's ID, lower-case GUID.
	PresenceID string
	// PresenceName is the current presence's name (CurrentPresenceStatusInfo).
	PresenceName string
	// BaseStatus is the base status option value of the current presence.
	BaseStatus int
}

func (a AgentState) clone() AgentState {
	a.AllowedChannels = slices.Clone(a.AllowedChannels)
	a.DisabledChannels = slices.Clone(a.DisabledChannels)
	return a
}

// Fields is a set of the parts of an agent's state a Change touched.
type Fields uint8

// The parts of an agent's state, as the bridge's event types group them.
const (
	// FieldPresence: PresenceID or PresenceName.
	FieldPresence Fields = 1 << iota
	// FieldSessions: ActiveBrowserSessions or Timestamp.
	FieldSessions
	// FieldChannels: AllowedChannels or DisabledChannels, compared as sets.
	FieldChannels
)

// Has reports whether f contains all of g.
func (f Fields) Has(g Fields) bool { return f&g == g }

// String lists the fields, e.g. "presence|sessions".
func (f Fields) String() string {
	var parts []string
	for _, x := range []struct {
		f    Fields
		name string
	}{{FieldPresence, "presence"}, {FieldSessions, "sessions"}, {FieldChannels, "channels"}} {
		if f.Has(x.f) {
			parts = append(parts, x.name)
		}
	}
	return strings.Join(parts, "|")
}

// ChangeKind says what happened to an agent.
type ChangeKind string

// Change kinds.
const (
	KindAdded     ChangeKind = "added"      // the agent was created (its initial state)
	KindRemoved   ChangeKind = "removed"    // the agent was deleted; State is its last state
	KindLogin     ChangeKind = "login"      // sessions 0 -> 1, new Timestamp, Available
	KindLogout    ChangeKind = "logout"     // sessions -> 0, Offline
	KindTabOpened ChangeKind = "tab-opened" // one more browser session
	KindTabClosed ChangeKind = "tab-closed" // one fewer, at least one left
	KindPresence  ChangeKind = "presence"   // presence switched, channels possibly with it
	KindChannels  ChangeKind = "channels"   // a channel enabled or disabled
	KindSessions  ChangeKind = "sessions"   // SetSessions set the tab count
	KindSetByTest ChangeKind = "set"        // SetState replaced the whole state
)

// kindNone marks a transition that changes nothing; it is never recorded.
const kindNone ChangeKind = ""

// Change is one entry of the ground-truth log: a change the simulator made
// to one agent.
type Change struct {
	// Seq numbers the changes of the whole organisation from 1, without gaps.
	Seq uint64
	// At is when the change was made (Options.Now).
	At time.Time
	// AgentID is the agent that changed.
	AgentID string
	// Kind says what happened.
	Kind ChangeKind
	// Forced is true for a change a test made through a method (SetPresence,
	// Logout, ...), false for a random one made by Step.
	Forced bool
	// Fields lists the parts of the state that differ from the previous
	// state; all of them for KindAdded.
	Fields Fields
	// State is the agent's full state after the change.
	State AgentState
}

// agent is one simulated agent; guarded by Simulator.mu.
type agent struct {
	state AgentState
	// channels is every channel the agent has, in a fixed order.
	channels []string
}

// allChannels are the channel names agents may have, with the probability
// that a new agent has each.
var allChannels = []struct {
	name string
	p    float64
}{
	{"chat", 0.9}, {"voice", 0.6}, {"email", 0.5}, {"sms", 0.3},
	{"whatsapp", 0.3}, {"facebook", 0.2}, {"teams", 0.3},
}

var firstNames = []string{
	"Aisha", "Ben", "Carmen", "Dmitri", "Elena", "Farid", "Grace", "Hiroshi",
	"Ingrid", "Jamal", "Keiko", "Liam", "Maria", "Noah", "Olga", "Priya",
	"Quentin", "Rosa", "Samir", "Tamsin", "Umar", "Valeria", "Wei", "Ximena",
	"Yusuf", "Zofia", "Alan", "Beatriz", "Chidi", "Dana",
}

var lastNames = []string{
	"Adeyemi", "Becker", "Castillo", "Dubois", "Eriksson", "Fischer", "García",
	"Haddad", "Ivanova", "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura",
	"O'Brien", "Patel", "Quinn", "Rossi", "Schmidt", "Tanaka", "Usman", "Varga",
	"Williams", "Xu", "Yilmaz", "Zhang", "Okafor", "Silva", "Novak", "Murphy",
}

// newGUID returns a random version-4 GUID drawn from r, lower-case.
func newGUID(r *rand.Rand) string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], r.Uint64())
	binary.LittleEndian.PutUint64(b[8:], r.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// parseGUID accepts a GUID in the 8-4-4-4-12 hexadecimal form, any case,
// and returns it lower-case.
func parseGUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return "", false
			}
		}
	}
	return strings.ToLower(s), true
}

// diff returns the fields that differ between two states.
func diff(prev, next AgentState) Fields {
	var f Fields
	if prev.PresenceID != next.PresenceID || prev.PresenceName != next.PresenceName {
		f |= FieldPresence
	}
	if prev.ActiveBrowserSessions != next.ActiveBrowserSessions || prev.Timestamp != next.Timestamp {
		f |= FieldSessions
	}
	if !sameSet(prev.AllowedChannels, next.AllowedChannels) || !sameSet(prev.DisabledChannels, next.DisabledChannels) {
		f |= FieldChannels
	}
	return f
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// uniqueName draws a name not yet in use; guarded by Simulator.mu.
func (s *Simulator) uniqueName() string {
	for i := 0; ; i++ {
		name := firstNames[s.rng.IntN(len(firstNames))] + " " + lastNames[s.rng.IntN(len(lastNames))]
		if i > 20 {
			name = fmt.Sprintf("%s %d", name, i)
		}
		if !s.names[name] {
			return name
		}
	}
}

// newAgent draws a new agent with a plausible initial state; guarded by
// Simulator.mu.
func (s *Simulator) newAgent(id, name string, now time.Time) *agent {
	if id == "" {
		id = newGUID(s.rng)
	}
	if name == "" {
		name = s.uniqueName()
	}
	a := &agent{}
	for _, c := range allChannels {
		if s.rng.Float64() < c.p {
			a.channels = append(a.channels, c.name)
		}
	}
	if len(a.channels) == 0 {
		a.channels = []string{"chat"}
	}
	a.state = AgentState{AgentID: id, AgentName: name}
	if s.rng.Float64() < 0.7 {
		// Logged in for up to eight hours, in some presence.
		a.state.ActiveBrowserSessions = 1
		if s.rng.Float64() < 0.15 {
			a.state.ActiveBrowserSessions = 2
		}
		a.state.Timestamp = now.Add(-time.Duration(s.rng.Int64N(int64(8 * time.Hour)))).Unix()
		s.applyPresence(a, &a.state, s.randomPresence(""))
	} else {
		// Last logged in one to three days ago.
		a.state.Timestamp = now.Add(-24*time.Hour - time.Duration(s.rng.Int64N(int64(48*time.Hour)))).Unix()
		a.state.AllowedChannels = slices.Clone(a.channels)
		a.state.DisabledChannels = []string{}
		off, _ := s.cat.get(PresenceOffline)
		s.setPresence(&a.state, off)
	}
	return a
}

func (s *Simulator) setPresence(st *AgentState, p Presence) {
	st.PresenceID, st.PresenceName, st.BaseStatus = p.ID, p.Name, p.BaseStatus
}

// applyPresence switches st to p with the channel policy of p's base status:
// Available re-enables every channel, Busy disables some, Busy - DND
// disables all, Away and Offline leave them as they are.
func (s *Simulator) applyPresence(a *agent, st *AgentState, p Presence) {
	s.setPresence(st, p)
	switch p.BaseStatus {
	case BaseAvailable:
		st.AllowedChannels, st.DisabledChannels = slices.Clone(a.channels), []string{}
	case BaseBusy:
		st.AllowedChannels, st.DisabledChannels = []string{}, []string{}
		keep := s.rng.IntN(len(a.channels)) // one channel stays allowed
		for i, c := range a.channels {
			if i == keep || s.rng.Float64() < 0.3 {
				st.AllowedChannels = append(st.AllowedChannels, c)
			} else {
				st.DisabledChannels = append(st.DisabledChannels, c)
			}
		}
	case BaseBusyDND:
		st.AllowedChannels, st.DisabledChannels = []string{}, slices.Clone(a.channels)
	default:
		if st.AllowedChannels == nil {
			st.AllowedChannels = slices.Clone(a.channels)
		}
		if st.DisabledChannels == nil {
			st.DisabledChannels = []string{}
		}
	}
}

// randomPresence draws a presence an agent can choose while logged in
// (not Offline-based), different from current; weighted towards the
// out-of-box ones.
func (s *Simulator) randomPresence(current string) Presence {
	var candidates []Presence
	var weights []float64
	var total float64
	for _, p := range s.cat.list {
		if p.BaseStatus == BaseOffline || p.BaseStatus == BaseInactive || p.ID == current {
			continue
		}
		w := 1.0
		switch p.ID {
		case PresenceAvailable:
			w = 6
		case PresenceBusy:
			w = 3
		case PresenceAway:
			w = 2
		case PresenceBusyDND:
			w = 1.5
		}
		candidates = append(candidates, p)
		weights = append(weights, w)
		total += w
	}
	if len(candidates) == 0 {
		p, _ := s.cat.get(PresenceAvailable)
		return p
	}
	x := s.rng.Float64() * total
	for i, w := range weights {
		if x < w {
			return candidates[i]
		}
		x -= w
	}
	return candidates[len(candidates)-1]
}

// transition draws the next state of a; kind is "" when nothing happens.
// Guarded by Simulator.mu.
func (s *Simulator) transition(a *agent, now time.Time) (AgentState, ChangeKind) {
	st := a.state.clone()
	if st.ActiveBrowserSessions == 0 {
		if s.rng.Float64() < 0.5 {
			return st, kindNone
		}
		s.login(a, &st, now)
		return st, KindLogin
	}
	x := s.rng.Float64()
	switch {
	case x < 0.10 && st.ActiveBrowserSessions < 3:
		st.ActiveBrowserSessions++
		return st, KindTabOpened
	case x < 0.20 && st.ActiveBrowserSessions > 1:
		st.ActiveBrowserSessions--
		return st, KindTabClosed
	case x < 0.30:
		s.logout(&st)
		return st, KindLogout
	case x < 0.40 && len(a.channels) > 1 && (st.BaseStatus == BaseBusy || st.BaseStatus == BaseAway):
		// A channel is enabled or disabled on its own while Busy or Away.
		c := a.channels[s.rng.IntN(len(a.channels))]
		if i := slices.Index(st.DisabledChannels, c); i >= 0 {
			st.DisabledChannels = slices.Delete(st.DisabledChannels, i, i+1)
			st.AllowedChannels = append(st.AllowedChannels, c)
		} else if i := slices.Index(st.AllowedChannels, c); i >= 0 {
			st.AllowedChannels = slices.Delete(st.AllowedChannels, i, i+1)
			st.DisabledChannels = append(st.DisabledChannels, c)
		}
		return st, KindChannels
	default:
		s.applyPresence(a, &st, s.randomPresence(st.PresenceID))
		return st, KindPresence
	}
}

func (s *Simulator) login(a *agent, st *AgentState, now time.Time) {
	st.ActiveBrowserSessions = 1
	st.Timestamp = now.Unix()
	avail, _ := s.cat.get(PresenceAvailable)
	s.applyPresence(a, st, avail)
}

func (s *Simulator) logout(st *AgentState) {
	st.ActiveBrowserSessions = 0
	off, _ := s.cat.get(PresenceOffline)
	s.setPresence(st, off)
}

// record stores next as a's state and appends it to the log; it returns the
// change, or false when next equals the current state. Guarded by
// Simulator.mu.
func (s *Simulator) record(a *agent, next AgentState, kind ChangeKind, forced bool, now time.Time) (Change, bool) {
	f := diff(a.state, next)
	if kind == KindAdded || kind == KindRemoved {
		f = FieldPresence | FieldSessions | FieldChannels
	}
	if f == 0 {
		return Change{}, false
	}
	a.state = next
	s.seq++
	c := Change{Seq: s.seq, At: now, AgentID: next.AgentID, Kind: kind, Forced: forced, Fields: f, State: next.clone()}
	s.feed.record(c, s.opts.FeedLag)
	s.changes = append(s.changes, c)
	if s.opts.MaxChanges > 0 && len(s.changes) > s.opts.MaxChanges {
		s.changes = slices.Delete(s.changes, 0, len(s.changes)-s.opts.MaxChanges)
	}
	s.logger.Debug("simulated change", "agent", c.AgentID, "seq", c.Seq, "kind", string(kind), "presence", next.PresenceName, "sessions", next.ActiveBrowserSessions)
	if s.opts.OnChange != nil {
		s.opts.OnChange(c)
	}
	return c, true
}

// Step applies one round of random changes: each agent changes with
// probability Options.ChangeProbability (log in, open or close a tab, log
// out, switch presence, have a channel enabled or disabled). It returns the
// changes made, also appended to the ground-truth log. With the same seed,
// the same options and the same clock readings, the same sequence of Step
// calls makes the same changes.
func (s *Simulator) Step() []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []Change
	for _, id := range s.order {
		if s.rng.Float64() >= s.opts.ChangeProbability {
			continue
		}
		a := s.agents[id]
		next, kind := s.transition(a, now)
		if kind == kindNone {
			continue
		}
		if c, ok := s.record(a, next, kind, false, now); ok {
			out = append(out, c)
		}
	}
	return out
}

// Changes returns a copy of the ground-truth log, oldest first: every
// change made since New (the most recent Options.MaxChanges when set),
// starting with one KindAdded entry per initial agent.
func (s *Simulator) Changes() []Change {
	return s.ChangesSince(0)
}

// ChangesSince returns the changes with Seq greater than seq, oldest first.
func (s *Simulator) ChangesSince(seq uint64) []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.changes, seq+1, func(c Change, seq uint64) int {
		switch {
		case c.Seq < seq:
			return -1
		case c.Seq > seq:
			return 1
		}
		return 0
	})
	out := make([]Change, 0, len(s.changes)-i)
	for _, c := range s.changes[i:] {
		c.State = c.State.clone()
		out = append(out, c)
	}
	return out
}

// Agents returns the current state of every agent, in creation order.
func (s *Simulator) Agents() []AgentState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]AgentState, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.agents[id].state.clone())
	}
	return out
}

// AgentIDs returns the IDs of every agent, in creation order.
func (s *Simulator) AgentIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}

// State returns the current state of one agent; the ID is matched
// case-insensitively.
func (s *Simulator) State(agentID string) (AgentState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[strings.ToLower(agentID)]
	if !ok {
		return AgentState{}, false
	}
	return a.state.clone(), true
}

// AddAgent creates an agent, logged in or out at random like the initial
// ones. An empty id or name is drawn from the generator. It returns the
// agent's state.
func (s *Simulator) AddAgent(id, name string) (AgentState, error) {
	if id != "" {
		var ok bool
		if id, ok = parseGUID(id); !ok {
			return AgentState{}, fmt.Errorf("add agent: %q is not a GUID", id)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.agents[id]; ok {
		return AgentState{}, fmt.Errorf("add agent %s: already exists", id)
	}
	return s.addLocked(id, name, s.now()), nil
}

func (s *Simulator) addLocked(id, name string, now time.Time) AgentState {
	a := s.newAgent(id, name, now)
	for s.agents[a.state.AgentID] != nil { // a drawn ID collided; draw again
		a.state.AgentID = newGUID(s.rng)
	}
	st := a.state
	a.state = AgentState{}
	s.agents[st.AgentID] = a
	s.order = append(s.order, st.AgentID)
	s.names[st.AgentName] = true
	s.record(a, st, KindAdded, false, now)
	return st.clone()
}

// RemoveAgent deletes an agent: from then on the API answers 404 for it.
func (s *Simulator) RemoveAgent(agentID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := strings.ToLower(agentID)
	a, ok := s.agents[id]
	if !ok {
		return fmt.Errorf("remove agent %s: %w", agentID, ErrUnknownAgent)
	}
	s.record(a, a.state.clone(), KindRemoved, true, s.now())
	delete(s.agents, id)
	delete(s.names, a.state.AgentName)
	s.order = slices.DeleteFunc(s.order, func(x string) bool { return x == id })
	return nil
}

// force applies fn to a copy of one agent's state and records the result.
// It returns the change, or false when fn changed nothing.
func (s *Simulator) force(agentID string, what string, kind ChangeKind, fn func(a *agent, st *AgentState, now time.Time) error) (Change, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[strings.ToLower(agentID)]
	if !ok {
		return Change{}, false, fmt.Errorf("%s for agent %s: %w", what, agentID, ErrUnknownAgent)
	}
	now := s.now()
	st := a.state.clone()
	if err := fn(a, &st, now); err != nil {
		return Change{}, false, fmt.Errorf("%s for agent %s: %w", what, agentID, err)
	}
	c, changed := s.record(a, st, kind, true, now)
	return c, changed, nil
}

// SetPresence switches an agent to a presence of the catalogue, applying the
// same channel policy as random switches (Available enables every channel,
// Busy disables some, Busy - DND all). It does not log the agent in or out.
// It returns the recorded change, or false when the agent already had that
// presence and those channels.
func (s *Simulator) SetPresence(agentID, presenceID string) (Change, bool, error) {
	return s.force(agentID, "set presence", KindPresence, func(a *agent, st *AgentState, _ time.Time) error {
		id, _ := parseGUID(presenceID)
		p, ok := s.cat.get(id)
		if !ok {
			return fmt.Errorf("presence %q is not in the catalogue", presenceID)
		}
		s.applyPresence(a, st, p)
		return nil
	})
}

// Login logs an agent in: one session, a new login Timestamp, Available,
// every channel enabled. An agent already logged in logs in again.
func (s *Simulator) Login(agentID string) (Change, bool, error) {
	return s.force(agentID, "log in", KindLogin, func(a *agent, st *AgentState, now time.Time) error {
		s.login(a, st, now)
		return nil
	})
}

// Logout logs an agent out: no session, Offline.
func (s *Simulator) Logout(agentID string) (Change, bool, error) {
	return s.force(agentID, "log out", KindLogout, func(_ *agent, st *AgentState, _ time.Time) error {
		s.logout(st)
		return nil
	})
}

// SetSessions sets an agent's number of open browser tabs (0 or more)
// without touching its presence or login time.
func (s *Simulator) SetSessions(agentID string, sessions int) (Change, bool, error) {
	return s.force(agentID, "set sessions", KindSessions, func(_ *agent, st *AgentState, _ time.Time) error {
		if sessions < 0 {
			return fmt.Errorf("negative session count %d", sessions)
		}
		st.ActiveBrowserSessions = sessions
		return nil
	})
}

// SetChannels sets an agent's allowed and disabled channel lists as given.
func (s *Simulator) SetChannels(agentID string, allowed, disabled []string) (Change, bool, error) {
	return s.force(agentID, "set channels", KindChannels, func(_ *agent, st *AgentState, _ time.Time) error {
		st.AllowedChannels = append([]string{}, allowed...)
		st.DisabledChannels = append([]string{}, disabled...)
		return nil
	})
}

// SetState replaces an agent's whole state (its AgentID excepted), for
// tests that need a precise value, e.g. a presence outside the catalogue.
func (s *Simulator) SetState(agentID string, next AgentState) (Change, bool, error) {
	return s.force(agentID, "set state", KindSetByTest, func(_ *agent, st *AgentState, _ time.Time) error {
		id := st.AgentID
		*st = next.clone()
		st.AgentID = id
		return nil
	})
}

// Presences returns the presence catalogue (the msdyn_presence table).
func (s *Simulator) Presences() []Presence {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cat.list)
}

// AddPresence adds a custom presence to the catalogue; Step may then choose
// it. It fails if the ID exists or the base status is not one of the five.
func (s *Simulator) AddPresence(p Presence) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.cat.add(p); err != nil {
		return fmt.Errorf("add presence: %w", err)
	}
	return nil
}

// RemovePresence removes a custom presence from the catalogue. Agents that
// have it keep it until they change.
func (s *Simulator) RemovePresence(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cat.remove(id)
}
