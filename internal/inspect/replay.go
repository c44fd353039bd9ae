package inspect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/ccaas/presence-bridge/internal/contract"
)

// ReplayOptions selects what Replay exports.
type ReplayOptions struct {
	// Stream is the stream name; contract.Stream when empty.
	Stream string
	// SubjectPrefix is the contract's subject prefix; contract.SubjectPrefix
	// when empty.
	SubjectPrefix string
	// Since starts at the first event stored at or after this time; zero
	// starts at the beginning of the stream.
	Since time.Time
	// Until stops before the first event stored after this time; zero stops
	// at the end of the stream as it was when Replay started.
	Until time.Time
	// Agent limits the export to one agent ID; all agents when empty.
	Agent string
	// Type limits the export to one event type; all types when empty.
	Type string
}

// ErrEmptyRange is wrapped by the error of a replay whose Until is before
// its Since.
var ErrEmptyRange = errors.New("--until is before --since")

// ReplaySummary says what a replay wrote.
type ReplaySummary struct {
	// Events is the number of events written.
	Events int
	// First and Last are the times (the CloudEvent time attribute) of the
	// first and the last event written; zero when none was.
	First, Last time.Time
	// Skipped is the number of messages skipped as undecodable.
	Skipped int
}

// String renders the summary as one line, e.g. "replay: 42 events written,
// from 2026-11-27T09:00:00Z to 2026-11-27T10:00:00Z (1h0m0s)".
func (s ReplaySummary) String() string {
	var line string
	switch s.Events {
	case 0:
		line = "replay: no event in the selected range"
	case 1:
		line = fmt.Sprintf("replay: 1 event written, at %s", s.First.UTC().Format(time.RFC3339))
	default:
		line = fmt.Sprintf("replay: %d events written, from %s to %s (%s)", s.Events,
			s.First.UTC().Format(time.RFC3339), s.Last.UTC().Format(time.RFC3339), s.Last.Sub(s.First).Round(time.Second))
	}
	switch s.Skipped {
	case 0:
		return line
	case 1:
		return line + "; 1 undecodable message skipped"
	}
	return fmt.Sprintf("%s; %d undecodable messages skipped", line, s.Skipped)
}

// Replay writes the selected events to w as CloudEvents JSON (structured
// mode), one event per line, in stream order, and returns once it reaches
// Until or the end of the stream as it was at the start (events published
// meanwhile are not exported), with a summary of what it wrote. A message
// that is not a decodable CloudEvent is skipped: one line on progress names
// its stream sequence and the reason, and the summary counts it. When
// progress is a terminal it also shows a progress bar there. It returns the
// first error, including ctx's, and refuses an Until before Since.
func Replay(ctx context.Context, js jetstream.JetStream, opts ReplayOptions, w, progress io.Writer) (ReplaySummary, error) {
	return replay(ctx, js, opts, w, barWriter(progress), progress)
}

// barWriter returns progress when it is a terminal, nil otherwise.
func barWriter(progress io.Writer) io.Writer {
	f, ok := progress.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progress
}

// replay is Replay with the progress bar written to bar when it is not nil
// and each skipped message reported on report.
func replay(ctx context.Context, js jetstream.JetStream, opts ReplayOptions, w, bar, report io.Writer) (ReplaySummary, error) {
	var sum ReplaySummary
	if !opts.Since.IsZero() && !opts.Until.IsZero() && opts.Until.Before(opts.Since) {
		return sum, fmt.Errorf("replay: %w (%s < %s)", ErrEmptyRange,
			opts.Until.UTC().Format(time.RFC3339), opts.Since.UTC().Format(time.RFC3339))
	}
	n, err := replayTo(ctx, js, opts, w, bar, report, &sum)
	sum.Events = n
	return sum, err
}

func replayTo(ctx context.Context, js jetstream.JetStream, opts ReplayOptions, w, bar, report io.Writer, sum *ReplaySummary) (int, error) {
	if opts.Stream == "" {
		opts.Stream = contract.Stream
	}
	stream, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		return 0, fmt.Errorf("look up stream %s: %w", opts.Stream, err)
	}
	last := stream.CachedInfo().State.LastSeq
	if last == 0 {
		return 0, nil
	}
	policy, start := deliverFrom(opts.Since, jetstream.DeliverAllPolicy)
	filter := filterSubject(opts.SubjectPrefix, opts.Agent, opts.Type)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  policy,
		OptStartTime:   start,
	})
	if err != nil {
		return 0, fmt.Errorf("create ordered consumer on stream %s for %s: %w", opts.Stream, filter, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("consume stream %s: %w", opts.Stream, err)
	}
	defer it.Stop()
	info := cons.CachedInfo()
	if info == nil || info.NumPending == 0 {
		return 0, nil
	}

	var pb *progressbar.ProgressBar
	if bar != nil {
		pb = progressbar.NewOptions64(int64(info.NumPending),
			progressbar.OptionSetWriter(bar),
			progressbar.OptionSetDescription("replay"),
			progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		defer pb.Finish()
	}

	n := 0
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return n, fmt.Errorf("read stream %s: %w", opts.Stream, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return n, fmt.Errorf("read metadata of message on %s: %w", msg.Subject(), err)
		}
		if meta.Sequence.Stream > last || (!opts.Until.IsZero() && meta.Timestamp.After(opts.Until)) {
			return n, nil
		}
		at, err := replayOne(ctx, msg, w)
		switch {
		case errors.Is(err, errUndecodable):
			sum.Skipped++
			fmt.Fprintln(report, Printable(fmt.Sprintf("replay: skip stream sequence %d: %v", meta.Sequence.Stream, err)))
		case err != nil:
			return n, err
		default:
			n++
			if n == 1 {
				sum.First = at
			}
			sum.Last = at
		}
		if pb != nil {
			_ = pb.Add(1) // the bar is cosmetic; its write errors do not stop the export
		}
		if meta.NumPending == 0 || meta.Sequence.Stream == last {
			return n, nil
		}
	}
}

// errUndecodable marks a message replay skips.
var errUndecodable = errors.New("undecodable message")

// replayOne writes msg as one CloudEvents JSON line and returns the event's
// time; a message that is not a CloudEvent the bridge could have published
// fails with errUndecodable.
func replayOne(ctx context.Context, msg jetstream.Msg, w io.Writer) (time.Time, error) {
	ev, err := Decode(ctx, msg)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", errUndecodable, err)
	}
	b, err := ev.MarshalJSON()
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: encode event %s as JSON: %w", errUndecodable, ev.ID(), err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return time.Time{}, fmt.Errorf("write event %s: %w", ev.ID(), err)
	}
	return ev.Time(), nil
}
