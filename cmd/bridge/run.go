package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/logging"
)

func cmdRun(ctx context.Context, fs *flag.FlagSet, args []string, _, stderr io.Writer) int {
	if done, code := parseFlags(fs, args); done {
		return code
	}
	cfg, ok := loadConfig(stderr, config.Needs{Organisation: true})
	if !ok {
		return exitConfig
	}
	plan, err := planSource(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "bridge: invalid configuration:\n  %v\n", err)
		return exitConfig
	}
	log, err := newLogger(stderr, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "bridge: invalid configuration:\n  %v\n", err)
		return exitConfig
	}
	if err := checkMemoryLimitEnv(); err != nil {
		fmt.Fprintf(stderr, "bridge: invalid configuration:\n  %v\n", err)
		return exitConfig
	}
	if !preflight(stderr, "run", bridgeRunning, localAddrs(cfg), embeddedDataDir(cfg)) {
		return exitConfig
	}
	setMemoryLimit(log, memlimit.FromCgroup)
	if err := newBridge(cfg, plan, log, hooks{}).serve(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// SIGTERM or SIGINT during start: a requested stop, not a failure.
			log.Info("stopped during start")
			return exitOK
		}
		log.Error("bridge stopped", "err", err)
		return exitFail
	}
	return exitOK
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
