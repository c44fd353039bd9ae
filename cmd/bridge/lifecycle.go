package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

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

// bridge is one running bridge: start builds and starts its parts, step by
// step; run runs its loops; shutdown stops everything in one ordered list.
// A part start did not reach (a start that failed part-way, or a part the
// configuration leaves off) is nil, and shutdown skips it.
type bridge struct {
	cfg  config.Config
	plan sourcePlan
	log  *slog.Logger
	h    hooks
	reg  *prometheus.Registry
	// intern is shared by the presence client (the answer it keeps per
	// agent) and the detector (the agent's state).
	intern *source.Interner

	// Operator HTTP (BRIDGE_HTTP_ADDR); httpDone is closed when it has
	// stopped serving.
	opsSrv   *ops.Server
	httpDone chan struct{}
	// Embedded JetStream, when BRIDGE_NATS_URL is empty.
	ns      *embeddednats.Server
	natsURL string
	// NATS and JetStream; conn is nc for the readiness check registered
	// before the connection is made.
	conn    atomic.Pointer[nats.Conn]
	nc      *nats.Conn
	js      jetstream.JetStream
	jsReady *ops.Flag
	retryJS publish.RetryOptions
	storage jetstream.StorageType

	store      *statebucket.Store
	pubMetrics *publish.Metrics
	pub        *publish.Publisher
	det        *detector.Detector
	pipe       *pipeline.Pipeline
	srcMetrics *source.Metrics
	client     *source.Client
	refresher  *source.CatalogueRefresher
	feed       *source.Feed
	poller     *source.Poller
	assign     *lease.Assignment

	// Liveness: each loop beats its own heartbeat.
	pipeBeat, pollBeat, feedBeat heartbeat

	// The lease set runs beside the loops and outlives them: stopLease
	// ends it, leaseDone is closed when it has released its leases, and
	// leaseErr receives its failure.
	stopLease context.CancelFunc
	leaseDone chan struct{}
	leaseErr  chan error

	// The loops run runs under loops; stopLoops ends them.
	stopLoops context.CancelFunc
	loops     *errgroup.Group
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

// newBridge returns a bridge to start.
func newBridge(cfg config.Config, plan sourcePlan, log *slog.Logger, h hooks) *bridge {
	return &bridge{cfg: cfg, plan: plan, log: log, h: h, reg: prometheus.NewRegistry(), intern: source.NewInterner(), leaseErr: make(chan error, 1)}
}

// serve starts the bridge, runs it until ctx ends or a loop fails, and
// shuts it down: after a failed start, what was started; after a run,
// everything. It returns nil after a clean shutdown, otherwise the start's
// error, or the failed loop's error and the shutdown's.
func (b *bridge) serve(ctx context.Context) error {
	if err := b.start(ctx); err != nil {
		if serr := b.shutdown(ctx); serr != nil {
			b.log.Warn("shut down after a failed start", "err", serr)
		}
		return err
	}
	runErr := b.run(ctx)
	return errors.Join(runErr, b.shutdown(ctx))
}

// start builds and starts the bridge in order. On an error it returns at
// once: what was started is left for shutdown.
func (b *bridge) start(ctx context.Context) error {
	for _, step := range []func(context.Context) error{
		b.serveOperatorHTTP, // an address in use stops the bridge before it polls
		b.startEmbeddedNATS,
		b.connect,
		b.ensureStream,
		b.openStateView,
		b.buildPublisher,
		b.restoreDetector,
		b.buildPipeline,
		b.buildClient,
		b.buildPoller,
		b.loadCatalogue,
		b.takeAgents,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	b.jsReady.Set(true, "")
	return nil
}

// run runs the loops under one errgroup until ctx ends or one of them (or
// the lease set) fails, and returns that failure as it is; nil when ctx
// ended. The loops may still be stopping when it returns: shutdown's first
// step waits for them.
func (b *bridge) run(ctx context.Context) error {
	gctx := b.startLoops(ctx, b.loopList())
	b.log.Info("bridge running", "agents", len(b.plan.agents), "interval", b.cfg.PollInterval, "stream", b.cfg.Stream, "nats", publish.RedactURLs(b.natsURL))
	if b.h.onStarted != nil {
		b.h.onStarted(b.pipe, b.poller)
	}
	return b.firstFailure(ctx, gctx)
}

// loop is one of the bridge's long-running loops.
type loop struct {
	name string
	// hb is the loop's heartbeat, beaten by the loop itself and stopped
	// when it returns; the zero value for a loop without one.
	hb  heartbeat
	run func(context.Context) error
}

// loopList lists the loops run runs.
func (b *bridge) loopList() []loop {
	loops := []loop{
		{"pipeline", b.pipeBeat, b.pipe.Run},
		{"catalogue", heartbeat{}, func(ctx context.Context) error { b.refresher.Run(ctx); return nil }},
	}
	if b.cfg.AgentIDsFile != "" {
		w := &source.AgentFileWatcher{Path: b.cfg.AgentIDsFile, Apply: b.assign.SetAgents, Current: b.plan.agents, Logger: b.log}
		loops = append(loops, loop{"agent-file", heartbeat{}, func(ctx context.Context) error { w.Run(ctx); return nil }})
	}
	loops = append(loops, loop{"poller", b.pollBeat, b.poller.Run})
	if b.feed != nil {
		loops = append(loops, loop{"feed", b.feedBeat, b.feed.Run}) // saves its watermark when it stops
	}
	return loops
}

// startLoops runs loops under one errgroup on a context of their own,
// derived from ctx, which stopLoops ends. It returns the group's context:
// done when ctx ends or a loop fails. A loop's error other than its
// context's end is logged and stops the others.
func (b *bridge) startLoops(ctx context.Context, loops []loop) context.Context {
	loopCtx, stop := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(loopCtx)
	b.stopLoops, b.loops = stop, g
	for _, l := range loops {
		g.Go(func() error {
			defer l.hb.stop() // no beat is due once the loop has stopped
			if err := l.run(gctx); err != nil && !errors.Is(err, context.Canceled) {
				b.log.Error("loop stopped", "loop", l.name, "err", err)
				return err
			}
			return nil
		})
	}
	return gctx
}

// firstFailure waits until ctx ends (nil), a loop fails (gctx, the loops'
// group context, then holds its error as the cause) or the lease set
// fails, and returns that failure as it is.
func (b *bridge) firstFailure(ctx, gctx context.Context) error {
	select {
	case <-gctx.Done():
	case err := <-b.leaseErr:
		return err
	}
	cause := context.Cause(gctx)
	if ctx.Err() != nil && errors.Is(cause, ctx.Err()) {
		return nil // a requested stop
	}
	return cause
}

// shutdown stops what start started, in this order, skipping what was not
// started. Every step is bounded by what is left of one
// BRIDGE_SHUTDOWN_TIMEOUT budget taken when shutdown begins (at the signal:
// ctx's end, which asked for the shutdown, does not cut it short; the
// poller's DrainTimeout, the same duration, started at the same moment). It
// returns every step's error.
func (b *bridge) shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if b.loops != nil { // polling stops; the answers in flight reach the pipeline
		b.log.Info("shutting down: polling stops, answers in flight are published and committed")
		errs = append(errs, b.waitLoops(ctx))
	}
	if b.pipe != nil { // every change stored and recorded, every adoption finished
		errs = append(errs, wrapErr("flush pipeline", b.pipe.Close(ctx)))
	}
	if b.pub != nil {
		errs = append(errs, wrapErr("close publisher", b.pub.Close(ctx)))
	}
	if b.leaseDone != nil { // after the final state is committed: a standby continues from it
		errs = append(errs, b.releaseLeases(ctx))
	}
	if b.nc != nil {
		errs = append(errs, publish.Drain(ctx, b.nc))
	}
	if b.opsSrv != nil {
		errs = append(errs, b.stopOperatorHTTP(ctx))
	}
	if b.ns != nil {
		b.ns.Shutdown()
	}
	return errors.Join(errs...)
}

// waitLoops stops the loops and waits for them: the poller returns once
// the answers in flight have reached the pipeline (within its
// DrainTimeout, BRIDGE_SHUTDOWN_TIMEOUT, started at the same moment).
func (b *bridge) waitLoops(ctx context.Context) error {
	b.stopLoops()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.loops.Wait() // a loop's error is run's result
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop polling: %w", ctx.Err())
	}
}

