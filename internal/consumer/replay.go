package consumer

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
)

// ReplayOptions selects what Replay exports.
type ReplayOptions struct {
	// Stream is the stream name; DefaultStream when empty.
	Stream string
	// SubjectPrefix is the contract's subject prefix; DefaultSubjectPrefix
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

// Replay writes the selected events to w as CloudEvents JSON (structured
// mode), one event per line, in stream order, and returns once it reaches
// Until or the end of the stream as it was at the start (events published
// meanwhile are not exported). A message that is not a decodable CloudEvent
// is skipped: one line on progress names its stream sequence and the
// reason, and a last line counts the skipped messages. When progress is a
// terminal it also shows a progress bar there. It returns the first error,
// including ctx's.
func Replay(ctx context.Context, js jetstream.JetStream, opts ReplayOptions, w, progress io.Writer) error {
	res, err := replay(ctx, js, opts, w, barWriter(progress), progress)
	if res.skipped > 0 {
		fmt.Fprintf(progress, "replay: %d events exported, %d undecodable messages skipped\n", res.written, res.skipped)
	}
	return err
}

// replayResult counts what replay did.
type replayResult struct {
	written int // events written
	skipped int // messages skipped as undecodable
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
func replay(ctx context.Context, js jetstream.JetStream, opts ReplayOptions, w, bar, report io.Writer) (replayResult, error) {
	var res replayResult
	if opts.Stream == "" {
		opts.Stream = DefaultStream
	}
	stream, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		return res, fmt.Errorf("look up stream %s: %w", opts.Stream, err)
	}
	last := stream.CachedInfo().State.LastSeq
	if last == 0 {
		return res, nil
	}
	policy, start := deliverFrom(opts.Since, jetstream.DeliverAllPolicy)
	filter := FilterSubject(opts.SubjectPrefix, opts.Agent, opts.Type)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  policy,
		OptStartTime:   start,
	})
	if err != nil {
		return res, fmt.Errorf("create ordered consumer on stream %s for %s: %w", opts.Stream, filter, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return res, fmt.Errorf("consume stream %s: %w", opts.Stream, err)
	}
	defer it.Stop()
	info := cons.CachedInfo()
	if info == nil || info.NumPending == 0 {
		return res, nil
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

	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return res, fmt.Errorf("read stream %s: %w", opts.Stream, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return res, fmt.Errorf("read metadata of message on %s: %w", msg.Subject(), err)
		}
		if meta.Sequence.Stream > last || (!opts.Until.IsZero() && meta.Timestamp.After(opts.Until)) {
			return res, nil
		}
		if err := replayOne(ctx, msg, w); errors.Is(err, errUndecodable) {
			res.skipped++
			fmt.Fprintln(report, Printable(fmt.Sprintf("replay: skip stream sequence %d: %v", meta.Sequence.Stream, err)))
		} else if err != nil {
			return res, err
		} else {
			res.written++
		}
		if pb != nil {
			_ = pb.Add(1) // the bar is cosmetic; its write errors do not stop the export
		}
		if meta.NumPending == 0 || meta.Sequence.Stream == last {
			return res, nil
		}
	}
}

// errUndecodable marks a message replay skips.
var errUndecodable = errors.New("undecodable message")

// replayOne writes msg as one CloudEvents JSON line; a message that is not a
// CloudEvent the bridge could have published fails with errUndecodable.
func replayOne(ctx context.Context, msg jetstream.Msg, w io.Writer) error {
	ev, err := Decode(ctx, msg)
	if err != nil {
		return fmt.Errorf("%w: %w", errUndecodable, err)
	}
	b, err := ev.MarshalJSON()
	if err != nil {
		return fmt.Errorf("%w: encode event %s as JSON: %w", errUndecodable, ev.ID(), err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write event %s: %w", ev.ID(), err)
	}
	return nil
}
