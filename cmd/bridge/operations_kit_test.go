package main

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/testwait"
)

// The operations kit the chart ships: alert rules and a Grafana dashboard.
var operationsKit = []string{
	"../../deploy/helm/ccaas-presence-bridge/files/alerts.yaml",
	"../../deploy/helm/ccaas-presence-bridge/files/dashboard.json",
}

// exportedFamilies parses a Prometheus text exposition into its metric
// families and their types.
func exportedFamilies(body string) map[string]string {
	families := map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			families[f[2]] = f[3]
		}
	}
	return families
}

// TestOperationsKitQueriesExportedMetrics runs the bridge (with its lease,
// so that every family has a series), scrapes /metrics, and checks that
// every ccaas_bridge_ metric the alert rules and the dashboard query is one
// the bridge exports: a renamed metric fails here, not in production.
func TestOperationsKitQueriesExportedMetrics(t *testing.T) {
	h := newHarness(t, 3, 41)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := h.start(h.env(map[string]string{"GORACE": raceExitNow, "BRIDGE_LEASE_TTL": "3s"}), "run")
	c := h.collect(ctx)
	testwait.Until(t, waitScale*30*time.Second, "every agent on the stream", func() bool { return h.caughtUp(c) })
	addr := opsAddr(t, p)
	var body string
	testwait.Until(t, waitScale*20*time.Second, "the lease and published events in the metrics", func() bool {
		body = scrape(addr, "/metrics")
		return strings.Contains(body, `ccaas_bridge_leader{shard="0"} 1`) && strings.Contains(body, "ccaas_bridge_events_published_total{")
	})
	families := exportedFamilies(body)

	name := regexp.MustCompile(`ccaas_bridge_[a-z0-9_]+`)
	var used []string
	for _, file := range operationsKit {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("read %s: %v", file, err)
		}
		for _, m := range name.FindAllString(string(b), -1) {
			if slices.Contains(used, m) {
				continue
			}
			used = append(used, m)
			base := m
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(m, suffix); ok && families[b] == "histogram" {
					base = b
				}
			}
			if _, ok := families[base]; !ok {
				t.Errorf("%s queries %s, which the bridge does not export", file, m)
			}
		}
	}
	// The kit covers polling, agents, tokens, publishing, leadership and the
	// build: a handful of names would mean the pattern missed them.
	if len(used) < 15 {
		t.Errorf("the operations kit queries only %d bridge metrics: %v", len(used), used)
	}
}
