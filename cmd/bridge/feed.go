package main

import (
	"context"
	"fmt"

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

// buildFeed builds the change feed as BRIDGE_FEED says into b.feed: nil
// when off, or when auto and the agent-status tables are not readable at
// start. The feed forwards PollNow to the poller through the laterPoller it
// returns, since the poller is built after it.
func (b *bridge) buildFeed(ctx context.Context) (*laterPoller, error) {
	cfg := b.cfg
	if cfg.Feed == "off" {
		return nil, nil
	}
	if cfg.Feed == "auto" {
		cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
		err := b.client.CheckFeedTables(cctx)
		cancel()
		if err != nil {
			b.log.Warn("change feed off: the agent-status tables are not readable; polling alone", "err", err)
			return nil, nil
		}
	}
	var store *feedstore.Store
	if err := publish.RetryUnavailable(ctx, "feed bucket "+cfg.FeedBucket, func(ctx context.Context) error {
		var err error
		store, err = feedstore.Open(ctx, b.js, feedstore.Options{Bucket: cfg.FeedBucket, Replicas: cfg.StreamReplicas, Storage: b.storage})
		return err
	}, b.retryJS); err != nil {
		return nil, fmt.Errorf("feed bucket %s: %w", cfg.FeedBucket, err)
	}
	m, err := source.NewFeedMetrics(b.reg)
	if err != nil {
		return nil, fmt.Errorf("register feed metrics: %w", err)
	}
	later := &laterPoller{}
	b.feed, err = source.NewFeed(source.FeedOptions{Reader: b.client, Sink: b.pipe, Poller: later, Store: store,
		Interval: cfg.FeedInterval, Metrics: m, Logger: b.log, Beat: b.feedBeat.beat()})
	if err != nil {
		return nil, err
	}
	b.log.Info("change feed on", "mode", cfg.Feed, "interval", cfg.FeedInterval, "bucket", cfg.FeedBucket)
	return later, nil
}
