package wholebench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/publish/bench"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/source/pollbench"
)

// Main is the command line: without -role it runs the benchmark and prints
// the table (or JSON with -json); with -role=sim, -role=nats or
// -role=publish it is one of the run's processes. prefix is the argv that
// re-executes the program up to these arguments (e.g. {"/usr/bin/bridge",
// "wholebench"}); its first element is the bridge binary. nil means this
// executable and {"wholebench"}.
func Main(ctx context.Context, prefix, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("wholebench", flag.ContinueOnError)
	var opts Options
	role := fs.String("role", "", "internal: sim, nats or publish")
	workload := fs.String("workload", WorkloadQuiet+","+WorkloadChanging, "workloads, comma-separated: "+WorkloadQuiet+" (nothing changes) and "+WorkloadChanging+" (the simulator's default change rate)")
	idsFile := fs.String("ids-file", "", "internal: agent ID file written by the simulator")
	storeDir := fs.String("store-dir", "", "internal: JetStream store directory")
	natsURL := fs.String("nats-url", "", "internal: JetStream server the publish role publishes to")
	publishRate := fs.Float64("publish-rate", 0, "internal: events per second the publish role hands over (0: as fast as its window allows)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	noLeases := fs.Bool("no-leases", false, "run the bridge with BRIDGE_LEASE_ENABLED=false")
	noEmbedded := fs.Bool("no-embedded", false, "skip the second measurement of each workload's bridge, with its embedded JetStream")
	fs.IntVar(&opts.Agents, "agents", 10_000, "agents in the simulated organisation")
	fs.DurationVar(&opts.Interval, "interval", 10*time.Second, "poll interval per agent (BRIDGE_POLL_INTERVAL)")
	fs.DurationVar(&opts.Warmup, "warmup", 0, "warm-up before measuring (default two intervals: the first round and the second, whose first repeats the bridge still compares; the bridge also waits for its start-up burst)")
	fs.DurationVar(&opts.Measure, "measure", 0, "measured period of each process (default two intervals)")
	fs.IntVar(&opts.Concurrency, "concurrency", source.DefaultMaxConcurrency, "workers (BRIDGE_MAX_CONCURRENCY)")
	fs.IntVar(&opts.PublishEvents, "publish-events", DefaultPublishEvents, "events the publish path alone publishes, in its own process, after the bridge of a workload that published nothing has stopped (otherwise as many as the bridge published, at its rate)")
	fs.StringVar(&opts.ProfileDir, "profile-dir", "", "write the bridge's CPU profile of the measured period (at most 25 s of it) and its heap profile at the end to DIR/<workload>-cpu.pprof and DIR/<workload>-heap.pprof (BRIDGE_PPROF=true); the profiling's own CPU, small, is then included in the bridge's measured CPU")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *role {
	case "":
	case "sim":
		return serveSim(ctx, opts.Agents, *workload, *idsFile, stdout)
	case "nats":
		return serveNATS(ctx, *storeDir, stdout)
	case "publish":
		return publishAlone(ctx, *natsURL, opts.Agents, opts.PublishEvents, *publishRate, stdout)
	default:
		return fmt.Errorf("unknown role %q", *role)
	}
	opts.NoLeases = *noLeases
	opts.NoEmbedded = *noEmbedded
	opts.Workloads = strings.Split(*workload, ",")
	if len(prefix) > 0 {
		opts.Executable, opts.RolePrefix = prefix[0], prefix[1:]
	}
	res, err := Run(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	_, err = io.WriteString(stdout, res.String())
	return err
}

// serveSim runs the simulator with agents agents and the workload's change
// rate, writes their IDs to idsFile and its URL to stdout, and serves until
// ctx ends. Beside the organisation's API it answers CountsPath with its
// counts of CCaaS_GetPresence requests, the bare loop's
// (pollbench.BareUserAgent) apart from the bridge's.
func serveSim(ctx context.Context, agents int, workload, idsFile string, stdout io.Writer) error {
	if workload != WorkloadQuiet && workload != WorkloadChanging {
		return fmt.Errorf("workload %q is not %s or %s", workload, WorkloadQuiet, WorkloadChanging)
	}
	so := simulator.DefaultOptions()
	so.Agents = agents
	sim, err := simulator.New(so)
	if err != nil {
		return fmt.Errorf("build simulator: %w", err)
	}
	if err := os.WriteFile(idsFile, []byte(strings.Join(sim.AgentIDs(), "\n")), 0o600); err != nil {
		return fmt.Errorf("write agent IDs: %w", err)
	}
	var counts presenceCounts
	mux := http.NewServeMux()
	mux.Handle("/", counts.count(sim.Handler()))
	mux.HandleFunc(CountsPath, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(counts.load())
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for simulator: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	defer wg.Wait()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if workload == WorkloadChanging {
		wg.Go(func() { _ = sim.Run(runCtx, so.ChangeInterval) })
	}
	wg.Go(func() {
		<-runCtx.Done()
		_ = srv.Close()
	})
	fmt.Fprintf(stdout, "http://%s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve simulator: %w", err)
	}
	return nil
}

// presenceCounts counts the simulator's CCaaS_GetPresence requests by
// caller: the bare loop's and everybody else's (the bridge's).
type presenceCounts struct {
	bridge, bridgeFailed, bare, bareFailed atomic.Int64
}

// count wraps the simulator's handler: every request whose path names
// CCaaS_GetPresence is counted once answered, as failed unless answered
// 200.
func (c *presenceCounts) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "CCaaS_GetPresence") {
			next.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		total, failed := &c.bridge, &c.bridgeFailed
		if r.UserAgent() == pollbench.BareUserAgent {
			total, failed = &c.bare, &c.bareFailed
		}
		total.Add(1)
		if sw.status != http.StatusOK {
			failed.Add(1)
		}
	})
}

