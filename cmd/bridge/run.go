package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/lease"
	"github.com/ccaas/presence-bridge/internal/ops"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/statebucket"
)

func cmdRun(ctx context.Context, fs *flag.FlagSet, args []string, _, stderr io.Writer) int {
	if done, code := parseFlags(fs, args); done {
		return code
	}
	cfg, ok := loadConfig(stderr, config.Needs{Organisation: true})
	if !ok {
		return exitConfig
	}
	plan, err := planSource(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "bridge: invalid configuration:\n  %v\n", err)
		return exitConfig
	}
	log, err := newLogger(stderr, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "bridge: invalid configuration:\n  %v\n", err)
		return exitConfig
	}
	if !preflight(stderr, "run", bridgeRunning, localAddrs(cfg), embeddedDataDir(cfg)) {
		return exitConfig
	}
	if err := runBridge(ctx, cfg, plan, log, hooks{}); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// SIGTERM or SIGINT during start: a requested stop, not a failure.
			log.Info("stopped during start")
			return exitOK
		}
		log.Error("bridge stopped", "err", err)
		return exitFail
	}
	return exitOK
}

// sourcePlan is what the source needs beyond the configuration, resolved
// and validated before anything starts.
type sourcePlan struct {
	agents      []string
	presenceMap map[string]string
	call        source.CallForm
	scope       source.QuotaScope
	// entitlement warns when the plan exceeds the daily request
	// entitlement; "" when it fits.
	entitlement string
}

// planSource reads the agent list and the presence overrides and checks the
// polling plan against Dataverse's service-protection limits.
func planSource(cfg config.Config) (sourcePlan, error) {
	var p sourcePlan
	var err error
	p.agents = cfg.AgentIDs
	if cfg.AgentIDsFile != "" {
		p.agents, err = source.LoadAgentFile(cfg.AgentIDsFile)
		var le *source.AgentListError
		if err != nil && (!errors.As(err, &le) || le.Invalid()) {
			return p, fmt.Errorf("BRIDGE_AGENT_IDS_FILE: %w", err)
		}
		if len(p.agents) == 0 {
			return p, fmt.Errorf("BRIDGE_AGENT_IDS_FILE: %s lists no agent", cfg.AgentIDsFile)
		}
	}
	if cfg.PresenceMap != "" {
		if p.presenceMap, err = source.ParsePresenceMap(cfg.PresenceMap); err != nil {
			return p, fmt.Errorf("BRIDGE_PRESENCE_MAP: %w", err)
		}
	}
	if p.call, err = source.ParseCallForm(cfg.PresenceCall); err != nil {
		return p, fmt.Errorf("BRIDGE_PRESENCE_CALL: %w", err)
	}
	if p.scope, err = source.ParseQuotaScope(cfg.QuotaScope); err != nil {
		return p, fmt.Errorf("BRIDGE_QUOTA_SCOPE: %w", err)
	}
	limits := source.LimitsConfig{
		Agents: len(p.agents), Interval: cfg.PollInterval, MaxRPS: cfg.MaxRPS, MaxConcurrency: cfg.MaxConcurrency, Scope: p.scope,
	}
	if err := source.CheckLimits(limits); err != nil {
		return p, fmt.Errorf("BRIDGE_POLL_INTERVAL, BRIDGE_MAX_RPS, BRIDGE_QUOTA_SCOPE: %w", err)
	}
	p.entitlement = source.EntitlementWarning(limits)
	return p, nil
}

// hooks let `bridge demo` watch the running bridge.
type hooks struct {
	// onPublished is called with every acknowledged event.
	onPublished func(detector.Event)
	// onStarted is called once everything runs, with the pipeline and the
	// poller for summaries.
	onStarted func(*pipeline.Pipeline, *source.Poller)
	// tokens overrides the token provider (the demo's simulator token).
	tokens source.TokenProvider
	// eventSource overrides the CloudEvent source, BRIDGE_ORG_URL (the
	// demo's organisation keeps one identity across runs).
	eventSource string
}

