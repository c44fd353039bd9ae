// retry.go holds the bridge's two retry loops on JetStream: a publish that
// failed (the Publisher's onError: the agent's first event is sent again,
// same message ID, after an exponential backoff, while other agents go on)
// and a JetStream request made while JetStream cannot answer yet
// (RetryUnavailable, used at start for the stream and the buckets). Which
// errors are worth retrying is decided in jserrors.go.

package publish

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// retryJitter is the randomization factor of a publish retry's backoff: each
// wait is the exponential step ±10%.
const retryJitter = 0.1

// onError handles a failed publish. jetstream may call it while holding its
// own lock, so it must not publish: a retry is scheduled on a timer. A
// failed fence is not a failure yet: the stored message decides it
// (ack.go). A failure JetStream gives for good fails the agent's queue with
// ErrRejected.
func (p *Publisher) onError(_ jetstream.JetStream, msg *nats.Msg, err error) {
	p.mu.Lock()
	it := p.inflight[msg]
	if it == nil {
		p.mu.Unlock()
		return
	}
	aq := p.agents[it.b.agent]
	reason, permanent := classify(err)
	if reason == reasonFenced {
		// The agent's last message is not the one this event follows:
		// read it to tell an earlier attempt that landed from history that
		// moved on. The event stays in flight until then.
		p.mu.Unlock()
		p.check(msg, func(ctx context.Context, st jetstream.Stream) (*jetstream.RawStreamMsg, error) {
			return st.GetLastMsgForSubject(ctx, aq.subjects)
		})
		return
	}
	delete(p.inflight, msg)
	p.m.incError(reason)
	if permanent {
		for _, b := range p.failAgentLocked(aq, fmt.Errorf("publish event %s: %w: %w", it.id, ErrRejected, err)) {
			p.dispatchLocked(b)
		}
		p.mu.Unlock()
		p.log.Error("JetStream rejected an event; the agent's queued events are dropped", "agent", aq.id,
			"event", it.id, "err", err)
		return
	}
	aq.failures++
	delay := p.nextRetryLocked(aq)
	if p.state == stateClosed {
		p.mu.Unlock()
		return
	}
	aq.retry = time.AfterFunc(delay, func() { p.retryHead(aq) })
	failures, attempts := aq.failures, it.attempts
	p.mu.Unlock()
	level := slog.LevelDebug
	if failures == 3 || failures%20 == 0 {
		level = slog.LevelWarn
	}
	p.log.Log(context.Background(), level, "publish failed, will retry", "agent", aq.id,
		"event", it.id, "attempt", attempts, "retry_in", delay, "reason", reason, "err", err)
}

// nextRetryLocked returns how long the agent waits before its first event
// is sent again: exponential from Options.RetryInitial, doubling up to
// Options.RetryMax, with jitter; it starts again from RetryInitial once an
// event of the agent is stored.
func (p *Publisher) nextRetryLocked(aq *agentQueue) time.Duration {
	if aq.backoff == nil {
		aq.backoff = backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(p.opts.RetryInitial),
			backoff.WithMaxInterval(p.opts.RetryMax),
			backoff.WithMultiplier(2),
			backoff.WithRandomizationFactor(retryJitter),
			backoff.WithMaxElapsedTime(0), // never give up: Close ends the retries
		)
	}
	return aq.backoff.NextBackOff()
}

// retryHead republishes the agent's first event after a backoff.
func (p *Publisher) retryHead(aq *agentQueue) {
	p.mu.Lock()
	aq.retry = nil
	if p.state == stateClosed || len(aq.items) == 0 {
		p.mu.Unlock()
		return
	}
	aq.busy = false
	it := p.takeHeadLocked(aq)
	p.mu.Unlock()
	if it != nil {
		p.send(it)
	}
}

// Backoff of RetryUnavailable.
const (
	DefaultUnavailableRetryInitial = 250 * time.Millisecond
	DefaultUnavailableRetryMax     = 5 * time.Second
)

// RetryOptions tune RetryUnavailable; the zero value works.
type RetryOptions struct {
	// Conn, when set, is the connection op uses: a permission violation on
	// $JS.API it reported (the servers refuse such requests without an
	// answer, so op only sees a timeout) ends the retries with that error.
	Conn *nats.Conn
	// Logger receives a warning per retry; discarded when nil.
	Logger *slog.Logger
	// OnRetry, when set, is called before each wait with
	// "jetstream: <what>: <reason>", the /readyz reason while retrying.
	OnRetry func(reason string)
	// AttemptTimeout bounds each call of op; DefaultUnavailableAttemptTimeout
	// when zero.
	AttemptTimeout time.Duration
}

// DefaultUnavailableAttemptTimeout bounds one attempt of RetryUnavailable,
// as the jetstream client bounds a request without a deadline.
const DefaultUnavailableAttemptTimeout = 5 * time.Second

// RetryUnavailable runs op until it succeeds, fails in a way that is not
// JetStreamUnavailable (returned at once), or ctx ends (ctx's error,
// wrapped, with the last failure). Each attempt gets a context bounded by
// opts.AttemptTimeout; one that runs out while ctx goes on counts as
// JetStream not answering. Between attempts it waits with exponential
// backoff from DefaultUnavailableRetryInitial to DefaultUnavailableRetryMax,
// logs a warning naming what (e.g. "stream CCAAS_AGENTS") and the reason,
// and calls opts.OnRetry.
func RetryUnavailable(ctx context.Context, what string, op func(context.Context) error, opts RetryOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = DefaultUnavailableAttemptTimeout
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(DefaultUnavailableRetryInitial),
		backoff.WithMaxInterval(DefaultUnavailableRetryMax),
		backoff.WithMaxElapsedTime(0),
	)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, opts.AttemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("JetStream ready", "what", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (last error: %w)", what, ctx.Err(), err)
		}
		if perr := jsPermissionError(opts.Conn); perr != nil {
			return fmt.Errorf("%s: %w (NATS refused a JetStream API request: %w)", what, err, perr)
		}
		if !JetStreamUnavailable(err) {
			return err
		}
		reason := UnavailableReason(err)
		wait := b.NextBackOff()
		log.Warn("JetStream not ready; retrying", "what", what, "reason", reason, "attempt", attempt,
			"retry_in", wait.Round(time.Millisecond), "err", err)
		if opts.OnRetry != nil {
			opts.OnRetry("jetstream: " + what + ": " + reason)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (last error: %w)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// jsPermissionError returns the permission violation on a JetStream API
// subject that nc last reported, if any.
func jsPermissionError(nc *nats.Conn) error {
	if nc == nil {
		return nil
	}
	err := nc.LastError()
	if err != nil && isPermissionError(err) && strings.Contains(err.Error(), "$JS.") {
		return err
	}
	return nil
}