// releaseLeases stops the lease set and waits until it has released its
// leases.
func (b *bridge) releaseLeases(ctx context.Context) error {
	b.stopLease()
	select {
	case <-b.leaseDone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("release leases: %w", ctx.Err())
	}
}

// stopOperatorHTTP stops the operator HTTP server and waits until it has
// stopped serving.
func (b *bridge) stopOperatorHTTP(ctx context.Context) error {
	err := b.opsSrv.Shutdown(ctx)
	select {
	case <-b.httpDone:
	case <-ctx.Done():
	}
	return err
}

// wrapErr wraps err, when there is one, with what was being done.
func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// heartbeat is one loop's liveness heartbeat on /healthz. Without operator
// HTTP it is the zero value, which does nothing.
type heartbeat struct{ hb *ops.Heartbeat }

// heartbeat registers the heartbeat of the loop named name, due at least
// every threshold.
func (b *bridge) heartbeat(name string, threshold time.Duration) heartbeat {
	if b.opsSrv == nil {
		return heartbeat{}
	}
	return heartbeat{b.opsSrv.Heartbeat(name, threshold)}
}

// beat is the function the loop calls each time round; nil without
// operator HTTP.
func (h heartbeat) beat() func() {
	if h.hb == nil {
		return nil
	}
	return h.hb.Beat
}

