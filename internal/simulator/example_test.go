package simulator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
)

// A simulated organisation served over real HTTP, as the tests and the
// benchmarks use it. `bridge simulate` fills the Options from its flags
// (opts.RegisterFlags) and serves them with sim.Serve on its listener, which
// also applies random changes every Options.ChangeInterval; here the changes
// are forced, so the answer is known.
func Example() {
	opts := simulator.DefaultOptions()
	opts.Agents = 3
	opts.Seed = 1
	sim, err := simulator.New(opts)
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	token := sim.IssueToken() // or one of opts.StaticTokens

	agent := sim.AgentIDs()[0]
	if _, _, err := sim.Login(agent); err != nil {
		log.Fatal(err)
	}
	if _, _, err := sim.SetPresence(agent, simulator.PresenceAvailable); err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+simulator.APIPrefix+simulator.EndpointPresence, nil)
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("MSCRMCallerID", agent) // the agent whose presence is asked for
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AgentID                   string `json:"AgentId"`
		CurrentPresenceStatusInfo string
		ActiveBrowserSessions     int
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status)
	fmt.Println(body.AgentID == agent, body.CurrentPresenceStatusInfo, body.ActiveBrowserSessions > 0)
	fmt.Println("requests served:", sim.Stats().Requests)
	// Output:
	// 200 OK
	// true Available true
	// requests served: 1
}
