// Package wholebench measures the whole bridge, as `bridge run` runs it, in
// steady state: the simulator with N agents, a JetStream server and the
// bridge (the same binary's `run` subcommand, set up only through BRIDGE_
// variables), each in its own process; at the same time, and measured over
// the same period, the bare net/http GET-and-decode loop of package
// pollbench against the same simulator (which counts the two's requests
// apart by the bare loop's User-Agent); after them, the publish path alone (package publish/bench's events through a
// publish.Publisher) against the same JetStream server. The bare loop and
// the publish path are the baselines. Reported separately, the bridge once
// more with its own embedded JetStream, as `bridge run` starts without a
// NATS URL. Measuring the bridge and the bare loop over the same period
// gives both the same machine: a load that comes and goes moves both.
// It reports CPU per poll of the bridge and the bare loop and their ratio,
// the bridge's CPU per published event beyond the bare loop's cost of its
// polls beside the publish path's own CPU per event and their ratio, peak
// and final resident memory of both polling processes, and the start-up
// burst (the first round, three events per agent). On request it writes
// the bridge's CPU and heap profiles of the measured period.
//
// Each figure of the polling processes is read from outside the measured
// process: CPU is utime + stime of /proc/<pid>/stat, memory VmHWM (peak)
// and VmRSS of /proc/<pid>/status, polls the simulator's count of
// CCaaS_GetPresence requests, events the bridge's
// ccaas_bridge_events_published_total on its /metrics. The publish path
// reports its own CPU (getrusage) over its publishing only.
//
// Run it with Main (`bridge wholebench`). Main re-executes the program: with
// -role=sim, -role=nats and -role=publish for the simulator, the JetStream
// server and the publish path, with Options.Executable's `run` subcommand
// for the bridge and with its `pollbench -role bare` for the bare loop.
package wholebench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ccaas/presence-bridge/internal/source"
)

// Workloads the simulator can run.
const (
	// WorkloadQuiet is an organisation where nothing changes: after the
	// start-up burst the bridge publishes nothing.
	WorkloadQuiet = "quiet"
	// WorkloadChanging is the simulator's default change rate, the one
	// `bridge simulate` runs (simulator.DefaultOptions: a round every 2 s in
	// which each agent changes with probability 0.25).
	WorkloadChanging = "changing"
)

// Subcommands of Options.Executable this package re-executes.
const (
	// RunCommand is the bridge's production subcommand.
	RunCommand = "run"
	// PollBenchCommand runs package pollbench, whose -role=bare is the
	// baseline loop.
	PollBenchCommand = "pollbench"
)

// DefaultPublishEvents is how many events the publish path alone publishes
// by default.
const DefaultPublishEvents = 20_000

// maxProfile bounds a CPU profile of the bridge: the operator HTTP server
// ends a response after 30 s (ops.DefaultWriteTimeout).
const maxProfile = 25 * time.Second

// Options configure a run.
type Options struct {
	// Agents in the simulated organisation; default 10,000.
	Agents int
	// Interval is BRIDGE_POLL_INTERVAL and the bare loop's; default 10s.
	Interval time.Duration
	// Warmup before measuring, counted from the start of the polling
	// process; the bridge is also measured only once its start-up burst is
	// complete. Default two Intervals: the first round, then the second,
	// in which the bridge compares each agent's first repeated answer with
	// its state once (later repeats take the unchanged-answer shortcut), so
	// that the measured period is the steady state.
	Warmup time.Duration
	// Measure is the measured steady-state period; default 2 × Interval.
	Measure time.Duration
	// Concurrency is BRIDGE_MAX_CONCURRENCY and the bare loop's workers;
	// default source.DefaultMaxConcurrency.
	Concurrency int
	// NoLeases sets BRIDGE_LEASE_ENABLED=false; by default the bridge
	// takes its lease as in production.
	NoLeases bool
	// NoEmbedded skips the second measurement of each workload's bridge,
	// with its own embedded JetStream (Workload.Embedded).
	NoEmbedded bool
	// Workloads to run, in order; default quiet then changing.
	Workloads []string
	// PublishEvents is how many events the publish path alone publishes
	// (measured), in its own process, after the bridge of a workload that
	// published nothing has stopped (where the bridge published, as many
	// as it did, at its rate); default DefaultPublishEvents.
	PublishEvents int
	// ProfileDir, when set, runs the bridge with BRIDGE_PPROF=true and
	// writes its CPU profile of the measured period (its first
	// min(Measure, 25 s), in whole seconds) to <ProfileDir>/<workload>-cpu.pprof
	// and its heap profile at the period's end to
	// <ProfileDir>/<workload>-heap.pprof. The profiling's own CPU is then
	// part of the bridge's measured CPU.
	ProfileDir string
	// Executable is the bridge binary: it must have the subcommands
	// RunCommand and PollBenchCommand, and RolePrefix's roles. Default this
	// executable.
	Executable string
	// RolePrefix is the argv after Executable that reaches Main, to which
	// -role flags are appended; default {"wholebench"}.
	RolePrefix []string
	// Stderr receives the children's error output when one fails; default
	// os.Stderr.
	Stderr *os.File
}

