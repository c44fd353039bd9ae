package detector

import "github.com/ccaas/presence-bridge/internal/source"

// shareChannels returns c with both lists shared through in.
func shareChannels(in *source.Interner, c Channels) Channels {
	return Channels{Allowed: in.List(c.Allowed), Disabled: in.List(c.Disabled)}
}

// shareSnapshot shares snap's values: the agent's ID with id (the key the
// Detector holds the agent by), the catalogue's strings and the channel
// lists through in, the agent's name with what the agent already holds
// (prev, its previous snapshot, and st, its state; either may be nil).
func shareSnapshot(in *source.Interner, id string, snap *source.Snapshot, prev *source.Snapshot, st *AgentState) {
	if snap.AgentID == id {
		snap.AgentID = id
	}
	in.Snapshot(snap)
	switch {
	case prev != nil && prev.AgentName == snap.AgentName:
		snap.AgentName = prev.AgentName
	case st != nil && st.AgentName == snap.AgentName:
		snap.AgentName = st.AgentName
	}
}
