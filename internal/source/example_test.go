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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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