func (o *Options) defaults() error {
	if o.Agents <= 0 {
		o.Agents = 10_000
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = 2 * o.Interval
	}
	if o.Measure <= 0 {
		o.Measure = 2 * o.Interval
	}
	if o.Concurrency <= 0 {
		o.Concurrency = source.DefaultMaxConcurrency
	}
	if o.PublishEvents <= 0 {
		o.PublishEvents = DefaultPublishEvents
	}
	if len(o.Workloads) == 0 {
		o.Workloads = []string{WorkloadQuiet, WorkloadChanging}
	}
	for _, w := range o.Workloads {
		if w != WorkloadQuiet && w != WorkloadChanging {
			return fmt.Errorf("workload %q is not %s or %s", w, WorkloadQuiet, WorkloadChanging)
		}
	}
	if o.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		o.Executable = exe
	}
	if o.RolePrefix == nil {
		o.RolePrefix = []string{"wholebench"}
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	return nil
}

// Process is what was measured of one polling process in the measured
// period.
type Process struct {
	// Polls is the simulator's count of CCaaS_GetPresence requests answered
	// in the period, and Failed those not answered 200.
	Polls  int64 `json:"polls"`
	Failed int64 `json:"failed"`
	// CPU is the process's user + system time in the period.
	CPU time.Duration `json:"cpu_ns"`
	// CPUPerPoll is CPU / Polls.
	CPUPerPoll time.Duration `json:"cpu_per_poll_ns"`
	// PeakRSS is the process's peak resident set (VmHWM) at the end of the
	// period, bytes: start-up included.
	PeakRSS int64 `json:"peak_rss_bytes"`
	// RSS is the process's resident set (VmRSS) at the end of the period,
	// bytes: its steady state.
	RSS int64 `json:"rss_bytes"`
}

// PublishPath is the publish path alone, measured in its own process
// against the workload's JetStream server once the bridge has stopped:
// real-sized events spread over the run's agents, published through a
// publish.Publisher with the bridge's defaults (fenced, acknowledged), as
// fast as the window allows, after one unmeasured event per agent.
type PublishPath struct {
	// Events published in the measured part.
	Events int64 `json:"events"`
	// CPU is the publishing process's user + system time over them (the
	// JetStream server's not included).
	CPU time.Duration `json:"cpu_ns"`
	// Duration is the wall time from the first event handed over to the
	// last acknowledged.
	Duration time.Duration `json:"duration_ns"`
	// CPUPerEvent is CPU / Events.
	CPUPerEvent time.Duration `json:"cpu_per_event_ns"`
	// Paced is the rate, events per second, the events were handed over
	// at: the bridge's own in the workload's measured period; 0 where the
	// bridge published nothing (then as fast as the window allows).
	Paced float64 `json:"paced_events_per_second"`
}

// Burst is the bridge's start-up: its first full round, in which it
// publishes three events per agent.
type Burst struct {
	// Duration from the bridge process's start to the moment its metrics
	// showed a poll of every agent and three events per agent published.
	Duration time.Duration `json:"duration_ns"`
	// Events published by then.
	Events int64 `json:"events"`
	// CPU of the bridge process from its start to then (start-up
	// included).
	CPU time.Duration `json:"cpu_ns"`
	// CPUPerEvent is CPU / Events.
	CPUPerEvent time.Duration `json:"cpu_per_event_ns"`
}