// stop removes the heartbeat: no beat is due once its loop has stopped.
func (h heartbeat) stop() {
	if h.hb != nil {
		h.hb.Stop()
	}
}

// The steps of start, in order.

// serveOperatorHTTP listens on BRIDGE_HTTP_ADDR and serves /metrics,
// /healthz and /readyz until shutdown's last steps stop it.
func (b *bridge) serveOperatorHTTP(ctx context.Context) error {
	if b.cfg.HTTPAddr == "" {
		return nil
	}
	srv, err := ops.New(ops.Options{Registry: b.reg, Version: version, Logger: b.log, Profiling: b.cfg.Pprof})
	if err != nil {
		return fmt.Errorf("build operator http: %w", err)
	}
	ln, err := net.Listen("tcp", b.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen for operator http (BRIDGE_HTTP_ADDR): %w", err)
	}
	b.opsSrv, b.httpDone = srv, make(chan struct{})
	go func() {
		defer close(b.httpDone)
		if err := srv.Serve(context.WithoutCancel(ctx), ln); err != nil {
			b.log.Error("operator http failed", "err", err)
		}
	}()
	return nil
}

// startEmbeddedNATS starts the in-process JetStream server when
// BRIDGE_NATS_URL is empty.
func (b *bridge) startEmbeddedNATS(ctx context.Context) error {
	b.natsURL = b.cfg.NATSURL
	if !b.cfg.Embedded() {
		return nil
	}
	ns, err := embeddednats.Start(ctx, embeddednats.Options{Listen: b.cfg.EmbeddedNATSListen, DataDir: b.cfg.DataDir, Logger: b.log})
	if err != nil {
		return fmt.Errorf("start embedded nats: %w", err)
	}
	b.ns, b.natsURL = ns, ns.ClientURL()
	b.log.Info("embedded JetStream running; attach with the nats CLI", "url", b.natsURL, "data_dir", b.cfg.DataDir)
	return nil
}

