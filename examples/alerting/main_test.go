package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/examples/eventstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	alice = "394382b6-a4d4-ee11-904c-00224808a166"
	bob   = "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"
)

func at(sec int) time.Time { return time.Date(2025, 3, 4, 9, 0, sec, 0, time.UTC) }

func offline(agent, name string, seq uint64, reason string) eventstest.Event {
	return eventstest.Event{Agent: agent, Type: "agent.offline", Seq: seq, Time: at(int(seq)),
		Data: `{"agentId":"` + agent + `","agentName":"` + name + `","reason":"` + reason + `","since":"` + at(int(seq)).Format(time.RFC3339) +
			`","presence":{"name":"Offline","baseStatus":"Offline"},"activeBrowserSessions":0}`}
}

func stale(agent, name string, seq uint64) eventstest.Event {
	return eventstest.Event{Agent: agent, Type: "presence.stale", Seq: seq, Time: at(int(seq)),
		Data: `{"agentId":"` + agent + `","agentName":"` + name + `","lastKnown":{},"lastSuccessAt":"2025-03-04T08:59:00Z","errorClass":"rate_limited","staleAfterSeconds":60}`}
}

func presenceChanged(agent, name string, seq uint64) eventstest.Event {
	return eventstest.Event{Agent: agent, Type: "presence.changed", Seq: seq, Time: at(int(seq)),
		Data: `{"agentId":"` + agent + `","agentName":"` + name + `","previous":null,"current":{"name":"Available","baseStatus":"Available"}}`}
}

var testOpts = options{
	Stream: eventstest.Stream, SubjectPrefix: eventstest.SubjectPrefix, Durable: "alerting",
	AckWait: 30 * time.Second, RetryDelay: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
}

// service is one run of the alerting service in the background.
type service struct {
	out    *eventstest.LineBuffer
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, nc *nats.Conn, js jetstream.JetStream, w io.Writer) *service {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	s := &service{out: eventstest.NewLineBuffer(), cancel: cancel, done: make(chan error, 1)}
	if w == nil {
		w = s.out
	}
	go func() { s.done <- run(ctx, nc, testOpts, w) }()
	waitDurable(t, js)
	return s
}

// stop stops the service and returns what run returned.
func (s *service) stop() error {
	s.cancel()
	return <-s.done
}

// durableInfo returns the state of the durable consumer.
func durableInfo(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	cons, err := js.Consumer(t.Context(), eventstest.Stream, testOpts.Durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// waitDurable waits until the durable consumer exists.
func waitDurable(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := js.Consumer(t.Context(), eventstest.Stream, testOpts.Durable); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the durable consumer")
		}
		<-tick.C
	}
}

func TestRun(t *testing.T) {
	nc, js := eventstest.StartJetStream(t)
	// Before the service first runs: not alerted (deliver policy new).
	eventstest.Publish(t, js, offline(bob, "Bob Brown", 1, "presence"))

	s := start(t, nc, js, nil)
	eventstest.Publish(t, js,
		presenceChanged(alice, "Alice Adams", 1),
		offline(alice, "Alice Adams", 2, "logout"),
		presenceChanged(bob, "Bob Brown", 2),
		stale(bob, "Bob Brown", 3),
	)
	s.out.WaitLines(t, 2)
	if err := s.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	want := "ALERT Alice Adams offline since 2025-03-04T09:00:02Z (logout)\n" +
		"ALERT Bob Brown presence unknown: no successful poll since 2025-03-04T08:59:00Z (rate_limited)\n"
	if got := s.out.String(); got != want {
		t.Errorf("first run:\n%s\nwant:\n%s", got, want)
	}
	info := durableInfo(t, js)
	if info.NumAckPending != 0 || info.AckFloor.Consumer != 2 {
		t.Errorf("after the first run: %d acks pending, ack floor %d; want 0 and 2", info.NumAckPending, info.AckFloor.Consumer)
	}

	// While the service is down; a restart resumes after the acked alerts.
	eventstest.Publish(t, js, offline(bob, "Bob Brown", 4, "presence_and_logout"))
	s = start(t, nc, js, nil)
	s.out.WaitLines(t, 1)
	eventstest.Publish(t, js, stale(alice, "Alice Adams", 3))
	s.out.WaitLines(t, 2)
	if err := s.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	want = "ALERT Bob Brown offline since 2025-03-04T09:00:04Z (presence_and_logout)\n" +
		"ALERT Alice Adams presence unknown: no successful poll since 2025-03-04T08:59:00Z (rate_limited)\n"
	if got := s.out.String(); got != want {
		t.Errorf("second run:\n%s\nwant:\n%s", got, want)
	}
}

// flakyWriter fails its first write, as a pager that is briefly down.
type flakyWriter struct {
	mu     sync.Mutex
	failed bool
	w      io.Writer
}

func (f *flakyWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failed {
		f.failed = true
		return 0, errors.New("pager unreachable")
	}
	return f.w.Write(p)
}

func TestAlertNotRaisedIsRetried(t *testing.T) {
	nc, js := eventstest.StartJetStream(t)
	out := eventstest.NewLineBuffer()
	s := start(t, nc, js, &flakyWriter{w: out})
	eventstest.Publish(t, js, offline(alice, "Alice Adams", 1, "logout"), stale(bob, "Bob Brown", 1))
	out.WaitLines(t, 2)
	if err := s.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	// Alice's alert failed once and was delivered again; each alert is
	// raised exactly once, in an order that depends on the retry delay.
	lines := strings.SplitAfter(out.String(), "\n")
	slices.Sort(lines)
	want := []string{
		"",
		"ALERT Alice Adams offline since 2025-03-04T09:00:01Z (logout)\n",
		"ALERT Bob Brown presence unknown: no successful poll since 2025-03-04T08:59:00Z (rate_limited)\n",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("output lines %q, want %q", lines, want)
	}
	info := durableInfo(t, js)
	if info.NumAckPending != 0 || info.Delivered.Consumer != 3 {
		t.Errorf("%d acks pending, %d deliveries; want 0 and 3", info.NumAckPending, info.Delivered.Consumer)
	}
}