// Workload is the measurement of one workload.
type Workload struct {
	// Name is WorkloadQuiet or WorkloadChanging.
	Name string `json:"name"`
	// Bridge and Bare are the two polling processes, measured over the
	// same period against the same simulator.
	Bridge Process `json:"bridge"`
	Bare   Process `json:"bare"`
	// BridgePolls is the bridge's own count of polls in the period
	// (ccaas_bridge_polls_total), beside the simulator's.
	BridgePolls int64 `json:"bridge_polls_metric"`
	// Events the bridge published in the period
	// (ccaas_bridge_events_published_total).
	Events int64 `json:"events"`
	// Ratio is Bridge.CPUPerPoll / Bare.CPUPerPoll.
	Ratio float64 `json:"ratio"`
	// CPUPerEvent is the bridge's CPU beyond the bare loop's for the same
	// polls, per event published: (Bridge.CPU − Bare.CPUPerPoll ×
	// Bridge.Polls) / Events; zero when no event was published. Negative
	// when the bridge polled for less CPU than the bare loop.
	CPUPerEvent time.Duration `json:"cpu_per_event_ns"`
	// Publish is the publish path alone, the baseline of CPUPerEvent:
	// PublishEvents events handed over as fast as the window allows.
	Publish PublishPath `json:"publish"`
	// PublishRatio is CPUPerEvent / Publish.CPUPerEvent: what the bridge
	// spends per event beyond its polls, in units of what publishing alone
	// costs; zero when no event was published.
	PublishRatio float64 `json:"cpu_per_event_vs_publish"`
	// PublishPaced is the publish path alone handed as many events as the
	// bridge published in its measured period, at the bridge's rate: the
	// same trickle, one wake-up per event; zero when no event was
	// published.
	PublishPaced PublishPath `json:"publish_paced"`
	// PacedRatio is CPUPerEvent / PublishPaced.CPUPerEvent.
	PacedRatio float64 `json:"cpu_per_event_vs_publish_paced"`
	// RSSPerAgent is the bridge's peak RSS beyond the bare loop's, per
	// agent, bytes.
	RSSPerAgent float64 `json:"rss_per_agent_beyond_bare_bytes"`
	// Burst is the bridge's start-up.
	Burst Burst `json:"burst"`
	// Embedded is the bridge measured again, after the bridge and the bare
	// loop, with its own embedded JetStream; nil with Options.NoEmbedded.
	Embedded *Embedded `json:"embedded,omitempty"`
}

// Embedded is the bridge as `bridge run` starts without a NATS URL: its own
// JetStream server in its process, whose CPU and memory its figures
// therefore include. It polls the workload's simulator with the same
// configuration otherwise, and is compared with the same bare loop.
type Embedded struct {
	// Bridge is the bridge process (the server included).
	Bridge Process `json:"bridge"`
	// Events the bridge published in the period.
	Events int64 `json:"events"`
	// Ratio is Bridge.CPUPerPoll / the workload's Bare.CPUPerPoll.
	Ratio float64 `json:"ratio"`
	// CPUPerEvent is the bridge's CPU beyond the bare loop's for the same
	// polls, per event published, as Workload.CPUPerEvent; zero when no
	// event was published.
	CPUPerEvent time.Duration `json:"cpu_per_event_ns"`
	// RSSPerAgent is the bridge's peak RSS beyond the bare loop's, per
	// agent, bytes.
	RSSPerAgent float64 `json:"rss_per_agent_beyond_bare_bytes"`
	// Burst is the bridge's start-up.
	Burst Burst `json:"burst"`
}

// derive computes the figures that follow from the measured ones and the
// workload's bare loop.
func (e *Embedded) derive(bare Process, agents int) {
	e.Bridge.CPUPerPoll = perCount(e.Bridge.CPU, e.Bridge.Polls)
	e.Ratio, e.CPUPerEvent, e.RSSPerAgent = beyondBare(e.Bridge, bare, e.Events, agents)
	e.Burst.CPUPerEvent = perCount(e.Burst.CPU, e.Burst.Events)
}

// beyondBare compares a bridge process that published events with the
// bare loop: the ratio of their CPU per poll, the bridge's CPU beyond the
// bare loop's for the same polls per event (zero without events), and its
// peak RSS beyond the bare loop's per agent. CPUPerPoll must be set.
func beyondBare(bridge, bare Process, events int64, agents int) (ratio float64, perEvent time.Duration, rssPerAgent float64) {
	if bare.CPUPerPoll > 0 {
		ratio = float64(bridge.CPUPerPoll) / float64(bare.CPUPerPoll)
	}
	if events > 0 {
		perEvent = (bridge.CPU - bare.CPUPerPoll*time.Duration(bridge.Polls)) / time.Duration(events)
	}
	if agents > 0 {
		rssPerAgent = float64(bridge.PeakRSS-bare.PeakRSS) / float64(agents)
	}
	return ratio, perEvent, rssPerAgent
}

