package source

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ccaas/presence-bridge/internal/simulator"
)

// simulatorBody returns the body of the simulator's answer for agent id.
func simulatorBody(tb testing.TB, url, id string) []byte {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url+APIPath+CustomAPIName, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("MSCRMCallerID", id)
	req.Header.Set("Authorization", "Bearer "+simulator.DefaultToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("answer for %s: %d %v", id, resp.StatusCode, err)
	}
	return body
}

// BenchmarkUnchangedPoll measures a 200 answer's body, in hand, becoming
// the observation handed to the Sink: "unchanged" repeats the agent's last
// body (no decode, the last Snapshot shared), "changed" alternates two
// bodies of the agent (each one decoded).
func BenchmarkUnchangedPoll(b *testing.B) {
	sim, err := simulator.New(simulator.Options{Agents: 1, Seed: 7, StaticTokens: []string{simulator.DefaultToken}})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	id := sim.AgentIDs()[0]
	if _, _, err := sim.SetPresence(id, simulator.PresenceAvailable); err != nil {
		b.Fatal(err)
	}
	first := simulatorBody(b, srv.URL, id)
	if _, _, err := sim.SetPresence(id, simulator.PresenceBusy); err != nil {
		b.Fatal(err)
	}
	second := simulatorBody(b, srv.URL, id)
	if bytes.Equal(first, second) {
		b.Fatal("the two bodies are equal")
	}
	c, err := NewClient(ClientOptions{OrgURL: srv.URL, Tokens: StaticToken(simulator.DefaultToken), Catalogue: NewCatalogue(nil)})
	if err != nil {
		b.Fatal(err)
	}
	var taken *Snapshot
	var sink Sink = SinkFunc(func(_ context.Context, o Observation) error {
		taken = o.Snapshot
		return nil
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		bodies [2][]byte
		want   bool // unchanged
	}{
		{name: "unchanged", bodies: [2][]byte{first, first}, want: true},
		{name: "changed", bodies: [2][]byte{first, second}, want: false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var last LastAnswer
			if _, _, err := c.answer(tc.bodies[1], id, simulator.DefaultToken, &last); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				snap, unchanged, err := c.answer(tc.bodies[i&1], id, simulator.DefaultToken, &last)
				if err != nil || unchanged != tc.want {
					b.Fatalf("unchanged %v, err %v", unchanged, err)
				}
				obs := Observation{AgentID: id, Class: ClassOK, Snapshot: snap}
				if err := sink.Observe(ctx, obs); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
	if taken == nil || taken.AgentID != id {
		b.Fatalf("sink took %+v", taken)
	}
}
