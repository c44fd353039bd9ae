package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/logging"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
)

func cmdDemo(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	agents := fs.Int("agents", 25, "number of simulated agents")
	seed := fs.Uint64("seed", 1, "seed of the simulated organisation")
	interval := fs.Duration("interval", time.Second, "poll interval")
	changeEvery := fs.Duration("change-interval", 2*time.Second, "how often simulated agents may change")
	summaryEvery := fs.Duration("summary", 10*time.Second, "interval of the summary line")
	if done, code := parseFlags(fs, args); done {
		return code
	}
	cfg, ok := loadConfig(stderr, config.Needs{})
	if !ok {
		return exitConfig
	}
	// The demo is a local, one-process setup: its own organisation,
	// embedded JetStream, loopback HTTP, readable logs.
	cfg.NATSURL = ""
	cfg.PollInterval = *interval
	cfg.BackoffMax = 5 * time.Second
	cfg.LeaseEnabled = false
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = demoSnapshotInterval // every event type within the first minute
	}
	if cfg.HTTPAddr == ":8080" {
		cfg.HTTPAddr = "127.0.0.1:8080"
	}
	log, err := logging.New(stderr, "text", "warn")
	if err != nil {
		fmt.Fprintf(stderr, "bridge demo: %v\n", err)
		return exitFail
	}

	opts := simulator.DefaultOptions()
	opts.Agents = *agents
	opts.Seed = *seed
	opts.ChangeInterval = *changeEvery
	sim, err := simulator.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "bridge demo: %v\n", err)
		return exitConfig
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(stderr, "bridge demo: listen for the simulator: %v\n", err)
		return exitFail
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	simCtx, stopSim := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSim()
	wg.Add(1)
	go func() { defer wg.Done(); _ = sim.Serve(simCtx, ln) }() // serves and changes agents every change-interval
	cfg.OrgURL = "http://" + ln.Addr().String()
	// Once the bridge polls: agents that go unattended, log out and in, and
	// one whose polls fail long enough to go stale, so every event type
	// shows within a minute.
	scenario := func() {
		if *agents < simulator.ScenarioAgents {
			return
		}
		sc := simulator.Scenario{Unit: cfg.PollInterval, FaultFor: cfg.EffectiveStaleAfter() + 4*cfg.PollInterval + time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sim.RunScenario(simCtx, sc); err != nil {
				log.Warn("demo scenario stopped", "err", err)
			}
		}()
	}

	names := map[string]string{}
	for _, a := range sim.Agents() {
		names[a.AgentID] = a.AgentName
	}
	fmt.Fprintf(stdout, "demo: %d simulated agents at %s, embedded JetStream at nats://%s (data in %s), polling every %s\n",
		len(names), cfg.OrgURL, cfg.EmbeddedNATSListen, cfg.DataDir, cfg.PollInterval)
	fmt.Fprintf(stdout, "demo: metrics and health on http://%s; watch with: nats sub 'ccaas.agents.>'\n", cfg.HTTPAddr)

	var mu sync.Mutex // serialises lines on stdout
	printEvent := func(ev detector.Event) {
		prev, cur := detector.Describe(ev)
		name := names[ev.AgentID]
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, "%s  %-22s %-18s %s → %s\n", ev.Time.Format("15:04:05.000"), truncateName(name, 22), ev.Type, prev, cur)
	}
	started := func(pipe *pipeline.Pipeline, poller *source.Poller) {
		scenario()
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(*summaryEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				st, ps := pipe.Stats(), poller.Status()
				mu.Lock()
				fmt.Fprintf(stdout, "summary: agents=%d polls=%d errors=%d events: %s\n", ps.Agents, st.Observations, st.Errors, byType(st.Events))
				mu.Unlock()
			}
		}()
	}
	plan := sourcePlan{agents: sim.AgentIDs()}
	err = runBridge(ctx, cfg, plan, log, hooks{onPublished: printEvent, onStarted: started, tokens: source.StaticToken(simulator.DefaultToken)})
	stopSim()
	if err != nil {
		fmt.Fprintf(stderr, "bridge demo: %v\n", err)
		return exitFail
	}
	fmt.Fprintln(stdout, "demo: stopped cleanly")
	return exitOK
}

// demoSnapshotInterval is the demo's presence.snapshot period when
// BRIDGE_SNAPSHOT_INTERVAL is not set.
const demoSnapshotInterval = 30 * time.Second

func truncateName(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func byType(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none yet"
	}
	return strings.Join(parts, " ")
}
