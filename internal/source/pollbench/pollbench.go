// Package pollbench measures the bridge's poll path at scale: the source's
// Client and Poller polling N agents every interval against the simulator
// running in a separate process over loopback, side by side in the same run
// with a bare net/http GET-and-decode loop at the same request rate. For
// each it reports CPU per poll (getrusage of the polling process, user +
// system, in steady state) and resident memory per agent (the process's
// RSS, runtime included, divided by the agents).
//
// Run it with Main (go run ./internal/source/pollbench/cmd/pollbench, or a
// `bridge pollbench` subcommand passing its own argv prefix in
// Options.Command). Main re-executes the program with -role=server,
// -role=bridge and -role=bare for the three processes.
package pollbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
)

// Options configure a run.
type Options struct {
	// Agents polled; default 10,000.
	Agents int
	// Interval between two polls of an agent; default 10s.
	Interval time.Duration
	// Warmup before measuring; default one Interval (the first round).
	Warmup time.Duration
	// Measure is the measured steady-state period; default 2 × Interval.
	Measure time.Duration
	// Concurrency is the workers of both loops; default
	// source.DefaultMaxConcurrency (BRIDGE_MAX_CONCURRENCY's default).
	Concurrency int
	// CPUProfile, if set, is a file prefix: each polling process writes a
	// CPU profile of its measured period to <prefix>.<mode>.
	CPUProfile string
	// Command re-executes this program: argv prefix to which Main's role
	// flags are appended. Default: this executable.
	Command []string
}

func (o *Options) defaults() {
	if o.Agents <= 0 {
		o.Agents = 10_000
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = o.Interval
	}
	if o.Measure <= 0 {
		o.Measure = 2 * o.Interval
	}
	if o.Concurrency <= 0 {
		o.Concurrency = source.DefaultMaxConcurrency
	}
}

// Measurement is what one polling process measured.
type Measurement struct {
	// Mode is "bridge" or "bare".
	Mode string `json:"mode"`
	// Polls completed in the measured period, and how many failed.
	Polls  int64 `json:"polls"`
	Errors int64 `json:"errors"`
	// CPU is user + system time of the process in the measured period.
	CPU time.Duration `json:"cpu_ns"`
	// CPUPerPoll is CPU / Polls.
	CPUPerPoll time.Duration `json:"cpu_per_poll_ns"`
	// RSS is the resident set at the end of the period, bytes.
	RSS int64 `json:"rss_bytes"`
	// RSSPerAgent is RSS / agents, bytes.
	RSSPerAgent float64 `json:"rss_per_agent_bytes"`
}

// Result is a whole run.
type Result struct {
	Agents   int           `json:"agents"`
	Interval time.Duration `json:"interval_ns"`
	Measure  time.Duration `json:"measure_ns"`
	Bridge   Measurement   `json:"bridge"`
	Bare     Measurement   `json:"bare"`
}

// String formats the result as a small table.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d agents every %s (%.0f polls/s), measured %s after warm-up, simulator in a separate process over loopback\n",
		r.Agents, r.Interval, float64(r.Agents)/r.Interval.Seconds(), r.Measure)
	fmt.Fprintf(&b, "%-8s %10s %8s %14s %10s %14s\n", "loop", "polls", "errors", "CPU/poll", "RSS", "RSS/agent")
	for _, m := range []Measurement{r.Bridge, r.Bare} {
		fmt.Fprintf(&b, "%-8s %10d %8d %12.1fµs %8.1fMiB %12.2fKiB\n", m.Mode, m.Polls, m.Errors,
			float64(m.CPUPerPoll)/1e3, float64(m.RSS)/(1<<20), m.RSSPerAgent/1024)
	}
	return b.String()
}

