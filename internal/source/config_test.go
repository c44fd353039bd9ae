package source_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

func TestCheckLimits(t *testing.T) {
	tests := []struct {
		name    string
		cfg     source.LimitsConfig
		wantErr []string
	}{
		{"10k agents at 10s", source.LimitsConfig{Agents: 10_000, Interval: 10 * time.Second, MaxRPS: 1200, MaxConcurrency: 64}, nil},
		{"interval 100ms is the edge", source.LimitsConfig{Agents: 1, Interval: 100 * time.Millisecond, BackoffInitial: time.Second}, nil},
		{"interval 200ms with default backoff", source.LimitsConfig{Agents: 1, Interval: 200 * time.Millisecond}, nil},
		{"interval under 100ms", source.LimitsConfig{Agents: 1, Interval: 60 * time.Millisecond}, []string{"poll interval 60ms", "polled every 30ms", "6000 requests per user", "at least 100ms apart"}},
		{"default backoff halves the gap", source.LimitsConfig{Agents: 1, Interval: 150 * time.Millisecond}, []string{"down to 75ms with jitter"}},
		{"short backoff", source.LimitsConfig{Agents: 1, Interval: 10 * time.Second, BackoffInitial: 150 * time.Millisecond}, []string{"initial backoff 150ms", "polled every 75ms"}},
		{"rate cap too low", source.LimitsConfig{Agents: 10_000, Interval: 10 * time.Second, MaxRPS: 500}, []string{"cannot poll 10000 agents every 10s", "needs 1000.0 requests/s", "BRIDGE_MAX_RPS to at least 1000", "BRIDGE_POLL_INTERVAL to at least 20s"}},
		{"no rate cap", source.LimitsConfig{Agents: 50_000, Interval: 10 * time.Second}, nil},
		{"zero interval", source.LimitsConfig{Agents: 1}, []string{"not positive"}},
		{"caller scope: 1,000 agents every 10s do not fit", source.LimitsConfig{Agents: 1000, Interval: 10 * time.Second, Scope: source.ScopeCaller},
			[]string{"BRIDGE_QUOTA_SCOPE=caller", "1000 agents every 10s make 30000 requests per 5m0s", "over the 5400", "6000 per user", "at least 55.6s", "at most 180 agents"}},
		{"caller scope: 1,000 agents every minute fit", source.LimitsConfig{Agents: 1000, Interval: time.Minute, Scope: source.ScopeCaller}, nil},
		{"agent scope: 1,000 agents every 10s fit", source.LimitsConfig{Agents: 1000, Interval: 10 * time.Second, Scope: source.ScopeAgent}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := source.CheckLimits(tt.cfg)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("CheckLimits: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckLimits accepted the configuration")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestEntitlementWarning(t *testing.T) {
	tests := []struct {
		cfg  source.LimitsConfig
		want string
	}{
		{source.LimitsConfig{Agents: 10, Interval: 10 * time.Second}, ""},
		{source.LimitsConfig{Agents: 10, Interval: 2 * time.Second}, "43200 requests per agent per 24 hours, over the Power Platform entitlement of 40000 per licensed user: raise BRIDGE_POLL_INTERVAL to at least 2.16s"},
		{source.LimitsConfig{Agents: 1000, Interval: time.Minute, Scope: source.ScopeCaller}, "1440000 requests per 24 hours, all charged to the application user"},
		{source.LimitsConfig{Agents: 10, Interval: time.Minute, Scope: source.ScopeCaller}, ""},
	}
	for _, tt := range tests {
		got := source.EntitlementWarning(tt.cfg)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("EntitlementWarning(%+v) = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}

func TestParseAgentFile(t *testing.T) {
	in := "# agents of the Lisbon site\n" +
		agentA + "\n" +
		"\n" +
		"{" + strings.ToUpper(agentB) + "}   # Bob, braces as Dataverse shows IDs\n" +
		"not-a-guid\n" +
		agentA + "\n"
	ids, err := source.ParseAgentFile("agents.txt", strings.NewReader(in))
	if !reflect.DeepEqual(ids, []string{agentA, agentB}) {
		t.Errorf("ids = %v", ids)
	}
	var le *source.AgentListError
	if !errors.As(err, &le) || !le.Invalid() {
		t.Fatalf("err = %v", err)
	}
	want := `agents.txt: 5: "not-a-guid" is not a GUID; 6: ` + agentA + ` duplicates entry 2`
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
}

func TestAgentFileWatcherAppliesChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agents")
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(agentA + "\n")
	var mu sync.Mutex
	var applied [][]string
	w := &source.AgentFileWatcher{Path: path, Every: 10 * time.Millisecond, Apply: func(ids []string) {
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, ids)
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	last := func() []string {
		mu.Lock()
		defer mu.Unlock()
		if len(applied) == 0 {
			return nil
		}
		return applied[len(applied)-1]
	}
	testwait.Until(t, 2*time.Second, "initial list applied", func() bool { return len(last()) == 1 })
	write(agentA + "\n" + agentB + "\n")
	testwait.Until(t, 2*time.Second, "added agent applied", func() bool { return len(last()) == 2 })
	write(agentB + "\nbroken\n")
	write(agentB + "\n")
	testwait.Until(t, 2*time.Second, "removed agent applied", func() bool { return reflect.DeepEqual(last(), []string{agentB}) })
	mu.Lock()
	defer mu.Unlock()
	// The file with an invalid line was never applied.
	if want := [][]string{{agentA}, {agentA, agentB}, {agentB}}; !reflect.DeepEqual(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
}

func TestSetAgentsAtRuntime(t *testing.T) {
	r := newRig(t, 4, nil, func(o *source.PollerOptions) { o.Interval = 50 * time.Millisecond }, nil)
	ids := r.sim.AgentIDs()
	r.poller.SetAgents(ids[:2])
	if st := r.poller.Status(); st.Agents != 2 || r.poller.StateCounts()["pending"] != 2 || st.FirstRoundDone {
		t.Fatalf("status before start = %+v", st)
	}
	r.start(t)
	testwait.Until(t, 2*time.Second, "first round", func() bool { return r.poller.Status().FirstRoundDone })
	r.poller.SetAgents(ids[1:])
	testwait.Until(t, 2*time.Second, "added agents polled", func() bool {
		return len(r.rec.observations(ids[2])) > 0 && len(r.rec.observations(ids[3])) > 0
	})
	removedAt := len(r.rec.requestsOf(ids[0]))
	testwait.Until(t, 2*time.Second, "later polls of the others", func() bool { return len(r.rec.observations(ids[3])) > 5 })
	if n := len(r.rec.requestsOf(ids[0])); n > removedAt+1 {
		t.Errorf("removed agent polled %d more times", n-removedAt)
	}
	st := r.poller.Status()
	if st.Agents != 3 || r.poller.StateCounts()["healthy"] != 3 || !r.client.TokenObtained() {
		t.Errorf("status = %+v", st)
	}
}

func TestSinkBackpressureKeepsOnePollPerAgent(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]int{}
	blocking := source.SinkFunc(func(ctx context.Context, o source.Observation) error {
		mu.Lock()
		seen[o.AgentID]++
		mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	r := newRig(t, 2, nil, func(o *source.PollerOptions) { o.Interval = 20 * time.Millisecond }, nil)
	r.poller = mustPoller(t, source.PollerOptions{Getter: clientFor(t, r), Sink: blocking, Interval: 20 * time.Millisecond})
	r.poller.SetAgents(r.sim.AgentIDs())
	r.start(t)
	testwait.Until(t, 2*time.Second, "both agents observed", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 2 })
	// While the sink is blocked nothing more is polled, for many intervals.
	before := r.sim.Stats().Requests
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := r.sim.Stats().Requests; n != before {
			t.Fatalf("%d requests while the sink was blocked", n-before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	testwait.Until(t, 2*time.Second, "polling resumes", func() bool { return r.sim.Stats().Requests > before+2 })
}

func mustPoller(t *testing.T, o source.PollerOptions) *source.Poller {
	t.Helper()
	p, err := source.NewPoller(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func clientFor(t *testing.T, r *rig) *source.Client {
	t.Helper()
	srv := httptest.NewServer(r.sim.Handler())
	t.Cleanup(srv.Close)
	return newClient(t, srv.URL, source.StaticToken(simulator.DefaultToken))
}

func TestPresenceCatalogue(t *testing.T) {
	const custom = "4f6b3a0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
	overrides, err := source.ParsePresenceMap(custom + "=busy - dnd, " + strings.ToUpper(available) + "=192360003")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"x=Away", custom + "=Lunch", custom, custom + "=Away," + custom + "=Busy", custom + "=192360006"} {
		if _, err := source.ParsePresenceMap(bad); err == nil {
			t.Errorf("ParsePresenceMap(%q) accepted", bad)
		}
	}
	if m, err := source.ParsePresenceMap(custom + "=inactive"); err != nil || m[custom] != source.BaseInactive {
		t.Errorf("ParsePresenceMap(inactive) = %v, %v; want Inactive", m, err)
	}
	opts := simulator.DefaultOptions()
	opts.Agents = 1
	sim, simURL := serveSim(t, opts)
	client := newClient(t, simURL, source.StaticToken(simulator.DefaultToken))
	cat := source.NewCatalogue(overrides)
	ref := &source.CatalogueRefresher{Catalogue: cat, Lister: client, Logger: slog.New(slog.DiscardHandler)}
	if err := ref.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	simPresences := sim.Presences()
	if cat.Len() < len(simPresences) {
		t.Errorf("catalogue knows %d presences, the organisation has %d", cat.Len(), len(simPresences))
	}
	for _, p := range simPresences {
		want, ok := source.BaseStatusForOption(p.BaseStatus)
		if !ok {
			t.Fatalf("simulator base status %v", p.BaseStatus)
		}
		if strings.EqualFold(p.ID, available) {
			want = source.BaseAway // overridden
		}
		if got := cat.BaseStatus(strings.ToLower(p.ID)); got != want {
			t.Errorf("presence %s (%s): base %q, want %q", p.ID, p.Name, got, want)
		}
	}
	if got := cat.BaseStatus(custom); got != source.BaseBusyDND {
		t.Errorf("override: %q", got)
	}
	// An organisation that refuses the read: the catalogue keeps what it had.
	_ = sim.SetFaults(simulator.Faults{PresencesStatus: 403})
	if err := ref.Load(t.Context()); err == nil || cat.BaseStatus(custom) != source.BaseBusyDND {
		t.Errorf("failed load: err %v, catalogue changed", err)
	}
}
