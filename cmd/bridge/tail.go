package main

import (
	"context"
	"flag"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/inspect"
)

// cmdTail follows the event stream, one readable line per event
// (inspect.Line).
func cmdTail(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	var f eventFilters
	f.register(fs, "start with events since this long ago (10m) or this time (RFC 3339); default: new events only")
	return inspectCommand(ctx, fs, args, stderr, f.check, func(ctx context.Context, cfg config.Config, _ *nats.Conn, js jetstream.JetStream) error {
		since, err := parseTime("since", f.since)
		if err != nil {
			return err
		}
		agent, err := resolveAgent(ctx, cfg, js, f.agent)
		if err != nil {
			return err
		}
		return inspect.Tail(ctx, js, inspect.TailOptions{Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Agent: agent, Type: f.typ, Since: since}, stdout)
	})
}