// Run starts the simulator process, then measures the bridge process and
// the bare loop process one after the other against it.
func Run(ctx context.Context, opts Options) (Result, error) {
	opts.defaults()
	if len(opts.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return Result{}, fmt.Errorf("find own executable: %w", err)
		}
		opts.Command = []string{exe}
	}
	dir, err := os.MkdirTemp("", "pollbench")
	if err != nil {
		return Result{}, fmt.Errorf("create temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	idsFile := filepath.Join(dir, "agents")
	common := []string{"-agents", strconv.Itoa(opts.Agents), "-interval", opts.Interval.String(),
		"-warmup", opts.Warmup.String(), "-measure", opts.Measure.String(),
		"-concurrency", strconv.Itoa(opts.Concurrency), "-ids-file", idsFile}
	if opts.CPUProfile != "" {
		common = append(common, "-cpuprofile", opts.CPUProfile)
	}

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	server := child(sctx, opts.Command, append([]string{"-role", "server"}, common...))
	out, err := server.StdoutPipe()
	if err != nil {
		return Result{}, fmt.Errorf("start simulator process: %w", err)
	}
	if err := server.Start(); err != nil {
		return Result{}, fmt.Errorf("start simulator process: %w", err)
	}
	defer func() { stop(); _ = server.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return Result{}, fmt.Errorf("read simulator address: %w", err)
	}
	url := strings.TrimSpace(line)

	res := Result{Agents: opts.Agents, Interval: opts.Interval, Measure: opts.Measure}
	for _, mode := range []string{"bridge", "bare"} {
		cmd := child(ctx, opts.Command, append([]string{"-role", mode, "-url", url}, common...))
		b, err := cmd.Output()
		if err != nil {
			return Result{}, fmt.Errorf("run %s process: %w", mode, err)
		}
		var m Measurement
		if err := json.Unmarshal(b, &m); err != nil {
			return Result{}, fmt.Errorf("read %s result: %w", mode, err)
		}
		if mode == "bridge" {
			res.Bridge = m
		} else {
			res.Bare = m
		}
	}
	return res, nil
}

func child(ctx context.Context, command, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, command[0], append(append([]string(nil), command[1:]...), args...)...)
	cmd.Stderr = os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Main is the command line: without -role it runs the benchmark and prints
// the table (or JSON with -json); with a role it is one of the processes.
// prefix is the argv that re-executes the program up to these arguments
// (e.g. {"/usr/bin/bridge", "pollbench"}); nil means this executable.
func Main(ctx context.Context, prefix, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pollbench", flag.ContinueOnError)
	var opts Options
	role := fs.String("role", "", "internal: server, bridge or bare")
	url := fs.String("url", "", "internal: simulator URL")
	idsFile := fs.String("ids-file", "", "internal: agent ID file")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured period of each polling process to this file prefix")
	fs.IntVar(&opts.Agents, "agents", 10_000, "agents polled")
	fs.DurationVar(&opts.Interval, "interval", 10*time.Second, "poll interval per agent")
	fs.DurationVar(&opts.Warmup, "warmup", 0, "warm-up before measuring (default one interval)")
	fs.DurationVar(&opts.Measure, "measure", 0, "measured period (default two intervals)")
	fs.IntVar(&opts.Concurrency, "concurrency", source.DefaultMaxConcurrency, "workers (BRIDGE_MAX_CONCURRENCY)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts.defaults()
	opts.Command = prefix
	opts.CPUProfile = *cpuProfile
	switch *role {
	case "":
		res, err := Run(ctx, opts)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(res)
		}
		_, err = io.WriteString(stdout, res.String())
		return err
	case "server":
		return serve(ctx, opts, *idsFile, stdout)
	case "bridge", "bare":
		m, err := measure(ctx, *role, opts, *url, *idsFile, *cpuProfile)
		if err != nil {
			return err
		}
		return json.NewEncoder(stdout).Encode(m)
	default:
		return fmt.Errorf("unknown role %q", *role)
	}
}

// serve runs the simulator with opts.Agents agents, writes their IDs to
// idsFile and its URL to stdout, and serves until ctx ends.
func serve(ctx context.Context, opts Options, idsFile string, stdout io.Writer) error {
	so := simulator.DefaultOptions()
	so.Agents = opts.Agents
	so.ChangeInterval = 5 * time.Second
	so.ChangeProbability = 0.05
	sim, err := simulator.New(so)
	if err != nil {
		return fmt.Errorf("build simulator: %w", err)
	}
	if err := os.WriteFile(idsFile, []byte(strings.Join(sim.AgentIDs(), "\n")), 0o600); err != nil {
		return fmt.Errorf("write agent IDs: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Fprintf(stdout, "http://%s\n", ln.Addr())
	err = sim.Serve(ctx, ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// measure runs one polling loop, warms up, and measures.
func measure(ctx context.Context, mode string, opts Options, url, idsFile, profile string) (Measurement, error) {
	ids, err := source.LoadAgentFile(idsFile)
	if err != nil {
		return Measurement{}, err
	}
	if len(ids) != opts.Agents {
		return Measurement{}, fmt.Errorf("agent file has %d agents, want %d", len(ids), opts.Agents)
	}
	var polls, errs atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	switch mode {
	case "bridge":
		client, err := source.NewClient(source.ClientOptions{OrgURL: url, Tokens: source.StaticToken(simulator.DefaultToken), MaxConns: opts.Concurrency})
		if err != nil {
			return Measurement{}, err
		}
		p, err := source.NewPoller(source.PollerOptions{
			Getter: client, Interval: opts.Interval, MaxConcurrency: opts.Concurrency,
			Sink: source.SinkFunc(func(_ context.Context, o source.Observation) error {
				polls.Add(1)
				if o.Class != source.ClassOK {
					errs.Add(1)
				}
				return nil
			}),
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			return Measurement{}, err
		}
		p.SetAgents(ids)
		wg.Go(func() { _ = p.Run(ctx) })
	case "bare":
		wg.Go(func() { bareLoop(ctx, opts, url, ids, &polls, &errs) })
	}
	select {
	case <-time.After(opts.Warmup):
	case <-ctx.Done():
		return Measurement{}, ctx.Err()
	}
	if profile != "" {
		f, err := os.Create(profile + "." + mode)
		if err != nil {
			return Measurement{}, fmt.Errorf("create CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return Measurement{}, fmt.Errorf("start CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, p0, e0 := cpuTime(), polls.Load(), errs.Load()
	select {
	case <-time.After(opts.Measure):
	case <-ctx.Done():
		return Measurement{}, ctx.Err()
	}
	cpu1, p1, e1 := cpuTime(), polls.Load(), errs.Load()
	rss := residentBytes()
	cancel()
	wg.Wait()
	m := Measurement{Mode: mode, Polls: p1 - p0, Errors: e1 - e0, CPU: cpu1 - cpu0, RSS: rss, RSSPerAgent: float64(rss) / float64(opts.Agents)}
	if m.Polls > 0 {
		m.CPUPerPoll = m.CPU / time.Duration(m.Polls)
	}
	if m.Polls == 0 {
		return m, errors.New("no polls completed")
	}
	return m, nil
}

// BareUserAgent is the User-Agent of the bare loop's requests, by which a
// simulator shared with the bridge tells them apart.
const BareUserAgent = "pollbench-bare-loop"

// bareLoop is the reference: every slot (the bridge poller's width for the
// interval, source.SlotWidthFor) the requests due by then go to a fixed
// pool of workers, each a plain GET with the two headers, io.ReadAll and
// json.Unmarshal into a struct. What is due is counted from the start, so
// that requests that waited for busy workers are still made, as the
// bridge's poller keeps an agent due until it is polled.
func bareLoop(ctx context.Context, opts Options, url string, ids []string, polls, errs *atomic.Int64) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: opts.Concurrency}}
	jobs := make(chan string, opts.Concurrency)
	var wg sync.WaitGroup
	target := strings.TrimRight(url, "/") + "/api/data/v9.2/CCaaS_GetPresence"
	for range opts.Concurrency {
		wg.Go(func() {
			for id := range jobs {
				if bareGet(ctx, hc, target, id) != nil {
					errs.Add(1)
				}
				polls.Add(1)
			}
		})
	}
	defer wg.Wait()
	defer close(jobs)
	t := time.NewTicker(source.SlotWidthFor(opts.Interval))
	defer t.Stop()
	start := time.Now()
	for sent := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due := int(float64(len(ids)) * float64(time.Since(start)) / float64(opts.Interval))
		for ; sent < due; sent++ {
			select {
			case jobs <- ids[sent%len(ids)]:
			case <-ctx.Done():
				return
			}
		}
	}
}

// barePresence is the bare loop's own copy of the answer's shape (as the
// simulator has its own): the baseline shares no code with the bridge.
type barePresence struct {
	ActiveBrowserSessions     int      `json:"ActiveBrowserSessions"`
	AgentID                   string   `json:"AgentId"`
	AgentName                 string   `json:"AgentName"`
	Timestamp                 int64    `json:"Timestamp"`
	AllowedChannels           []string `json:"AllowedChannels"`
	CurrentPresenceStatusInfo string   `json:"CurrentPresenceStatusInfo"`
	DisabledChannels          []string `json:"DisabledChannels"`
	PresenceID                string   `json:"PresenceId"`
}

func bareGet(ctx context.Context, hc *http.Client, url, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("MSCRMCallerID", id)
	req.Header.Set("Authorization", "Bearer "+simulator.DefaultToken)
	req.Header.Set("User-Agent", BareUserAgent)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var p barePresence
	return json.Unmarshal(b, &p)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// residentBytes reads the resident set from /proc/self/statm (Linux).
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
