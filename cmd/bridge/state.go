package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/inspect"
)

// cmdState prints the current state of every agent, or of one, from the
// state bucket.
func cmdState(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	agent := fs.String("agent", "", "only this agent: its ID ({braces} accepted) or its name")
	return inspectCommand(ctx, fs, args, stderr, nil, func(ctx context.Context, cfg config.Config, _ *nats.Conn, js jetstream.JetStream) error {
		kv, err := js.KeyValue(ctx, cfg.StateBucket)
		if err != nil {
			return fmt.Errorf("state bucket %s: %w", cfg.StateBucket, err)
		}
		id := ""
		if *agent != "" {
			if id, err = inspect.ResolveAgent(ctx, kv, *agent); err != nil {
				return fmt.Errorf("--agent: %w", err)
			}
		}
		return inspect.State(ctx, kv, id, stdout)
	})
}
