// drain.go holds Drain, the last NATS step of shutdown: the connection is
// drained within what is left of the shutdown budget, then closed.

package publish

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Drain drains nc (its subscriptions finish the messages they hold, then
// buffered publishes are flushed) and waits until the connection is closed,
// at most until ctx ends: then it closes the connection at once and returns
// an error. It also reports a drain the client gave up on itself (its own
// drain timeout, a failed flush) and a connection that was reconnecting, which
// cannot be drained and is closed. A connection already closed is not an
// error. Drain is the last NATS step of shutdown, bounded by what is left of
// BRIDGE_SHUTDOWN_TIMEOUT.
func Drain(ctx context.Context, nc *nats.Conn) error {
	closed := nc.StatusChanged(nats.CLOSED)
	defer nc.RemoveStatusListener(closed)
	if nc.IsClosed() {
		return nil
	}
	if err := nc.Drain(); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil
		}
		nc.Close()
		return fmt.Errorf("drain nats: %w", err)
	}
	select {
	case <-closed:
	case <-ctx.Done():
		if !nc.IsClosed() {
			nc.Close()
			return fmt.Errorf("drain nats: closed before the drain finished: %w", ctx.Err())
		}
	}
	switch err := nc.LastError(); {
	case errors.Is(err, nats.ErrDrainTimeout), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("drain nats: %w", err)
	}
	return nil
}
