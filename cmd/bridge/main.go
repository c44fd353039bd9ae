// Command bridge turns Dynamics 365 Contact Center agent presence into a live
// event stream: it polls CCaaS_GetPresence for every agent, detects what
// changed and publishes CloudEvents to NATS JetStream.
//
// Subcommands: run (the default), demo, simulate, check, tail, replay, state,
// bench, version. `bridge help` lists them; `bridge <cmd> -h` lists each
// one's flags and the environment variables that apply.
//
// Each subcommand has a file of its own (run.go, demo.go, check.go, ...);
// the running bridge's start, run and ordered shutdown are in lifecycle.go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses.
const (
	exitOK     = 0
	exitFail   = 1
	exitConfig = 2 // invalid configuration or usage: nothing was started
)

// command is one subcommand of bridge.
type command struct {
	name    string
	summary string
	// env lists the variables the command reads: group keys (see
	// groupTitles) for whole groups, or single BRIDGE_ names.
	env []string
	// run executes the subcommand with its own flag set; it returns the
	// process exit status.
	run func(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "poll the organisation's agents and publish their presence changes (production mode; the default)", []string{"org", "poll", "detect", "nats", "ha", "ops"}, cmdRun},
		{"demo", "simulated organisation (25 agents), embedded JetStream and the bridge in one process, printing each event", demoVars, cmdDemo},
		{"simulate", "serve a simulated Dynamics 365 organisation (CCaaS_GetPresence, msdyn_presences, the agent-status tables) with optional faults", nil, cmdSimulate},
		{"check", "validate configuration, get a token, call CCaaS_GetPresence for one agent, reach NATS and the stream", []string{"org", "poll", "nats"}, cmdCheck},
		{"tail", "follow the event stream, one readable line per event", inspectVars, cmdTail},
		{"replay", "export events as CloudEvents JSON lines (NDJSON) for pipelines", inspectVars, cmdReplay},
		{"state", "print the current state of every agent from the state bucket", inspectVars, cmdState},
		{"bench", "measure the publish path against the raw JetStream limit and the CloudEvents SDK sender", nil, cmdBench},
		{"pollbench", "measure the poll path (CPU per poll, memory per agent) against a simulator process, beside a bare net/http loop", nil, cmdPollBench},
		{"wholebench", "measure the whole bridge (CPU per poll and per event, peak and final memory, start-up burst) with the simulator and JetStream in their own processes, beside a bare net/http loop and the publish path alone", nil, cmdWholeBench},
		{"feedbench", "measure the change feed: 10,000 agents, polling alone at 10s beside the feed with polls at 60s (requests, detection latency, short presences)", nil, cmdFeedBench},
		{"version", "print the version", nil, cmdVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// dispatch picks the subcommand (run when none is given) and runs it.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	name := "run"
	if len(args) > 0 && (len(args[0]) == 0 || args[0][0] != '-') {
		name, args = args[0], args[1:]
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		usage(stdout)
		return exitOK
	}
	if name == "help" {
		if len(args) > 0 {
			return dispatch(ctx, []string{args[0], "-h"}, stdout, stderr)
		}
		usage(stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		fs := flag.NewFlagSet("bridge "+c.name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.Usage = func() { commandUsage(fs.Output(), c, fs) }
		return c.run(ctx, fs, args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "bridge: unknown command %q\n\n", name)
	usage(stderr)
	return exitConfig
}

// parseFlags parses args and maps -h to a successful exit.
func parseFlags(fs *flag.FlagSet, args []string) (done bool, code int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			return true, exitOK
		}
		return true, exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return true, exitConfig
	}
	return false, exitOK
}

func cmdVersion(_ context.Context, fs *flag.FlagSet, args []string, stdout, _ io.Writer) int {
	if done, code := parseFlags(fs, args); done {
		return code
	}
	fmt.Fprintln(stdout, "bridge", version)
	return exitOK
}
