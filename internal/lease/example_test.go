package lease_test

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
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/lease"
	"github.com/ccaas/presence-bridge/internal/publish"
)

// The leases as cmd/bridge wires them: an Assignment hands the agents of
// the shards this process leads to the pipeline, the poller and the feed
// (its apply function); the Set takes the leases, and each shard's Leading
// function holds the shard in the Assignment until its lease ends. OnChange
// makes /readyz report standby while no shard is held. At shutdown the Set
// is stopped after the events in flight are committed, so a standby
// continues from the final state. It runs against the embedded JetStream
// the bridge starts when BRIDGE_NATS_URL is empty, as the only replica, so
// it leads every shard.
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
	nc, err := publish.ConnectRetry(ctx, publish.ConnOptions{URL: ns.ClientURL(), Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}

	agents := []string{ // BRIDGE_AGENT_IDS
		"3f2504e0-4f89-11d3-9a0c-0305e82c3301",
		"6fa459ea-ee8a-3ca4-894e-db77e160355e",
		"886313e1-3b8a-5372-9b90-0c9aee199e5d",
		"a3bb189e-8bf9-3888-9912-ace4e6543002",
	}
	const shards = 2 // BRIDGE_SHARD_COUNT
	var (
		mu      sync.Mutex
		polling []string
	)
	allTaken := make(chan struct{})
	assign := lease.NewAssignment(agents, shards, true, func(ids []string) {
		// cmd/bridge: pipe.SetAgents(ids), poller.SetAgents(ids), feed.SetAgents(ids).
		mu.Lock()
		defer mu.Unlock()
		polling = ids
		if len(ids) == len(agents) {
			close(allTaken)
		}
	})

	set, err := lease.New(lease.Options{
		JetStream: js, Bucket: contract.LeaseBucket, Replicas: publish.DefaultStreamReplicas, TTL: lease.DefaultTTL, Shards: shards,
		InstanceID: "bridge-0", Metrics: lease.NewMetrics(reg), Logger: logger,
		Healthy: nc.IsConnected,
		Leading: func(ctx context.Context, shard int) {
			// cmd/bridge first restores each of assign.Agents(shard) from
			// the state bucket: what the previous holder recorded.
			assign.Hold(shard, true)
			<-ctx.Done()
			assign.Hold(shard, false)
		},
		OnChange: func(held []int) {
			// cmd/bridge: opsSrv.SetStandby(len(held) == 0, reason).
			logger.Info("shards held", "shards", held)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := publish.RetryUnavailable(ctx, "lease bucket "+contract.LeaseBucket, set.Open, publish.RetryOptions{Conn: nc, Logger: logger}); err != nil {
		log.Fatal(err)
	}
	// The Set outlives the signal: shutdown stops it after the pipeline
	// and the publisher are closed.
	leaseCtx, stopLease := context.WithCancel(context.WithoutCancel(ctx))
	leaseDone := make(chan error, 1)
	go func() { leaseDone <- set.Run(leaseCtx) }()

	select {
	case <-allTaken:
	case <-ctx.Done():
		log.Fatal("shards not taken: ", ctx.Err())
	}
	mu.Lock()
	fmt.Println("polling", len(polling), "agents; shards held:", set.Held())
	mu.Unlock()

	stopLease() // releases every shard: a standby takes them over at once
	if err := <-leaseDone; err != nil {
		log.Fatal(err)
	}
	mu.Lock()
	fmt.Println("polling", len(polling), "agents; shards held:", set.Held())
	mu.Unlock()
	// Output:
	// polling 4 agents; shards held: [0 1]
	// polling 0 agents; shards held: []
}
