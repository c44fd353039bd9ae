package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/inspect"
	"github.com/ccaas/presence-bridge/internal/publish"
)

// What tail, replay and state share (check uses connectNATS too).

// connectNATS connects to BRIDGE_NATS_URL or, when it is empty, to the
// embedded server of a bridge running on this machine
// (BRIDGE_EMBEDDED_NATS_LISTEN).
func connectNATS(ctx context.Context, cfg config.Config) (*nats.Conn, jetstream.JetStream, error) {
	url := cfg.NATSURL
	if url == "" {
		url = "nats://" + cfg.EmbeddedNATSListen
	}
	nc, err := publish.Connect(ctx, publish.ConnOptions{
		URL: url, Name: "ccaas-presence-bridge-cli", CredsFile: cfg.NATSCreds, NKeySeedFile: cfg.NATSNKey, User: cfg.NATSUser,
		Password: cfg.NATSPassword, Token: cfg.NATSToken, CAFile: cfg.NATSCA, CertFile: cfg.NATSCert, KeyFile: cfg.NATSKey,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats at %s: %w", publish.RedactURLs(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// eventFilters are the --agent, --type and --since flags tail and replay
// share.
type eventFilters struct {
	agent, typ, since string
}

// register adds the filters' flags to fs.
func (f *eventFilters) register(fs *flag.FlagSet, sinceHelp string) {
	fs.StringVar(&f.agent, "agent", "", "only this agent: its ID ({braces} accepted) or its name as bridge state shows it")
	fs.StringVar(&f.typ, "type", "", "only this event type, e.g. presence.changed or agent.offline")
	fs.StringVar(&f.since, "since", "", sinceHelp)
}

// check validates the filters that need no connection.
func (f *eventFilters) check() error {
	if err := inspect.CheckType(f.typ); err != nil {
		return fmt.Errorf("--type: %w", err)
	}
	_, err := parseTime("since", f.since)
	return err
}

// parseTime accepts a duration back from now (10m) or an RFC 3339 time.
func parseTime(flagName, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := inspect.ParseSince(s, time.Now())
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s: %w", flagName, err)
	}
	return t, nil
}

// resolveAgent turns --agent into an agent ID: a GUID as it is, a name
// through the state bucket.
func resolveAgent(ctx context.Context, cfg config.Config, js jetstream.JetStream, agent string) (string, error) {
	if agent == "" {
		return "", nil
	}
	if id, ok := inspect.NormalizeAgentID(agent); ok {
		return id, nil
	}
	kv, err := js.KeyValue(ctx, cfg.StateBucket)
	if err != nil {
		return "", fmt.Errorf("--agent %q is not a GUID, and the state bucket %s to look the name up in is not readable: %w", agent, cfg.StateBucket, err)
	}
	id, err := inspect.ResolveAgent(ctx, kv, agent)
	if err != nil {
		return "", fmt.Errorf("--agent: %w", err)
	}
	return id, nil
}

// inspectCommand wraps the setup tail, replay and state share:
// flags, their validation (check: a usage error, exit 2), configuration,
// NATS.
func inspectCommand(ctx context.Context, fs *flag.FlagSet, args []string, stderr io.Writer, check func() error,
	run func(ctx context.Context, cfg config.Config, nc *nats.Conn, js jetstream.JetStream) error) int {
	if done, code := parseFlags(fs, args); done {
		return code
	}
	if check != nil {
		if err := check(); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
			return exitConfig
		}
	}
	cfg, ok := loadConfig(stderr, config.Needs{})
	if !ok {
		return exitConfig
	}
	nc, js, err := connectNATS(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitFail
	}
	defer nc.Close()
	if err := run(ctx, cfg, nc, js); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitFail
	}
	return exitOK
}
