package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	pass := func(context.Context) error { return nil }
	fail := func(msg string) func(context.Context) error {
		return func(context.Context) error { return errors.New(msg) }
	}
	tests := []struct {
		name    string
		steps   []checkStep
		want    string
		wantErr string
	}{
		{
			name:    "a problem a line, indented under the step",
			steps:   []checkStep{{Name: "config", Run: fail("BRIDGE_ORG_URL: is required\nBRIDGE_AGENT_IDS: is required"), Critical: true}},
			want:    "FAIL  config: BRIDGE_ORG_URL: is required\n      BRIDGE_AGENT_IDS: is required\n\n0 passed, 1 failed, 0 skipped\nnext: fix what the FAIL line of config says, then run bridge check again\n",
			wantErr: "check failed: 1 of 1 failed, 0 skipped",
		},
		{
			name:    "control characters in a reason are escaped",
			steps:   []checkStep{{Name: "presence", Run: fail("agent x: 403: \x1b[2J\x1b]0;pwned\a\nsecond line\r")}},
			want:    "FAIL  presence: agent x: 403: \\x1b[2J\\x1b]0;pwned\\a\n      second line\\r\n\n0 passed, 1 failed, 0 skipped\nnext: fix what the FAIL line of presence says, then run bridge check again\n",
			wantErr: "check failed: 1 of 1 failed, 0 skipped",
		},
		{
			name:  "all pass",
			steps: []checkStep{{Name: "config", Run: pass, Critical: true}, {Name: "token", Run: pass}, {Name: "nats", Run: pass}},
			want:  "PASS  config\nPASS  token\nPASS  nats\n\nall 3 steps passed\n",
		},
		{
			name: "one fails, the rest still run",
			steps: []checkStep{
				{Name: "config", Run: pass, Critical: true},
				{Name: "token", Run: fail("get token: 401 Unauthorized"), Next: "check BRIDGE_TOKEN"},
				{Name: "nats", Run: pass},
				{Name: "stream", Run: fail("stream CCAAS_AGENTS not found"), Next: "create the stream"},
			},
			want: "PASS  config\nFAIL  token: get token: 401 Unauthorized\nPASS  nats\nFAIL  stream: stream CCAAS_AGENTS not found\n" +
				"\n2 passed, 2 failed, 0 skipped\nnext: check BRIDGE_TOKEN, then run bridge check again\n",
			wantErr: "check failed: 2 of 4 failed, 0 skipped",
		},
		{
			name: "critical failure skips the rest",
			steps: []checkStep{
				{Name: "config", Run: fail("BRIDGE_ORG_URL: missing scheme"), Critical: true},
				{Name: "token", Run: pass},
				{Name: "nats", Run: pass},
			},
			want: "FAIL  config: BRIDGE_ORG_URL: missing scheme\nSKIP  token: config failed\nSKIP  nats: config failed\n" +
				"\n0 passed, 1 failed, 2 skipped\nnext: fix what the FAIL line of config says, then run bridge check again\n",
			wantErr: "check failed: 1 of 3 failed, 2 skipped",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runChecks(t.Context(), &out, tt.steps...)
			if out.String() != tt.want {
				t.Errorf("Check output:\n%s\nwant:\n%s", out.String(), tt.want)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Check = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr || !errors.Is(err, errCheckFailed)):
				t.Errorf("Check = %v, want %q wrapping errCheckFailed", err, tt.wantErr)
			}
		})
	}
}

func TestCheckCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out bytes.Buffer
	ran := false
	err := runChecks(ctx, &out, checkStep{Name: "nats", Run: func(context.Context) error { ran = true; return nil }})
	if ran || !strings.HasPrefix(out.String(), "FAIL  nats: context canceled\n") || !errors.Is(err, errCheckFailed) {
		t.Fatalf("Check after cancel: ran=%v output %q err %v", ran, out.String(), err)
	}
}

// TestCheckDetailsFollowTheirStep: a step's detail lines come after its own
// PASS or FAIL line, never above it.
func TestCheckDetailsFollowTheirStep(t *testing.T) {
	var buf bytes.Buffer
	out := newCheckOutput(&buf)
	detail := func(text string, err error) func(context.Context) error {
		return func(context.Context) error {
			fmt.Fprintln(out, "      "+text)
			return err
		}
	}
	err := runChecks(t.Context(), out,
		checkStep{Name: "presence", Run: detail("Olga is \"Available\", 1 browser session", nil)},
		checkStep{Name: "catalogue", Run: detail("not readable", errors.New("403 Forbidden"))},
		checkStep{Name: "nats", Run: detail("embedded", nil)},
	)
	want := "PASS  presence\n      Olga is \"Available\", 1 browser session\n" +
		"FAIL  catalogue: 403 Forbidden\n      not readable\n" +
		"PASS  nats\n      embedded\n" +
		"\n2 passed, 1 failed, 0 skipped\nnext: fix what the FAIL line of catalogue says, then run bridge check again\n"
	if buf.String() != want {
		t.Errorf("Check output:\n%s\nwant:\n%s", buf.String(), want)
	}
	if !errors.Is(err, errCheckFailed) {
		t.Errorf("Check = %v, want errCheckFailed", err)
	}
}
