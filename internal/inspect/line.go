package inspect

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// none stands for a missing previous value (the first sight of an agent).
const none = "(none)"

// Line renders ev as one line a person can read: time, agent name (or ID),
// type, and a summary of what changed (previous → current), with control
// characters escaped (Printable).
func Line(ev *event.Event) string {
	var data map[string]any
	_ = json.Unmarshal(ev.Data(), &data) // a non-object body leaves data nil
	name := str(data["agentName"])
	if name == "" {
		name = ev.Subject()
	}
	return Printable(fmt.Sprintf("%s  %s  %s  %s", ev.Time().UTC().Format(time.RFC3339), name, ev.Type(), summarize(ev.Type(), data, ev.Data())))
}

func summarize(typ string, d map[string]any, raw []byte) string {
	if d == nil {
		return strings.TrimSpace(string(raw))
	}
	switch typ {
	case "presence.changed":
		return orNone(d["previous"], presenceLabel) + " → " + presenceLabel(d["current"])
	case "sessions.changed":
		s := "sessions " + orNone(d["previous"], sessionsLabel) + " → " + sessionsLabel(d["current"])
		if c := str(d["change"]); c != "" {
			s += " (" + c + ")"
		}
		return s
	case "channels.changed":
		s := "channels " + orNone(d["previous"], channelsLabel) + " → " + channelsLabel(d["current"])
		var diff []string
		if a, ok := d["added"].(map[string]any); ok {
			for _, c := range list(a["allowed"]) {
				diff = append(diff, "+"+c)
			}
			for _, c := range list(a["disabled"]) {
				diff = append(diff, "+disabled "+c)
			}
		}
		if r, ok := d["removed"].(map[string]any); ok {
			for _, c := range list(r["allowed"]) {
				diff = append(diff, "-"+c)
			}
			for _, c := range list(r["disabled"]) {
				diff = append(diff, "-disabled "+c)
			}
		}
		if len(diff) > 0 {
			s += " (" + strings.Join(diff, ", ") + ")"
		}
		return s
	case "agent.offline":
		return fmt.Sprintf("offline (%s), presence %s, %s", str(d["reason"]), presenceLabel(d["presence"]), sessionsCount(d["activeBrowserSessions"]))
	case "agent.online":
		return fmt.Sprintf("online, presence %s, %s", presenceLabel(d["presence"]), sessionsCount(d["activeBrowserSessions"]))
	case "agent.unattended":
		return fmt.Sprintf("unattended, presence %s, %s", presenceLabel(d["presence"]), sessionsCount(d["activeBrowserSessions"]))
	case "presence.stale":
		return fmt.Sprintf("stale, no successful poll since %s (%s)", str(d["lastSuccessAt"]), str(d["errorClass"]))
	case "presence.resumed":
		return fmt.Sprintf("resumed after stale (%s)", str(d["errorClass"]))
	case "presence.snapshot":
		st, _ := d["state"].(map[string]any)
		ss, _ := st["sessions"].(map[string]any)
		return fmt.Sprintf("snapshot, presence %s, %s", presenceLabel(st["presence"]), sessionsCount(ss["activeBrowserSessions"]))
	default:
		return strings.TrimSpace(string(raw))
	}
}

func orNone(v any, label func(any) string) string {
	if v == nil {
		return none
	}
	return label(v)
}

// presenceLabel renders {"name":"In a meeting","baseStatus":"Away"} as
// "In a meeting (Away)", and a presence whose name is its base status as
// the name alone.
func presenceLabel(v any) string {
	p, ok := v.(map[string]any)
	if !ok {
		return compact(v)
	}
	name, base := str(p["name"]), str(p["baseStatus"])
	switch {
	case name == "":
		return str(p["id"])
	case base == "" || base == name:
		return name
	default:
		return name + " (" + base + ")"
	}
}

func sessionsLabel(v any) string {
	s, ok := v.(map[string]any)
	if !ok {
		return compact(v)
	}
	return num(s["activeBrowserSessions"])
}

// sessionsCount renders a number of browser sessions: "1 session",
// "2 sessions".
func sessionsCount(v any) string {
	if f, ok := v.(float64); ok && f == 1 {
		return "1 session"
	}
	return num(v) + " sessions"
}

func channelsLabel(v any) string {
	c, ok := v.(map[string]any)
	if !ok {
		return compact(v)
	}
	s := "[" + strings.Join(list(c["allowed"]), " ") + "]"
	if dis := list(c["disabled"]); len(dis) > 0 {
		s += " disabled [" + strings.Join(dis, " ") + "]"
	}
	return s
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any) string {
	if f, ok := v.(float64); ok {
		return fmt.Sprint(f)
	}
	return "?"
}

func list(v any) []string {
	xs, _ := v.([]any)
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
