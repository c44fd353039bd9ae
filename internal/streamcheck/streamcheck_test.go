package streamcheck

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ccaas/presence-bridge/internal/detector"
)

func self(e Event) Event { return e }

func TestSequences(t *testing.T) {
	tests := []struct {
		name    string
		events  []Event
		want    map[string]int // events per agent
		problem string         // substring of the only problem; "" none
	}{
		{name: "in order", events: []Event{
			{ID: "a1", Agent: "a", Sequence: 1}, {ID: "b1", Agent: "b", Sequence: 1}, {ID: "a2", Agent: "a", Sequence: 2},
		}, want: map[string]int{"a": 2, "b": 1}},
		{name: "gap", events: []Event{
			{ID: "a1", Agent: "a", Sequence: 1}, {ID: "a3", Agent: "a", Sequence: 3},
		}, want: map[string]int{"a": 2}, problem: "sequence 3 where 2 was due"},
		{name: "duplicate ID", events: []Event{
			{ID: "x", Agent: "a", Sequence: 1}, {ID: "x", Agent: "b", Sequence: 1},
		}, want: map[string]int{"a": 1, "b": 1}, problem: "duplicate event x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			by, problems := Sequences(tt.events, self)
			got := map[string]int{}
			for a, evs := range by {
				got[a] = len(evs)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("by agent %v, want %v", got, tt.want)
			}
			checkProblems(t, problems, tt.problem)
		})
	}
}

func TestChained(t *testing.T) {
	pc := detector.TypePresenceChanged
	tests := []struct {
		name    string
		events  []Event
		problem string
	}{
		{name: "follows on", events: []Event{
			{Agent: "a", Type: pc, Previous: "null", Current: "1"},
			{Agent: "b", Type: pc, Previous: "null", Current: "7"},
			{Agent: "a", Type: detector.TypeSessionsChanged, Previous: "null", Current: "s"},
			{Agent: "a", Type: pc, Previous: "1", Current: "2"},
			{Agent: "a", Type: "agent.offline", Previous: "whatever"},
		}},
		{name: "first not null", events: []Event{{ID: "e", Agent: "a", Type: pc, Previous: "1", Current: "2"}},
			problem: "has previous 1"},
		{name: "contradicts", events: []Event{
			{Agent: "a", Type: pc, Previous: "null", Current: "1"},
			{ID: "e2", Agent: "a", Type: pc, Previous: "3", Current: "4"},
		}, problem: "said current 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, Chained(tt.events, self), tt.problem)
		})
	}
}

func checkProblems(t *testing.T, problems []string, want string) {
	t.Helper()
	switch {
	case want == "" && len(problems) > 0:
		t.Errorf("problems %q, want none", problems)
	case want != "" && (len(problems) != 1 || !strings.Contains(problems[0], want)):
		t.Errorf("problems %q, want one with %q", problems, want)
	}
}
