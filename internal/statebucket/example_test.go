package statebucket_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/statebucket"
)

// The state bucket as cmd/bridge wires it: opened (or created) at start,
// retried while JetStream cannot answer, read back to restore the detector,
// and written by the pipeline once an agent's events are stored. It runs
// against the embedded JetStream the bridge starts when BRIDGE_NATS_URL is
// empty; the values are the BRIDGE_ variables' defaults.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the deadline only catches a hang
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()

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
	nc, err := publish.Connect(ctx, publish.ConnOptions{URL: ns.ClientURL(), Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}

	viewMetrics, err := statebucket.NewMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	var store *statebucket.Store
	if err := publish.RetryUnavailable(ctx, "state bucket "+contract.StateBucket, func(ctx context.Context) error {
		var err error
		store, err = statebucket.Open(ctx, js, statebucket.Options{
			Bucket: contract.StateBucket, Replicas: publish.DefaultStreamReplicas, Storage: jetstream.FileStorage, VerifyOnly: false, // BRIDGE_STREAM_MANAGE=true
			Logger: logger, Metrics: viewMetrics,
		})
		return err
	}, publish.RetryOptions{Conn: nc, Logger: logger}); err != nil {
		log.Fatal(err)
	}

	// The pipeline records an agent's state once its events are stored
	// (here at stream sequence 3).
	const agent = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
	now := time.Now()
	state, _ := detector.Diff(nil, source.Snapshot{
		AgentID: agent, AgentName: "Ada", PresenceID: "f523f628-c07a-e811-8162-000d3aa11f50", PresenceName: "Available",
		BaseStatus: "Available", ActiveBrowserSessions: 1, LoginTime: now.Unix(), ObservedAt: now,
	})
	state.StreamSequence = 3
	if err := store.Record(ctx, state); err != nil {
		log.Fatal(err)
	}

	// At the next start: every agent's state, to restore the detector.
	states, err := store.LoadAll(ctx) // skips (and counts) what it cannot use
	if err != nil {
		log.Fatal(err)
	}
	det, err := detector.New(detector.Options{Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	det.Restore(states...)
	fmt.Println("agents restored:", len(states))

	// When this process takes over a shard: the agent's state as the
	// previous holder recorded it.
	st, ok, err := store.Get(ctx, agent)
	if err != nil {
		log.Fatal(err)
	}
	if ok {
		det.Restore(st)
	}
	fmt.Printf("%s is %s: sequence %d, stream sequence %d\n", st.AgentName, st.Presence.Name, st.Sequence, st.StreamSequence)
	// Output:
	// agents restored: 1
	// Ada is Available: sequence 3, stream sequence 3
}
