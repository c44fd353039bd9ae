// Command gendashboard writes the chart's Grafana dashboard, built with the
// Grafana foundation SDK, to charttest.DashboardFile:
//
//	go generate ./...   # in deploy/helm/charttest
//
// TestDashboardIsGenerated fails while the committed file differs.
package main

import (
	"fmt"
	"os"

	"github.com/ccaas/presence-bridge/deploy/helm/charttest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gendashboard:", err)
		os.Exit(1)
	}
}

func run() error {
	out, err := charttest.DashboardJSON()
	if err != nil {
		return err
	}
	if err := os.WriteFile(charttest.DashboardFile, out, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", charttest.DashboardFile, err)
	}
	return nil
}
