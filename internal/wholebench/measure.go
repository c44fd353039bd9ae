package wholebench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ccaas/presence-bridge/internal/simulator"
)

// child is a process of the run.
type child struct {
	name     string
	cmd      *exec.Cmd
	stderr   tailBuffer
	done     chan error
	stopOnce sync.Once
}

// startTimeout bounds the wait for a child's address.
const startTimeout = 30 * time.Second

// startChild starts argv with env (nil: this environment) and, when
// wantLine, waits for the first line it writes to stdout (its address) and
// returns it.
func startChild(ctx context.Context, name string, argv, env []string, wantLine bool) (*child, string, error) {
	c := &child{name: name, cmd: exec.Command(argv[0], argv[1:]...), done: make(chan error, 1)}
	c.cmd.Env = env
	c.cmd.Stderr = &c.stderr
	first := &firstLine{line: make(chan string, 1)}
	c.cmd.Stdout = first
	if err := c.cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s process: %w", name, err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	if !wantLine {
		return c, "", nil
	}
	t := time.NewTimer(startTimeout)
	defer t.Stop()
	select {
	case line := <-first.line:
		return c, line, nil
	case err := <-c.done:
		c.done <- err
		return nil, "", fmt.Errorf("%s process ended before giving its address: %v (%s)", name, err, c.tail())
	case <-t.C:
		c.stop()
		return nil, "", fmt.Errorf("%s process gave no address within %s (%s)", name, startTimeout, c.tail())
	case <-ctx.Done():
		c.stop()
		return nil, "", ctx.Err()
	}
}

// firstLine sends the first line written to it and discards the rest.
type firstLine struct {
	buf  []byte
	sent bool
	line chan string
}

// Write is called by one goroutine of exec.Cmd.
func (f *firstLine) Write(p []byte) (int, error) {
	if !f.sent {
		f.buf = append(f.buf, p...)
		if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
			f.line <- strings.TrimSpace(string(f.buf[:i]))
			f.sent, f.buf = true, nil
		}
	}
	return len(p), nil
}

// tailBuffer keeps the last tailBytes written to it; safe for concurrent
// use.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailBytes = 4096

// Write is the child's stderr.
func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*tailBytes {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-tailBytes:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf
	if len(s) > tailBytes {
		s = s[len(s)-tailBytes:]
	}
	return string(s)
}

// stop interrupts the process and waits for it, killing it after 30 s;
// later calls return at once.
func (c *child) stop() {
	c.stopOnce.Do(func() {
		_ = c.cmd.Process.Signal(os.Interrupt)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
}

// exited returns an error if the process has already ended.
func (c *child) exited() error {
	select {
	case err := <-c.done:
		c.done <- err
		return fmt.Errorf("%s process ended early: %v (%s)", c.name, err, c.tail())
	default:
		return nil
	}
}

func (c *child) tail() string { return strings.TrimSpace(c.stderr.String()) }

// usage is a process's CPU time, peak and current resident set.
type usage struct {
	cpu       time.Duration
	peak, rss int64
}

// readUsage reads utime + stime, VmHWM and VmRSS of pid from /proc.
func readUsage(pid int) (usage, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return usage{}, fmt.Errorf("read /proc of %d: %w", pid, err)
	}
	st, err := p.Stat()
	if err != nil {
		return usage{}, fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	status, err := p.NewStatus()
	if err != nil {
		return usage{}, fmt.Errorf("read /proc/%d/status: %w", pid, err)
	}
	return usage{cpu: time.Duration(st.CPUTime() * float64(time.Second)), peak: int64(status.VmHWM), rss: int64(status.VmRSS)}, nil
}

// simCounts is what the simulator role reports on CountsPath: the
// CCaaS_GetPresence requests answered, the bridge's and the bare loop's.
type simCounts struct {
	Bridge callerCounts `json:"bridge"`
	Bare   callerCounts `json:"bare"`
}

// callerCounts are one caller's CCaaS_GetPresence requests answered, and
// those not answered 200.
type callerCounts struct {
	Presence int64 `json:"presence"`
	Failed   int64 `json:"failed"`
}

// CountsPath is where the simulator role serves its request counts.
const CountsPath = "/wholebench/requests"

func getJSON(ctx context.Context, url string, v any) error {
	body, err := get(ctx, url)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	return nil
}

func get(ctx context.Context, url string) ([]byte, error) {
	return getWithin(ctx, url, 5*time.Second)
}

// getWithin gets url, whose answer must be complete within timeout.
func getWithin(ctx context.Context, url string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: HTTP %d", url, resp.StatusCode)
	}
	return body, nil
}

// Names of the bridge's metrics read from its /metrics.
const (
	metricPolls     = "ccaas_bridge_polls_total"
	metricPublished = "ccaas_bridge_events_published_total"
)

// bridgeCounts is the bridge's own count of polls and published events.
type bridgeCounts struct{ polls, published int64 }

// scrape reads the bridge's counters: each the sum of its samples over all
// labels.
func scrape(ctx context.Context, addr string) (bridgeCounts, error) {
	body, err := get(ctx, "http://"+addr+"/metrics")
	if err != nil {
		return bridgeCounts{}, err
	}
	var c bridgeCounts
	for line := range strings.SplitSeq(string(body), "\n") {
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i > 0 && (!ok || i < len(name)) {
			name, rest, ok = line[:i], line[strings.LastIndexByte(line, '}')+1:], true
		}
		if !ok || (name != metricPolls && name != metricPublished) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return bridgeCounts{}, fmt.Errorf("parse %s sample %q: %w", name, line, err)
		}
		if name == metricPolls {
			c.polls += int64(v)
		} else {
			c.published += int64(v)
		}
	}
	return c, nil
}

