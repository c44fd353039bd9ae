package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunReturnsTheFirstFailureAsItIs: the loops run under one errgroup;
// the first loop error (or the lease set's) is what the bridge returns,
// unchanged, the other loops stop, and a requested stop is no error.
func TestRunReturnsTheFirstFailureAsItIs(t *testing.T) {
	errPoll := errors.New("poll: organisation gone")
	errLease := errors.New("leader lease: bucket deleted")
	tests := []struct {
		name    string
		failing func(context.Context) error // run beside a loop that waits for its context
		lease   error                       // what the lease set reports, if anything
		cancel  bool                        // the process is asked to stop
		want    error
	}{
		{name: "a loop fails", failing: func(context.Context) error { return errPoll }, want: errPoll},
		{name: "the lease set fails", failing: waitDone, lease: errLease, want: errLease},
		{name: "stop requested", failing: waitDone, cancel: true, want: nil},
		{name: "a loop ends by its context only", failing: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, cancel: true, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &bridge{log: slog.New(slog.DiscardHandler), leaseErr: make(chan error, 1)}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var waiterStopped atomic.Bool
			gctx := b.startLoops(ctx, []loop{
				{name: "waiter", run: func(ctx context.Context) error { <-ctx.Done(); waiterStopped.Store(true); return ctx.Err() }},
				{name: "failing", run: tt.failing},
			})
			if tt.lease != nil {
				b.leaseErr <- tt.lease
			}
			if tt.cancel {
				cancel()
			}
			got := b.firstFailure(ctx, gctx)
			if got != tt.want { // as it is: the very error, not a wrapper or a stand-in
				t.Errorf("first failure = %v, want %v", got, tt.want)
			}
			sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer scancel()
			if err := b.waitLoops(sctx); err != nil {
				t.Fatalf("loops did not stop: %v", err)
			}
			if !waiterStopped.Load() {
				t.Error("the other loop was still running after the loops stopped")
			}
		})
	}
}

// waitDone is a loop that runs until its context ends.
func waitDone(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
