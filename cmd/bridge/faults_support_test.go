package main

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestMissingTransitions checks the judge of the outage and two-writer
// scenarios on hand-made histories: it must flag a long presence the
// stream never showed and a stream out of the ground truth's order, and
// only those.
func TestMissingTransitions(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	pc := func(ms int, presence string) event {
		return event{Type: "presence.changed", Agent: "a", Time: at(ms), Data: map[string]any{"current": map[string]any{"id": presence}}}
	}
	spans := map[string][]presenceSpan{"a": {
		{presence: "P1", start: at(0), end: at(1000)},
		{presence: "P2", start: at(1000), end: at(1100)}, // shorter than minSpan
		{presence: "P3", start: at(1100), end: at(2000)},
		{presence: "P4", start: at(2000)}, // current
	}}
	tests := []struct {
		name     string
		events   []event
		missing  []string // substrings, one per expected report
		required int
	}{
		{"every presence shown", []event{pc(10, "P1"), pc(1050, "P2"), pc(1150, "P3"), pc(2100, "P4")}, nil, 3},
		{"a short presence skipped", []event{pc(10, "P1"), pc(1150, "P3"), pc(2100, "P4")}, nil, 3},
		{"a long presence missing", []event{pc(10, "P1"), pc(2100, "P4")}, []string{"presence P3"}, 3},
		{"the current presence missing", []event{pc(10, "P1"), pc(1150, "P3")}, []string{"presence P4"}, 3},
		{"shown only after it ended", []event{pc(10, "P1"), pc(3500, "P3")}, []string{"presence P3", "presence P4"}, 3},
		{"out of order", []event{pc(10, "P1"), pc(1150, "P3"), pc(1200, "P2"), pc(2100, "P4")}, []string{"not in the ground truth's order"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			missing, required := missingTransitions(spans, map[string][]event{"a": tt.events}, 500*time.Millisecond, 200*time.Millisecond, at(3000))
			if len(missing) != len(tt.missing) {
				t.Fatalf("reports %q, want %d containing %q", missing, len(tt.missing), tt.missing)
			}
			for i, want := range tt.missing {
				if !strings.Contains(missing[i], want) {
					t.Errorf("report %q does not say %q", missing[i], want)
				}
			}
			if required != tt.required {
				t.Errorf("required %d, want %d", required, tt.required)
			}
			order := presenceOrderErrors(spans, map[string][]event{"a": tt.events})
			if wantOrder := tt.required == 0; (len(order) > 0) != wantOrder {
				t.Errorf("order reports %q, want some: %v", order, wantOrder)
			}
		})
	}
}

// TestLastAnswers checks which answer counts as an agent's last, before a
// cut-off and overall.
func TestLastAnswers(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	answers := []answer{
		{agent: "a", presence: "P1", at: t0},
		{agent: "b", presence: "Q1", at: t0.Add(time.Second)},
		{agent: "a", presence: "P2", at: t0.Add(2 * time.Second)},
		{agent: "a", presence: "P3", at: t0.Add(4 * time.Second)},
	}
	tests := []struct {
		name   string
		cutoff time.Time
		want   map[string]string
	}{
		{"all", time.Time{}, map[string]string{"a": "P3", "b": "Q1"}},
		{"before a cut-off", t0.Add(3 * time.Second), map[string]string{"a": "P2", "b": "Q1"}},
		{"the cut-off itself excluded", t0.Add(time.Second), map[string]string{"a": "P1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := lastAnswers(answers, tt.cutoff)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for agent, p := range tt.want {
				if got[agent].presence != p {
					t.Errorf("agent %s: %q, want %q", agent, got[agent].presence, p)
				}
			}
		})
	}
}

// TestTCPProxyCutsAndRestores checks the proxy that partitions a bridge
// from NATS: it forwards, drops open connections and refuses new ones
// while cut, and forwards again when restored.
func TestTCPProxyCutsAndRestores(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // an echo server
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	p := newTCPProxy(t, ln.Addr().String())
	echo := func(c net.Conn) error {
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			return err
		}
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "ping\n" {
			t.Fatalf("echo %q", line)
		}
		return err
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", p.addr())
		if err != nil {
			t.Fatalf("dial proxy: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	open := dial()
	if err := echo(open); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.setCut(true)
	if err := echo(open); err == nil {
		t.Fatal("an open connection still works after the cut")
	}
	if err := echo(dial()); err == nil {
		t.Fatal("a new connection works while cut")
	}
	p.setCut(false)
	if err := echo(dial()); err != nil {
		t.Fatalf("after the cut is restored: %v", err)
	}
}
