package publish_test

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
)

// The publishing side as cmd/bridge wires it: connect (retrying unreachable
// servers), make sure the stream exists, build the encoder and the
// publisher, enqueue each change's events fenced on the agent's previous
// event, and at shutdown close the publisher before draining the
// connection. It runs against the embedded JetStream the bridge starts when
// BRIDGE_NATS_URL is empty; the values are the BRIDGE_ variables' defaults.
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
	retryJS := publish.RetryOptions{Conn: nc, Logger: logger}
	if err := publish.RetryUnavailable(ctx, "stream "+contract.Stream, func(ctx context.Context) error {
		_, err := publish.EnsureStream(ctx, js, publish.StreamOptions{
			Name: contract.Stream, SubjectPrefix: contract.SubjectPrefix, MaxAge: publish.DefaultStreamMaxAge, Replicas: publish.DefaultStreamReplicas,
			Storage: publish.DefaultStreamStorageName, DuplicateWindow: publish.DefaultDuplicateWindow, Manage: true,
		})
		return err
	}, retryJS); err != nil {
		log.Fatal(err)
	}

	enc, err := publish.NewEncoder(publish.EncoderOptions{
		Source: "https://contoso.crm.dynamics.com", SubjectPrefix: contract.SubjectPrefix, BridgeVersion: "v1.2.3", MaxPayload: int(nc.MaxPayload()),
	})
	if err != nil {
		log.Fatal(err)
	}
	pub, err := publish.NewPublisher(nc, publish.Options{
		Encoder: enc, Stream: contract.Stream, MaxPending: publish.DefaultMaxPending, PublishTimeout: publish.DefaultPublishTimeout, Logger: logger, Metrics: pubMetrics,
	})
	if err != nil {
		log.Fatal(err)
	}

	// One agent's first events, as the detector numbers them.
	const agent = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
	now := time.Now()
	_, events := detector.Diff(nil, source.Snapshot{
		AgentID: agent, AgentName: "Ada", PresenceID: "f523f628-c07a-e811-8162-000d3aa11f50", PresenceName: "Available",
		BaseStatus: "Available", ActiveBrowserSessions: 1, LoginTime: now.Unix(), ObservedAt: now,
	})
	stored := make(chan error, 1)
	// afterStream 0: the agent has no event on the stream yet.
	if err := pub.Enqueue(ctx, 0, events, func(streamSeq uint64, err error) {
		// The pipeline records the agent's state here when err is nil.
		fmt.Println("stored up to stream sequence", streamSeq)
		stored <- err
	}); err != nil {
		log.Fatal(err)
	}
	if err := <-stored; err != nil {
		log.Fatal(err)
	}

	stream, err := js.Stream(ctx, contract.Stream)
	if err != nil {
		log.Fatal(err)
	}
	for seq := uint64(1); seq <= uint64(len(events)); seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(msg.Subject, msg.Header.Get("ce-sequence"))
	}

	// Shutdown: the publisher first (it waits for what is in flight), then
	// the connection, each bounded by what is left of the budget.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := pub.Close(sctx); err != nil {
		log.Fatal(err)
	}
	if err := publish.Drain(sctx, nc); err != nil {
		log.Fatal(err)
	}
	// Output:
	// stored up to stream sequence 3
	// ccaas.agents.3f2504e0-4f89-11d3-9a0c-0305e82c3301.presence.changed 00000000000000000001
	// ccaas.agents.3f2504e0-4f89-11d3-9a0c-0305e82c3301.sessions.changed 00000000000000000002
	// ccaas.agents.3f2504e0-4f89-11d3-9a0c-0305e82c3301.channels.changed 00000000000000000003
}
