package simulator_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ccaas/presence-bridge/internal/simulator"
)

// BenchmarkPresenceHandler measures the simulator's own cost of answering
// one CCaaS_GetPresence request (no network), so benchmarks of the bridge
// can tell how much of the machine the simulator takes.
func BenchmarkPresenceHandler(b *testing.B) {
	opts := simulator.DefaultOptions()
	opts.Agents = 10000
	opts.Quota.Disabled = true
	sim, err := simulator.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	h := sim.Handler()
	ids := sim.AgentIDs()
	reqs := make([]*http.Request, len(ids))
	for i, id := range ids {
		reqs[i] = httptest.NewRequest(http.MethodGet, "/api/data/v9.2/CCaaS_GetPresence", nil)
		reqs[i].Header.Set("MSCRMCallerID", id)
		reqs[i].Header.Set("Authorization", "Bearer "+simulator.DefaultToken)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, reqs[i%len(reqs)])
		if w.Code != http.StatusOK {
			b.Fatalf("status %d", w.Code)
		}
		i++
	}
}
