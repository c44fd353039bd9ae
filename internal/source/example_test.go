package source_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
)

// firstPoll is the Sink of the example: it hands over the first
// observation. In the bridge the Sink is the pipeline (or, with the change
// feed, feed.Sink(pipeline)).
type firstPoll chan source.Observation

func (s firstPoll) Observe(ctx context.Context, o source.Observation) error {
	select {
	case s <- o:
	default: // later polls are not needed here
	}
	return nil
}

// The source as cmd/bridge wires it: the polling plan checked against
// Dataverse's limits, the token provider, the presence catalogue and its
// refresher, the client (whose call form is discovered at start) and the
// poller, which hands every result to its Sink. It runs against a simulated
// organisation (package simulator) served over real HTTP; the values are the
// BRIDGE_ variables' defaults. With the change feed on (BRIDGE_FEED), the
// feed is built before the poller (source.NewFeed) and the poller's Sink is
// feed.Sink(pipeline).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the deadline only catches a hang
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()

	sim, err := simulator.New(simulator.Options{Agents: 1, Seed: 1, StaticTokens: []string{simulator.DefaultToken}})
	if err != nil {
		log.Fatal(err)
	}
	org := httptest.NewServer(sim.Handler())
	defer org.Close()
	agents := sim.AgentIDs() // BRIDGE_AGENT_IDS
	if _, _, err := sim.SetPresence(agents[0], simulator.PresenceAvailable); err != nil {
		log.Fatal(err)
	}

	// The plan, checked before anything starts.
	call, err := source.ParseCallForm("auto") // BRIDGE_PRESENCE_CALL
	if err != nil {
		log.Fatal(err)
	}
	scope, err := source.ParseQuotaScope("agent") // BRIDGE_QUOTA_SCOPE
	if err != nil {
		log.Fatal(err)
	}
	interval := 10 * time.Second        // BRIDGE_POLL_INTERVAL
	shutdownTimeout := 30 * time.Second // BRIDGE_SHUTDOWN_TIMEOUT
	if err := source.CheckLimits(source.LimitsConfig{
		Agents: len(agents), Interval: interval, MaxConcurrency: source.DefaultMaxConcurrency, Scope: scope,
	}); err != nil {
		log.Fatal(err)
	}

	srcMetrics, err := source.NewMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	// BRIDGE_TOKEN; or source.NewFileToken (BRIDGE_TOKEN_FILE), or
	// source.NewEntraToken (Entra ID).
	tokens := source.StaticToken(simulator.DefaultToken)
	catalogue := source.NewCatalogue(nil) // BRIDGE_PRESENCE_MAP, parsed by source.ParsePresenceMap
	client, err := source.NewClient(source.ClientOptions{
		OrgURL: org.URL, Tokens: tokens, Catalogue: catalogue, MaxConns: source.DefaultMaxConcurrency, Metrics: srcMetrics, Call: call, Logger: logger,
	})
	if err != nil {
		log.Fatal(err)
	}
	refresher := &source.CatalogueRefresher{Lister: client, Catalogue: catalogue, Every: source.DefaultCatalogueRefresh, Logger: logger, Metrics: srcMetrics}

	sink := make(firstPoll, 1)
	poller, err := source.NewPoller(source.PollerOptions{
		Getter: client, Sink: sink, Interval: interval, RequestTimeout: source.DefaultRequestTimeout, MaxConcurrency: source.DefaultMaxConcurrency,
		PermanentRetry: source.DefaultPermanentRetry, BackoffMax: source.DefaultBackoffMax,
		DrainTimeout: shutdownTimeout, Logger: logger, Metrics: srcMetrics, QuotaScope: scope,
	})
	if err != nil {
		log.Fatal(err)
	}
	ready := source.Readiness(poller, client.TokenAccepted, 0.5) // BRIDGE_READY_MIN_SHARE; the "source" check of /readyz

	// At start: the call form, then the catalogue, so the first events carry
	// base statuses.
	form, err := client.DiscoverCallForm(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("call form:", form)
	if err := refresher.Load(ctx); err != nil {
		log.Fatal(err)
	}

	// The loops, until ctx ends (cmd/bridge runs them under one errgroup,
	// with refresher.Run and, for BRIDGE_AGENT_IDS_FILE, a
	// source.AgentFileWatcher).
	loopCtx, stopLoops := context.WithCancel(ctx)
	pollDone := make(chan error, 1)
	go func() { pollDone <- poller.Run(loopCtx) }()
	poller.SetAgents(agents) // in cmd/bridge, through lease.Assignment
	// Each agent is polled at its place in the interval; PollNow (which the
	// change feed calls when it sees a presence change) saves waiting for it.
	poller.PollNow(agents[0])

	o := <-sink
	fmt.Println(o.Class, o.Snapshot.PresenceName, o.Snapshot.BaseStatus)
	ok, _ := ready()
	fmt.Println("ready:", ok)

	stopLoops() // the poller returns once the answers in flight reached the Sink
	if err := <-pollDone; err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	// Output:
	// call form: bare
	// ok Available Available
	// ready: true
}

