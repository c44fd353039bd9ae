package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/ccaas/presence-bridge/internal/config"
)

// loadConfig reads and validates the environment. On a problem it prints
// one line per variable to stderr and reports false: the caller exits with
// exitConfig before starting anything.
func loadConfig(stderr io.Writer, needs config.Needs) (config.Config, bool) {
	cfg, err := config.Load(needs)
	if err != nil {
		fmt.Fprintln(stderr, "bridge: invalid configuration:")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "  "+line)
		}
		return cfg, false
	}
	return cfg, true
}
