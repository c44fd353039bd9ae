package inspect

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/detector"
)

// TestEventTypesAreTheDetectors: the types the CLI accepts (from the
// contract's schemas) are exactly those the bridge emits.
func TestEventTypesAreTheDetectors(t *testing.T) {
	want := detector.Types()
	slices.Sort(want)
	if got := EventTypes(); !slices.Equal(got, want) {
		t.Fatalf("EventTypes() = %v, detector.Types() = %v", got, want)
	}
}

func TestCheckType(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", ""},
		{"presence.changed", ""},
		{"agent.offline", ""},
		{"presence.change", `unknown event type "presence.change": did you mean presence.changed?`},
		{"Agent.Offline", `unknown event type "Agent.Offline": did you mean agent.offline?`},
		{"presence", `unknown event type "presence" (types: agent.offline, `},
	}
	for _, tt := range tests {
		err := CheckType(tt.in)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("CheckType(%q) = %v, want nil", tt.in, err)
		case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
			t.Errorf("CheckType(%q) = %v, want prefix %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestResolveAgent(t *testing.T) {
	js := startJetStream(t)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "ccaas_agents"})
	if err != nil {
		t.Fatal(err)
	}
	agents := map[string]string{
		"394382b6-a4d4-ee11-904c-00224808a166": "Olga Petrova",
		"cc05cf62-6242-ee11-be6e-6045bdd7ac2c": "Lucía García",
		"0e5a3f7e-0000-4000-8000-000000000003": "Olga Nowak",
		"0e5a3f7e-0000-4000-8000-000000000004": "Liam Okafor",
	}
	for id, name := range agents {
		if _, err := kv.Put(t.Context(), id, []byte(`{"agentId":"`+id+`","agentName":"`+name+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(t.Context(), "0e5a3f7e-0000-4000-8000-000000000009", []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		query, want, wantErr string
	}{
		{query: "{CC05CF62-6242-EE11-BE6E-6045BDD7AC2C}", want: "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"},
		{query: "00000000-0000-0000-0000-000000000000", want: "00000000-0000-0000-0000-000000000000"}, // a GUID is taken as given
		{query: "Olga Petrova", want: "394382b6-a4d4-ee11-904c-00224808a166"},
		{query: "olga  petrova", want: "394382b6-a4d4-ee11-904c-00224808a166"},
		{query: "Lucia Garcia", want: "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"},
		{query: "García", want: "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"},
		{query: "Liam", want: "0e5a3f7e-0000-4000-8000-000000000004"},
		{query: "Olga", wantErr: `agent "Olga" matches 2 agents: Olga Nowak (0e5a3f7e-0000-4000-8000-000000000003), Olga Petrova (394382b6-a4d4-ee11-904c-00224808a166); give the agent's ID or full name`},
		{query: "Olga Petrov", wantErr: `no agent named "Olga Petrov" in bucket ccaas_agents; close matches: Olga Petrova (394382b6-a4d4-ee11-904c-00224808a166)`},
		{query: "Okafr", wantErr: `no agent named "Okafr" in bucket ccaas_agents; close matches: Liam Okafor (0e5a3f7e-0000-4000-8000-000000000004)`},
		{query: "Zebedee", wantErr: `no agent named "Zebedee" in bucket ccaas_agents (bridge state lists every agent)`},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			got, err := ResolveAgent(t.Context(), kv, tt.query)
			if tt.wantErr != "" {
				var nf *AgentNotFoundError
				if err == nil || err.Error() != tt.wantErr || !errors.As(err, &nf) {
					t.Fatalf("ResolveAgent(%q) = %q, %v; want error %q", tt.query, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ResolveAgent(%q) = %q, %v; want %q", tt.query, got, err, tt.want)
			}
		})
	}
}
