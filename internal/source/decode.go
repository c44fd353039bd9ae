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
// (a GUID in any case). It is tolerant where the documentation promises
// nothing and strict about identity:
//
//   - the body must be one JSON object and every key present must have its
//     documented JSON type (integers for ActiveBrowserSessions and
//     Timestamp, strings for the names and GUIDs, arrays of strings for the
//     channel lists); unknown extra keys are ignored;
//   - AgentId must be present, a GUID, and equal wantAgent;
//   - null or absent channel lists are empty lists (null entries in a list
//     are dropped); a null or absent name is empty;
//   - a null, absent or zero Timestamp means the agent is not logged in:
//     LoginTime and ActiveBrowserSessions are 0;
//   - PresenceId must be present and a GUID (every event names the
//     presence by its ID);
//   - ActiveBrowserSessions must not be negative.
//
// GUIDs are returned lower-case. BaseStatus and ObservedAt are left for the
// caller to fill. Key names are matched as encoding/json matches them (exact
// match preferred, case-insensitive otherwise).
func Decode(body []byte, wantAgent string) (Snapshot, error) {
	var w wirePresence
	if err := json.Unmarshal(body, &w); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if w.AgentID == nil {
		return Snapshot{}, fmt.Errorf("%w: missing or null AgentId", errMalformed)
	}
	agent, ok := NormalizeGUID(*w.AgentID)
	if !ok {
		return Snapshot{}, fmt.Errorf("%w: AgentId %q is not a GUID", errMalformed, truncate(*w.AgentID))
	}
	want, _ := NormalizeGUID(wantAgent)
	if agent != want {
		return Snapshot{}, fmt.Errorf("%w: AgentId %s is not the agent asked for (%s)", errMalformed, agent, want)
	}
	snap := Snapshot{
		AgentID:          agent,
		AgentName:        deref(w.AgentName),
		PresenceName:     deref(w.CurrentPresenceStatusInfo),
		AllowedChannels:  channelList(w.AllowedChannels),
		DisabledChannels: channelList(w.DisabledChannels),
	}
	if w.PresenceID == nil {
		return Snapshot{}, fmt.Errorf("%w: missing or null PresenceId", errMalformed)
	}
	presence, ok := NormalizeGUID(*w.PresenceID)
	if !ok {
		return Snapshot{}, fmt.Errorf("%w: PresenceId %q is not a GUID", errMalformed, truncate(*w.PresenceID))
	}
	snap.PresenceID = presence
	if w.ActiveBrowserSessions != nil {
		if *w.ActiveBrowserSessions < 0 {
			return Snapshot{}, fmt.Errorf("%w: ActiveBrowserSessions %d is negative", errMalformed, *w.ActiveBrowserSessions)
		}
		snap.ActiveBrowserSessions = *w.ActiveBrowserSessions
	}
	if w.Timestamp != nil && *w.Timestamp > 0 {
		snap.LoginTime = *w.Timestamp
	} else {
		// Never logged in, or logged out with the login time cleared.
		snap.ActiveBrowserSessions = 0
	}
	return snap, nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// channelList returns the list without the empty strings a null entry
// decodes to, never nil.
func channelList(p *[]string) []string {
	if p == nil {
		return []string{}
	}
	out := make([]string, 0, len(*p))
	for _, c := range *p {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
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
