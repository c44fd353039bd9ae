package source_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ccaas/presence-bridge/internal/source"
)

const (
	agentA    = "394382b6-a4d4-ee11-904c-00224808a166"
	agentB    = "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"
	available = "f523f628-c07a-e811-8162-000d3aa11f50"
)

// body returns a CCaaS_GetPresence body for agent with the given fields
// replaced (a value of "" deletes the key).
func body(agent string, repl map[string]string) string {
	fields := [][2]string{
		{"@odata.context", `"https://org.crm.dynamics.com/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.CCaaS_GetPresenceResponse"`},
		{"ActiveBrowserSessions", `1`},
		{"AgentId", `"` + agent + `"`},
		{"AgentName", `"Ada Lovelace"`},
		{"Timestamp", `1717171717`},
		{"AllowedChannels", `["chat","voice"]`},
		{"CurrentPresenceStatusInfo", `"Available"`},
		{"DisabledChannels", `[]`},
		{"PresenceId", `"` + available + `"`},
	}
	var b strings.Builder
	b.WriteString("{")
	first := true
	for _, f := range fields {
		v := f[1]
		if r, ok := repl[f[0]]; ok {
			v = r
		}
		if v == "" {
			continue
		}
		if !first {
			b.WriteString(",")
		}
		first = false
		b.WriteString(`"` + f[0] + `":` + v)
	}
	b.WriteString("}")
	return b.String()
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    string // agent asked for
		wantErr string // substring; "" for success
	}{
		{"documented shape", body(agentA, nil), agentA, ""},
		{"unknown keys ignored", body(agentA, map[string]string{"@odata.context": `{"nested":[1,2]}`}), agentA, ""},
		{"upper-case GUIDs", body(strings.ToUpper(agentA), map[string]string{"PresenceId": `"` + strings.ToUpper(available) + `"`}), agentA, ""},
		{"asked in upper case", body(agentA, nil), strings.ToUpper(agentA), ""},
		{"not JSON", "<html>Service Unavailable</html>", agentA, "invalid character"},
		{"empty", "", agentA, "unexpected end"},
		{"truncated", body(agentA, nil)[:60], agentA, "unexpected end"},
		{"array", "[]", agentA, "cannot unmarshal array"},
		{"null", "null", agentA, "missing or null AgentId"},
		{"trailing data", body(agentA, nil) + "{}", agentA, "invalid character"},
		{"missing AgentId", body(agentA, map[string]string{"AgentId": ""}), agentA, "missing or null AgentId"},
		{"null AgentId", body(agentA, map[string]string{"AgentId": "null"}), agentA, "missing or null AgentId"},
		{"null PresenceId", body(agentA, map[string]string{"PresenceId": "null"}), agentA, "missing or null PresenceId"},
		{"sessions as string", body(agentA, map[string]string{"ActiveBrowserSessions": `"1"`}), agentA, "cannot unmarshal string"},
		{"sessions fractional", body(agentA, map[string]string{"ActiveBrowserSessions": `1.5`}), agentA, "cannot unmarshal number"},
		{"sessions negative", body(agentA, map[string]string{"ActiveBrowserSessions": `-1`}), agentA, "negative"},
		{"timestamp as string", body(agentA, map[string]string{"Timestamp": `"1717171717"`}), agentA, "cannot unmarshal string"},
		{"channels as string", body(agentA, map[string]string{"AllowedChannels": `"chat"`}), agentA, "cannot unmarshal string"},
		{"channel not string", body(agentA, map[string]string{"DisabledChannels": `[1]`}), agentA, "cannot unmarshal number"},
		{"name as number", body(agentA, map[string]string{"AgentName": `42`}), agentA, "cannot unmarshal number"},
		{"AgentId not GUID", body("not-a-guid", nil), agentA, "is not a GUID"},
		{"PresenceId not GUID", body(agentA, map[string]string{"PresenceId": `"available"`}), agentA, "PresenceId"},
		{"other agent", body(agentB, nil), agentA, "not the agent asked for"},
		{"extra keys of any type", "{" + `"Extra":{"a":[null,1]},"msdyn_x":null,` + body(agentA, nil)[1:], agentA, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := source.Decode([]byte(tt.body), tt.want)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			want := source.Snapshot{
				AgentID: agentA, AgentName: "Ada Lovelace", PresenceID: available, PresenceName: "Available",
				ActiveBrowserSessions: 1, LoginTime: 1717171717,
			}
			if got.AgentID != want.AgentID || got.PresenceID != want.PresenceID || got.AgentName != want.AgentName ||
				got.PresenceName != want.PresenceName || got.ActiveBrowserSessions != 1 || got.LoginTime != want.LoginTime ||
				strings.Join(got.AllowedChannels, ",") != "chat,voice" || got.DisabledChannels == nil || len(got.DisabledChannels) != 0 {
				t.Fatalf("Decode = %+v", got)
			}
		})
	}
}