// feedRows is the Sink of the feed example: it hands over the observations
// read from the change feed and drops the polls.
type feedRows chan source.Observation

func (s feedRows) Observe(ctx context.Context, o source.Observation) error {
	if o.Row == nil {
		return nil // a poll; in the bridge the pipeline takes it too
	}
	select {
	case s <- o:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// laterPoller forwards the feed's PollNow to the poller, which is built
// after the feed because its Sink is the feed's wrapper.
type laterPoller struct{ p *source.Poller }

func (l *laterPoller) PollNow(id string) {
	if l.p != nil {
		l.p.PollNow(id)
	}
}

// The change feed as cmd/bridge wires it with BRIDGE_FEED=auto: on only when
// both agent-status tables are readable, built before the poller, whose
// Sink becomes feed.Sink(pipeline), so that presence changes come from the
// feed while it reads. In cmd/bridge the watermark is kept in the
// BRIDGE_FEED_BUCKET key-value bucket (feedstore.Open as the Store); here
// Store is nil, which keeps it in memory. The organisation is simulated.
func ExampleNewFeed() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the deadline only catches a hang
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()

	sim, err := simulator.New(simulator.Options{Agents: 1, Seed: 1, StaticTokens: []string{simulator.DefaultToken}})
	if err != nil {
		log.Fatal(err)
	}
	org := httptest.NewServer(sim.Handler())
	defer org.Close()
	agents := sim.AgentIDs()
	if _, _, err := sim.SetPresence(agents[0], simulator.PresenceAvailable); err != nil {
		log.Fatal(err)
	}

	srcMetrics, err := source.NewMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	catalogue := source.NewCatalogue(nil)
	client, err := source.NewClient(source.ClientOptions{
		OrgURL: org.URL, Tokens: source.StaticToken(simulator.DefaultToken), Catalogue: catalogue, MaxConns: source.DefaultMaxConcurrency,
		Metrics: srcMetrics, Call: source.CallAuto, Logger: logger,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.CheckFeedTables(ctx); err != nil { // BRIDGE_FEED=auto: otherwise polling alone
		log.Fatal(err)
	}

	pipe := make(feedRows, 1) // the pipeline
	feedMetrics, err := source.NewFeedMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	later := &laterPoller{}
	feed, err := source.NewFeed(source.FeedOptions{Reader: client, Sink: pipe, Poller: later, Store: nil,
		Interval: source.DefaultFeedInterval, Metrics: feedMetrics, Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	poller, err := source.NewPoller(source.PollerOptions{
		Getter: client, Sink: feed.Sink(pipe), Interval: 10 * time.Second, Logger: logger, Metrics: srcMetrics,
	})
	if err != nil {
		log.Fatal(err)
	}
	later.p = poller

	loopCtx, stopLoops := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- poller.Run(loopCtx) }()
	go func() { done <- feed.Run(loopCtx) }() // saves its watermark when it stops
	poller.SetAgents(agents)
	feed.SetAgents(agents)

	// A presence change at the source reaches the pipeline from the feed,
	// after the changes its first read finds in the overlap before it.
	if _, _, err := sim.SetPresence(agents[0], simulator.PresenceBusy); err != nil {
		log.Fatal(err)
	}
	for busy := false; !busy; {
		select {
		case o := <-pipe:
			fmt.Println("from the feed:", o.Row.PresenceName)
			busy = o.Row.PresenceID == simulator.PresenceBusy
		case <-ctx.Done():
			log.Fatal("no change from the feed: ", ctx.Err())
		}
	}
	ok, _ := feed.Readiness()
	fmt.Println("feed ready:", ok)

	stopLoops()
	for range 2 {
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			log.Fatal(err)
		}
	}
	// Output:
	// from the feed: Offline
	// from the feed: Available
	// from the feed: Busy
	// feed ready: true
}
