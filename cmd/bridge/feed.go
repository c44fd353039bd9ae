package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/feedstore"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/source"
)

// laterPoller forwards PollNow to the poller, built after the feed (the
// poller's Sink is the feed's wrapper).
type laterPoller struct{ p *source.Poller }

func (l *laterPoller) PollNow(id string) {
	if l.p != nil {
		l.p.PollNow(id)
	}
}

// buildFeed builds the change feed as BRIDGE_FEED says: nil when off, or
// when auto and the agent-status tables are not readable at start. beat,
// when set, is the feed loop's liveness heartbeat.
func buildFeed(ctx context.Context, cfg config.Config, js jetstream.JetStream, storage jetstream.StorageType, client *source.Client,
	sink source.Sink, reg prometheus.Registerer, log *slog.Logger, retry publish.RetryOptions, beat func()) (*source.Feed, *laterPoller, error) {
	if cfg.Feed == "off" {
		return nil, nil, nil
	}
	if cfg.Feed == "auto" {
		cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
		err := client.CheckFeedTables(cctx)
		cancel()
		if err != nil {
			log.Warn("change feed off: the agent-status tables are not readable; polling alone", "err", err)
			return nil, nil, nil
		}
	}
	var store *feedstore.Store
	if err := publish.RetryUnavailable(ctx, "feed bucket "+cfg.FeedBucket, func(ctx context.Context) error {
		var err error
		store, err = feedstore.Open(ctx, js, feedstore.Options{Bucket: cfg.FeedBucket, Replicas: cfg.StreamReplicas, Storage: storage})
		return err
	}, retry); err != nil {
		return nil, nil, fmt.Errorf("feed bucket %s: %w", cfg.FeedBucket, err)
	}
	m, err := source.NewFeedMetrics(reg)
	if err != nil {
		return nil, nil, fmt.Errorf("register feed metrics: %w", err)
	}
	later := &laterPoller{}
	feed, err := source.NewFeed(source.FeedOptions{Reader: client, Sink: sink, Poller: later, Store: store,
		Interval: cfg.FeedInterval, Metrics: m, Logger: log, Beat: beat})
	if err != nil {
		return nil, nil, err
	}
	log.Info("change feed on", "mode", cfg.Feed, "interval", cfg.FeedInterval, "bucket", cfg.FeedBucket)
	return feed, later, nil
}
