// Package source polls the Dynamics 365 Contact Center presence API
// (CCaaS_GetPresence) for every configured agent and hands each result to a
// Sink. It owns authentication, per-agent pacing, backoff and error classes.
// It knows nothing of change detection or publishing. Its defaults
// (DefaultMaxConcurrency, DefaultBackoffMax, ...) equal the BRIDGE_
// variables' defaults; a test in cmd/bridge keeps them so.
//
// See the package example for the wiring cmd/bridge uses. With the change
// feed on (BRIDGE_FEED, docs/feed.md) the Feed is built before the poller,
// and the poller's Sink is feed.Sink(pipeline): see the example of NewFeed.
package source

import (
	"context"
	"time"
)

// Snapshot is one successful, validated observation of an agent's presence,
// normalised for comparison: GUIDs lower-case, channel lists as returned.
type Snapshot struct {
	// AgentID is the agent's systemuser ID, lower-case GUID.
	AgentID string
	// AgentName is the agent's display name.
	AgentName string
	// PresenceID is the presence's msdyn_presence ID, lower-case GUID.
	PresenceID string
	// PresenceName is CurrentPresenceStatusInfo, the presence's display name.
	PresenceName string
	// BaseStatus is the base presence status the presence maps to
	// ("Available", "Busy", "Busy - DND", "Away", "Offline", "Inactive"), or "" when the
	// presence catalogue does not know PresenceID.
	BaseStatus string
	// ActiveBrowserSessions is the number of browser tabs the agent has open.
	ActiveBrowserSessions int
	// LoginTime is the login Timestamp in seconds since the epoch; 0 when
	// the agent is not logged in (a null or zero Timestamp).
	LoginTime int64
	// AllowedChannels lists the channels allowed for the agent.
	AllowedChannels []string
	// DisabledChannels lists the channels disabled for the agent.
	DisabledChannels []string
	// ObservedAt is when the response was received; zero on a Snapshot
	// Client.Poll keeps as the agent's last answer and shares with every
	// poll that returns it: the poll's time is then its Observation's At.
	ObservedAt time.Time
	// PresenceChangedAt is when the presence began at the source, when
	// known (a change-feed row's msdyn_starttime); zero for a poll, which
	// knows only when it saw the presence.
	PresenceChangedAt time.Time
}

// ErrorClass names how a failed poll is treated; it is also the value of the
// "result" label of the poll metrics. ClassOK marks a successful poll.
type ErrorClass string

// Error classes, from the status table of the CCaaS_GetPresence contract,
// and ClassToken for a poll no token could be obtained for.
const (
	ClassOK          ErrorClass = "ok"
	ClassPermanent   ErrorClass = "permanent"    // 400, 404, 405
	ClassAuth        ErrorClass = "unauthorized" // 401
	ClassRateLimited ErrorClass = "rate_limited" // 429
	ClassServer      ErrorClass = "server_error" // 5xx
	ClassTransport   ErrorClass = "transport"    // timeouts, connection errors
	ClassMalformed   ErrorClass = "malformed"    // body not of the documented shape
	// ClassToken marks a poll that could not be made because no token
	// could be obtained from the token provider (Entra ID unreachable,
	// credential refused, token file unreadable). It is treated like
	// ClassAuth: backoff.
	ClassToken ErrorClass = "token"
)

// Observation is the outcome of one poll of one agent: a Snapshot on
// success, or the error and its class on failure.
type Observation struct {
	// AgentID is the agent that was polled, lower-case GUID.
	AgentID string
	// At is when the poll finished.
	At time.Time
	// Sent is when the poll's request was sent (zero: not known). Its
	// answer shows the agent at some instant between Sent and At, so only
	// an answer sent after another observation ended is known to be newer.
	Sent time.Time
	// Snapshot is set when Class is ClassOK. It is read-only: polls whose
	// answers repeat the agent's last share one Snapshot.
	Snapshot *Snapshot
	// Class classifies the outcome.
	Class ErrorClass
	// Err is the error of a failed poll; it never contains a secret.
	Err error
	// Row, when set, is a presence change read from the change feed
	// (Snapshot is nil, Class is ClassOK): the agent's presence since
	// Row.ChangedAt at the source, observed At.
	Row *PresenceRow
	// FeedHold is set on a poll result while the change feed reports the
	// agent's presence: a presence differing from the agent's state is
	// held (not published) until the feed reports it, and published from
	// the poll only if polls still see it FeedHold after first seeing it
	// (the feed missed it). Zero: the poll's presence is published at once.
	FeedHold time.Duration
}

// PresenceRow is one presence change of an agent as the change feed reads
// it from msdyn_agentstatushistory.
type PresenceRow struct {
	// RowID is the history row's msdyn_agentstatushistoryid, lower-case.
	RowID string
	// AgentID is the agent (_msdyn_agentid_value), lower-case GUID.
	AgentID string
	// PresenceID is the new presence's msdyn_presence ID, lower-case GUID.
	PresenceID string
	// PresenceName and BaseStatus are the catalogue's for PresenceID ("" when
	// it does not know the presence).
	PresenceName, BaseStatus string
	// ChangedAt is when the presence began at the source (msdyn_starttime).
	ChangedAt time.Time
	// CreatedAt is when the row was written (createdon): the feed's watermark.
	CreatedAt time.Time
}

// Sink receives every observation. Observe may block: a blocked Sink holds
// back the poller that produced the observation, which is how downstream
// backpressure reaches the source. An error from Observe is logged and the
// agent keeps being polled.
type Sink interface {
	Observe(ctx context.Context, o Observation) error
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(ctx context.Context, o Observation) error

// Observe calls f.
func (f SinkFunc) Observe(ctx context.Context, o Observation) error { return f(ctx, o) }