// connect connects to NATS, retrying unreachable servers (refused
// credentials are fatal); /readyz says "connecting" meanwhile.
func (b *bridge) connect(ctx context.Context) error {
	var err error
	if b.pubMetrics, err = publish.NewMetrics(b.reg); err != nil {
		return fmt.Errorf("register publish metrics: %w", err)
	}
	if b.opsSrv != nil {
		b.opsSrv.AddCheck(ops.CheckFunc("nats", func() (bool, string) {
			if c := b.conn.Load(); c != nil {
				return ops.NATSCheck(c).Ready()
			}
			return false, "connecting"
		}))
	}
	cfg := b.cfg
	nc, err := publish.ConnectRetry(ctx, publish.ConnOptions{
		URL: b.natsURL, CredsFile: cfg.NATSCreds, NKeySeedFile: cfg.NATSNKey, User: cfg.NATSUser, Password: cfg.NATSPassword,
		Token: cfg.NATSToken, CAFile: cfg.NATSCA, CertFile: cfg.NATSCert, KeyFile: cfg.NATSKey, Logger: b.log, Metrics: b.pubMetrics,
	})
	if err != nil {
		return err
	}
	b.nc = nc
	b.conn.Store(nc)
	if b.js, err = jetstream.New(nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// ensureStream creates or verifies the stream. JetStream that cannot
// answer or place the stream yet (no meta leader, fewer peers than
// replicas) is waited for, like unreachable servers, here and in the steps
// after; /readyz says why meanwhile.
func (b *bridge) ensureStream(ctx context.Context) error {
	cfg := b.cfg
	b.jsReady = ops.NewFlag("jetstream", "jetstream: starting")
	b.retryJS = publish.RetryOptions{Conn: b.nc, Logger: b.log, OnRetry: func(reason string) { b.jsReady.Set(false, reason) }}
	if b.opsSrv != nil {
		b.opsSrv.AddCheck(b.jsReady)
		b.opsSrv.AddCheck(ops.StreamCheck(b.js, cfg.Stream))
	}
	if err := publish.RetryUnavailable(ctx, "stream "+cfg.Stream, func(ctx context.Context) error {
		_, err := publish.EnsureStream(ctx, b.js, publish.StreamOptions{
			Name: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, MaxAge: cfg.StreamMaxAge, Replicas: cfg.StreamReplicas,
			Storage: cfg.StreamStorage, DuplicateWindow: cfg.DuplicateWindow, Manage: cfg.StreamManage,
		})
		return err
	}, b.retryJS); err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Stream, err)
	}
	b.storage = jetstream.FileStorage
	if cfg.StreamStorage == "memory" {
		b.storage = jetstream.MemoryStorage
	}
	return nil
}

// openStateView opens (or creates) the state bucket, the public view of
// every agent's current state.
func (b *bridge) openStateView(ctx context.Context) error {
	viewMetrics, err := statebucket.NewMetrics(b.reg)
	if err != nil {
		return err
	}
	return publish.RetryUnavailable(ctx, "state bucket "+b.cfg.StateBucket, func(ctx context.Context) error {
		var err error
		b.store, err = statebucket.Open(ctx, b.js, statebucket.Options{
			Bucket: b.cfg.StateBucket, Replicas: b.cfg.StreamReplicas, Storage: b.storage, VerifyOnly: !b.cfg.StreamManage,
			Logger: b.log, Metrics: viewMetrics,
		})
		return err
	}, b.retryJS)
}

// buildPublisher builds the CloudEvents encoder and the JetStream
// publisher.
func (b *bridge) buildPublisher(context.Context) error {
	eventSource := b.cfg.OrgURL
	if b.h.eventSource != "" {
		eventSource = b.h.eventSource
	}
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: eventSource, SubjectPrefix: b.cfg.SubjectPrefix, BridgeVersion: version, MaxPayload: int(b.nc.MaxPayload())})
	if err != nil {
		return fmt.Errorf("build encoder: %w", err)
	}
	b.pub, err = publish.NewPublisher(b.nc, publish.Options{
		Encoder: enc, Stream: b.cfg.Stream, MaxPending: b.cfg.PublishMaxPending, PublishTimeout: b.cfg.PublishTimeout, Logger: b.log, Metrics: b.pubMetrics,
	})
	if err != nil {
		return fmt.Errorf("build publisher: %w", err)
	}
	return nil
}

// restoreDetector builds the detector and restores every agent's state
// from the state bucket.
func (b *bridge) restoreDetector(ctx context.Context) error {
	var err error
	if b.det, err = detector.New(detector.Options{StaleAfter: b.cfg.EffectiveStaleAfter(), Logger: b.log, Interner: b.intern}); err != nil {
		return fmt.Errorf("build detector: %w", err)
	}
	var states []detector.AgentState
	loadJS := b.retryJS
	loadJS.AttemptTimeout = time.Minute // every agent's value: larger than one API call
	if err := publish.RetryUnavailable(ctx, "state bucket "+b.cfg.StateBucket, func(ctx context.Context) error {
		states, err = b.store.LoadAll(ctx)
		return err
	}, loadJS); err != nil {
		return fmt.Errorf("load agent states: %w", err)
	}
	b.det.Restore(states...)
	b.log.Info("agent states loaded", "bucket", b.cfg.StateBucket, "agents", len(states))
	return nil
}

