package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/lease"
	"github.com/ccaas/presence-bridge/internal/ops"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/statebucket"
)

// describedNames is a Registerer that records the name of every metric
// registered through it (from the collectors' descriptions, so a vector
// without series yet counts too) and registers it on reg.
type describedNames struct {
	reg   *prometheus.Registry
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describedNames) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
	return d.reg.Register(c)
}

func (d *describedNames) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := d.Register(c); err != nil {
			panic(err)
		}
	}
}

func (d *describedNames) Unregister(c prometheus.Collector) bool { return d.reg.Unregister(c) }

// bridgeMetricNames returns the name of every metric the bridge exports,
// built by each package's constructor on a fresh registry.
func bridgeMetricNames(t *testing.T) []string {
	t.Helper()
	d := &describedNames{reg: prometheus.NewRegistry(), names: map[string]bool{}}
	if _, err := source.NewMetrics(d); err != nil {
		t.Fatal(err)
	}
	if _, err := source.NewFeedMetrics(d); err != nil {
		t.Fatal(err)
	}
	if _, err := publish.NewMetrics(d); err != nil {
		t.Fatal(err)
	}
	if _, err := statebucket.NewMetrics(d); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.NewMetrics(d); err != nil {
		t.Fatal(err)
	}
	lease.NewMetrics(d)
	// The operator server registers its own metrics on the registry it
	// serves.
	if _, err := ops.New(ops.Options{Registry: d.reg, Version: "test"}); err != nil {
		t.Fatal(err)
	}
	families, err := d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if slices.ContainsFunc(runtimeFamilies, func(p string) bool { return strings.HasPrefix(f.GetName(), p) }) {
			continue // documented as a family
		}
		d.names[f.GetName()] = true
	}
	var names []string
	for n := range d.names {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// TestDocsListEveryMetric checks the metrics table of docs/operations.md
// against the metrics the bridge registers: every metric is listed, and
// every metric listed exists.
// runtimeFamilies are the prefixes of the metrics of the Prometheus
// client's Go runtime and process collectors, which docs/operations.md
// describes as families rather than one row per metric.
var runtimeFamilies = []string{"go_", "process_"}

func TestDocsListEveryMetric(t *testing.T) {
	exported := bridgeMetricNames(t)
	if len(exported) < 10 {
		t.Fatalf("only %d metrics found: %v", len(exported), exported)
	}
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile("`((?:ccaas_bridge|promhttp)_[a-z0-9_]+)")
	var listed []string
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) < 3 || cells[0] != "" {
			continue // not a table row
		}
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			listed = append(listed, m[1])
		}
	}
	if len(listed) == 0 {
		t.Fatal("docs/operations.md has no metrics table")
	}
	for _, family := range runtimeFamilies {
		if !strings.Contains(string(b), "`"+family+"*`") {
			t.Errorf("docs/operations.md does not mention the %s* metrics /metrics serves", family)
		}
	}
	for _, n := range exported {
		if !slices.Contains(listed, n) {
			t.Errorf("metric %s is missing from the table of docs/operations.md", n)
		}
	}
	for _, n := range listed {
		if !slices.Contains(exported, n) {
			t.Errorf("docs/operations.md lists %s, which the bridge does not export", n)
		}
	}
}
