package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStreamCheckTimeout bounds the stream lookup of StreamCheck.
const DefaultStreamCheckTimeout = 2 * time.Second

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

// StreamCheck returns the readiness check "stream": ready when the stream
// named stream exists. It asks the server on every call, bounded by
// DefaultStreamCheckTimeout, and answers "nats not connected" without
// asking when the connection is down.
func StreamCheck(js jetstream.JetStream, stream string) Check {
	return CheckFunc("stream", func() (bool, string) {
		if st := js.Conn().Status(); st != nats.CONNECTED {
			return false, "nats not connected"
		}
		ctx, cancel := context.WithTimeout(context.Background(), DefaultStreamCheckTimeout)
		defer cancel()
		_, err := js.Stream(ctx, stream)
		switch {
		case err == nil:
			return true, ""
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return false, fmt.Sprintf("stream %s not found", stream)
		default:
			return false, fmt.Sprintf("look up stream %s: %v", stream, err)
		}
	})
}
