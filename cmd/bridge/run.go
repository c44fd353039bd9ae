package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

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
	if !preflight(stderr, "run", bridgeRunning, localAddrs(cfg), embeddedDataDir(cfg)) {
		return exitConfig
	}
	if err := runBridge(ctx, cfg, plan, log, hooks{}); err != nil {
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

// runBridge starts the bridge, runs it until ctx ends or a loop fails, and
// shuts it down in order (see bridge.shutdown): after a failed start, what
// was started; after a run, everything, within BRIDGE_SHUTDOWN_TIMEOUT
// taken at the signal. It returns nil after a clean shutdown, otherwise the
// start's error, or the failed loop's error and the shutdown's.
func runBridge(ctx context.Context, cfg config.Config, plan sourcePlan, log *slog.Logger, h hooks) error {
	b := newBridge(cfg, plan, log, h)
	if err := b.start(ctx); err != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		if serr := b.shutdown(sctx); serr != nil {
			log.Warn("shut down after a failed start", "err", serr)
		}
		return err
	}
	runErr := b.run(ctx)
	// One budget for every step of shutdown; the poller's DrainTimeout (the
	// same duration) started at the same moment.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	return errors.Join(runErr, b.shutdown(sctx))
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