// runBridge runs the bridge until ctx ends, then shuts it down in order:
// stop polling, publish what is in flight and commit it, drain NATS, stop
// HTTP, stop the embedded server. It returns nil after a clean shutdown.
func runBridge(ctx context.Context, cfg config.Config, plan sourcePlan, log *slog.Logger, h hooks) (err error) {
	reg := prometheus.NewRegistry()
	var wg sync.WaitGroup
	defer wg.Wait()

	var opsSrv *ops.Server
	if cfg.HTTPAddr != "" {
		opsSrv, err = ops.New(ops.Options{Registry: reg, Version: version, Logger: log})
		if err != nil {
			return fmt.Errorf("build operator http: %w", err)
		}
		// Listen now: an address in use stops the bridge before it polls.
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listen for operator http (BRIDGE_HTTP_ADDR): %w", err)
		}
		// HTTP lives until everything else is shut down: the last step of
		// shutdown (or the deferred call when start fails) stops it.
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := opsSrv.Serve(context.WithoutCancel(ctx), ln); err != nil {
				log.Error("operator http failed", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
			defer cancel()
			_ = opsSrv.Shutdown(sctx) // after a normal shutdown: already done
		}()
	}

	natsURL := cfg.NATSURL
	if cfg.Embedded() {
		ns, err := embeddednats.Start(ctx, embeddednats.Options{Listen: cfg.EmbeddedNATSListen, DataDir: cfg.DataDir, Logger: log})
		if err != nil {
			return fmt.Errorf("start embedded nats: %w", err)
		}
		defer ns.Shutdown()
		natsURL = ns.ClientURL()
		log.Info("embedded JetStream running; attach with the nats CLI", "url", natsURL, "data_dir", cfg.DataDir)
	}

	pubMetrics, err := publish.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("register publish metrics: %w", err)
	}
	connOpts := publish.ConnOptions{
		URL: natsURL, CredsFile: cfg.NATSCreds, NKeySeedFile: cfg.NATSNKey, User: cfg.NATSUser, Password: cfg.NATSPassword,
		Token: cfg.NATSToken, CAFile: cfg.NATSCA, CertFile: cfg.NATSCert, KeyFile: cfg.NATSKey, Logger: log, Metrics: pubMetrics,
	}
	var conn atomic.Pointer[nats.Conn]
	if opsSrv != nil {
		opsSrv.AddCheck(ops.CheckFunc("nats", func() (bool, string) {
			if c := conn.Load(); c != nil {
				return ops.NATSCheck(c).Ready()
			}
			return false, "connecting"
		}))
	}
	nc, err := publish.ConnectRetry(ctx, connOpts)
	if err != nil {
		return err
	}
	conn.Store(nc)
	defer func() {
		// After a normal shutdown nc is closed already; this is for a start
		// that fails.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		if derr := publish.Drain(sctx, nc); derr != nil && err == nil {
			err = derr
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// JetStream that cannot answer or place the stream yet (no meta leader,
	// fewer peers than replicas) is waited for, like unreachable servers.
	jsReady := ops.NewFlag("jetstream", "jetstream: starting")
	retryJS := publish.RetryOptions{Conn: nc, Logger: log, OnRetry: func(reason string) { jsReady.Set(false, reason) }}
	if opsSrv != nil {
		opsSrv.AddCheck(jsReady)
		opsSrv.AddCheck(ops.StreamCheck(js, cfg.Stream))
	}
	if err := publish.RetryUnavailable(ctx, "stream "+cfg.Stream, func(ctx context.Context) error {
		_, err := publish.EnsureStream(ctx, js, publish.StreamOptions{
			Name: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, MaxAge: cfg.StreamMaxAge, Replicas: cfg.StreamReplicas,
			Storage: cfg.StreamStorage, DuplicateWindow: cfg.DuplicateWindow, Manage: cfg.StreamManage,
		})
		return err
	}, retryJS); err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Stream, err)
	}
	storage := jetstream.FileStorage
	if cfg.StreamStorage == "memory" {
		storage = jetstream.MemoryStorage
	}
	viewMetrics, err := statebucket.NewMetrics(reg)
	if err != nil {
		return err
	}
	var store *statebucket.Store
	if err := publish.RetryUnavailable(ctx, "state bucket "+cfg.StateBucket, func(ctx context.Context) error {
		store, err = statebucket.Open(ctx, js, statebucket.Options{
			Bucket: cfg.StateBucket, Replicas: cfg.StreamReplicas, Storage: storage, VerifyOnly: !cfg.StreamManage,
			Logger: log, Metrics: viewMetrics,
		})
		return err
	}, retryJS); err != nil {
		return err
	}

	eventSource := cfg.OrgURL
	if h.eventSource != "" {
		eventSource = h.eventSource
	}
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: eventSource, SubjectPrefix: cfg.SubjectPrefix, BridgeVersion: version, MaxPayload: int(nc.MaxPayload())})
	if err != nil {
		return fmt.Errorf("build encoder: %w", err)
	}
	pub, err := publish.NewPublisher(nc, publish.Options{
		Encoder: enc, Stream: cfg.Stream, MaxPending: cfg.PublishMaxPending, PublishTimeout: cfg.PublishTimeout, Logger: log, Metrics: pubMetrics,
	})
	if err != nil {
		return fmt.Errorf("build publisher: %w", err)
	}

	det, err := detector.New(detector.Options{StaleAfter: cfg.EffectiveStaleAfter(), Logger: log})
	if err != nil {
		return fmt.Errorf("build detector: %w", err)
	}
	var states []detector.AgentState
	loadJS := retryJS
	loadJS.AttemptTimeout = time.Minute // every agent's value: larger than one API call
	if err := publish.RetryUnavailable(ctx, "state bucket "+cfg.StateBucket, func(ctx context.Context) error {
		states, err = store.LoadAll(ctx)
		return err
	}, loadJS); err != nil {
		return fmt.Errorf("load agent states: %w", err)
	}
	det.Restore(states...)
	log.Info("agent states loaded", "bucket", cfg.StateBucket, "agents", len(states))
	pipeMetrics, err := pipeline.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("register pipeline metrics: %w", err)
	}
	var pipeBeat func()
	stopPipeBeat := func() {}
	if opsSrv != nil {
		hb := opsSrv.Heartbeat("pipeline", 10*time.Second)
		pipeBeat, stopPipeBeat = hb.Beat, hb.Stop
	}
	defer stopPipeBeat()
	pipe, err := pipeline.New(pipeline.Options{
		Detector: det, Publisher: pub, View: store, Logger: log, Metrics: pipeMetrics, SnapshotInterval: cfg.SnapshotInterval,
		OnPublished: h.onPublished, Beat: pipeBeat,
		// When the fence finds an agent's history on the stream moved on,
		// the agent's state is read back from the stream and adopted.
		Journal: pipeline.NewStreamJournal(pipeline.JournalOptions{
			JetStream: js, Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Logger: log, Metrics: pipeMetrics,
		}),
	})
	if err != nil {
		return fmt.Errorf("build pipeline: %w", err)
	}

	srcMetrics, err := source.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("register source metrics: %w", err)
	}
	tokens := h.tokens
	if tokens == nil {
		if tokens, err = tokenProvider(cfg, srcMetrics, log); err != nil {
			return err
		}
	}
	catalogue := source.NewCatalogue(plan.presenceMap)
	client, err := source.NewClient(source.ClientOptions{OrgURL: cfg.OrgURL, Tokens: tokens, Catalogue: catalogue, MaxConns: cfg.MaxConcurrency, Metrics: srcMetrics, Call: plan.call, Logger: log})
	if err != nil {
		return fmt.Errorf("build presence client: %w", err)
	}
	if plan.entitlement != "" {
		log.Warn("daily request entitlement", "warning", plan.entitlement)
	}
	// Liveness: the poller's dispatch loop beats itself, never a goroutine
	// that takes other packages' locks.
	var beat func()
	stopBeat := func() {}
	if opsSrv != nil {
		hb := opsSrv.Heartbeat("poller", 10*time.Second)
		beat, stopBeat = hb.Beat, hb.Stop
	}
	defer stopBeat()
	var feedBeat func()
	stopFeedBeat := func() {}
	if opsSrv != nil && cfg.Feed != "off" {
		hb := opsSrv.Heartbeat("feed", source.DefaultFeedReadTimeout+2*time.Minute) // a read, a Retry-After and the interval
		feedBeat, stopFeedBeat = hb.Beat, hb.Stop
	}
	defer stopFeedBeat()
	feed, feedPoller, err := buildFeed(ctx, cfg, js, storage, client, pipe, reg, log, retryJS, feedBeat)
	if err != nil {
		return err
	}
	if feed == nil {
		stopFeedBeat()
	}
	var pollSink source.Sink = pipe
	if feed != nil {
		pollSink = feed.Sink(pipe) // while the feed reads, presence changes come from it
	}
	poller, err := source.NewPoller(source.PollerOptions{
		Getter: client, Sink: pollSink, Interval: cfg.PollInterval, RequestTimeout: cfg.RequestTimeout, MaxConcurrency: cfg.MaxConcurrency,
		MaxRPS: cfg.MaxRPS, PermanentRetry: cfg.PermanentRetry, BackoffMax: cfg.BackoffMax,
		DrainTimeout: cfg.ShutdownTimeout, Beat: beat,
		Logger: log, Metrics: srcMetrics, QuotaScope: plan.scope,
	})
	if err != nil {
		return fmt.Errorf("build poller: %w", err)
	}
	assign := lease.NewAssignment(plan.agents, cfg.ShardCount, cfg.LeaseEnabled, func(ids []string) {
		pipe.SetAgents(ids) // first: agents leaving are forgotten before their last polls report
		poller.SetAgents(ids)
		if feed != nil {
			feed.SetAgents(ids)
		}
	})
	if opsSrv != nil {
		opsSrv.AddActiveCheck(ops.CheckFunc("source", source.Readiness(poller, client.TokenAccepted, cfg.ReadyMinShare)))
		if feed != nil {
			opsSrv.AddCheck(ops.CheckFunc("feed", feed.Readiness))
		}
	}

	// The catalogue loads now (so first events carry base statuses) and
	// then every BRIDGE_PRESENCE_CATALOG_REFRESH.
	dctx, cancelDiscovery := context.WithTimeout(ctx, cfg.RequestTimeout)
	form, ferr := client.DiscoverCallForm(dctx)
	cancelDiscovery()
	log.Info("presence call form", "form", form.String(), "configured", cfg.PresenceCall, "definition_read", ferr == nil, "err", ferr)
	refresher := &source.CatalogueRefresher{Lister: client, Catalogue: catalogue, Every: cfg.PresenceCatalogRefresh, Logger: log, Metrics: srcMetrics}
	if err := refresher.Load(ctx); err != nil {
		log.Warn("custom presences not loaded; out-of-box presences and BRIDGE_PRESENCE_MAP still resolve", "err", err)
	}

	// Polling and the loops around it stop with ctx.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var loops sync.WaitGroup
	goLoop := func(name string, f func(context.Context) error) {
		loops.Add(1)
		go func() {
			defer loops.Done()
			if err := f(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("loop stopped", "loop", name, "err", err)
				stopRun()
			}
		}()
	}
	goLoop("pipeline", func(ctx context.Context) error {
		defer stopPipeBeat() // no beat is due once its loops have stopped
		return pipe.Run(ctx)
	})
	goLoop("catalogue", func(ctx context.Context) error {
		select { // loaded above; Run reloads at once, so start it one period later
		case <-ctx.Done():
			return nil
		case <-time.After(cfg.PresenceCatalogRefresh):
		}
		refresher.Run(ctx)
		return nil
	})
	if cfg.AgentIDsFile != "" {
		w := &source.AgentFileWatcher{Path: cfg.AgentIDsFile, Apply: assign.SetAgents, Logger: log}
		goLoop("agent-file", func(ctx context.Context) error { w.Run(ctx); return nil })
	}
	goLoop("poller", func(ctx context.Context) error {
		defer stopBeat() // no beat is due once polling has stopped
		return poller.Run(ctx)
	})
	if feed != nil {
		feedPoller.p = poller
		goLoop("feed", func(ctx context.Context) error {
			defer stopFeedBeat() // no beat is due once the feed has stopped
			return feed.Run(ctx) // saves its watermark when it stops
		})
	}
	releaseLeases := func(context.Context) error { return nil }
	if !cfg.LeaseEnabled {
		assign.SetAgents(plan.agents)
	} else {
		instance := cfg.InstanceID
		if instance == "" {
			host, _ := os.Hostname()
			instance = fmt.Sprintf("%s-%d", host, os.Getpid())
		}
		set, err := lease.New(lease.Options{
			JetStream: js, Bucket: cfg.LeaseBucket, Replicas: cfg.StreamReplicas, TTL: cfg.LeaseTTL, Shards: cfg.ShardCount,
			InstanceID: instance, Metrics: lease.NewMetrics(reg), Logger: log,
			Healthy: nc.IsConnected,
			Leading: func(ctx context.Context, shard int) {
				// Continue from what the previous holder recorded, then poll;
				// the stream fence catches a recorded state that is behind.
				for _, id := range assign.Agents(shard) {
					if st, ok, err := store.Get(ctx, id); err != nil {
						log.Warn("reload agent state; its history is taken from the stream", "shard", shard, "agent", id, "err", err)
					} else if ok {
						det.Restore(st)
					}
				}
				assign.Hold(shard, true)
				<-ctx.Done()
				assign.Hold(shard, false)
			},
			OnChange: func(held []int) {
				if opsSrv == nil {
					return
				}
				if len(held) == 0 {
					opsSrv.SetStandby(true, fmt.Sprintf("standby: another replica holds the lease of every shard (%d)", cfg.ShardCount))
				} else {
					opsSrv.SetStandby(false, "")
				}
			},
		})
		if err != nil {
			return fmt.Errorf("build leader lease: %w", err)
		}
		if err := publish.RetryUnavailable(ctx, "lease bucket "+cfg.LeaseBucket, set.Open, retryJS); err != nil {
			return fmt.Errorf("lease bucket %s: %w", cfg.LeaseBucket, err)
		}
		// The lease outlives polling: it is released only after the events
		// in flight are published and committed, so a standby taking over
		// continues from the final state.
		leaseCtx, stopLease := context.WithCancel(context.WithoutCancel(ctx))
		leaseDone := make(chan struct{})
		go func() {
			defer close(leaseDone)
			if err := set.Run(leaseCtx); err != nil {
				log.Error("leader lease stopped", "err", err)
				stopRun()
			}
		}()
		releaseLeases = func(sctx context.Context) error {
			stopLease()
			select {
			case <-leaseDone:
				return nil
			case <-sctx.Done():
				return fmt.Errorf("release leases: %w", sctx.Err())
			}
		}
		defer func() { // a start that fails; after a normal shutdown both are done
			stopLease()
			<-leaseDone
		}()
	}
	jsReady.Set(true, "")
	log.Info("bridge running", "agents", len(plan.agents), "interval", cfg.PollInterval, "stream", cfg.Stream, "nats", publish.RedactURLs(natsURL))
	if h.onStarted != nil {
		h.onStarted(pipe, poller)
	}

	<-runCtx.Done()
	// One budget, BRIDGE_SHUTDOWN_TIMEOUT, for every step below; the poller's
	// DrainTimeout (the same duration) started at the same moment.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	log.Info("shutting down: polling stops, answers in flight are published and committed")
	stopRun()
	loops.Wait() // the poller returns once the answers in flight reached the pipeline
	var errs []error
	if err := pipe.Close(sctx); err != nil {
		errs = append(errs, fmt.Errorf("flush pipeline: %w", err))
	}
	if err := pub.Close(sctx); err != nil {
		errs = append(errs, fmt.Errorf("close publisher: %w", err))
	}
	if err := releaseLeases(sctx); err != nil {
		errs = append(errs, err)
	}
	if err := publish.Drain(sctx, nc); err != nil {
		errs = append(errs, err)
	}
	if opsSrv != nil {
		if err := opsSrv.Shutdown(sctx); err != nil {
			errs = append(errs, err)
		}
	}
	if ctx.Err() == nil {
		errs = append(errs, errors.New("a loop stopped unexpectedly"))
	}
	return errors.Join(errs...)
}

// tokenProvider picks the static token, the token file, or Entra ID.
func tokenProvider(cfg config.Config, m *source.Metrics, log *slog.Logger) (source.TokenProvider, error) {
	switch {
	case cfg.Token != "":
		return source.StaticToken(cfg.Token), nil
	case cfg.TokenFile != "":
		t, err := source.NewFileToken(source.FileTokenOptions{Path: cfg.TokenFile})
		if err != nil {
			return nil, fmt.Errorf("BRIDGE_TOKEN_FILE: %w", err)
		}
		return t, nil
	default:
		t, err := source.NewEntraToken(source.EntraTokenOptions{OrgURL: cfg.OrgURL, Metrics: m, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("entra id credential: %w", err)
		}
		return t, nil
	}
}
