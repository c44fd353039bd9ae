package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Step is one named step of Check.
type Step struct {
	// Name says what the step verifies, e.g. "config" or "nats".
	Name string
	// Run performs the step; a nil error is a pass. The error's text is
	// printed as the reason and must hold no secret.
	Run func(ctx context.Context) error
	// Critical skips every later step when this one fails (nothing else can
	// work without a valid configuration).
	Critical bool
}

// ErrCheckFailed is wrapped by the error Check returns when a step failed.
var ErrCheckFailed = errors.New("check failed")

// Check runs steps in order, printing one line per step to w:
//
//	PASS  config
//	FAIL  token: get token: 401 Unauthorized
//	SKIP  presence: config failed
//
// A step that prints details of its own passes strings from outside through
// Printable. It returns nil when every step passed, and otherwise an error wrapping
// ErrCheckFailed that counts the failures (the caller exits non-zero).
func Check(ctx context.Context, w io.Writer, steps ...Step) error {
	failed, skipBecause := 0, ""
	for _, s := range steps {
		var line string
		switch {
		case skipBecause != "":
			line = fmt.Sprintf("SKIP  %s: %s failed", s.Name, skipBecause)
			failed++
		case ctx.Err() != nil:
			line = fmt.Sprintf("FAIL  %s: %v", s.Name, ctx.Err())
			failed++
		default:
			if err := s.Run(ctx); err != nil {
				// A joined error lists one problem a line; indent the rest
				// under the step.
				// Each line is shown through Printable: a reason may quote
				// what the organisation answered.
				lines := strings.Split(err.Error(), "\n")
				for i, l := range lines {
					lines[i] = Printable(l)
				}
				line = fmt.Sprintf("FAIL  %s: %s", s.Name, strings.Join(lines, "\n      "))
				failed++
				if s.Critical {
					skipBecause = s.Name
				}
			} else {
				line = "PASS  " + s.Name
			}
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return fmt.Errorf("write check result: %w", err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d steps did not pass", ErrCheckFailed, failed, len(steps))
	}
	return nil
}
