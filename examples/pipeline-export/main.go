// Command pipeline-export writes the bridge's events from a point in time
// to the end of the stream as CloudEvents JSON lines (NDJSON, structured
// mode), for a data pipeline to load. It reads with an ordered consumer
// that starts at the given time and stops at the last message the stream
// held when the export began, so an export is a finite, repeatable file.
// See README.md.
//
//	go run ./examples/pipeline-export -nats nats://127.0.0.1:4222 -since 24h > events.ndjson
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// options says what to export.
type options struct {
	Stream        string
	SubjectPrefix string
	// Since is the time of the first event to export (the time the stream
	// stored it); zero exports from the beginning of the stream.
	Since time.Time
}

func main() {
	url := flag.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	var opts options
	flag.StringVar(&opts.Stream, "stream", "CCAAS_AGENTS", "stream of the bridge's events")
	flag.StringVar(&opts.SubjectPrefix, "prefix", "ccaas.agents", "subject prefix of the bridge's events")
	since := flag.String("since", "", "export events from this time: a duration before now (24h) or an RFC 3339 time; empty for all")
	flag.Parse()

	var err error
	if opts.Since, err = parseSince(*since, time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, "pipeline-export:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := connectAndRun(ctx, *url, opts); err != nil {
		fmt.Fprintln(os.Stderr, "pipeline-export:", err)
		os.Exit(1)
	}
}

// connectAndRun is repeated in each example on purpose: each is a standalone program.
func connectAndRun(ctx context.Context, url string, opts options) error {
	nc, err := nats.Connect(url, nats.Name("pipeline-export"))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	res, err := run(ctx, nc, opts, os.Stdout, os.Stderr)
	fmt.Fprintf(os.Stderr, "exported %d events, skipped %d undecodable messages\n", res.exported, res.skipped)
	return err
}

// parseSince accepts a duration before now or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("-since %q: want a duration such as 24h or an RFC 3339 time", s)
	}
	return t, nil
}

// result counts what run did.
type result struct {
	exported int // events written
	skipped  int // messages that were not decodable CloudEvents
}

// run writes the events from opts.Since to the end of the stream as it is
// now to w, one CloudEvent JSON object per line. A message that is not a
// decodable CloudEvent is skipped, named on report and counted: one foreign
// message must not stop a pipeline's export.
func run(ctx context.Context, nc *nats.Conn, opts options, w, report io.Writer) (result, error) {
	var res result
	js, err := jetstream.New(nc)
	if err != nil {
		return res, fmt.Errorf("open jetstream: %w", err)
	}
	stream, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		return res, fmt.Errorf("look up stream %s: %w", opts.Stream, err)
	}
	// The export ends at the last message stored now.
	last := stream.CachedInfo().State.LastSeq
	if last == 0 {
		return res, nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{opts.SubjectPrefix + ".>"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if !opts.Since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &opts.Since
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return res, fmt.Errorf("create ordered consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return res, fmt.Errorf("consume stream %s: %w", opts.Stream, err)
	}
	defer it.Stop()
	if info := cons.CachedInfo(); info == nil || info.NumPending == 0 {
		return res, nil // nothing stored since opts.Since
	}

	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return res, fmt.Errorf("read stream %s: %w", opts.Stream, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return res, fmt.Errorf("read message metadata: %w", err)
		}
		if meta.Sequence.Stream > last {
			return res, nil // published after the export began
		}
		ev, err := decodeEvent(ctx, msg)
		var line []byte
		if err == nil {
			line, err = ev.MarshalJSON()
		}
		if err != nil {
			res.skipped++
			fmt.Fprintf(report, "skip stream sequence %d: %v\n", meta.Sequence.Stream, err)
		} else if _, err := w.Write(append(line, '\n')); err != nil {
			return res, fmt.Errorf("write event %s: %w", ev.ID(), err)
		} else {
			res.exported++
		}
		if meta.NumPending == 0 || meta.Sequence.Stream == last {
			return res, nil
		}
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