// TestDecodeTolerant: nulls and absent keys the documentation does not
// promise become empty values; only the agent's identity stays strict.
func TestDecodeTolerant(t *testing.T) {
	tests := []struct {
		name string
		repl map[string]string
		want source.Snapshot
	}{
		{"null lists", map[string]string{"AllowedChannels": "null", "DisabledChannels": "null"},
			source.Snapshot{AgentName: "Ada Lovelace", PresenceID: available, PresenceName: "Available", ActiveBrowserSessions: 1, LoginTime: 1717171717}},
		{"absent lists", map[string]string{"AllowedChannels": "", "DisabledChannels": ""},
			source.Snapshot{AgentName: "Ada Lovelace", PresenceID: available, PresenceName: "Available", ActiveBrowserSessions: 1, LoginTime: 1717171717}},
		{"null entries in a list", map[string]string{"AllowedChannels": `["chat",null]`, "DisabledChannels": "[]"},
			source.Snapshot{AgentName: "Ada Lovelace", PresenceID: available, PresenceName: "Available", ActiveBrowserSessions: 1, LoginTime: 1717171717, AllowedChannels: []string{"chat"}}},
		{"null Timestamp is not logged in", map[string]string{"Timestamp": "null", "AllowedChannels": "[]"},
			source.Snapshot{AgentName: "Ada Lovelace", PresenceID: available, PresenceName: "Available"}},
		{"zero Timestamp is not logged in", map[string]string{"Timestamp": "0", "AllowedChannels": "[]"},
			source.Snapshot{AgentName: "Ada Lovelace", PresenceID: available, PresenceName: "Available"}},
		{"null names and sessions", map[string]string{"AgentName": "null", "CurrentPresenceStatusInfo": "null", "ActiveBrowserSessions": "null", "AllowedChannels": "[]"},
			source.Snapshot{PresenceID: available, LoginTime: 1717171717}},
		{"everything but the IDs absent", map[string]string{"ActiveBrowserSessions": "", "AgentName": "", "Timestamp": "", "AllowedChannels": "", "CurrentPresenceStatusInfo": "", "DisabledChannels": ""},
			source.Snapshot{PresenceID: available}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := source.Decode([]byte(body(agentA, tt.repl)), agentA)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			w := tt.want
			w.AgentID = agentA
			if w.AllowedChannels == nil {
				w.AllowedChannels = []string{}
			}
			w.DisabledChannels = []string{}
			if got.AgentID != w.AgentID || got.AgentName != w.AgentName || got.PresenceID != w.PresenceID || got.PresenceName != w.PresenceName ||
				got.ActiveBrowserSessions != w.ActiveBrowserSessions || got.LoginTime != w.LoginTime ||
				got.AllowedChannels == nil || got.DisabledChannels == nil ||
				strings.Join(got.AllowedChannels, ",") != strings.Join(w.AllowedChannels, ",") || len(got.DisabledChannels) != 0 {
				t.Fatalf("Decode = %+v\nwant     %+v", got, w)
			}
		})
	}
}

// FuzzDecode checks that Decode never panics, that what it accepts has the
// documented shape (GUIDs lower-case, the agent asked for, counts not
// negative, lists not nil), and that errors stay bounded.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(body(agentA, nil)))
	f.Add([]byte(body(agentB, nil)))
	f.Add([]byte("{}"))
	f.Add([]byte(body(agentA, map[string]string{"AllowedChannels": "null", "Timestamp": "null", "PresenceId": "null"})))
	f.Add([]byte(`{"Extra":[null,{"k":null}],` + body(agentA, nil)[1:]))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := source.Decode(b, agentA)
		if err != nil {
			if s.AgentID != "" {
				t.Fatalf("error %v with a snapshot %+v", err, s)
			}
			return
		}
		if s.AgentID != agentA {
			t.Fatalf("accepted agent %q, asked for %q", s.AgentID, agentA)
		}
		if p, ok := source.NormalizeGUID(s.PresenceID); !ok || p != s.PresenceID {
			t.Fatalf("accepted PresenceId %q", s.PresenceID)
		}
		if s.ActiveBrowserSessions < 0 || s.AllowedChannels == nil || s.DisabledChannels == nil || (s.LoginTime == 0 && s.ActiveBrowserSessions != 0) {
			t.Fatalf("accepted %+v", s)
		}
	})
}

func TestPollErrorExcerptBoundedAndRedacted(t *testing.T) {
	secret := "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-part"
	pe := &source.PollError{AgentID: agentA, Class: source.ClassMalformed, Err: errors.New("bad")}
	_ = pe
	long := strings.Repeat("x", 10_000)
	for _, b := range []string{long, "echo " + secret, strings.Repeat("y", source.MaxExcerpt-10) + secret} {
		ex := source.ExcerptForTest([]byte(b), secret)
		if len(ex) > source.MaxExcerpt+16 {
			t.Errorf("excerpt of %d bytes is %d long", len(b), len(ex))
		}
		if strings.Contains(ex, secret[:12]) {
			t.Errorf("excerpt %q contains the token", ex)
		}
	}
}
