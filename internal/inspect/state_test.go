package inspect

import (
	"bytes"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

var stateValues = map[string]string{
	alice: `{"agentId":"` + alice + `","agentName":"Alice Adams","sequence":4,"observedAt":"2025-03-04T09:00:03Z",` +
		`"presence":{"id":"efdeb843-c07a-e811-8162-000d3aa11f50","name":"Busy","baseStatus":"Busy"},"presenceSince":"2025-03-04T09:00:03.250Z",` +
		`"sessions":{"activeBrowserSessions":1,"loginTime":1741078800},"sessionsSince":"2025-03-04T09:00:01Z",` +
		`"channels":{"allowed":["chat"],"disabled":[]},"channelsSince":"2025-03-04T09:00:00Z",` +
		`"offline":false,"unattended":false,"stale":true,"staleSince":"2025-03-04T09:01:03Z"}`,
	bob: `{"agentId":"` + bob + `","agentName":"Bob Brown","sequence":3,"presence":{"id":"6a1e4c1c-0000-4000-8000-000000000001","name":"In a meeting","baseStatus":"Away"},` +
		`"presenceSince":"2025-03-04T09:00:02Z","observedAt":"2025-03-04T09:00:05Z","sessions":{"activeBrowserSessions":0,"loginTime":0},"sessionsSince":"2025-03-04T09:00:05Z",` +
		`"channels":{"allowed":["chat","voice"],"disabled":["voice"]},"channelsSince":"2025-03-04T09:00:04Z","offline":true,"offlineSince":"2025-03-04T09:00:05Z","offlineReason":"logout","unattended":false,"stale":false}`,
	"0e5a3f7e-0000-4000-8000-000000000003": `{"agentName":"Carol Chen","futureField":{"x":1}}`,
}

func TestState(t *testing.T) {
	const header = "AGENT        ID                                    PRESENCE             SINCE                 SESSIONS  FLAGS    SEQ\n"
	tests := []struct {
		name    string
		agent   string
		empty   bool
		want    string
		wantErr string
	}{
		{
			name: "all agents sorted by name",
			want: header +
				"Alice Adams  394382b6-a4d4-ee11-904c-00224808a166  Busy                 2025-03-04T09:00:03Z  1         stale    4\n" +
				"Bob Brown    cc05cf62-6242-ee11-be6e-6045bdd7ac2c  In a meeting (Away)  2025-03-04T09:00:02Z  0         offline  3\n" +
				"Carol Chen   0e5a3f7e-0000-4000-8000-000000000003  -                    -                     -         -        -\n",
		},
		{
			name:  "one agent",
			agent: strings.ToUpper(bob),
			want: "AGENT      ID                                    PRESENCE             SINCE                 SESSIONS  FLAGS    SEQ\n" +
				"Bob Brown  cc05cf62-6242-ee11-be6e-6045bdd7ac2c  In a meeting (Away)  2025-03-04T09:00:02Z  0         offline  3\n",
		},
		{
			name:    "unknown agent",
			agent:   "00000000-0000-0000-0000-000000000000",
			wantErr: "agent 00000000-0000-0000-0000-000000000000: not in bucket ccaas_agents",
		},
		{
			name:  "empty bucket",
			empty: true,
			want:  "AGENT  ID  PRESENCE  SINCE  SESSIONS  FLAGS  SEQ\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := startJetStream(t)
			kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "ccaas_agents"})
			if err != nil {
				t.Fatalf("create bucket: %v", err)
			}
			if !tt.empty {
				for k, v := range stateValues {
					if _, err := kv.Put(t.Context(), k, []byte(v)); err != nil {
						t.Fatal(err)
					}
				}
				// A deleted agent is not shown.
				if _, err := kv.Put(t.Context(), "deleted-agent", []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
				if err := kv.Delete(t.Context(), "deleted-agent"); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			err = State(t.Context(), kv, tt.agent, &out)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("State error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("State: %v", err)
			}
			if out.String() != tt.want {
				t.Errorf("State output:\n%s\nwant:\n%s", out.String(), tt.want)
			}
		})
	}
}

// TestStateEscapesControlCharacters shows a state whose agent and presence
// names carry terminal escape sequences: the table holds them escaped.
func TestStateEscapesControlCharacters(t *testing.T) {
	js := startJetStream(t)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "ccaas_agents"})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	const id = "0e5a3f7e-0000-4000-8000-000000000004"
	if _, err := kv.Put(t.Context(), id, []byte(`{"agentName":"Mallory\u001b[2J\u202e","presence":{"name":"\u001b]0;x\u0007","baseStatus":"Available"}}`)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := State(t.Context(), kv, id, &out); err != nil {
		t.Fatalf("State: %v", err)
	}
	want := "AGENT                 ID                                    PRESENCE                SINCE  SESSIONS  FLAGS  SEQ\n" +
		`Mallory\x1b[2J\u202e  ` + id + `  \x1b]0;x\a (Available)  -      -         -      -` + "\n"
	if out.String() != want {
		t.Errorf("State output:\n%s\nwant:\n%s", out.String(), want)
	}
}
