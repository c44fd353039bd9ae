package source

import (
	"slices"
	"strings"
	"sync"
)

// Bounds of an interner: past maxInterned entries of a kind, or for a value
// longer than maxInternedLen bytes, values are kept as they come.
const (
	maxInterned    = 4096
	maxInternedLen = 256
)

// Interner shares the values many agents hold alike (presence IDs, names
// and base statuses, channel names and channel lists), so that each is held
// once per process rather than once per agent and observation: the Client
// interns what it decodes (the last answer it keeps per agent) and the
// detector what it holds, through one Interner cmd/bridge gives both. The
// lists it returns are shared: they are never modified, and their capacity
// is their length, so an append copies. It is safe for concurrent use.
type Interner struct {
	mu    sync.Mutex
	strs  map[string]string
	lists map[string][]string
	key   []byte // scratch for a list's key; guarded by mu
}

// NewInterner returns an empty Interner.
func NewInterner() *Interner {
	return &Interner{strs: map[string]string{}, lists: map[string][]string{}}
}

// String returns the interned copy of s.
func (in *Interner) String(s string) string {
	if s == "" || len(s) > maxInternedLen {
		return s
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.strLocked(s)
}

func (in *Interner) strLocked(s string) string {
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

// List returns a shared list equal to l, element by element (nil and empty
// lists as they are).
func (in *Interner) List(l []string) []string {
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

// Snapshot shares snap's presence values and channel lists.
func (in *Interner) Snapshot(snap *Snapshot) {
	snap.PresenceID = in.String(snap.PresenceID)
	snap.PresenceName = in.String(snap.PresenceName)
	snap.BaseStatus = in.String(snap.BaseStatus)
	snap.AllowedChannels = in.List(snap.AllowedChannels)
	snap.DisabledChannels = in.List(snap.DisabledChannels)
}