// buildPipeline builds the pipeline: detector, fenced publish, view.
func (b *bridge) buildPipeline(context.Context) error {
	pipeMetrics, err := pipeline.NewMetrics(b.reg)
	if err != nil {
		return fmt.Errorf("register pipeline metrics: %w", err)
	}
	b.pipeBeat = b.heartbeat("pipeline", 10*time.Second)
	b.pipe, err = pipeline.New(pipeline.Options{
		Detector: b.det, Publisher: b.pub, View: b.store, Logger: b.log, Metrics: pipeMetrics, SnapshotInterval: b.cfg.SnapshotInterval,
		OnPublished: b.h.onPublished, Beat: b.pipeBeat.beat(),
		// When the fence finds an agent's history on the stream moved on,
		// the agent's state is read back from the stream and adopted.
		Journal: pipeline.NewStreamJournal(pipeline.JournalOptions{
			JetStream: b.js, Stream: b.cfg.Stream, SubjectPrefix: b.cfg.SubjectPrefix, Logger: b.log, Metrics: pipeMetrics,
		}),
	})
	if err != nil {
		return fmt.Errorf("build pipeline: %w", err)
	}
	return nil
}

// buildClient builds the token provider, the presence catalogue and its
// refresher, and the presence API client.
func (b *bridge) buildClient(context.Context) error {
	var err error
	if b.srcMetrics, err = source.NewMetrics(b.reg); err != nil {
		return fmt.Errorf("register source metrics: %w", err)
	}
	tokens := b.h.tokens
	if tokens == nil {
		if tokens, err = tokenProvider(b.cfg, b.srcMetrics, b.log); err != nil {
			return err
		}
	}
	catalogue := source.NewCatalogue(b.plan.presenceMap)
	b.client, err = source.NewClient(source.ClientOptions{
		OrgURL: b.cfg.OrgURL, Tokens: tokens, Catalogue: catalogue, MaxConns: b.cfg.MaxConcurrency, Metrics: b.srcMetrics, Call: b.plan.call, Logger: b.log,
		Interner: b.intern,
	})
	if err != nil {
		return fmt.Errorf("build presence client: %w", err)
	}
	b.refresher = &source.CatalogueRefresher{Lister: b.client, Catalogue: catalogue, Every: b.cfg.PresenceCatalogRefresh, Logger: b.log, Metrics: b.srcMetrics}
	if b.plan.entitlement != "" {
		b.log.Warn("daily request entitlement", "warning", b.plan.entitlement)
	}
	return nil
}

// buildPoller builds the change feed (as BRIDGE_FEED says) and the poller,
// the assignment that hands agents to the pipeline, the poller and the
// feed, and the source's readiness checks.
func (b *bridge) buildPoller(ctx context.Context) error {
	b.pollBeat = b.heartbeat("poller", 10*time.Second)
	if b.cfg.Feed != "off" {
		b.feedBeat = b.heartbeat("feed", source.DefaultFeedReadTimeout+2*time.Minute) // a read, a Retry-After and the interval
	}
	later, err := b.buildFeed(ctx)
	if err != nil {
		return err
	}
	var pollSink source.Sink = b.pipe
	if b.feed != nil {
		pollSink = b.feed.Sink(b.pipe) // while the feed reads, presence changes come from it
	} else {
		b.feedBeat.stop()
	}
	cfg := b.cfg
	b.poller, err = source.NewPoller(source.PollerOptions{
		Getter: b.client, Sink: pollSink, Interval: cfg.PollInterval, RequestTimeout: cfg.RequestTimeout, MaxConcurrency: cfg.MaxConcurrency,
		MaxRPS: cfg.MaxRPS, PermanentRetry: cfg.PermanentRetry, BackoffMax: cfg.BackoffMax,
		DrainTimeout: cfg.ShutdownTimeout, Beat: b.pollBeat.beat(),
		Logger: b.log, Metrics: b.srcMetrics, QuotaScope: b.plan.scope,
	})
	if err != nil {
		return fmt.Errorf("build poller: %w", err)
	}
	if later != nil {
		later.p = b.poller
	}
	b.assign = lease.NewAssignment(b.plan.agents, cfg.ShardCount, cfg.LeaseEnabled, func(ids []string) {
		b.pipe.SetAgents(ids) // first: agents leaving are forgotten before their last polls report
		b.poller.SetAgents(ids)
		if b.feed != nil {
			b.feed.SetAgents(ids)
		}
	})
	if b.opsSrv != nil {
		b.opsSrv.AddActiveCheck(ops.CheckFunc("source", source.Readiness(b.poller, b.client.TokenAccepted, cfg.ReadyMinShare)))
		if b.feed != nil {
			b.opsSrv.AddCheck(ops.CheckFunc("feed", b.feed.Readiness))
		}
	}
	return nil
}

