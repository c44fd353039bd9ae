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
	"github.com/ccaas/presence-bridge/internal/inspect"
	"github.com/ccaas/presence-bridge/internal/logging"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/publish"
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
	// An address in use or a data directory in use (most often another
	// demo) stops the demo before it prints anything.
	if !preflight(stderr, "demo", bridgeRunning, localAddrs(cfg), cfg.DataDir) {
		return exitConfig
	}
	log, err := logging.New(stderr, "text", "warn")
	if err != nil {
		fmt.Fprintf(stderr, "bridge demo: %v\n", err)
		return exitFail
	}
	// Events are rendered exactly as `bridge tail` renders them: encoded
	// as the CloudEvents the stream receives, then inspect.Line.
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: demoOrganisation, SubjectPrefix: cfg.SubjectPrefix, BridgeVersion: version})
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

	fmt.Fprintf(stdout, "demo: %s at %s, embedded JetStream at nats://%s, polling every %s\n",
		plural(len(sim.AgentIDs()), "simulated agent", "simulated agents"), cfg.OrgURL, cfg.EmbeddedNATSListen, cfg.PollInterval)
	fmt.Fprintf(stdout, "demo: events and agent states are kept in %s and continue on the next run (to start fresh: stop the demo, delete %s)\n", cfg.DataDir, cfg.DataDir)
	fmt.Fprintf(stdout, "demo: metrics and health on http://%s; Ctrl-C stops the demo\n", cfg.HTTPAddr)

	var mu sync.Mutex // serialises lines on stdout
	printEvent := func(ev detector.Event) {
		line := ""
		if ce, err := enc.CloudEvent(ev); err != nil {
			line = fmt.Sprintf("%s  %s  %s  (not renderable: %v)", ev.Time.UTC().Format(time.RFC3339), ev.AgentID, ev.Type, err)
		} else {
			line = inspect.Line(&ce)
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(stdout, line)
	}
	var (
		pipe   *pipeline.Pipeline
		poller *source.Poller
	)
	summary := func() string {
		st, ps := pipe.Stats(), poller.Status()
		return fmt.Sprintf("summary: %s, %s, %s; events: %s", plural(ps.Agents, "agent", "agents"),
			plural(int(st.Observations), "poll", "polls"), plural(int(st.Errors), "error", "errors"), byType(st.Events))
	}
	started := func(p *pipeline.Pipeline, po *source.Poller) {
		mu.Lock()
		pipe, poller = p, po
		mu.Unlock()
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
				mu.Lock()
				fmt.Fprintln(stdout, summary())
				mu.Unlock()
			}
		}()
	}
	plan := sourcePlan{agents: sim.AgentIDs()}
	err = runBridge(ctx, cfg, plan, log, hooks{onPublished: printEvent, onStarted: started, tokens: source.StaticToken(simulator.DefaultToken), eventSource: demoOrganisation})
	stopSim()
	if err != nil {
		fmt.Fprintf(stderr, "bridge demo: %v\n", err)
		return exitFail
	}
	mu.Lock()
	defer mu.Unlock()
	if pipe != nil {
		fmt.Fprintln(stdout, summary())
	}
	fmt.Fprintf(stdout, "demo: stopped cleanly; the events stay in %s for the next run\n", cfg.DataDir)
	fmt.Fprint(stdout, demoNext)
	return exitOK
}

// demoSnapshotInterval is the demo's presence.snapshot period when
// BRIDGE_SNAPSHOT_INTERVAL is not set.
const demoSnapshotInterval = 30 * time.Second

// demoOrganisation is the CloudEvent source of the demo's events: the same
// on every run (the simulator's port changes), so the events kept in the
// data directory all come from one organisation.
const demoOrganisation = "https://demo.crm.dynamics.invalid"

// demoNext is what the demo suggests when it stops. Each command is run by
// TestNewcomerPath.
const demoNext = `next: run the demo again and, in a second terminal (go build -o bridge ./cmd/bridge first):
  ./bridge tail --since 10m                   # the events as they arrive, from 10 minutes ago
  ./bridge state                              # every agent's current state
  ./bridge replay --since 1h > events.ndjson  # the last hour as CloudEvents JSON lines
`

// plural renders n with the singular or plural noun.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
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
