package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// wirePresence is the CCaaS_GetPresence response as it travels. Pointers
// tell a missing (or null) key from a zero value; encoding/json rejects a
// value of the wrong JSON type and ignores keys it does not know (such as
// "@odata.context").
type wirePresence struct {
	ActiveBrowserSessions     *int      `json:"ActiveBrowserSessions"`
	AgentID                   *string   `json:"AgentId"`
	AgentName                 *string   `json:"AgentName"`
	Timestamp                 *int64    `json:"Timestamp"`
	AllowedChannels           *[]string `json:"AllowedChannels"`
	CurrentPresenceStatusInfo *string   `json:"CurrentPresenceStatusInfo"`
	DisabledChannels          *[]string `json:"DisabledChannels"`
	PresenceID                *string   `json:"PresenceId"`
}

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("response is not the documented presence object")

// Decode parses a CCaaS_GetPresence response body for the agent wantAgent
// (a GUID in any case) strictly: the body must be one JSON object; every
// documented key must be present, not null, and of its documented JSON type
// (integers for ActiveBrowserSessions and Timestamp, GUID strings for
// AgentId and PresenceId, arrays of strings for the channel lists);
// ActiveBrowserSessions must not be negative; AgentId must equal wantAgent.
// Unknown keys are ignored. GUIDs are returned lower-case. BaseStatus and
// ObservedAt are left for the caller to fill.
//
// Key names are matched as encoding/json matches them (exact match
// preferred, case-insensitive otherwise).
func Decode(body []byte, wantAgent string) (Snapshot, error) {
	var w wirePresence
	if err := json.Unmarshal(body, &w); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %w", errMalformed, err)
	}
	var missing []string
	if w.ActiveBrowserSessions == nil {
		missing = append(missing, "ActiveBrowserSessions")
	}
	if w.AgentID == nil {
		missing = append(missing, "AgentId")
	}
	if w.AgentName == nil {
		missing = append(missing, "AgentName")
	}
	if w.Timestamp == nil {
		missing = append(missing, "Timestamp")
	}
	if w.AllowedChannels == nil {
		missing = append(missing, "AllowedChannels")
	}
	if w.CurrentPresenceStatusInfo == nil {
		missing = append(missing, "CurrentPresenceStatusInfo")
	}
	if w.DisabledChannels == nil {
		missing = append(missing, "DisabledChannels")
	}
	if w.PresenceID == nil {
		missing = append(missing, "PresenceId")
	}
	if len(missing) > 0 {
		return Snapshot{}, fmt.Errorf("%w: missing or null %s", errMalformed, strings.Join(missing, ", "))
	}
	agent, ok := NormalizeGUID(*w.AgentID)
	if !ok {
		return Snapshot{}, fmt.Errorf("%w: AgentId %q is not a GUID", errMalformed, truncate(*w.AgentID))
	}
	want, _ := NormalizeGUID(wantAgent)
	if agent != want {
		return Snapshot{}, fmt.Errorf("%w: AgentId %s is not the agent asked for (%s)", errMalformed, agent, want)
	}
	presence, ok := NormalizeGUID(*w.PresenceID)
	if !ok {
		return Snapshot{}, fmt.Errorf("%w: PresenceId %q is not a GUID", errMalformed, truncate(*w.PresenceID))
	}
	if *w.ActiveBrowserSessions < 0 {
		return Snapshot{}, fmt.Errorf("%w: ActiveBrowserSessions %d is negative", errMalformed, *w.ActiveBrowserSessions)
	}
	return Snapshot{
		AgentID:               agent,
		AgentName:             *w.AgentName,
		PresenceID:            presence,
		PresenceName:          *w.CurrentPresenceStatusInfo,
		ActiveBrowserSessions: *w.ActiveBrowserSessions,
		LoginTime:             *w.Timestamp,
		AllowedChannels:       *w.AllowedChannels,
		DisabledChannels:      *w.DisabledChannels,
	}, nil
}

// NormalizeGUID returns s lower-case if it is a GUID in the 8-4-4-4-12
// hexadecimal form, and false otherwise.
func NormalizeGUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	lower := true
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
			continue
		}
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			lower = false
		default:
			return "", false
		}
	}
	if lower {
		return s, true
	}
	return strings.ToLower(s), true
}

// truncate bounds a value echoed into an error.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
