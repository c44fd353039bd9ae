package detector

import "time"

// PresenceChangedData is the data of presence.changed.
type PresenceChangedData struct {
	AgentID   string `json:"agentId"`
	AgentName string `json:"agentName"`
	// Truncated is true when names or lists were cut to fit the NATS
	// server's max_payload (set by the encoder, never by Diff).
	Truncated bool `json:"truncated,omitempty"`
	// Previous is the previous presence, null on first sight.
	Previous *Presence `json:"previous"`
	// Current is the new presence.
	Current Presence `json:"current"`
	// PreviousSince is when the bridge first observed the previous presence.
	PreviousSince *time.Time `json:"previousSince"`
	// PreviousDurationSeconds is how long the agent was in the previous
	// presence as the bridge observed it (from the source's times when the
	// change feed reported both presences).
	PreviousDurationSeconds *float64 `json:"previousDurationSeconds"`
	// ChangedAt is when the change happened at the source, as the change
	// feed reported it; nil when a poll detected it (the CloudEvent time is
	// then the only time known).
	ChangedAt *time.Time `json:"changedAt,omitempty"`
	// Unattended is the agent's unattended flag after this observation.
	Unattended bool `json:"unattended"`
	// Offline is the agent's offline flag after this observation.
	Offline bool `json:"offline"`
}

// Sessions change kinds: what a sessions.changed event describes.
const (
	SessionsInitial = "initial" // first sight of the agent
	SessionsLogin   = "login"   // the login Timestamp changed, or sessions rose from 0
	SessionsLogout  = "logout"  // browser sessions dropped to 0
	SessionsTabs    = "tabs"    // the number of open tabs changed otherwise
)

// SessionsChangedData is the data of sessions.changed.
type SessionsChangedData struct {
	AgentID   string `json:"agentId"`
	AgentName string `json:"agentName"`
	// Truncated is true when names or lists were cut to fit the NATS
	// server's max_payload (set by the encoder, never by Diff).
	Truncated bool `json:"truncated,omitempty"`
	// Change is one of the Sessions* kinds.
	Change string `json:"change"`
	// Previous is the previous sessions state, null on first sight.
	Previous *Sessions `json:"previous"`
	// Current is the new sessions state.
	Current Sessions `json:"current"`
	// Unattended is the agent's unattended flag after this observation.
	Unattended bool `json:"unattended"`
	// Offline is the agent's offline flag after this observation.
	Offline bool `json:"offline"`
}

// ChannelsChangedData is the data of channels.changed. Lists are sets:
// sorted, without duplicates.
type ChannelsChangedData struct {
	AgentID   string `json:"agentId"`
	AgentName string `json:"agentName"`
	// Truncated is true when names or lists were cut to fit the NATS
	// server's max_payload (set by the encoder, never by Diff).
	Truncated bool `json:"truncated,omitempty"`
	// Previous is the previous channels, null on first sight.
	Previous *Channels `json:"previous"`
	// Current is the new channels.
	Current Channels `json:"current"`
	// Added lists what is in Current and was not in Previous.
	Added Channels `json:"added"`
	// Removed lists what was in Previous and is not in Current.
	Removed Channels `json:"removed"`
}

// AgentOfflineData is the data of agent.offline.
type AgentOfflineData struct {
	AgentID   string `json:"agentId"`
	AgentName string `json:"agentName"`
	// Truncated is true when names or lists were cut to fit the NATS
	// server's max_payload (set by the encoder, never by Diff).
	Truncated bool `json:"truncated,omitempty"`
	// Reason is ReasonPresence, ReasonLogout or ReasonPresenceAndLogout.
	Reason string `json:"reason"`
	// Since is when the bridge observed the agent go offline.
	Since time.Time `json:"since"`
	// Presence is the agent's presence.
	Presence Presence `json:"presence"`
	// ActiveBrowserSessions is the number of open browser tabs.
	ActiveBrowserSessions int `json:"activeBrowserSessions"`
}

