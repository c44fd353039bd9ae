package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/testwait"
)

// runCLI runs one bridge subcommand to completion and returns its stdout,
// stderr and exit status.
func runCLI(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bridgeBin, args...)
	cmd.Env = bridgeEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("bridge %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// TestConsumerCommandsAgainstARunningBridge checks the operator and consumer
// commands as a user runs them: state, replay, tail and check against a
// bridge publishing the simulator's agents.
func TestConsumerCommandsAgainstARunningBridge(t *testing.T) {
	h := newHarness(t, 5, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := h.env(nil)
	h.start(env, "run")
	c := h.collect(ctx)
	testwait.Until(t, waitScale*30*time.Second, "every agent on the stream", func() bool { return h.caughtUp(c) })
	h.sim.Step()
	testwait.Until(t, waitScale*20*time.Second, "a round on the stream", func() bool { return h.caughtUp(c) })
	events, _ := c.snapshot()
	// The bucket is committed after the stream: wait until it has caught up too.
	testwait.Until(t, waitScale*20*time.Second, "the state bucket", func() bool {
		out, _, code := runCLI(t, env, "state")
		if code != 0 {
			return false
		}
		for _, a := range h.sim.Agents() {
			if !strings.Contains(out, a.AgentID) || !strings.Contains(out, a.PresenceName) {
				return false
			}
		}
		return true
	})

	t.Run("state one agent", func(t *testing.T) {
		a := h.sim.Agents()[0]
		out, stderr, code := runCLI(t, env, "state", "--agent", a.AgentID)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 2 || !strings.Contains(lines[1], a.AgentName) || !strings.Contains(lines[1], a.PresenceName) {
			t.Fatalf("bridge state --agent: exit %d\n%s%s", code, out, stderr)
		}
	})

	t.Run("replay", func(t *testing.T) {
		out, stderr, code := runCLI(t, env, "replay")
		if code != 0 {
			t.Fatalf("bridge replay: exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < len(events) {
			t.Fatalf("replay exported %d events, the stream held at least %d", len(lines), len(events))
		}
		for i, line := range lines[:len(events)] {
			var ce struct {
				SpecVersion string          `json:"specversion"`
				ID          string          `json:"id"`
				Type        string          `json:"type"`
				Data        json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal([]byte(line), &ce); err != nil {
				t.Fatalf("line %d is not JSON: %v", i+1, err)
			}
			if ce.SpecVersion != "1.0" || ce.ID != events[i].ID || ce.Type != events[i].Type || string(ce.Data) != string(events[i].raw) {
				t.Fatalf("line %d = %s, want event %s (%s)", i+1, line, events[i].ID, events[i].Type)
			}
		}
		agent := events[0].Agent
		out, _, code = runCLI(t, env, "replay", "--agent", agent, "--type", "presence.changed")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if code != 0 || !strings.Contains(line, `"type":"presence.changed"`) || !strings.Contains(line, `"subject":"`+agent+`"`) {
				t.Fatalf("filtered replay line %q (exit %d)", line, code)
			}
		}
	})

	t.Run("tail", func(t *testing.T) {
		p := h.start(env, "tail", "--since", "1h", "--type", "presence.changed")
		var want int
		for _, ev := range events {
			if ev.Type == "presence.changed" {
				want++
			}
		}
		testwait.Until(t, waitScale*20*time.Second, "tail to print every presence change", func() bool {
			return strings.Count(p.output(), "presence.changed") >= want
		})
		for _, line := range strings.Split(strings.TrimSpace(p.output()), "\n") {
			if !strings.Contains(line, "presence.changed") || !strings.Contains(line, "→") {
				t.Fatalf("tail line %q is not one readable presence change", line)
			}
		}
		if code := p.stop(t, syscall.SIGINT, 10*time.Second); code != 0 {
			t.Fatalf("tail exit %d on Ctrl-C", code)
		}
	})

	t.Run("check passes", func(t *testing.T) {
		out, stderr, code := runCLI(t, env, "check")
		if code != 0 || strings.Contains(out, "FAIL") || strings.Count(out, "PASS") != 9 {
			t.Fatalf("bridge check: exit %d\n%s%s", code, out, stderr)
		}
	})

	t.Run("check fails on a wrong token", func(t *testing.T) {
		bad := h.env(map[string]string{"BRIDGE_TOKEN": "wrong-token-0451"})
		out, stderr, code := runCLI(t, bad, "check")
		if code == 0 || !strings.Contains(out, "FAIL  presence") {
			t.Fatalf("bridge check with a wrong token: exit %d\n%s%s", code, out, stderr)
		}
		if strings.Contains(out+stderr, "wrong-token-0451") {
			t.Fatalf("bridge check printed the token:\n%s%s", out, stderr)
		}
	})
}
