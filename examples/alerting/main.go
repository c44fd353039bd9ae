// Command alerting raises an alert for every agent that goes offline and
// every agent whose presence the bridge can no longer observe (stale). It is
// a work queue reader: a durable pull consumer with explicit acks on
// <prefix>.*.agent.offline and <prefix>.*.presence.stale, so that an alert
// is acknowledged only once it has been raised, a crash redelivers it, and
// a restart resumes where the last run stopped. See README.md.
//
//	go run ./examples/alerting -nats nats://127.0.0.1:4222
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// options names the stream and subjects of the bridge and the durable
// consumer of this service.
type options struct {
	Stream        string
	SubjectPrefix string
	// Durable is the consumer's name; every replica of the service shares it.
	Durable string
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait time.Duration
	// RetryDelay is how long to wait before an alert that could not be
	// raised is delivered again.
	RetryDelay time.Duration
	// Logger receives the failures to raise an alert.
	Logger *slog.Logger
}

func main() {
	url := flag.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	var opts options
	flag.StringVar(&opts.Stream, "stream", "CCAAS_AGENTS", "stream of the bridge's events")
	flag.StringVar(&opts.SubjectPrefix, "prefix", "ccaas.agents", "subject prefix of the bridge's events")
	flag.StringVar(&opts.Durable, "durable", "alerting", "durable consumer name")
	flag.DurationVar(&opts.AckWait, "ack-wait", 30*time.Second, "redeliver an alert not acknowledged within this time")
	flag.DurationVar(&opts.RetryDelay, "retry-delay", 5*time.Second, "retry an alert that could not be raised after this time")
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := connectAndRun(ctx, *url, opts); err != nil {
		fmt.Fprintln(os.Stderr, "alerting:", err)
		os.Exit(1)
	}
}

// connectAndRun is repeated in each example on purpose: each is a standalone program.
func connectAndRun(ctx context.Context, url string, opts options) error {
	nc, err := nats.Connect(url, nats.Name("alerting"))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	return run(ctx, nc, opts, os.Stdout)
}

// consumerConfig is the durable consumer this service reads from.
func consumerConfig(opts options) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: opts.Durable,
		FilterSubjects: []string{
			opts.SubjectPrefix + ".*.agent.offline",
			opts.SubjectPrefix + ".*.presence.stale",
		},
		// Only alerts raised from now on when the consumer is first created;
		// afterwards the consumer resumes from its ack floor.
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       opts.AckWait,
		// Give up on an alert that fails five times rather than loop on it.
		MaxDeliver: 5,
		// Bound the alerts in flight across all replicas.
		MaxAckPending: 100,
	}
}

// run raises one alert line on w per event until ctx is done, acking each
// once written.
func run(ctx context.Context, nc *nats.Conn, opts options, w io.Writer) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("open jetstream: %w", err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, opts.Stream, consumerConfig(opts))
	if err != nil {
		return fmt.Errorf("create durable consumer %s: %w", opts.Durable, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume alerts: %w", err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read alerts: %w", err)
		}
		if err := handle(ctx, msg, w, opts); err != nil {
			return err
		}
	}
}

// handle raises the alert of one message and settles it: Ack once raised,
// Term for a message that can never be decoded, Nak with a delay (deliver
// again later) when the alert could not be raised. It returns an error only
// when the message could not be settled.
func handle(ctx context.Context, msg jetstream.Msg, w io.Writer, opts options) error {
	ev, err := decodeEvent(ctx, msg)
	if err != nil {
		opts.Logger.Error("drop undecodable message", "subject", msg.Subject(), "err", err)
		if err := msg.Term(); err != nil {
			return fmt.Errorf("terminate undecodable message on %s: %w", msg.Subject(), err)
		}
		return nil
	}
	if _, err := fmt.Fprintln(w, alert(ev)); err != nil {
		opts.Logger.Error("raise alert; will retry", "event", ev.ID(), "retry_in", opts.RetryDelay, "err", err)
		if err := msg.NakWithDelay(opts.RetryDelay); err != nil {
			return fmt.Errorf("nak event %s: %w", ev.ID(), err)
		}
		return nil
	}
	// DoubleAck waits for the server to confirm the ack, so an alert is not
	// redelivered after this returns. An alert already raised is acked even
	// when shutdown has begun, within a bound.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		return fmt.Errorf("ack event %s: %w", ev.ID(), err)
	}
	return nil
}

// alert renders an event as one alert line.
func alert(ev *event.Event) string {
	var d struct {
		AgentName     string `json:"agentName"`
		Reason        string `json:"reason"`
		Since         string `json:"since"`
		LastSuccessAt string `json:"lastSuccessAt"`
		ErrorClass    string `json:"errorClass"`
	}
	_ = json.Unmarshal(ev.Data(), &d) // missing fields render empty
	name := d.AgentName
	if name == "" {
		name = ev.Subject()
	}
	switch ev.Type() {
	case "agent.offline":
		return fmt.Sprintf("ALERT %s offline since %s (%s)", name, d.Since, d.Reason)
	case "presence.stale":
		return fmt.Sprintf("ALERT %s presence unknown: no successful poll since %s (%s)", name, d.LastSuccessAt, d.ErrorClass)
	default:
		return fmt.Sprintf("ALERT %s %s", name, ev.Type())
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