// AgentOnlineData is the data of agent.online.
type AgentOnlineData struct {
	AgentID   string `json:"agentId"`
	AgentName string `json:"agentName"`
	// Truncated is true when names or lists were cut to fit the NATS
	// server's max_payload (set by the encoder, never by Diff).
	Truncated bool `json:"truncated,omitempty"`
	// OfflineSince is when the agent went offline, as observed.
	OfflineSince *time.Time `json:"offlineSince"`
	// OfflineDurationSeconds is how long the agent was offline, as observed.
	OfflineDurationSeconds *float64 `json:"offlineDurationSeconds"`
	// Presence is the agent's presence.
	Presence Presence `json:"presence"`
	// ActiveBrowserSessions is the number of open browser tabs.
	ActiveBrowserSessions int `json:"activeBrowserSessions"`
}

// AgentUnattendedData is the data of agent.unattended: the base status is
// Available or Busy while no browser session is open.
type AgentUnattendedData struct {
	AgentID   string `json:"agentId"`
	AgentName string `json:"agentName"`
	// Truncated is true when names or lists were cut to fit the NATS
	// server's max_payload (set by the encoder, never by Diff).
	Truncated bool `json:"truncated,omitempty"`
	// Unattended is always true; the flag is cleared by a later
	// presence.changed or sessions.changed with unattended false.
	Unattended bool `json:"unattended"`
	// Since is when the bridge observed the agent become unattended.
	Since time.Time `json:"since"`
	// Presence is the agent's presence.
	Presence Presence `json:"presence"`
	// ActiveBrowserSessions is the number of open browser tabs (0).
	ActiveBrowserSessions int `json:"activeBrowserSessions"`
}

// PresenceStaleData is the data of presence.stale: the bridge has had no
// successful poll of the agent for StaleAfter.
type PresenceStaleData struct {
	AgentID   string `json:"agentId"`
	AgentName string `json:"agentName"`
	// Truncated is true when names or lists were cut to fit the NATS
	// server's max_payload (set by the encoder, never by Diff).
	Truncated bool `json:"truncated,omitempty"`
	// LastKnown is the agent's last known state.
	LastKnown AgentState `json:"lastKnown"`
	// LastSuccessAt is when the last successful poll finished, or when the
	// bridge started if it has had none.
	LastSuccessAt time.Time `json:"lastSuccessAt"`
	// ErrorClass is the class of the last failed poll (source.ErrorClass), or
	// "no_result" when no poll has finished.
	ErrorClass string `json:"errorClass"`
	// StaleAfterSeconds is the configured stale period.
	StaleAfterSeconds float64 `json:"staleAfterSeconds"`
}

// ErrorClassNoResult is the error class of presence.stale when no poll of
// the agent finished at all during the stale period.
const ErrorClassNoResult = "no_result"

// PresenceResumedData is the data of presence.resumed, published before any
// change event when polling an agent succeeds again after presence.stale.
type PresenceResumedData struct {
	AgentID   string `json:"agentId"`
	AgentName string `json:"agentName"`
	// Truncated is true when names or lists were cut to fit the NATS
	// server's max_payload (set by the encoder, never by Diff).
	Truncated bool `json:"truncated,omitempty"`
	// StaleSince is when the agent was declared stale.
	StaleSince *time.Time `json:"staleSince"`
	// StaleDurationSeconds is how long the agent was stale.
	StaleDurationSeconds *float64 `json:"staleDurationSeconds"`
	// ErrorClass is the error class presence.stale reported.
	ErrorClass string `json:"errorClass"`
}

// PresenceSnapshotData is the data of presence.snapshot: the agent's full
// state, so a consumer replaying from any point finds it nearby.
type PresenceSnapshotData struct {
	AgentID   string `json:"agentId"`
	AgentName string `json:"agentName"`
	// Truncated is true when names or lists were cut to fit the NATS
	// server's max_payload (set by the encoder, never by Diff).
	Truncated bool `json:"truncated,omitempty"`
	// State is the agent's state, its Sequence that of this event.
	State AgentState `json:"state"`
}
