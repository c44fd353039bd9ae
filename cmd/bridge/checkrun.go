package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/ccaas/presence-bridge/internal/inspect"
)

// checkStep is one named step of runChecks.
type checkStep struct {
	// Name says what the step verifies, e.g. "config" or "nats".
	Name string
	// Run performs the step; a nil error is a pass. The error's text is
	// printed as the reason and must hold no secret. Detail lines it writes
	// to the *checkOutput given to runChecks are shown under the step's line.
	Run func(ctx context.Context) error
	// Critical skips every later step when this one fails (nothing else can
	// work without a valid configuration).
	Critical bool
	// Next says what to do when the step fails; runChecks prints it for the
	// first failure. Empty: fix what the FAIL line says and check again.
	Next string
}

// errCheckFailed is wrapped by the error runChecks returns when a step failed.
var errCheckFailed = errors.New("check failed")

// checkOutput is the writer runChecks prints to and steps write their detail
// lines to. Details written while a step runs are held back and printed
// after that step's PASS or FAIL line, so every detail reads under the step
// it belongs to. It is safe for concurrent use.
type checkOutput struct {
	mu      sync.Mutex
	w       io.Writer
	holding bool
	held    bytes.Buffer
}

// newCheckOutput returns a checkOutput writing to w.
func newCheckOutput(w io.Writer) *checkOutput { return &checkOutput{w: w} }

// Write writes p, or holds it while a step runs.
func (o *checkOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.holding {
		return o.held.Write(p)
	}
	return o.w.Write(p)
}

// hold starts holding writes back.
func (o *checkOutput) hold() {
	o.mu.Lock()
	o.holding = true
	o.mu.Unlock()
}

// release writes line, then what was held back, and stops holding.
func (o *checkOutput) release(line string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.holding = false
	if _, err := fmt.Fprintln(o.w, line); err != nil {
		return err
	}
	_, err := o.held.WriteTo(o.w)
	o.held.Reset()
	return err
}

// runChecks runs steps in order, printing one line per step to w, each
// followed by the detail lines the step wrote while it ran (when w is a
// *checkOutput), then a count and, after a failure, what to do next:
//
//	PASS  config
//	PASS  presence (CCaaS_GetPresence for the first agent)
//	      Olga Petrova (394382b6-…) is "Available", 1 browser session
//	FAIL  nats: connect to nats at nats://127.0.0.1:4222: no servers available
//	SKIP  stream: nats failed
//
//	4 passed, 1 failed, 1 skipped
//	next: start NATS or set BRIDGE_NATS_URL to a reachable server, then run bridge check again
//
// A step that prints details of its own passes strings from outside through
// inspect.Printable. It returns nil when every step passed, and otherwise an error
// wrapping errCheckFailed that counts the failures and skips (the caller
// exits non-zero).
func runChecks(ctx context.Context, w io.Writer, steps ...checkStep) error {
	out, ok := w.(*checkOutput)
	if !ok {
		out = newCheckOutput(w)
	}
	passed, failed, skipped, skipBecause := 0, 0, 0, ""
	var first *checkStep
	for i, s := range steps {
		var line string
		switch {
		case skipBecause != "":
			line = fmt.Sprintf("SKIP  %s: %s failed", s.Name, skipBecause)
			skipped++
		case ctx.Err() != nil:
			line = fmt.Sprintf("FAIL  %s: %v", s.Name, ctx.Err())
			failed++
		default:
			out.hold()
			err := s.Run(ctx)
			if err != nil {
				// A joined error lists one problem a line; indent the rest
				// under the step.
				// Each line is shown through Printable: a reason may quote
				// what the organisation answered.
				lines := strings.Split(err.Error(), "\n")
				for i, l := range lines {
					lines[i] = inspect.Printable(l)
				}
				line = fmt.Sprintf("FAIL  %s: %s", s.Name, strings.Join(lines, "\n      "))
				failed++
				if first == nil {
					first = &steps[i]
				}
				if s.Critical {
					skipBecause = s.Name
				}
			} else {
				line = "PASS  " + s.Name
				passed++
			}
		}
		if err := out.release(line); err != nil {
			return fmt.Errorf("write check result: %w", err)
		}
	}
	counts := fmt.Sprintf("%d passed, %d failed, %d skipped", passed, failed, skipped)
	if failed == 0 && skipped == 0 {
		counts = fmt.Sprintf("%s passed", countSteps(passed))
	}
	if _, err := fmt.Fprintf(out, "\n%s\n", counts); err != nil {
		return fmt.Errorf("write check result: %w", err)
	}
	if first != nil {
		next := first.Next
		if next == "" {
			next = "fix what the FAIL line of " + first.Name + " says"
		}
		if _, err := fmt.Fprintf(out, "next: %s, then run bridge check again\n", next); err != nil {
			return fmt.Errorf("write check result: %w", err)
		}
	}
	if failed > 0 || skipped > 0 {
		return fmt.Errorf("%w: %d of %d failed, %d skipped", errCheckFailed, failed, len(steps), skipped)
	}
	return nil
}

func countSteps(n int) string {
	if n == 1 {
		return "the 1 step"
	}
	return fmt.Sprintf("all %d steps", n)
}