// loadCatalogue discovers the presence call form and loads the presence
// catalogue once, so the first events carry base statuses; the catalogue
// loop reloads it every BRIDGE_PRESENCE_CATALOG_REFRESH.
func (b *bridge) loadCatalogue(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, b.cfg.RequestTimeout)
	form, ferr := b.client.DiscoverCallForm(dctx)
	cancel()
	b.log.Info("presence call form", "form", form.String(), "configured", b.cfg.PresenceCall, "definition_read", ferr == nil, "err", ferr)
	if err := b.refresher.Load(ctx); err != nil {
		b.log.Warn("custom presences not loaded; out-of-box presences and BRIDGE_PRESENCE_MAP still resolve", "err", err)
	}
	return nil
}

// takeAgents hands the agents to the pipeline, the poller and the feed:
// every agent when leases are off, otherwise those of the shards whose
// leases the lease set takes, from the lease bucket (retried like the
// stream). The lease set runs until shutdown releases it, after the events
// in flight are published and committed, so a standby taking over
// continues from the final state.
func (b *bridge) takeAgents(ctx context.Context) error {
	cfg := b.cfg
	if !cfg.LeaseEnabled {
		b.assign.SetAgents(b.plan.agents)
		return nil
	}
	instance := cfg.InstanceID
	if instance == "" {
		host, _ := os.Hostname()
		instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	set, err := lease.New(lease.Options{
		JetStream: b.js, Bucket: cfg.LeaseBucket, Replicas: cfg.StreamReplicas, TTL: cfg.LeaseTTL, Shards: cfg.ShardCount,
		InstanceID: instance, Metrics: lease.NewMetrics(b.reg), Logger: b.log,
		Healthy: b.nc.IsConnected, Leading: b.lead, OnChange: b.leasesChanged,
	})
	if err != nil {
		return fmt.Errorf("build leader lease: %w", err)
	}
	if err := publish.RetryUnavailable(ctx, "lease bucket "+cfg.LeaseBucket, set.Open, b.retryJS); err != nil {
		return fmt.Errorf("lease bucket %s: %w", cfg.LeaseBucket, err)
	}
	leaseCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	b.stopLease, b.leaseDone = stop, make(chan struct{})
	go func() {
		defer close(b.leaseDone)
		if err := set.Run(leaseCtx); err != nil {
			b.log.Error("leader lease stopped", "err", err)
			b.leaseErr <- fmt.Errorf("leader lease: %w", err)
		}
	}()
	return nil
}

// lead runs while this process holds shard's lease: it continues from what
// the previous holder recorded, then polls the shard's agents until ctx
// ends. The stream fence catches a recorded state that is behind.
func (b *bridge) lead(ctx context.Context, shard int) {
	for _, id := range b.assign.Agents(shard) {
		if st, ok, err := b.store.Get(ctx, id); err != nil {
			b.log.Warn("reload agent state; its history is taken from the stream", "shard", shard, "agent", id, "err", err)
		} else if ok {
			b.det.Restore(st)
		}
	}
	b.assign.Hold(shard, true)
	<-ctx.Done()
	b.assign.Hold(shard, false)
}

// leasesChanged makes /readyz report standby while this process holds no
// shard.
func (b *bridge) leasesChanged(held []int) {
	if b.opsSrv == nil {
		return
	}
	if len(held) == 0 {
		b.opsSrv.SetStandby(true, fmt.Sprintf("standby: another replica holds the lease of every shard (%d)", b.cfg.ShardCount))
	} else {
		b.opsSrv.SetStandby(false, "")
	}
}
