package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/logging"
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

// newLogger builds the process logger, with every configured secret
// registered for redaction as a safety net.
func newLogger(w io.Writer, cfg config.Config) (*slog.Logger, error) {
	l, err := logging.New(w, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	// A safety net only: no code path logs these.
	secrets := logging.NewSecrets(cfg.Token, cfg.NATSPassword, cfg.NATSToken, os.Getenv("AZURE_CLIENT_SECRET"))
	return logging.WithRedaction(l, secrets), nil
}
