package inspect

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/examples/eventstest"
)

var allLines = []string{
	"2025-03-04T09:00:00Z  Alice Adams  presence.changed  (none) → Available",
	"2025-03-04T09:00:01Z  Alice Adams  sessions.changed  sessions (none) → 1 (initial)",
	"2025-03-04T09:00:02Z  Bob Brown  presence.changed  (none) → In a meeting (Away)",
	"2025-03-04T09:00:03Z  Alice Adams  presence.changed  Available → Busy",
	"2025-03-04T09:00:04Z  Bob Brown  channels.changed  channels [chat voice] → [chat voice] disabled [voice] (+disabled voice)",
	"2025-03-04T09:00:05Z  Bob Brown  agent.offline  offline (logout), presence In a meeting (Away), 0 sessions",
	"2025-03-04T09:00:06Z  Alice Adams  presence.stale  stale, no successful poll since 2025-03-04T09:00:03Z (rate_limited)",
}

func pick(lines []string, idx ...int) string {
	var out []string
	for _, i := range idx {
		out = append(out, lines[i])
	}
	return strings.Join(out, "\n") + "\n"
}

func TestTail(t *testing.T) {
	longAgo := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		opts TailOptions
		// later is published once Tail's consumer exists.
		later []fixtureEvent
		want  string
	}{
		{name: "everything since long ago", opts: TailOptions{Since: longAgo}, want: pick(allLines, 0, 1, 2, 3, 4, 5, 6)},
		{name: "one agent", opts: TailOptions{Since: longAgo, Agent: strings.ToUpper(bob)}, want: pick(allLines, 2, 4, 5)},
		{name: "one type", opts: TailOptions{Since: longAgo, Type: "presence.changed"}, want: pick(allLines, 0, 2, 3)},
		{name: "agent and type", opts: TailOptions{Since: longAgo, Agent: alice, Type: "presence.stale"}, want: pick(allLines, 6)},
		{
			name:  "no since follows new events only",
			opts:  TailOptions{},
			later: []fixtureEvent{{bob, "presence.changed", 4, `{"agentId":"` + bob + `","agentName":"Bob Brown","previous":{"name":"In a meeting","baseStatus":"Away"},"current":{"name":"Offline","baseStatus":"Offline"}}`}},
			want:  "2025-03-04T09:01:00Z  Bob Brown  presence.changed  In a meeting (Away) → Offline\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := startJetStream(t)
			publishFixture(t, js, 0, fixture()...)

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			out := eventstest.NewLineBuffer()
			done := make(chan error, 1)
			go func() { done <- Tail(ctx, js, tt.opts, out) }()
			if len(tt.later) > 0 {
				eventstest.WaitConsumers(t, js, 1)
				publishFixture(t, js, time.Minute, tt.later...)
			}
			out.WaitLines(t, strings.Count(tt.want, "\n"))
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Tail: %v", err)
			}
			if got := out.String(); got != tt.want {
				t.Errorf("Tail output:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestTailEscapesControlCharacters shows an agent whose name carries
// terminal escape sequences: the line holds them escaped, never raw.
func TestTailEscapesControlCharacters(t *testing.T) {
	js := startJetStream(t)
	publishFixture(t, js, 0, fixtureEvent{alice, "presence.changed", 1,
		`{"agentId":"` + alice + `","agentName":"Eve\u001b[2J\u001b]0;owned\u0007\u202e","previous":null,"current":{"name":"Busy\r\nFAKE","baseStatus":"Busy"}}`})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := eventstest.NewLineBuffer()
	done := make(chan error, 1)
	go func() { done <- Tail(ctx, js, TailOptions{Since: baseTime.Add(-time.Hour)}, out) }()
	out.WaitLines(t, 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Tail: %v", err)
	}
	want := `2025-03-04T09:00:00Z  Eve\x1b[2J\x1b]0;owned\a\u202e  presence.changed  (none) → Busy\r\nFAKE (Busy)` + "\n"
	if got := out.String(); got != want {
		t.Errorf("Tail output %q, want %q", got, want)
	}
}

func TestTailUnknownStream(t *testing.T) {
	js := startJetStream(t)
	err := Tail(t.Context(), js, TailOptions{Stream: "NOPE"}, eventstest.NewLineBuffer())
	if err == nil || !strings.Contains(err.Error(), "create ordered consumer on stream NOPE") {
		t.Fatalf("Tail = %v, want an error naming the stream", err)
	}
}
