package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
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

// cmdDemo runs a simulated organisation, embedded JetStream and the bridge
// in one process, printing each event as `bridge tail` prints it and a
// summary line every --summary.
func cmdDemo(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	agents := fs.Int("agents", 25, "number of simulated agents")
	seed := fs.Uint64("seed", 1, "seed of the simulated organisation")
	interval := fs.Duration("interval", time.Second, "poll interval")
	changeEvery := fs.Duration("change-interval", 2*time.Second, "how often simulated agents may change")
	summaryEvery := fs.Duration("summary", 10*time.Second, "interval of the summary line")
	if done, code := parseFlags(fs, args); done {
		return code
	}
	cfg, ok := demoConfig(stderr, *interval)
	if !ok {
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
	d := &demo{stdout: stdout, cfg: cfg, log: log, enc: enc, sim: sim, agents: *agents, summaryEvery: *summaryEvery}
	return d.run(ctx, ln, stderr)
}

// demoConfig reads the configuration and makes it the demo's: a local,
// one-process setup with its own organisation, embedded JetStream, loopback
// HTTP. An address in use or a data directory in use (most often another
// demo) stops the demo before it prints anything.
func demoConfig(stderr io.Writer, interval time.Duration) (config.Config, bool) {
	cfg, ok := loadConfig(stderr, config.Needs{})
	if !ok {
		return cfg, false
	}
	cfg.NATSURL = ""
	cfg.PollInterval = interval
	cfg.BackoffMax = 5 * time.Second
	cfg.LeaseEnabled = false
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = demoSnapshotInterval // every event type within the first minute
	}
	if cfg.HTTPAddr == ":8080" {
		cfg.HTTPAddr = "127.0.0.1:8080"
	}
	return cfg, preflight(stderr, "demo", bridgeRunning, localAddrs(cfg), cfg.DataDir)
}

// demo is one run of `bridge demo`: the simulator, and the bridge watched
// through its hooks.
type demo struct {
	stdout       io.Writer
	cfg          config.Config
	log          *slog.Logger
	enc          *publish.Encoder
	sim          *simulator.Simulator
	agents       int
	summaryEvery time.Duration
	// wg waits for the simulator, its scenario and the summary line.
	wg sync.WaitGroup
	// mu serialises lines on stdout and guards pipe and poller, set once
	// the bridge runs.
	mu     sync.Mutex
	pipe   *pipeline.Pipeline
	poller *source.Poller
}

// run serves the simulator on ln and runs the bridge against it until ctx
// ends, then prints the last summary and what to try next.
func (d *demo) run(ctx context.Context, ln net.Listener, stderr io.Writer) int {
	defer d.wg.Wait()
	simCtx, stopSim := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSim()
	d.wg.Add(1)
	go func() { defer d.wg.Done(); _ = d.sim.Serve(simCtx, ln) }() // serves and changes agents every change-interval
	d.cfg.OrgURL = "http://" + ln.Addr().String()
	cfg := d.cfg
	fmt.Fprintf(d.stdout, "demo: %s at %s, embedded JetStream at nats://%s, polling every %s\n",
		plural(len(d.sim.AgentIDs()), "simulated agent", "simulated agents"), cfg.OrgURL, cfg.EmbeddedNATSListen, cfg.PollInterval)
	fmt.Fprintf(d.stdout, "demo: events and agent states are kept in %s and continue on the next run (to start fresh: stop the demo, delete %s)\n", cfg.DataDir, cfg.DataDir)
	fmt.Fprintf(d.stdout, "demo: metrics and health on http://%s; Ctrl-C stops the demo\n", cfg.HTTPAddr)
	started := func(p *pipeline.Pipeline, po *source.Poller) { d.started(ctx, simCtx, p, po) }
	err := newBridge(cfg, sourcePlan{agents: d.sim.AgentIDs()}, d.log, hooks{
		onPublished: d.printEvent, onStarted: started, tokens: source.StaticToken(simulator.DefaultToken), eventSource: demoOrganisation,
	}).serve(ctx)
	stopSim()
	if err != nil {
		fmt.Fprintf(stderr, "bridge demo: %v\n", err)
		return exitFail
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pipe != nil {
		fmt.Fprintln(d.stdout, d.summary())
	}
	fmt.Fprintf(d.stdout, "demo: stopped cleanly; the events stay in %s for the next run\n", cfg.DataDir)
	fmt.Fprint(d.stdout, demoNext)
	return exitOK
}

// printEvent prints one acknowledged event as `bridge tail` prints it.
func (d *demo) printEvent(ev detector.Event) {
	line := ""
	if ce, err := d.enc.CloudEvent(ev); err != nil {
		line = fmt.Sprintf("%s  %s  %s  (not renderable: %v)", ev.Time.UTC().Format(time.RFC3339), ev.AgentID, ev.Type, err)
	} else {
		line = inspect.Line(&ce)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintln(d.stdout, line)
}

// started runs once the bridge polls: the simulator's scenario (agents that
// go unattended, log out and in, and one whose polls fail long enough to go
// stale, so every event type shows within a minute) and the summary line
// every --summary until ctx ends.
func (d *demo) started(ctx, simCtx context.Context, p *pipeline.Pipeline, po *source.Poller) {
	d.mu.Lock()
	d.pipe, d.poller = p, po
	d.mu.Unlock()
	if d.agents >= simulator.ScenarioAgents {
		sc := simulator.Scenario{Unit: d.cfg.PollInterval, FaultFor: d.cfg.EffectiveStaleAfter() + 4*d.cfg.PollInterval + time.Second}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := d.sim.RunScenario(simCtx, sc); err != nil {
				d.log.Warn("demo scenario stopped", "err", err)
			}
		}()
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTicker(d.summaryEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			d.mu.Lock()
			fmt.Fprintln(d.stdout, d.summary())
			d.mu.Unlock()
		}
	}()
}

// summary is the summary line; call it with mu held, once the bridge runs.
func (d *demo) summary() string {
	st, ps := d.pipe.Stats(), d.poller.Status()
	return fmt.Sprintf("summary: %s, %s, %s; events: %s", plural(ps.Agents, "agent", "agents"),
		plural(int(st.Observations), "poll", "polls"), plural(int(st.Errors), "error", "errors"), byType(st.Events))
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

// byType renders event counts by type, sorted: "agent.online=3 presence.changed=12".
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