func (c *presenceCounts) load() simCounts {
	return simCounts{
		Bridge: callerCounts{Presence: c.bridge.Load(), Failed: c.bridgeFailed.Load()},
		Bare:   callerCounts{Presence: c.bare.Load(), Failed: c.bareFailed.Load()},
	}
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serveNATS runs a JetStream server on a free loopback port with its store
// in dir, writes its URL to stdout and serves until ctx ends.
func serveNATS(ctx context.Context, dir string, stdout io.Writer) error {
	srv, err := embeddednats.Start(ctx, embeddednats.Options{Listen: "127.0.0.1:-1", DataDir: dir, ServerName: "wholebench"})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	fmt.Fprintln(stdout, srv.ClientURL())
	<-ctx.Done()
	return nil
}

// The publish role's stream, beside the bridge's on the same server, and
// the source of its events.
const (
	publishStream = "WHOLEBENCH_PUBLISH"
	publishPrefix = "wholebench.agents"
	publishSource = "https://contoso.crm.dynamics.com"
)

// publishAlone is the publish path alone, as the bridge runs it: it
// connects to the JetStream server at url, creates its own stream anew
// (publishStream on publishPrefix, the bridge's stream settings otherwise),
// and publishes through a publish.Publisher with the bridge's defaults
// (fenced, acknowledged, window publish.DefaultMaxPending) first one event
// per agent (not measured: each agent's first position, as the bridge has
// after its start-up burst), then the given number of real-sized
// presence.changed events spread over the agents, handed over at perSecond
// events per second (0: as fast as the window allows). It writes to stdout
// one JSON line, a PublishPath with its own CPU (getrusage) and wall time
// over the measured events.
func publishAlone(ctx context.Context, url string, agents, events int, perSecond float64, stdout io.Writer) error {
	if url == "" {
		return errors.New("publish role: -nats-url is required")
	}
	if agents <= 0 || events <= 0 {
		return fmt.Errorf("publish role: %d agents, %d events: want both positive", agents, events)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("open JetStream: %w", err)
	}
	// Each run of the role starts its agents' histories anew.
	if err := js.DeleteStream(ctx, publishStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete stream %s of an earlier run: %w", publishStream, err)
	}
	if _, err := publish.EnsureStream(ctx, js, publish.StreamOptions{Name: publishStream, SubjectPrefix: publishPrefix, Manage: true}); err != nil {
		return fmt.Errorf("create stream %s: %w", publishStream, err)
	}
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: publishSource, SubjectPrefix: publishPrefix,
		BridgeVersion: "wholebench", MaxPayload: int(nc.MaxPayload())})
	if err != nil {
		return fmt.Errorf("build encoder: %w", err)
	}
	p, err := publish.NewPublisher(nc, publish.Options{Encoder: enc, Stream: publishStream})
	if err != nil {
		return fmt.Errorf("build publisher: %w", err)
	}
	all := bench.MakeEvents(agents+events, agents)
	_, err = bench.Publish(ctx, p, all[:agents], nil)
	var res bench.ScenarioResult
	if err == nil {
		var pace *rate.Limiter
		if perSecond > 0 {
			pace = rate.NewLimiter(rate.Limit(perSecond), 1)
		}
		res, err = bench.Publish(ctx, p, all[agents:], pace)
	}
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publish.DefaultPublishTimeout)
		defer cancel()
		_ = p.Close(closeCtx) // what is held ends with the error below
		return fmt.Errorf("publish %d events over %d agents: %w", agents+events, agents, err)
	}
	if err := p.Close(ctx); err != nil {
		return fmt.Errorf("close publisher: %w", err)
	}
	return json.NewEncoder(stdout).Encode(PublishPath{Events: int64(res.Events), CPU: res.CPU,
		Duration: time.Duration(res.Seconds * float64(time.Second)), Paced: perSecond})
}
