package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/ccaas/presence-bridge/internal/logging"
	"github.com/ccaas/presence-bridge/internal/simulator"
)

func cmdSimulate(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	opts := simulator.DefaultOptions()
	addr := fs.String("addr", "127.0.0.1:8081", "address to serve the simulated organisation on")
	logFormat := fs.String("log-format", "text", "log format: json or text")
	opts.RegisterFlags(fs)
	if done, code := parseFlags(fs, args); done {
		return code
	}
	logger, err := logging.New(stderr, *logFormat, "info")
	if err != nil {
		fmt.Fprintf(stderr, "bridge simulate: %v\n", err)
		return exitConfig
	}
	opts.Logger = logger
	sim, err := simulator.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "bridge simulate: %v\n", err)
		return exitConfig
	}
	if !preflight(stderr, "simulate", "another `bridge simulate` running?", []listenAddr{{*addr, "--addr"}}, "") {
		return exitConfig
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "bridge simulate: listen on %s (--addr): %v\n", *addr, err)
		return exitFail
	}
	callForm, scope := opts.CallForm, opts.Quota.Scope
	if callForm == "" {
		callForm = simulator.CallFormBare
	}
	if scope == "" {
		scope = simulator.QuotaScopeAgent
	}
	fmt.Fprintf(stdout, "simulated organisation on http://%s (%s; call form %s, quota charged to %s); to poll it, in another terminal:\n",
		*addr, plural(len(sim.AgentIDs()), "agent", "agents"), callForm, scope)
	fmt.Fprintf(stdout, "  export BRIDGE_ORG_URL=http://%s\n", *addr)
	fmt.Fprintf(stdout, "  export BRIDGE_TOKEN=%s\n", simulator.DefaultToken)
	fmt.Fprintf(stdout, "  export BRIDGE_AGENT_IDS=%s\n", strings.Join(sim.AgentIDs(), ","))
	if err := sim.Serve(ctx, ln); err != nil {
		fmt.Fprintf(stderr, "bridge simulate: %v\n", err)
		return exitFail
	}
	return exitOK
}
