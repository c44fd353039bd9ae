package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of the stream check.
const (
	// DefaultStreamCheckTimeout bounds one stream lookup of a StreamWatch.
	DefaultStreamCheckTimeout = 2 * time.Second
	// DefaultStreamCheckInterval is how often a StreamWatch looks the
	// stream up while the Server runs it.
	DefaultStreamCheckInterval = 5 * time.Second
)

// NATSCheck returns the readiness check "nats": ready while nc is
// connected; otherwise the reason is the connection's status in lower case
// ("reconnecting", "disconnected", "closed").
func NATSCheck(nc *nats.Conn) Check {
	return CheckFunc("nats", func() (bool, string) {
		st := nc.Status()
		if st == nats.CONNECTED {
			return true, ""
		}
		return false, strings.ToLower(st.String())
	})
}

// StreamWatch is the readiness check "stream": ready when the stream
// exists. A probe never asks JetStream: Ready answers from the result of
// the last lookup, made by Run every interval (the Server runs it while it
// serves), and answers "nats not connected" at once when the connection is
// down. Until the first lookup it is not ready.
type StreamWatch struct {
	js       jetstream.JetStream
	stream   string
	interval time.Duration
	state    atomic.Pointer[flagState]
}

var _ Check = (*StreamWatch)(nil)

// StreamCheck returns a StreamWatch of stream looked up every
// DefaultStreamCheckInterval.
func StreamCheck(js jetstream.JetStream, stream string) *StreamWatch {
	return NewStreamWatch(js, stream, DefaultStreamCheckInterval)
}

// NewStreamWatch returns a StreamWatch of stream looked up every interval
// (DefaultStreamCheckInterval when not positive).
func NewStreamWatch(js jetstream.JetStream, stream string, interval time.Duration) *StreamWatch {
	if interval <= 0 {
		interval = DefaultStreamCheckInterval
	}
	w := &StreamWatch{js: js, stream: stream, interval: interval}
	w.state.Store(&flagState{reason: "stream not checked yet"})
	return w
}

// Name returns "stream".
func (w *StreamWatch) Name() string { return "stream" }

// Ready returns the state of the last lookup; it makes no request.
func (w *StreamWatch) Ready() (bool, string) {
	if st := w.js.Conn().Status(); st != nats.CONNECTED {
		return false, "nats not connected"
	}
	s := w.state.Load()
	return s.ok, s.reason
}

// Refresh looks the stream up once, bounded by DefaultStreamCheckTimeout,
// and records the result for Ready. It makes no request while NATS is not
// connected.
func (w *StreamWatch) Refresh(ctx context.Context) {
	if st := w.js.Conn().Status(); st != nats.CONNECTED {
		w.state.Store(&flagState{reason: "nats not connected"})
		return
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultStreamCheckTimeout)
	defer cancel()
	_, err := w.js.Stream(ctx, w.stream)
	switch {
	case err == nil:
		w.state.Store(&flagState{ok: true})
	case errors.Is(err, jetstream.ErrStreamNotFound):
		w.state.Store(&flagState{reason: fmt.Sprintf("stream %s not found", w.stream)})
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		// shutting down: keep the last answer
	default:
		w.state.Store(&flagState{reason: fmt.Sprintf("look up stream %s: %v", w.stream, err)})
	}
}

// Run refreshes at once and then every interval until ctx is done; while
// the stream is not found (the bridge may be creating it) it looks again
// after at most a second, so readiness follows quickly.
func (w *StreamWatch) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.Refresh(ctx)
		next := w.interval
		if s := w.state.Load(); !s.ok {
			next = min(next, time.Second)
		}
		t.Reset(next)
	}
}
