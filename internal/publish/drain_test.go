package publish

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestDrain(t *testing.T) {
	const messages = 50
	tests := []struct {
		name string
		// setup prepares the connection; it returns a function called
		// once Drain runs (to let held messages go) or nil.
		setup    func(t *testing.T, nc *nats.Conn, handled *atomic.Int64, stop func()) func()
		budget   time.Duration
		wantErr  error // nil: Drain succeeds
		wantSeen int64 // messages the subscription handled, -1: not checked
	}{
		{
			name:     "idle connection",
			setup:    func(*testing.T, *nats.Conn, *atomic.Int64, func()) func() { return nil },
			budget:   10 * time.Second,
			wantSeen: -1,
		},
		{
			name: "held messages are handled before the connection closes",
			setup: func(t *testing.T, nc *nats.Conn, handled *atomic.Int64, _ func()) func() {
				release := make(chan struct{})
				subscribeHeld(t, nc, handled, release, messages)
				return func() { close(release) }
			},
			budget:   20 * time.Second,
			wantSeen: messages,
		},
		{
			name: "a handler that never finishes is cut off at the deadline",
			setup: func(t *testing.T, nc *nats.Conn, handled *atomic.Int64, _ func()) func() {
				never := make(chan struct{})
				t.Cleanup(func() { close(never) })
				subscribeHeld(t, nc, handled, never, messages)
				return nil
			},
			budget:   300 * time.Millisecond,
			wantErr:  context.DeadlineExceeded,
			wantSeen: -1,
		},
		{
			name: "already closed",
			setup: func(_ *testing.T, nc *nats.Conn, _ *atomic.Int64, _ func()) func() {
				nc.Close()
				return nil
			},
			budget:   10 * time.Second,
			wantSeen: -1,
		},
		{
			name: "reconnecting connection cannot be drained",
			setup: func(t *testing.T, nc *nats.Conn, _ *atomic.Int64, stop func()) func() {
				stop()
				waitUntil(t, 10*time.Second, "the client to notice the server is gone", func() bool { return nc.IsReconnecting() })
				return nil
			},
			budget:   10 * time.Second,
			wantErr:  nats.ErrConnectionReconnecting,
			wantSeen: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, nil)
			nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			t.Cleanup(nc.Close)
			var handled atomic.Int64
			after := tt.setup(t, nc, &handled, srv.Shutdown)

			ctx, cancel := context.WithTimeout(context.Background(), tt.budget)
			defer cancel()
			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- Drain(ctx, nc) }()
			if after != nil {
				waitUntil(t, 5*time.Second, "the drain to start", func() bool { return nc.IsDraining() || nc.IsClosed() })
				after()
			}
			var got error
			select {
			case got = <-done:
			case <-time.After(tt.budget + 5*time.Second):
				t.Fatalf("Drain did not return within %s of its budget", 5*time.Second)
			}
			taken := time.Since(start)
			switch {
			case tt.wantErr == nil && got != nil:
				t.Fatalf("Drain = %v, want nil", got)
			case tt.wantErr != nil && !errors.Is(got, tt.wantErr):
				t.Fatalf("Drain = %v, want %v", got, tt.wantErr)
			}
			if errors.Is(tt.wantErr, context.DeadlineExceeded) && taken > tt.budget+2*time.Second {
				t.Errorf("Drain took %s with a budget of %s", taken, tt.budget)
			}
			if !nc.IsClosed() {
				t.Error("connection not closed after Drain")
			}
			if tt.wantSeen >= 0 {
				if n := handled.Load(); n != tt.wantSeen {
					t.Errorf("subscription handled %d messages, want %d", n, tt.wantSeen)
				}
			}
		})
	}
}

// subscribeHeld subscribes on nc with a handler that waits for release
// before counting each message, and publishes n messages to it, so the
// subscription holds them when Drain starts.
func subscribeHeld(t *testing.T, nc *nats.Conn, handled *atomic.Int64, release <-chan struct{}, n int) {
	t.Helper()
	entered := make(chan struct{}, 1)
	if _, err := nc.Subscribe("drain.test", func(*nats.Msg) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		handled.Add(1)
	}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	for range n {
		if err := nc.Publish("drain.test", []byte("x")); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never got a message")
	}
}

// waitUntil polls cond until it holds or the timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
