package contract_test

import (
	"testing"

	"github.com/ccaas/presence-bridge/internal/contract"
)

func TestSubjects(t *testing.T) {
	const agent = "394382b6-a4d4-ee11-904c-00224808a166"
	tests := []struct {
		name, got, want string
	}{
		{"event", contract.Subject(contract.SubjectPrefix, agent, "presence.changed"), "ccaas.agents." + agent + ".presence.changed"},
		{"agent", contract.AgentSubjects("p", agent), "p." + agent + ".>"},
		{"filter agent and type", contract.Filter("p", agent, "agent.offline"), "p." + agent + ".agent.offline"},
		{"filter type", contract.Filter("p", "", "agent.offline"), "p.*.agent.offline"},
		{"filter agent", contract.Filter("p", agent, ""), "p." + agent + ".>"},
		{"filter all", contract.Filter("p", "", ""), "p.*.>"},
		{"stream", contract.StreamSubjects(contract.SubjectPrefix), "ccaas.agents.>"},
		{"schema", contract.DataSchema("agent.online"), contract.SchemaBaseURL + "agent.online.schema.json"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}
