package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/ccaas/presence-bridge/internal/feedbench"
	"github.com/ccaas/presence-bridge/internal/logging"
	"github.com/ccaas/presence-bridge/internal/publish/bench"
	"github.com/ccaas/presence-bridge/internal/source/pollbench"
	"github.com/ccaas/presence-bridge/internal/wholebench"
)

// cmdPollBench measures the poll path at scale: the bridge's poller against
// the simulator in a separate process over loopback, beside a bare net/http
// loop at the same request rate. Its flags are pollbench's own.
func cmdPollBench(ctx context.Context, _ *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "bridge pollbench: %v\n", err)
		return exitFail
	}
	if err := pollbench.Main(ctx, []string{exe, "pollbench"}, args, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "bridge pollbench: %v\n", err)
		return exitFail
	}
	return exitOK
}

// cmdWholeBench measures the whole bridge as `bridge run` runs it, in
// steady state and at start-up, beside pollbench's bare loop and the
// publish path alone. Its flags are wholebench's own.
func cmdWholeBench(ctx context.Context, _ *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "bridge wholebench: %v\n", err)
		return exitFail
	}
	if err := wholebench.Main(ctx, []string{exe, "wholebench"}, args, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "bridge wholebench: %v\n", err)
		return exitFail
	}
	return exitOK
}

// cmdBench measures the publish path against the raw JetStream limit and
// the CloudEvents SDK sender, in one run on one loopback server.
func cmdBench(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	var o bench.Options
	fs.IntVar(&o.Events, "events", 200000, "events published by the raw and bridge scenarios")
	fs.IntVar(&o.SDKEvents, "sdk-events", 20000, "events published by the CloudEvents SDK sender scenario")
	fs.IntVar(&o.Agents, "agents", 10000, "agents whose subjects the events are spread over")
	fs.IntVar(&o.MaxPending, "max-pending", 0, "publish window (default: the bridge's default)")
	fs.DurationVar(&o.PublishTimeout, "publish-timeout", 0, "acknowledgement timeout of the bridge scenario (default: the bridge's default)")
	fs.StringVar(&o.DataDir, "data-dir", "", "store of the benchmark's JetStream server (default: a temporary directory)")
	fs.BoolVar(&o.JSON, "json", false, "write the results as JSON")
	verbose := fs.Bool("v", false, "log progress to stderr")
	if done, code := parseFlags(fs, args); done {
		return code
	}
	return measure("bench", stderr, *verbose, func(log *slog.Logger) error {
		o.Logger = log
		_, err := bench.RunBench(ctx, o, stdout)
		return err
	})
}

// cmdFeedBench measures the change feed against polling alone, in one run
// of the whole bridge on an in-process JetStream and simulator.
func cmdFeedBench(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	var o feedbench.Options
	fs.IntVar(&o.Agents, "agents", 10000, "agents in the simulated organisation")
	fs.DurationVar(&o.Measure, "measure", time.Minute, "measured period of each mode")
	fs.DurationVar(&o.ChangeEvery, "change-every", 5*time.Minute, "mean time between two changes of one agent")
	fs.DurationVar(&o.Lag, "lag", 500*time.Millisecond, "delay between a change and its history row")
	fs.DurationVar(&o.PollAlone, "poll", 10*time.Second, "poll interval of polling alone")
	fs.DurationVar(&o.PollWithFeed, "poll-with-feed", time.Minute, "poll interval beside the feed")
	fs.DurationVar(&o.FeedInterval, "feed-interval", time.Second, "read interval of the feed")
	fs.BoolVar(&o.JSON, "json", false, "write the results as JSON")
	verbose := fs.Bool("v", false, "log progress to stderr")
	if done, code := parseFlags(fs, args); done {
		return code
	}
	return measure("feedbench", stderr, *verbose, func(log *slog.Logger) error {
		o.Logger = log
		_, err := feedbench.Run(ctx, o, stdout)
		return err
	})
}

// measure runs a benchmark command's measurement, its progress logged to
// stderr when verbose (nil logger otherwise), and turns its error into the
// exit status.
func measure(name string, stderr io.Writer, verbose bool, run func(*slog.Logger) error) int {
	var log *slog.Logger
	if verbose {
		l, err := logging.New(stderr, "text", "info")
		if err != nil {
			fmt.Fprintf(stderr, "bridge %s: %v\n", name, err)
			return exitFail
		}
		log = l
	}
	if err := run(log); err != nil {
		fmt.Fprintf(stderr, "bridge %s: %v\n", name, err)
		return exitFail
	}
	return exitOK
}
