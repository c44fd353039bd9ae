// Command gendashboard writes the chart's Grafana dashboard, built with the
// Grafana foundation SDK, to the file named by its argument:
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
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gendashboard:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: gendashboard <output file>")
	}
	out, err := charttest.DashboardJSON()
	if err != nil {
		return err
	}
	if err := os.WriteFile(args[0], out, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", args[0], err)
	}
	return nil
}