// derive computes the figures that follow from the measured ones.
func (w *Workload) derive(agents int) {
	w.Bridge.CPUPerPoll = perCount(w.Bridge.CPU, w.Bridge.Polls)
	w.Bare.CPUPerPoll = perCount(w.Bare.CPU, w.Bare.Polls)
	w.Ratio, w.CPUPerEvent, w.RSSPerAgent = beyondBare(w.Bridge, w.Bare, w.Events, agents)
	if w.Embedded != nil {
		w.Embedded.derive(w.Bare, agents)
	}
	w.Burst.CPUPerEvent = perCount(w.Burst.CPU, w.Burst.Events)
	w.Publish.CPUPerEvent = perCount(w.Publish.CPU, w.Publish.Events)
	if w.Events > 0 && w.Publish.CPUPerEvent > 0 {
		w.PublishRatio = float64(w.CPUPerEvent) / float64(w.Publish.CPUPerEvent)
	}
	w.PublishPaced.CPUPerEvent = perCount(w.PublishPaced.CPU, w.PublishPaced.Events)
	if w.Events > 0 && w.PublishPaced.CPUPerEvent > 0 {
		w.PacedRatio = float64(w.CPUPerEvent) / float64(w.PublishPaced.CPUPerEvent)
	}
}

func perCount(d time.Duration, n int64) time.Duration {
	if n <= 0 {
		return 0
	}
	return d / time.Duration(n)
}

// Result is a whole run.
type Result struct {
	Agents      int           `json:"agents"`
	Interval    time.Duration `json:"interval_ns"`
	Warmup      time.Duration `json:"warmup_ns"`
	Measure     time.Duration `json:"measure_ns"`
	Concurrency int           `json:"concurrency"`
	Leases      bool          `json:"leases"`
	// Embedded is whether each workload's bridge was also measured with
	// its embedded JetStream.
	Embedded bool `json:"embedded"`
	// PublishEvents is how many events the publish path alone published
	// per workload.
	PublishEvents int `json:"publish_events"`
	// ProfileDir is where the bridge's profiles were written; empty when
	// none were.
	ProfileDir string     `json:"profile_dir,omitempty"`
	Workloads  []Workload `json:"workloads"`
}