// freeAddr returns a loopback address free at the time of the call.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// bridgeEnv is this environment without BRIDGE_ and AZURE_ variables, with
// the bridge's configuration for the run.
func bridgeEnv(opts Options, simURL, natsURL, idsFile, httpAddr string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BRIDGE_") && !strings.HasPrefix(kv, "AZURE_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"BRIDGE_ORG_URL="+simURL,
		"BRIDGE_TOKEN="+simulator.DefaultToken,
		"BRIDGE_AGENT_IDS_FILE="+idsFile,
		"BRIDGE_NATS_URL="+natsURL,
		"BRIDGE_HTTP_ADDR="+httpAddr,
		"BRIDGE_POLL_INTERVAL="+opts.Interval.String(),
		"BRIDGE_MAX_CONCURRENCY="+strconv.Itoa(opts.Concurrency),
		"BRIDGE_LEASE_ENABLED="+strconv.FormatBool(!opts.NoLeases),
		"BRIDGE_LOG_LEVEL=warn",
		"BRIDGE_PPROF="+strconv.FormatBool(opts.ProfileDir != ""),
	)
}

// runWorkload starts the simulator and JetStream processes, measures the
// bridge and, over the same period, the bare loop against the same
// simulator, then the bridge with its embedded JetStream (unless
// Options.NoEmbedded) and the publish path alone against the JetStream
// server.
func runWorkload(ctx context.Context, opts Options, name, dir string) (Workload, error) {
	role := func(args ...string) []string {
		return append(append([]string{opts.Executable}, opts.RolePrefix...), args...)
	}
	idsFile := filepath.Join(dir, "agents")
	sim, simURL, err := startChild(ctx, "simulator", role("-role", "sim", "-workload", name,
		"-agents", strconv.Itoa(opts.Agents), "-ids-file", idsFile), nil, true)
	if err != nil {
		return Workload{}, err
	}
	defer sim.stop()
	storeDir := filepath.Join(dir, "nats")
	nats, natsURL, err := startChild(ctx, "JetStream", role("-role", "nats", "-store-dir", storeDir), nil, true)
	if err != nil {
		return Workload{}, err
	}
	defer nats.stop()

	w := Workload{Name: name}
	httpAddr, err := freeAddr()
	if err != nil {
		return Workload{}, err
	}
	bare, err := startBare(ctx, opts, simURL, idsFile)
	if err != nil {
		return Workload{}, err
	}
	defer bare.stop()
	run, err := measureBridge(ctx, opts, bridgeEnv(opts, simURL, natsURL, idsFile, httpAddr), httpAddr, simURL, name, bare)
	if err != nil {
		return Workload{}, err
	}
	bare.stop()
	w.Bridge, w.BridgePolls, w.Events, w.Burst, w.Bare = run.proc, run.polls, run.events, run.burst, run.bare
	if !opts.NoEmbedded {
		if w.Embedded, err = measureEmbedded(ctx, opts, simURL, idsFile, filepath.Join(dir, "embedded")); err != nil {
			return Workload{}, fmt.Errorf("embedded JetStream: %w", err)
		}
	}
	publishRole := func(events int, perSecond float64) []string {
		return role("-role", "publish", "-nats-url", natsURL, "-agents", strconv.Itoa(opts.Agents),
			"-publish-events", strconv.Itoa(events), "-publish-rate", strconv.FormatFloat(perSecond, 'f', 3, 64))
	}
	if w.Publish, err = measurePublish(ctx, publishRole(opts.PublishEvents, 0)); err != nil {
		return Workload{}, err
	}
	if w.Events > 0 {
		// What the bridge published in its measured period, at its rate:
		// the same wake-ups per event.
		if w.PublishPaced, err = measurePublish(ctx, publishRole(int(w.Events), float64(w.Events)/opts.Measure.Seconds())); err != nil {
			return Workload{}, err
		}
	}
	w.derive(opts.Agents)
	return w, nil
}

