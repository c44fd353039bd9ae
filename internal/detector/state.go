package detector

import (
	"slices"
	"strings"
	"time"
)

// Presence is a presence as the bridge reports it: the msdyn_presence ID, its
// display name (CurrentPresenceStatusInfo) and the base status it maps to.
type Presence struct {
	// ID is the msdyn_presence ID, lower-case GUID.
	ID string `json:"id"`
	// Name is the presence's display name.
	Name string `json:"name"`
	// BaseStatus is "Available", "Busy", "Busy - DND", "Away", "Offline",
	// "Inactive", or "" when the presence catalogue does not know the
	// presence.
	BaseStatus string `json:"baseStatus"`
}

// Sessions is an agent's browser-session state.
type Sessions struct {
	// ActiveBrowserSessions is the number of browser tabs the agent has open.
	ActiveBrowserSessions int `json:"activeBrowserSessions"`
	// LoginTime is the login Timestamp, seconds since the epoch.
	LoginTime int64 `json:"loginTime"`
}

// Channels is an agent's channel configuration, each list sorted and without
// duplicates (the bridge compares channels as sets).
type Channels struct {
	// Allowed lists the channels allowed for the agent.
	Allowed []string `json:"allowed"`
	// Disabled lists the channels disabled for the agent.
	Disabled []string `json:"disabled"`
}

// Offline reasons: why an agent counts as offline.
const (
	// ReasonPresence: the presence's base status is Offline.
	ReasonPresence = "presence"
	// ReasonLogout: the agent has no browser session open.
	ReasonLogout = "logout"
	// ReasonPresenceAndLogout: both.
	ReasonPresenceAndLogout = "presence_and_logout"
)

// AgentState is an agent's current state as the bridge last published it: the
// value of the agent's key in the state bucket (schema
// schemas/agent-state.schema.json). It is the public current-state view.
type AgentState struct {
	// AgentID is the agent's systemuser ID, lower-case GUID.
	AgentID string `json:"agentId"`
	// AgentName is the agent's display name.
	AgentName string `json:"agentName"`
	// Sequence is the sequence of the last event published for the agent.
	Sequence uint64 `json:"sequence"`
	// StreamSequence is the JetStream stream sequence of that event: the
	// position the agent's next event must follow (0 when not known).
	StreamSequence uint64 `json:"streamSequence,omitempty"`
	// ObservedAt is when the bridge made the observation that last changed
	// this state.
	ObservedAt time.Time `json:"observedAt"`
	// Presence is the current presence.
	Presence Presence `json:"presence"`
	// PresenceSince is when the bridge first observed the current presence.
	PresenceSince time.Time `json:"presenceSince"`
	// Sessions is the current browser-session state.
	Sessions Sessions `json:"sessions"`
	// SessionsSince is when the bridge first observed the current sessions.
	SessionsSince time.Time `json:"sessionsSince"`
	// Channels is the current channel configuration.
	Channels Channels `json:"channels"`
	// ChannelsSince is when the bridge first observed the current channels.
	ChannelsSince time.Time `json:"channelsSince"`
	// Offline is true when the base status is Offline or no browser session
	// is open.
	Offline bool `json:"offline"`
	// OfflineReason says why the agent is offline (one of the Reason
	// constants); empty when it is not.
	OfflineReason string `json:"offlineReason,omitempty"`
	// OfflineSince is when the agent was first observed offline.
	OfflineSince *time.Time `json:"offlineSince,omitempty"`
	// Unattended is true when the base status is Available or Busy while no
	// browser session is open.
	Unattended bool `json:"unattended"`
	// UnattendedSince is when the agent was first observed unattended.
	UnattendedSince *time.Time `json:"unattendedSince,omitempty"`
	// Stale is true when the bridge has had no successful poll of the agent
	// for the stale period: the state may be out of date.
	Stale bool `json:"stale"`
	// StaleSince is when the bridge declared the agent stale.
	StaleSince *time.Time `json:"staleSince,omitempty"`
	// StaleErrorClass is the error class of the last failed poll when the
	// agent was declared stale.
	StaleErrorClass string `json:"staleErrorClass,omitempty"`
}

// Clone returns a deep copy of s.
func (s AgentState) Clone() AgentState {
	c := s
	c.Channels = Channels{Allowed: slices.Clone(s.Channels.Allowed), Disabled: slices.Clone(s.Channels.Disabled)}
	c.OfflineSince = clonePtr(s.OfflineSince)
	c.UnattendedSince = clonePtr(s.UnattendedSince)
	c.StaleSince = clonePtr(s.StaleSince)
	return c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// IsOffline reports whether p is an offline presence: its base status is
// Offline, or, when the base status is unknown, its name is "Offline"
// (case-insensitively).
func (p Presence) IsOffline() bool { return p.is("Offline") }

// TakesWork reports whether routing may offer work to an agent in p: its base
// status (or, when unknown, its name) is Available or Busy.
func (p Presence) TakesWork() bool { return p.is("Available") || p.is("Busy") }

func (p Presence) is(base string) bool {
	if p.BaseStatus != "" {
		return strings.EqualFold(p.BaseStatus, base)
	}
	return strings.EqualFold(strings.TrimSpace(p.Name), base)
}

// offlineReason returns why an agent with presence p and sessions s is
// offline, or "" when it is not.
func offlineReason(p Presence, s Sessions) string {
	byPresence, byLogout := p.IsOffline(), s.ActiveBrowserSessions == 0
	switch {
	case byPresence && byLogout:
		return ReasonPresenceAndLogout
	case byPresence:
		return ReasonPresence
	case byLogout:
		return ReasonLogout
	}
	return ""
}

// unattended reports whether an agent with presence p and sessions s cannot
// take the work routing may offer it.
func unattended(p Presence, s Sessions) bool {
	return p.TakesWork() && s.ActiveBrowserSessions == 0
}

// normaliseSet returns the sorted, de-duplicated copy of list, never nil.
func normaliseSet(list []string) []string {
	out := make([]string, 0, len(list))
	out = append(out, list...)
	slices.Sort(out)
	return slices.Compact(out)
}

// setDiff returns the members of a not in b; both sorted.
func setDiff(a, b []string) []string {
	out := []string{}
	for _, v := range a {
		if _, found := slices.BinarySearch(b, v); !found {
			out = append(out, v)
		}
	}
	return out
}
