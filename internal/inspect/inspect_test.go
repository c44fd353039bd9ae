package inspect

import (
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr string
	}{
		{in: "", want: time.Time{}},
		{in: "10m", want: now.Add(-10 * time.Minute)},
		{in: " 1h30m ", want: now.Add(-90 * time.Minute)},
		{in: "2025-03-04T09:00:00Z", want: time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)},
		{in: "2025-03-04T10:00:00.5+01:00", want: time.Date(2025, 3, 4, 9, 0, 0, 5e8, time.UTC)},
		{in: "-5m", wantErr: `time "-5m": a duration must not be negative`},
		{in: "yesterday", wantErr: `time "yesterday" is neither a duration like 10m nor an RFC 3339 time like 2025-01-02T15:04:05Z`},
		{in: "2025-03-04", wantErr: `time "2025-03-04" is neither a duration like 10m nor an RFC 3339 time like 2025-01-02T15:04:05Z`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSince(tt.in, now)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("ParseSince(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || !got.Equal(tt.want) {
				t.Fatalf("ParseSince(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestFilterSubject(t *testing.T) {
	tests := []struct{ prefix, agent, typ, want string }{
		{"", "", "", "ccaas.agents.*.>"},
		{"ccaas.agents", "ABC", "", "ccaas.agents.abc.>"},
		{"x.y", "", "presence.changed", "x.y.*.presence.changed"},
		{"x", "a", "agent.offline", "x.a.agent.offline"},
	}
	for _, tt := range tests {
		if got := filterSubject(tt.prefix, tt.agent, tt.typ); got != tt.want {
			t.Errorf("filterSubject(%q, %q, %q) = %q, want %q", tt.prefix, tt.agent, tt.typ, got, tt.want)
		}
	}
}

func TestLine(t *testing.T) {
	at := time.Date(2025, 3, 4, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	tests := []struct {
		typ, data, want string
	}{
		{"agent.online", `{"agentName":"A","presence":{"name":"Available","baseStatus":"Available"},"activeBrowserSessions":2}`,
			"2025-03-04T09:00:00Z  A  agent.online  online, presence Available, 2 sessions"},
		{"agent.unattended", `{"agentName":"A","presence":{"name":"Busy","baseStatus":"Busy"},"activeBrowserSessions":0}`,
			"2025-03-04T09:00:00Z  A  agent.unattended  unattended, presence Busy, 0 sessions"},
		{"presence.resumed", `{"agentName":"A","errorClass":"server_error"}`,
			"2025-03-04T09:00:00Z  A  presence.resumed  resumed after stale (server_error)"},
		{"presence.snapshot", `{"agentName":"A","state":{"presence":{"name":"In a meeting","baseStatus":"Away"},"sessions":{"activeBrowserSessions":1}}}`,
			"2025-03-04T09:00:00Z  A  presence.snapshot  snapshot, presence In a meeting (Away), 1 session"},
		{"sessions.changed", `{"agentName":"A","change":"logout","previous":{"activeBrowserSessions":2},"current":{"activeBrowserSessions":0}}`,
			"2025-03-04T09:00:00Z  A  sessions.changed  sessions 2 → 0 (logout)"},
		{"channels.changed", `{"agentName":"A","previous":null,"current":{"allowed":["chat"],"disabled":[]},"added":{"allowed":["chat"],"disabled":[]},"removed":{"allowed":[],"disabled":[]}}`,
			"2025-03-04T09:00:00Z  A  channels.changed  channels (none) → [chat] (+chat)"},
		{"something.new", `{"agentName":"A","x":1}`,
			`2025-03-04T09:00:00Z  A  something.new  {"agentName":"A","x":1}`},
		{"presence.changed", `"not an object"`,
			`2025-03-04T09:00:00Z  ` + alice + `  presence.changed  "not an object"`},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			e := event.New()
			e.SetID("x")
			e.SetSource("s")
			e.SetType(tt.typ)
			e.SetSubject(alice)
			e.SetTime(at)
			if err := e.SetData(event.ApplicationJSON, []byte(tt.data)); err != nil {
				t.Fatal(err)
			}
			if got := Line(&e); got != tt.want {
				t.Errorf("Line =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}
