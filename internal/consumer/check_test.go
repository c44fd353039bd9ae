package consumer

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	pass := func(context.Context) error { return nil }
	fail := func(msg string) func(context.Context) error {
		return func(context.Context) error { return errors.New(msg) }
	}
	tests := []struct {
		name    string
		steps   []Step
		want    string
		wantErr string
	}{
		{
			name:    "a problem a line, indented under the step",
			steps:   []Step{{Name: "config", Run: fail("BRIDGE_ORG_URL: is required\nBRIDGE_AGENT_IDS: is required"), Critical: true}},
			want:    "FAIL  config: BRIDGE_ORG_URL: is required\n      BRIDGE_AGENT_IDS: is required\n",
			wantErr: "check failed: 1 of 1 steps did not pass",
		},
		{
			name:    "control characters in a reason are escaped",
			steps:   []Step{{Name: "presence", Run: fail("agent x: 403: \x1b[2J\x1b]0;pwned\a\nsecond line\r")}},
			want:    "FAIL  presence: agent x: 403: \\x1b[2J\\x1b]0;pwned\\a\n      second line\\r\n",
			wantErr: "check failed: 1 of 1 steps did not pass",
		},
		{
			name:  "all pass",
			steps: []Step{{Name: "config", Run: pass, Critical: true}, {Name: "token", Run: pass}, {Name: "nats", Run: pass}},
			want:  "PASS  config\nPASS  token\nPASS  nats\n",
		},
		{
			name: "one fails, the rest still run",
			steps: []Step{
				{Name: "config", Run: pass, Critical: true},
				{Name: "token", Run: fail("get token: 401 Unauthorized")},
				{Name: "nats", Run: pass},
				{Name: "stream", Run: fail("stream CCAAS_AGENTS not found")},
			},
			want:    "PASS  config\nFAIL  token: get token: 401 Unauthorized\nPASS  nats\nFAIL  stream: stream CCAAS_AGENTS not found\n",
			wantErr: "check failed: 2 of 4 steps did not pass",
		},
		{
			name: "critical failure skips the rest",
			steps: []Step{
				{Name: "config", Run: fail("BRIDGE_ORG_URL: missing scheme"), Critical: true},
				{Name: "token", Run: pass},
				{Name: "nats", Run: pass},
			},
			want:    "FAIL  config: BRIDGE_ORG_URL: missing scheme\nSKIP  token: config failed\nSKIP  nats: config failed\n",
			wantErr: "check failed: 3 of 3 steps did not pass",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Check(t.Context(), &out, tt.steps...)
			if out.String() != tt.want {
				t.Errorf("Check output:\n%s\nwant:\n%s", out.String(), tt.want)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Check = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr || !errors.Is(err, ErrCheckFailed)):
				t.Errorf("Check = %v, want %q wrapping ErrCheckFailed", err, tt.wantErr)
			}
		})
	}
}

func TestCheckCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out bytes.Buffer
	ran := false
	err := Check(ctx, &out, Step{Name: "nats", Run: func(context.Context) error { ran = true; return nil }})
	if ran || out.String() != "FAIL  nats: context canceled\n" || !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("Check after cancel: ran=%v output %q err %v", ran, out.String(), err)
	}
}