// measureEmbedded measures the bridge again, against the same simulator,
// with its own embedded JetStream (BRIDGE_NATS_URL empty) storing in
// dataDir, as `bridge run` starts with no NATS URL.
func measureEmbedded(ctx context.Context, opts Options, simURL, idsFile, dataDir string) (*Embedded, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	natsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := append(bridgeEnv(opts, simURL, "", idsFile, httpAddr),
		"BRIDGE_DATA_DIR="+dataDir, "BRIDGE_EMBEDDED_NATS_LISTEN="+natsAddr)
	run, err := measureBridge(ctx, opts, env, httpAddr, simURL, "", nil)
	if err != nil {
		return nil, err
	}
	return &Embedded{Bridge: run.proc, Events: run.events, Burst: run.burst}, nil
}

// sample is the counters at one instant of a measured period.
type sample struct {
	use    usage
	sim    callerCounts // the measured process's requests
	bridge bridgeCounts
}

// takeSample reads c's usage, the simulator's counts of c's requests (the
// bare loop's when bare) and, when bridgeAddr is set, the bridge's
// metrics.
func takeSample(ctx context.Context, c *child, simURL, bridgeAddr string, bare bool) (sample, error) {
	if err := c.exited(); err != nil {
		return sample{}, err
	}
	var s sample
	var err error
	if s.use, err = readUsage(c.cmd.Process.Pid); err != nil {
		return sample{}, err
	}
	var counts simCounts
	if err := getJSON(ctx, simURL+CountsPath, &counts); err != nil {
		return sample{}, err
	}
	s.sim = counts.Bridge
	if bare {
		s.sim = counts.Bare
	}
	if bridgeAddr != "" {
		if s.bridge, err = scrape(ctx, bridgeAddr); err != nil {
			return sample{}, err
		}
	}
	return s, nil
}

// period fills p from the samples at the start and end of the period.
func period(p *Process, s0, s1 sample) error {
	p.Polls = s1.sim.Presence - s0.sim.Presence
	p.Failed = s1.sim.Failed - s0.sim.Failed
	p.CPU = s1.use.cpu - s0.use.cpu
	p.PeakRSS = s1.use.peak
	p.RSS = s1.use.rss
	if p.Polls-p.Failed <= 0 {
		return errNoPolls
	}
	return nil
}

// bridgeRun is what was measured of one bridge process.
type bridgeRun struct {
	proc   Process
	polls  int64 // its own count (ccaas_bridge_polls_total)
	events int64 // published in the period
	burst  Burst
	bare   Process // the bare loop over the same period, when measured beside
}

// measureBridge runs the bridge with env until its start-up burst is
// published and the warm-up is over, and measures it over the period, and
// the bare loop (when not nil, polling the same simulator) over the same
// period; with profile set (and Options.ProfileDir) it writes its profiles
// of the period as <profile>-cpu.pprof and <profile>-heap.pprof.
func measureBridge(ctx context.Context, opts Options, env []string, httpAddr, simURL, profile string, bare *child) (bridgeRun, error) {
	argv := []string{opts.Executable, RunCommand}
	br, _, err := startChild(ctx, "bridge", argv, env, false)
	if err != nil {
		return bridgeRun{}, err
	}
	defer br.stop()
	started := time.Now()
	var run bridgeRun
	if run.burst, err = waitBurst(ctx, opts, br, httpAddr, started); err != nil {
		return bridgeRun{}, err
	}
	if err := sleep(ctx, time.Until(started.Add(opts.Warmup))); err != nil {
		return bridgeRun{}, err
	}
	s0, err := takeSample(ctx, br, simURL, httpAddr, false)
	if err != nil {
		return bridgeRun{}, err
	}
	var b0 sample
	if bare != nil {
		if b0, err = takeSample(ctx, bare, simURL, "", true); err != nil {
			return bridgeRun{}, err
		}
	}
	profiling := opts.ProfileDir != "" && profile != ""
	profile = filepath.Join(opts.ProfileDir, profile)
	var cpuProfile <-chan error // the profile of the measured period, fetched meanwhile
	if profiling {
		profCtx, cancel := context.WithCancel(ctx)
		ch := make(chan error, 1)
		defer func() {
			cancel()
			<-ch
		}()
		cpuProfile = ch
		go func() {
			defer close(ch) // after its one value: the deferred receive above never blocks
			ch <- fetchProfile(profCtx, httpAddr, fmt.Sprintf("profile?seconds=%d", int(profileLength(opts.Measure).Seconds())),
				profile+"-cpu.pprof", profileLength(opts.Measure))
		}()
	}
	if err := sleep(ctx, opts.Measure); err != nil {
		return bridgeRun{}, err
	}
	s1, err := takeSample(ctx, br, simURL, httpAddr, false)
	if err != nil {
		return bridgeRun{}, err
	}
	if bare != nil {
		b1, err := takeSample(ctx, bare, simURL, "", true)
		if err != nil {
			return bridgeRun{}, err
		}
		if err := period(&run.bare, b0, b1); err != nil {
			return bridgeRun{}, fmt.Errorf("bare loop: %w", err)
		}
	}
	if cpuProfile != nil {
		if err := <-cpuProfile; err != nil { // ends with ctx: its context is ctx's
			return bridgeRun{}, err
		}
		if err := fetchProfile(ctx, httpAddr, "heap", profile+"-heap.pprof", 0); err != nil {
			return bridgeRun{}, err
		}
	}
	run.polls = s1.bridge.polls - s0.bridge.polls
	run.events = s1.bridge.published - s0.bridge.published
	if err := period(&run.proc, s0, s1); err != nil {
		return bridgeRun{}, fmt.Errorf("bridge: %w", err)
	}
	return run, nil
}

