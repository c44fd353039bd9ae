package detector_test

import (
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/source"
)

// The detector as the pipeline drives it: restore the state bucket's
// values, observe each poll, and confirm the change once JetStream has
// stored its events (or abandon it when the fence found the agent's history
// on the stream moved on).
func Example() {
	det, err := detector.New(detector.Options{StaleAfter: 45 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	det.Restore() // the state bucket's values: none on a first start

	const agent = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
	at := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	poll := func(presenceName, baseStatus string, sessions int) source.Observation {
		return source.Observation{AgentID: agent, At: at, Class: source.ClassOK, Snapshot: &source.Snapshot{
			AgentID: agent, AgentName: "Ada", PresenceID: "f523f628-c07a-e811-8162-000d3aa11f50", PresenceName: presenceName,
			BaseStatus: baseStatus, ActiveBrowserSessions: sessions, LoginTime: at.Add(-time.Hour).Unix(),
			AllowedChannels: []string{"voice", "chat"}, ObservedAt: at,
		}}
	}

	var streamSeq uint64
	for _, o := range []source.Observation{poll("Available", "Available", 1), poll("Available", "Available", 2)} {
		c := det.Observe(o) // nil when nothing changed
		if c == nil {
			continue
		}
		for _, e := range c.Events {
			fmt.Println(e.ID, e.Type)
		}
		// Publish c.Events fenced after c.AfterStream; once stored:
		streamSeq += uint64(len(c.Events))
		// (When the fence finds the stream moved on instead: det.Abandon(c),
		// then det.Adopt(agentID, stateReadFromTheStream).)
		st := det.Confirm(c, streamSeq) // the state to record in the bucket
		fmt.Println("state at sequence", st.Sequence)
	}
	// Output:
	// 3f2504e0-4f89-11d3-9a0c-0305e82c3301-1 presence.changed
	// 3f2504e0-4f89-11d3-9a0c-0305e82c3301-2 sessions.changed
	// 3f2504e0-4f89-11d3-9a0c-0305e82c3301-3 channels.changed
	// state at sequence 3
	// 3f2504e0-4f89-11d3-9a0c-0305e82c3301-4 sessions.changed
	// state at sequence 4
}
