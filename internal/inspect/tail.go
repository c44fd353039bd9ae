package inspect

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
)

// TailOptions selects what Tail follows.
type TailOptions struct {
	// Stream is the stream name; contract.Stream when empty.
	Stream string
	// SubjectPrefix is the contract's subject prefix; contract.SubjectPrefix
	// when empty.
	SubjectPrefix string
	// Agent limits the output to one agent ID; all agents when empty.
	Agent string
	// Type limits the output to one event type; all types when empty.
	Type string
	// Since starts at the first event stored at or after this time; zero
	// starts with the next event published (like tail -f).
	Since time.Time
}

// Tail follows the stream with an ordered consumer and writes one line per
// event to w (see Line) until ctx is done, then returns nil. A message that
// is not a decodable CloudEvent is shown as such and skipped.
func Tail(ctx context.Context, js jetstream.JetStream, opts TailOptions, w io.Writer) error {
	if opts.Stream == "" {
		opts.Stream = contract.Stream
	}
	policy, start := deliverFrom(opts.Since, jetstream.DeliverNewPolicy)
	filter := filterSubject(opts.SubjectPrefix, opts.Agent, opts.Type)
	cons, err := js.OrderedConsumer(ctx, opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  policy,
		OptStartTime:   start,
	})
	if err != nil {
		return fmt.Errorf("create ordered consumer on stream %s for %s: %w", opts.Stream, filter, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume stream %s: %w", opts.Stream, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if isDone(ctx, err) {
				return nil
			}
			return fmt.Errorf("read stream %s: %w", opts.Stream, err)
		}
		line := ""
		if ev, err := Decode(ctx, msg); err != nil {
			line = Printable(fmt.Sprintf("%s  undecodable message: %v", msg.Subject(), err))
		} else {
			line = Line(ev)
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return fmt.Errorf("write event line: %w", err)
		}
	}
}