// profileLength is the length of the bridge's CPU profile in a measured
// period of measure: its whole seconds, at least one, at most maxProfile.
func profileLength(measure time.Duration) time.Duration {
	return max(time.Second, min(measure, maxProfile).Truncate(time.Second))
}

// fetchProfile gets the bridge's /debug/pprof/<what>, whose answer takes
// length to be ready, and writes it to file.
func fetchProfile(ctx context.Context, httpAddr, what, file string, length time.Duration) error {
	body, err := getWithin(ctx, "http://"+httpAddr+"/debug/pprof/"+what, length+10*time.Second)
	if err != nil {
		return fmt.Errorf("bridge profile: %w", err)
	}
	if err := os.WriteFile(file, body, 0o644); err != nil {
		return fmt.Errorf("write bridge profile: %w", err)
	}
	return nil
}

// measurePublish runs the publish role (argv) to its end and returns what it
// reported.
func measurePublish(ctx context.Context, argv []string) (PublishPath, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return PublishPath{}, fmt.Errorf("publish path process: %w (%s)", err, strings.TrimSpace(stderr.String()))
	}
	var p PublishPath
	if err := json.Unmarshal(out, &p); err != nil {
		return PublishPath{}, fmt.Errorf("read the publish path's result %q: %w", out, err)
	}
	if p.Events <= 0 || p.CPU <= 0 {
		return PublishPath{}, fmt.Errorf("publish path reported %d events and %s of CPU", p.Events, p.CPU)
	}
	return p, nil
}

// waitBurst scrapes the bridge every 100 ms until every agent was polled
// and three events per agent were published, and returns the burst.
func waitBurst(ctx context.Context, opts Options, br *child, httpAddr string, started time.Time) (Burst, error) {
	deadline := started.Add(opts.Warmup + 3*opts.Interval + 30*time.Second)
	want := int64(opts.Agents)
	var last bridgeCounts
	for {
		if err := br.exited(); err != nil {
			return Burst{}, err
		}
		if c, err := scrape(ctx, httpAddr); err == nil {
			last = c
			if c.polls >= want && c.published >= 3*want {
				u, err := readUsage(br.cmd.Process.Pid)
				if err != nil {
					return Burst{}, err
				}
				return Burst{Duration: time.Since(started), Events: c.published, CPU: u.cpu}, nil
			}
		}
		if time.Now().After(deadline) {
			return Burst{}, fmt.Errorf("start-up burst incomplete after %s: %d polls, %d events published, want %d and %d (%s)",
				time.Since(started).Round(time.Second), last.polls, last.published, want, 3*want, br.tail())
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return Burst{}, err
		}
	}
}

// startBare starts pollbench's bare loop against the simulator at simURL;
// it polls until stopped.
func startBare(ctx context.Context, opts Options, simURL, idsFile string) (*child, error) {
	argv := []string{opts.Executable, PollBenchCommand, "-role", "bare", "-url", simURL, "-ids-file", idsFile,
		"-agents", strconv.Itoa(opts.Agents), "-interval", opts.Interval.String(),
		"-concurrency", strconv.Itoa(opts.Concurrency),
		"-warmup", time.Hour.String(), "-measure", time.Hour.String()} // never reached: interrupted after our period
	bare, _, err := startChild(ctx, "bare loop", argv, nil, false)
	return bare, err
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