// String formats the result as a readable table.
func (r Result) String() string {
	var b strings.Builder
	leases := "leases on"
	if !r.Leases {
		leases = "leases off"
	}
	fmt.Fprintf(&b, "%d agents every %s (%.0f polls/s), %d workers, %s; measured %s after warm-up; simulator, JetStream and bridge in separate processes over loopback; the bare loop over the same period, against the same simulator\n",
		r.Agents, r.Interval, float64(r.Agents)/r.Interval.Seconds(), r.Concurrency, leases, r.Measure)
	fmt.Fprintf(&b, "%-9s %-7s %9s %7s %11s %9s %9s %11s\n", "workload", "process", "polls", "failed", "CPU/poll", "peak RSS", "RSS", "events")
	for _, w := range r.Workloads {
		for _, p := range []struct {
			name string
			p    Process
			ev   string
		}{{"bridge", w.Bridge, fmt.Sprint(w.Events)}, {"bare", w.Bare, "-"}} {
			fmt.Fprintf(&b, "%-9s %-7s %9d %7d %9.1fµs %6.1fMiB %6.1fMiB %11s\n", w.Name, p.name, p.p.Polls, p.p.Failed,
				micros(p.p.CPUPerPoll), mib(p.p.PeakRSS), mib(p.p.RSS), p.ev)
		}
	}
	fmt.Fprintf(&b, "%-9s %12s %15s %18s %14s %13s %15s\n", "workload", "bridge/bare", "CPU/event", "RSS/agent beyond", "burst time", "burst events", "CPU/burst event")
	for _, w := range r.Workloads {
		perEvent := "-"
		if w.Events > 0 {
			perEvent = fmt.Sprintf("%.1fµs", micros(w.CPUPerEvent))
		}
		fmt.Fprintf(&b, "%-9s %12.2f %15s %15.2fKiB %14s %13d %13.1fµs\n", w.Name, w.Ratio, perEvent,
			w.RSSPerAgent/1024, w.Burst.Duration.Round(time.Millisecond), w.Burst.Events, micros(w.Burst.CPUPerEvent))
	}
	fmt.Fprintf(&b, "publish path alone: over %d agents, the bridge's publisher defaults, in its own process against the workload's JetStream server; %d events as fast as the window allows, and paced: as many events as the bridge published in its measured period, at its rate\n",
		r.Agents, r.PublishEvents)
	fmt.Fprintf(&b, "%-9s %17s %11s %16s %22s %14s %21s\n", "workload", "publish CPU/event", "events/s", "paced CPU/event", "paced events, per s", "bridge/publish", "bridge/paced publish")
	for _, w := range r.Workloads {
		paced, pacedEvents, ratio, pacedRatio := "-", "-", "-", "-"
		if w.Events > 0 {
			paced = fmt.Sprintf("%.1fµs", micros(w.PublishPaced.CPUPerEvent))
			pacedEvents = fmt.Sprintf("%d, %.0f", w.PublishPaced.Events, w.PublishPaced.Paced)
			ratio, pacedRatio = fmt.Sprintf("%.2f", w.PublishRatio), fmt.Sprintf("%.2f", w.PacedRatio)
		}
		fmt.Fprintf(&b, "%-9s %15.1fµs %11.0f %16s %22s %14s %21s\n", w.Name, micros(w.Publish.CPUPerEvent),
			perSecond(w.Publish.Events, w.Publish.Duration), paced, pacedEvents, ratio, pacedRatio)
	}
	if r.Embedded {
		fmt.Fprintf(&b, "the bridge with its embedded JetStream (BRIDGE_NATS_URL empty: the server in its process, its CPU and memory included), against the bridge's simulator, compared with the same bare loop\n")
		fmt.Fprintf(&b, "%-9s %9s %11s %12s %11s %15s %9s %18s %14s %15s\n", "workload", "polls", "CPU/poll", "bridge/bare", "events", "CPU/event", "peak RSS", "RSS/agent beyond", "burst time", "CPU/burst event")
		for _, w := range r.Workloads {
			e := w.Embedded
			if e == nil {
				continue
			}
			perEvent := "-"
			if e.Events > 0 {
				perEvent = fmt.Sprintf("%.1fµs", micros(e.CPUPerEvent))
			}
			fmt.Fprintf(&b, "%-9s %9d %9.1fµs %12.2f %11d %15s %6.1fMiB %15.2fKiB %14s %13.1fµs\n", w.Name, e.Bridge.Polls, micros(e.Bridge.CPUPerPoll),
				e.Ratio, e.Events, perEvent, mib(e.Bridge.PeakRSS), e.RSSPerAgent/1024, e.Burst.Duration.Round(time.Millisecond), micros(e.Burst.CPUPerEvent))
		}
	}
	if r.ProfileDir != "" {
		fmt.Fprintf(&b, "bridge profiles (their own CPU included above): %s/<workload>-cpu.pprof, %s/<workload>-heap.pprof\n", r.ProfileDir, r.ProfileDir)
	}
	return b.String()
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Run measures every workload in turn, each with its own simulator and
// JetStream server.
func Run(ctx context.Context, opts Options) (Result, error) {
	if err := opts.defaults(); err != nil {
		return Result{}, err
	}
	dir, err := os.MkdirTemp("", "wholebench")
	if err != nil {
		return Result{}, fmt.Errorf("create temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	if opts.ProfileDir != "" {
		if err := os.MkdirAll(opts.ProfileDir, 0o755); err != nil {
			return Result{}, fmt.Errorf("create profile directory: %w", err)
		}
	}
	res := Result{Agents: opts.Agents, Interval: opts.Interval, Warmup: opts.Warmup, Measure: opts.Measure,
		Concurrency: opts.Concurrency, Leases: !opts.NoLeases, Embedded: !opts.NoEmbedded, PublishEvents: opts.PublishEvents, ProfileDir: opts.ProfileDir}
	for i, name := range opts.Workloads {
		wdir := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(wdir, 0o700); err != nil {
			return Result{}, fmt.Errorf("create temporary directory: %w", err)
		}
		w, err := runWorkload(ctx, opts, name, wdir)
		if err != nil {
			return Result{}, fmt.Errorf("workload %s: %w", name, err)
		}
		res.Workloads = append(res.Workloads, w)
	}
	return res, nil
}

// errNoPolls reports a measured period without a successful poll.
var errNoPolls = errors.New("no poll answered in the measured period")
