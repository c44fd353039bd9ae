package detector

import (
	"slices"
	"strings"
	"sync"

	"github.com/ccaas/presence-bridge/internal/source"
)

// Bounds of an interner: past maxInterned entries of a kind, or for a value
// longer than maxInternedLen bytes, values are kept as they come.
const (
	maxInterned    = 4096
	maxInternedLen = 256
)

// interner shares the values many agents hold alike (presence IDs, names
// and base statuses, channel names and channel lists), so that each is held
// once per Detector rather than once per agent and observation. The lists
// it returns are shared: they are never modified, and their capacity is
// their length, so an append copies. It is safe for concurrent use.
type interner struct {
	mu    sync.Mutex
	strs  map[string]string
	lists map[string][]string
	key   []byte // scratch for a list's key; guarded by mu
}

func newInterner() *interner {
	return &interner{strs: map[string]string{}, lists: map[string][]string{}}
}

// str returns the interned copy of s.
func (in *interner) str(s string) string {
	if s == "" || len(s) > maxInternedLen {
		return s
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.strLocked(s)
}

func (in *interner) strLocked(s string) string {
	if v, ok := in.strs[s]; ok {
		return v
	}
	if len(in.strs) >= maxInterned {
		return s
	}
	v := strings.Clone(s) // never pins the buffer s was cut from
	in.strs[v] = v
	return v
}

// list returns a shared list equal to l, element by element (nil and empty
// lists as they are).
func (in *interner) list(l []string) []string {
	if len(l) == 0 {
		return l
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.key = in.key[:0]
	for _, s := range l {
		if len(s) > maxInternedLen {
			return l
		}
		in.key = append(in.key, s...)
		in.key = append(in.key, 0) // a channel name has no NUL
	}
	if v, ok := in.lists[string(in.key)]; ok && slices.Equal(v, l) {
		return v
	}
	if len(in.lists) >= maxInterned {
		return l
	}
	v := make([]string, len(l))
	for i, s := range l {
		v[i] = in.strLocked(s)
	}
	in.lists[string(in.key)] = v
	return v
}

// channels returns c with both lists shared.
func (in *interner) channels(c Channels) Channels {
	return Channels{Allowed: in.list(c.Allowed), Disabled: in.list(c.Disabled)}
}

// snapshot shares snap's values: the agent's ID with id (the key the
// Detector holds the agent by), the catalogue's strings and the channel
// lists through the interner, the agent's name with what the agent already
// holds (prev, its previous snapshot, and st, its state; either may be
// nil).
func (in *interner) snapshot(id string, snap *source.Snapshot, prev *source.Snapshot, st *AgentState) {
	if snap.AgentID == id {
		snap.AgentID = id
	}
	snap.PresenceID = in.str(snap.PresenceID)
	snap.PresenceName = in.str(snap.PresenceName)
	snap.BaseStatus = in.str(snap.BaseStatus)
	snap.AllowedChannels = in.list(snap.AllowedChannels)
	snap.DisabledChannels = in.list(snap.DisabledChannels)
	switch {
	case prev != nil && prev.AgentName == snap.AgentName:
		snap.AgentName = prev.AgentName
	case st != nil && st.AgentName == snap.AgentName:
		snap.AgentName = st.AgentName
	}
}
