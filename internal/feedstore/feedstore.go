// Package feedstore keeps the change feed's watermark (source.Watermark) in
// a JetStream key-value bucket beside the state bucket, so the feed resumes
// where it stopped after a restart: the source declares the
// source.WatermarkStore interface, this package implements it with NATS.
//
// Wiring (cmd/bridge):
//
//	store, err := feedstore.Open(ctx, js, feedstore.Options{Bucket: cfg.FeedBucket, Replicas: cfg.StreamReplicas})
//	feed, err := source.NewFeed(source.FeedOptions{Store: store, ...})
package feedstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/source"
)

// Key is the bucket key holding the watermark.
const Key = "watermark"

// Options configures a Store.
type Options struct {
	// Bucket is the key-value bucket (BRIDGE_FEED_BUCKET); required.
	Bucket string
	// Replicas of the bucket when it is created.
	Replicas int
	// Storage of the bucket when it is created; file by default.
	Storage jetstream.StorageType
}

// Store is a source.WatermarkStore in a JetStream key-value bucket.
type Store struct {
	kv jetstream.KeyValue
}

var _ source.WatermarkStore = (*Store)(nil)

// Open returns the store, creating its bucket when missing.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		return nil, errors.New("open feed bucket: no bucket name")
	}
	kv, err := js.KeyValue(ctx, opts.Bucket)
	if err == nil {
		return &Store{kv: kv}, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open feed bucket %s: %w", opts.Bucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.Bucket,
		Description: "ccaas presence bridge: the change feed's watermark",
		History:     1,
		Storage:     opts.Storage,
		Replicas:    max(opts.Replicas, 1),
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, opts.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create feed bucket %s: %w", opts.Bucket, err)
	}
	return &Store{kv: kv}, nil
}

// LoadWatermark returns the stored watermark. A value that is not a
// watermark (foreign, or from a future version) is reported as an error and
// the feed starts afresh.
func (s *Store) LoadWatermark(ctx context.Context) (source.Watermark, bool, error) {
	e, err := s.kv.Get(ctx, Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return source.Watermark{}, false, nil
	}
	if err != nil {
		return source.Watermark{}, false, fmt.Errorf("read feed watermark: %w", err)
	}
	var w source.Watermark
	if err := json.Unmarshal(e.Value(), &w); err != nil || w.CreatedOn.IsZero() || w.CreatedOn.After(time.Now().Add(24*time.Hour)) {
		return source.Watermark{}, false, fmt.Errorf("read feed watermark: value is not a watermark (%d bytes)", len(e.Value()))
	}
	return w, true, nil
}

// SaveWatermark stores w.
func (s *Store) SaveWatermark(ctx context.Context, w source.Watermark) error {
	b, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("encode feed watermark: %w", err)
	}
	if _, err := s.kv.Put(ctx, Key, b); err != nil {
		return fmt.Errorf("write feed watermark: %w", err)
	}
	return nil
}
