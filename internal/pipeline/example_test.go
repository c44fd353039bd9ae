package pipeline_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/statebucket"
)

// The pipeline as cmd/bridge wires it, after the detector has restored the
// state bucket: built on the detector, the publisher and the state bucket,
// with the stream as the journal it reads an agent's history back from when
// the fence finds it moved on. The poller (source.PollerOptions{Sink: p})
// calls Observe with every poll result; here one poll result is handed
// over directly. At shutdown the pipeline is closed after the poller has
// stopped and before the publisher. It runs against the embedded JetStream
// the bridge starts when BRIDGE_NATS_URL is empty; the values are the
// BRIDGE_ variables' defaults.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the deadline only catches a hang
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()

	// NATS, the stream, the state bucket and the publisher, as in the
	// examples of packages publish and statebucket.
	dir, err := os.MkdirTemp("", "bridge-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ns, err := embeddednats.Start(ctx, embeddednats.Options{Listen: "127.0.0.1:-1", DataDir: dir, Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Shutdown()
	pubMetrics, err := publish.NewMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	nc, err := publish.ConnectRetry(ctx, publish.ConnOptions{URL: ns.ClientURL(), Logger: logger, Metrics: pubMetrics})
	if err != nil {
		log.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := publish.EnsureStream(ctx, js, publish.StreamOptions{Name: contract.Stream, SubjectPrefix: contract.SubjectPrefix, Manage: true}); err != nil {
		log.Fatal(err)
	}
	store, err := statebucket.Open(ctx, js, statebucket.Options{Bucket: contract.StateBucket, Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	enc, err := publish.NewEncoder(publish.EncoderOptions{
		Source: "https://contoso.crm.dynamics.com", SubjectPrefix: contract.SubjectPrefix, BridgeVersion: "v1.2.3", MaxPayload: int(nc.MaxPayload()),
	})
	if err != nil {
		log.Fatal(err)
	}
	pub, err := publish.NewPublisher(nc, publish.Options{Encoder: enc, Stream: contract.Stream, Logger: logger, Metrics: pubMetrics})
	if err != nil {
		log.Fatal(err)
	}
	staleAfter := 3*10*time.Second + source.DefaultBackoffMax // cfg.EffectiveStaleAfter(): 3 BRIDGE_POLL_INTERVALs + BRIDGE_BACKOFF_MAX
	det, err := detector.New(detector.Options{StaleAfter: staleAfter, Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	states, err := store.LoadAll(ctx)
	if err != nil {
		log.Fatal(err)
	}
	det.Restore(states...)

	// The pipeline.
	pipeMetrics, err := pipeline.NewMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	var (
		mu        sync.Mutex
		published []detector.Event
	)
	p, err := pipeline.New(pipeline.Options{
		Detector: det, Publisher: pub, View: store, Logger: logger, Metrics: pipeMetrics, SnapshotInterval: 0, // BRIDGE_SNAPSHOT_INTERVAL: off
		OnPublished: func(e detector.Event) { // `bridge demo` prints each event
			mu.Lock()
			defer mu.Unlock()
			published = append(published, e)
		},
		// Beat: with operator HTTP on, the Beat of the pipeline's
		// ops.Heartbeat.
		Journal: pipeline.NewStreamJournal(pipeline.JournalOptions{
			JetStream: js, Stream: contract.Stream, SubjectPrefix: contract.SubjectPrefix, Logger: logger, Metrics: pipeMetrics,
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	loopCtx, stopLoops := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(loopCtx) }() // stale and snapshot loops

	const agent = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
	p.SetAgents([]string{agent}) // the agents this process polls (lease.Assignment's apply)
	now := time.Now()
	if err := p.Observe(ctx, source.Observation{AgentID: agent, At: now, Class: source.ClassOK, Snapshot: &source.Snapshot{
		AgentID: agent, AgentName: "Ada", PresenceID: "f523f628-c07a-e811-8162-000d3aa11f50", PresenceName: "Available",
		BaseStatus: "Available", ActiveBrowserSessions: 1, LoginTime: now.Unix(), ObservedAt: now,
	}}); err != nil {
		log.Fatal(err)
	}

	// Shutdown: the loops (the poller first), then the pipeline, then the
	// publisher and the connection.
	stopLoops()
	if err := <-runDone; err != nil {
		log.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := p.Close(sctx); err != nil { // every change stored and recorded
		log.Fatal(err)
	}
	if err := pub.Close(sctx); err != nil {
		log.Fatal(err)
	}
	if err := publish.Drain(sctx, nc); err != nil {
		log.Fatal(err)
	}

	mu.Lock()
	for _, e := range published {
		fmt.Println(e.ID, e.Type)
	}
	mu.Unlock()
	fmt.Println("states recorded:", p.Stats().Commits)
	// Output:
	// 3f2504e0-4f89-11d3-9a0c-0305e82c3301-1 presence.changed
	// 3f2504e0-4f89-11d3-9a0c-0305e82c3301-2 sessions.changed
	// 3f2504e0-4f89-11d3-9a0c-0305e82c3301-3 channels.changed
	// states recorded: 1
}
