// Package inspect reads the bridge's stream and state bucket for operators:
// it is the logic behind `bridge tail`, `replay` and `state`. Tail follows
// the stream, one readable line per event (Line, which `bridge demo` prints
// too); Replay exports events as CloudEvents JSON lines, with a summary;
// State prints the current-state bucket as a table; ResolveAgent and
// CheckType check the --agent and --type flag values, and ParseSince the
// --since/--until ones.
//
// It reads the stream the way any consumer would: header values are
// percent-decoded as the CloudEvents NATS binding requires, events are
// decoded with the CloudEvents NATS JetStream binding (NewMessage +
// binding.ToEvent), and only the contract's subjects, attributes and data
// fields are used. Strings from the organisation or the stream are shown
// through Printable, so none can drive the operator's terminal.
//
// Wiring in cmd/bridge (nc connected with the BRIDGE_ NATS settings):
//
//	js, _ := jetstream.New(nc)
//	since, err := inspect.ParseSince(flagSince, time.Now())
//	err = inspect.Tail(ctx, js, inspect.TailOptions{Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Agent: id, Type: typ, Since: since}, os.Stdout)
//	sum, err := inspect.Replay(ctx, js, inspect.ReplayOptions{...}, os.Stdout, os.Stderr)
//	fmt.Fprintln(os.Stderr, sum) // "replay: 42 events written, from … to … (1h0m0s)"
//	kv, _ := js.KeyValue(ctx, cfg.StateBucket)
//	id, err := inspect.ResolveAgent(ctx, kv, flagAgent) // a GUID ({braces} accepted) or a name
//	err = inspect.CheckType(flagType)                   // one of EventTypes, or a suggestion
//	err = inspect.State(ctx, kv, id, os.Stdout)
package inspect

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/ceheader"
	"github.com/ccaas/presence-bridge/internal/contract"
)

// ParseSince parses a --since or --until value: a duration before now
// ("10m", "1h30m") or an RFC 3339 time ("2025-01-02T15:04:05Z"). The empty
// string gives the zero time (no bound).
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("time %q: a duration must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q is neither a duration like 10m nor an RFC 3339 time like 2025-01-02T15:04:05Z", s)
	}
	return t, nil
}

// filterSubject returns the subject filter for one agent and one type under
// prefix (the contract's when empty); an empty agent or type matches all.
func filterSubject(prefix, agent, eventType string) string {
	if prefix == "" {
		prefix = contract.SubjectPrefix
	}
	return contract.Filter(prefix, strings.ToLower(agent), eventType)
}

// Decode turns a JetStream message into a CloudEvent as the CloudEvents NATS
// binding specifies: ce- header values unquoted and percent-decoded, then
// the SDK's NATS JetStream binding.
func Decode(ctx context.Context, m jetstream.Msg) (*event.Event, error) {
	h, err := ceheader.DecodeHeader(m.Headers())
	if err != nil {
		return nil, fmt.Errorf("decode cloudevent on %s: %w", m.Subject(), err)
	}
	nm := &nats.Msg{Subject: m.Subject(), Header: h, Data: m.Data()}
	ev, err := binding.ToEvent(ctx, cejs.NewMessage(nm))
	if err != nil {
		return nil, fmt.Errorf("decode cloudevent on %s: %w", m.Subject(), err)
	}
	return ev, nil
}

// deliverFrom returns the deliver policy that starts at since, or at the
// given default when since is zero.
func deliverFrom(since time.Time, def jetstream.DeliverPolicy) (jetstream.DeliverPolicy, *time.Time) {
	if since.IsZero() {
		return def, nil
	}
	return jetstream.DeliverByStartTimePolicy, &since
}

// isDone reports whether err only says that ctx ended.
func isDone(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrMsgIteratorClosed))
}
