package main

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/lease"
	"github.com/ccaas/presence-bridge/internal/logging"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/source"
)

// TestDefaultsMatchConfig keeps every package default that a BRIDGE_
// variable also sets equal to the variable's default, so the packages used
// on their own (tests, benchmarks, the demo) behave as the bridge does.
func TestDefaultsMatchConfig(t *testing.T) {
	defaults := map[string]string{}
	for _, v := range config.Vars() {
		defaults[v.Name] = v.Default
	}
	tests := []struct {
		variable string
		pkg      any // the package's default: a string, int or time.Duration
	}{
		{"BRIDGE_REQUEST_TIMEOUT", source.DefaultRequestTimeout},
		{"BRIDGE_MAX_CONCURRENCY", source.DefaultMaxConcurrency},
		{"BRIDGE_BACKOFF_MAX", source.DefaultBackoffMax},
		{"BRIDGE_PERMANENT_RETRY", source.DefaultPermanentRetry},
		{"BRIDGE_FEED_INTERVAL", source.DefaultFeedInterval},
		{"BRIDGE_PRESENCE_CATALOG_REFRESH", source.DefaultCatalogueRefresh},
		{"BRIDGE_PUBLISH_MAX_PENDING", publish.DefaultMaxPending},
		{"BRIDGE_PUBLISH_TIMEOUT", publish.DefaultPublishTimeout},
		{"BRIDGE_STREAM_MAX_AGE", publish.DefaultStreamMaxAge},
		{"BRIDGE_STREAM_REPLICAS", publish.DefaultStreamReplicas},
		{"BRIDGE_STREAM_STORAGE", publish.DefaultStreamStorageName},
		{"BRIDGE_DUPLICATE_WINDOW", publish.DefaultDuplicateWindow},
		{"BRIDGE_STREAM", contract.Stream},
		{"BRIDGE_SUBJECT_PREFIX", contract.SubjectPrefix},
		{"BRIDGE_STATE_BUCKET", contract.StateBucket},
		{"BRIDGE_LEASE_BUCKET", contract.LeaseBucket},
		{"BRIDGE_FEED_BUCKET", contract.FeedBucket},
		{"BRIDGE_LEASE_TTL", lease.DefaultTTL},
		{"BRIDGE_SHARD_COUNT", lease.DefaultShards},
		{"BRIDGE_EMBEDDED_NATS_LISTEN", embeddednats.DefaultListen},
		{"BRIDGE_LOG_FORMAT", logging.FormatJSON},
	}
	for _, tt := range tests {
		t.Run(tt.variable, func(t *testing.T) {
			def, ok := defaults[tt.variable]
			if !ok {
				t.Fatalf("config.Vars() has no %s", tt.variable)
			}
			got, err := parseDefault(def, tt.pkg)
			if err != nil {
				t.Fatalf("%s default %q: %v", tt.variable, def, err)
			}
			if got != tt.pkg {
				t.Errorf("%s defaults to %v, the package default is %v", tt.variable, got, tt.pkg)
			}
		})
	}
}

// parseDefault parses a variable's default as the type of like.
func parseDefault(s string, like any) (any, error) {
	switch like.(type) {
	case string:
		return s, nil
	case int:
		return strconv.Atoi(s)
	case time.Duration:
		return time.ParseDuration(s)
	default:
		return nil, fmt.Errorf("no parser for %T", like)
	}
}
