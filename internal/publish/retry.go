package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Backoff of RetryUnavailable.
const (
	DefaultUnavailableRetryInitial = 250 * time.Millisecond
	DefaultUnavailableRetryMax     = 5 * time.Second
)

// JetStream API error codes meaning "not ready yet": the cluster is forming,
// has no meta leader, or has fewer peers than the replicas asked for.
var unavailableCodes = map[jetstream.ErrorCode]string{
	10004: "incomplete results",
	10005: "no suitable peers for placement",
	10008: "JetStream temporarily unavailable",
	10009: "JetStream cluster can not handle the request",
	10023: "insufficient resources",
	10075: "peer remap failed",
	10118: "stream offline",
	10163: "expected last sequence per subject temporarily unavailable",
	// 10076 "JetStream not enabled" is also what the client reports when
	// nobody answers on $JS.API, as while JetStream starts.
	jetstream.JSErrCodeJetStreamNotEnabled: "no JetStream responders",
}

// JetStreamUnavailable reports whether err means that the NATS servers are
// there but JetStream cannot answer or place the asset yet: no meta leader,
// fewer peers than replicas (err_code 10005), temporarily unavailable
// (10008), insufficient resources (10023), no responders on $JS.API, a
// request timeout, or the connection between servers. Such a failure is the
// same as unreachable servers: retry. Everything else, in particular a
// stream whose settings differ (*StreamMismatchError), a missing stream with
// management off (ErrStreamMissing), JetStream not enabled for the account
// (10039) and permission violations, is not: retrying would only hide it.
func JetStreamUnavailable(err error) bool {
	var mismatch *StreamMismatchError
	switch {
	case err == nil,
		errors.As(err, &mismatch),
		errors.Is(err, ErrStreamMissing),
		errors.Is(err, context.Canceled),
		errors.Is(err, nats.ErrConnectionClosed),
		isPermissionError(err):
		return false
	}
	if code, ok := apiErrorCode(err); ok {
		_, unavailable := unavailableCodes[code]
		return unavailable
	}
	return errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrNoServers)
}

func apiErrorCode(err error) (jetstream.ErrorCode, bool) {
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		return je.APIError().ErrorCode, true
	}
	return 0, false
}

func isPermissionError(err error) bool {
	return errors.Is(err, nats.ErrPermissionViolation) ||
		strings.Contains(strings.ToLower(err.Error()), "permissions violation")
}

// UnavailableReason is a short reason for a JetStreamUnavailable error, for
// /readyz: the API error's meaning and code, or the client error.
func UnavailableReason(err error) string {
	if code, ok := apiErrorCode(err); ok {
		if what, known := unavailableCodes[code]; known {
			return fmt.Sprintf("%s (err_code %d)", what, code)
		}
		return fmt.Sprintf("%s (err_code %d)", strings.TrimSpace(errorDescription(err)), code)
	}
	var last error = err
	for u := errors.Unwrap(last); u != nil; u = errors.Unwrap(last) {
		last = u
	}
	return last.Error()
}

func errorDescription(err error) string {
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		return je.APIError().Description
	}
	return err.Error()
}

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
