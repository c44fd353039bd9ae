package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/inspect"
)

// cmdReplay exports events as CloudEvents JSON lines, with a summary on
// stderr.
func cmdReplay(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	var f eventFilters
	f.register(fs, "export events since this long ago (10m) or this time (RFC 3339); default: the stream's beginning")
	until := fs.String("until", "", "stop at events after this time (RFC 3339) or this long ago; default: the end of the stream at start")
	// Both bounds are read against one clock reading, so --since 2h
	// --until 1h is the hour between them.
	now := time.Now()
	var since, u time.Time
	check := func() error {
		if err := f.check(); err != nil {
			return err
		}
		var err error
		if since, err = inspect.ParseSince(f.since, now); err != nil {
			return fmt.Errorf("--since: %w", err)
		}
		if u, err = inspect.ParseSince(*until, now); err != nil {
			return fmt.Errorf("--until: %w", err)
		}
		if !since.IsZero() && !u.IsZero() && u.Before(since) {
			return fmt.Errorf("--until %s is before --since %s: the range is empty", u.UTC().Format(time.RFC3339), since.UTC().Format(time.RFC3339))
		}
		return nil
	}
	return inspectCommand(ctx, fs, args, stderr, check, func(ctx context.Context, cfg config.Config, _ *nats.Conn, js jetstream.JetStream) error {
		agent, err := resolveAgent(ctx, cfg, js, f.agent)
		if err != nil {
			return err
		}
		sum, err := inspect.Replay(ctx, js, inspect.ReplayOptions{
			Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Since: since, Until: u, Agent: agent, Type: f.typ,
		}, stdout, stderr)
		if err != nil {
			return err
		}
		fmt.Fprintln(stderr, sum)
		return nil
	})
}
