// Package bench measures the bridge's publish path against the raw JetStream
// limit and against the CloudEvents SDK's own JetStream sender, in one run on
// one JetStream server with file storage reached over TCP loopback. The
// `bridge bench` command calls [RunBench].
//
// The scenarios publish the same real-sized events spread over
// Options.Agents agents' subjects:
//   - raw: jetstream PublishMsgAsync of pre-encoded messages, each with its
//     own Nats-Msg-Id, window Options.MaxPending, no fence;
//   - raw fenced: the same with the bridge's fence headers
//     (Nats-Expected-Last-Subject-Sequence of the agent's previous event), so
//     one event per agent in flight: the limit the bridge is held to;
//   - bridge: detector.Event -> CloudEvent encoding -> publish.Publisher,
//     acknowledged (what the bridge does);
//   - sdk: the CloudEvents SDK's nats_jetstream Sender, Send per event (what a
//     user would write instead). Its Sender has a single subject, so a user
//     creates one per event's subject (which looks the stream up each time):
//     that is the sdk scenario; sdk-reused is the SDK's best case, one Sender
//     whose Subject field is changed before each Send.
//
// CPU per event is the process's user+system CPU time (getrusage) divided by
// the events; it includes the in-process server's share. Unless
// Options say otherwise the bridge scenario publishes with the bridge's
// defaults (publish.DefaultMaxPending, publish.DefaultPublishTimeout: the
// BRIDGE_ variables' defaults) on the contract's subjects (internal/contract).
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/publish"
)

// Defaults of [Options].
const (
	DefaultEvents    = 200_000
	DefaultSDKEvents = 20_000
	DefaultAgents    = 10_000
	benchStream      = "CCAAS_BENCH"
)

// Options configure a run; zero fields take the defaults.
type Options struct {
	// Events is how many events the raw and bridge scenarios publish.
	Events int
	// SDKEvents is how many events the SDK sender publishes (it is slow).
	SDKEvents int
	// Agents is how many agents' subjects the events are spread over.
	Agents int
	// MaxPending is the publish window of the raw and bridge scenarios;
	// default publish.DefaultMaxPending (BRIDGE_PUBLISH_MAX_PENDING's
	// default).
	MaxPending int
	// PublishTimeout is the bridge scenario's acknowledgement timeout;
	// default publish.DefaultPublishTimeout (BRIDGE_PUBLISH_TIMEOUT's
	// default).
	PublishTimeout time.Duration
	// DataDir holds the server's store; default a temporary directory,
	// removed afterwards.
	DataDir string
	// JSON writes the result as JSON instead of a table.
	JSON bool
	// Logger receives progress; default discards.
	Logger *slog.Logger
}

// ScenarioResult is what one scenario measured.
type ScenarioResult struct {
	Name            string  `json:"name"`
	Events          int     `json:"events"`
	Seconds         float64 `json:"seconds"`
	EventsPerSecond float64 `json:"eventsPerSecond"`
	// Latency from handing the event over to its acknowledgement.
	LatencyP50Ms float64 `json:"latencyP50Ms"`
	LatencyP90Ms float64 `json:"latencyP90Ms"`
	LatencyP99Ms float64 `json:"latencyP99Ms"`
	// CPUMicrosPerEvent is process CPU (client and in-process server) per event.
	CPUMicrosPerEvent float64 `json:"cpuMicrosPerEvent"`
	// CPU is the process's user + system CPU time over the scenario, of
	// which CPUMicrosPerEvent is the share of one event.
	CPU time.Duration `json:"cpuNanos"`
}

// BenchResult is the outcome of [RunBench].
type BenchResult struct {
	// Raw publishes without the fence headers: the price of the fence is
	// RawFenced against it.
	Raw ScenarioResult `json:"raw"`
	// RawFenced publishes with the fence headers, one event in flight per
	// agent: the limit the bridge is measured against.
	RawFenced ScenarioResult `json:"rawFenced"`
	Bridge    ScenarioResult `json:"bridge"`
	SDK       ScenarioResult `json:"sdk"`
	// SDKReused is the SDK's best case: one sender, its subject set per event.
	SDKReused ScenarioResult `json:"sdkReused"`
	// BridgeVsRaw is bridge events/s over fenced raw events/s (goal >= 0.8).
	BridgeVsRaw float64 `json:"bridgeVsRaw"`
	// FenceCost is fenced raw events/s over unfenced raw events/s: the
	// price of the fence in one number.
	FenceCost float64 `json:"fenceCost"`
	// BridgeVsSDK is bridge events/s over SDK sender events/s (goal >= 10).
	BridgeVsSDK float64 `json:"bridgeVsSdk"`
	// BridgeVsSDKReused compares with the SDK's best case.
	BridgeVsSDKReused float64 `json:"bridgeVsSdkReused"`
	MaxPending        int     `json:"maxPending"`
	// PublishTimeoutSeconds is the bridge scenario's acknowledgement timeout.
	PublishTimeoutSeconds float64 `json:"publishTimeoutSeconds"`
	Agents                int     `json:"agents"`
}

// presence and presenceChanged give the events the size and shape of a
// real presence.changed.
type presence struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	BaseStatus string `json:"baseStatus"`
}

type presenceChanged struct {
	AgentID                 string    `json:"agentId"`
	AgentName               string    `json:"agentName"`
	Previous                *presence `json:"previous"`
	Current                 presence  `json:"current"`
	PreviousSince           time.Time `json:"previousSince"`
	PreviousDurationSeconds float64   `json:"previousDurationSeconds"`
	Unattended              bool      `json:"unattended"`
	Offline                 bool      `json:"offline"`
}

// RunBench runs the three scenarios and writes the results to out.
func RunBench(ctx context.Context, opts Options, out io.Writer) (BenchResult, error) {
	if opts.Events <= 0 {
		opts.Events = DefaultEvents
	}
	if opts.SDKEvents <= 0 {
		opts.SDKEvents = DefaultSDKEvents
	}
	if opts.Agents <= 0 {
		opts.Agents = DefaultAgents
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = publish.DefaultMaxPending
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = publish.DefaultPublishTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.DataDir == "" {
		dir, err := os.MkdirTemp("", "bridge-bench-")
		if err != nil {
			return BenchResult{}, fmt.Errorf("bench: create data dir: %w", err)
		}
		defer os.RemoveAll(dir)
		opts.DataDir = dir
	}
	srv, err := embeddednats.Start(ctx, embeddednats.Options{Listen: "127.0.0.1:-1", DataDir: opts.DataDir, ServerName: "bench"})
	if err != nil {
		return BenchResult{}, fmt.Errorf("bench: %w", err)
	}
	defer srv.Shutdown()

	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: "https://contoso.crm.dynamics.com", SubjectPrefix: contract.SubjectPrefix, BridgeVersion: "bench"})
	if err != nil {
		return BenchResult{}, fmt.Errorf("bench: %w", err)
	}
	events := MakeEvents(max(opts.Events, opts.SDKEvents), opts.Agents)
	res := BenchResult{MaxPending: opts.MaxPending, PublishTimeoutSeconds: opts.PublishTimeout.Seconds(), Agents: opts.Agents}

	log.Info("bench: warming up")
	if _, err := runRaw(ctx, srv.ClientURL(), benchStream+"_WARMUP", enc, events[:min(len(events), 20_000)], opts.MaxPending); err != nil {
		return res, err
	}
	log.Info("bench: raw JetStream PublishAsync", "events", opts.Events)
	if res.Raw, err = runRaw(ctx, srv.ClientURL(), benchStream+"_RAW", enc, events[:opts.Events], opts.MaxPending); err != nil {
		return res, err
	}
	log.Info("bench: raw JetStream PublishAsync with the bridge's fence headers", "events", opts.Events)
	if res.RawFenced, err = runRawFenced(ctx, srv.ClientURL(), benchStream+"_FENCED", enc, events[:opts.Events], opts.MaxPending); err != nil {
		return res, err
	}
	log.Info("bench: bridge publish path", "events", opts.Events)
	if res.Bridge, err = runPublisher(ctx, srv.ClientURL(), enc, events[:opts.Events], opts.MaxPending, opts.PublishTimeout); err != nil {
		return res, err
	}
	log.Info("bench: CloudEvents SDK sender", "events", opts.SDKEvents)
	if res.SDK, err = runSDK(ctx, srv.ClientURL(), enc, events[:opts.SDKEvents], true); err != nil {
		return res, err
	}
	if res.SDKReused, err = runSDK(ctx, srv.ClientURL(), enc, events[:opts.SDKEvents], false); err != nil {
		return res, err
	}
	if res.Raw.EventsPerSecond > 0 {
		res.FenceCost = res.RawFenced.EventsPerSecond / res.Raw.EventsPerSecond
	}
	if res.RawFenced.EventsPerSecond > 0 {
		res.BridgeVsRaw = res.Bridge.EventsPerSecond / res.RawFenced.EventsPerSecond
	}
	if res.SDK.EventsPerSecond > 0 {
		res.BridgeVsSDK = res.Bridge.EventsPerSecond / res.SDK.EventsPerSecond
	}
	if res.SDKReused.EventsPerSecond > 0 {
		res.BridgeVsSDKReused = res.Bridge.EventsPerSecond / res.SDKReused.EventsPerSecond
	}
	if err := writeResult(out, res, opts.JSON); err != nil {
		return res, fmt.Errorf("bench: write result: %w", err)
	}
	return res, nil
}

func writeResult(out io.Writer, res BenchResult, asJSON bool) error {
	if asJSON {
		e := json.NewEncoder(out)
		e.SetIndent("", "  ")
		return e.Encode(res)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "scenario\tevents\tevents/s\tp50 ms\tp90 ms\tp99 ms\tCPU µs/event\t\n")
	for _, s := range []ScenarioResult{res.Raw, res.RawFenced, res.Bridge, res.SDK, res.SDKReused} {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.1f\t\n", s.Name, s.Events, s.EventsPerSecond,
			s.LatencyP50Ms, s.LatencyP90Ms, s.LatencyP99Ms, s.CPUMicrosPerEvent)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "bridge/raw fenced = %.2f (goal >= 0.80)   raw fenced/raw = %.2f (the fence's price)   bridge/sdk = %.1fx (goal >= 10x)   bridge/sdk-reused = %.1fx   window %d, ack timeout %gs, %d agents\n",
		res.BridgeVsRaw, res.FenceCost, res.BridgeVsSDK, res.BridgeVsSDKReused, res.MaxPending, res.PublishTimeoutSeconds, res.Agents)
	return err
}

// MakeEvents returns n presence.changed events of the size and shape of a
// real one, spread over agents agents in turn (event i is agent i % agents's),
// each agent's sequences 1, 2, ... in order; event IDs are unique.
func MakeEvents(n, agents int) []detector.Event {
	base := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	prev := &presence{ID: "f523f628-c07a-e811-8162-000d3aa11f50", Name: "Available", BaseStatus: "Available"}
	cur := presence{ID: "efdeb843-c07a-e811-8162-000d3aa11f50", Name: "Busy", BaseStatus: "Busy"}
	evs := make([]detector.Event, n)
	for i := range evs {
		a := i % agents
		agent := fmt.Sprintf("%08x-a4d4-ee11-904c-%012x", a, a*7919)
		seq := uint64(i/agents + 1)
		at := base.Add(time.Duration(i) * time.Millisecond)
		evs[i] = detector.Event{
			ID: fmt.Sprintf("%s-%d", agent, seq), Type: detector.TypePresenceChanged, AgentID: agent, Sequence: seq, Time: at,
			Data: presenceChanged{AgentID: agent, AgentName: fmt.Sprintf("Agent %d", a), Previous: prev, Current: cur,
				PreviousSince: at.Add(-time.Minute), PreviousDurationSeconds: 60.123},
		}
	}
	return evs
}

// keepStream is never deleted; see scenario.
const keepStream = "CCAAS_BENCH_KEEP"

// scenario sets up a fresh stream and connection for one scenario.
// Each scenario gets a stream of its own name: the previous one is deleted
// first (same events, so message IDs must not be remembered), and reusing its
// name could race with the removal of its store.
func scenario(ctx context.Context, url, stream string, jsOpts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: connect: %w", err)
	}
	js, err := jetstream.New(nc, jsOpts...)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bench: jetstream: %w", err)
	}
	names := js.StreamNames(ctx)
	var old []string
	for name := range names.Name() {
		old = append(old, name)
	}
	if err := names.Err(); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bench: list streams: %w", err)
	}
	// The server removes an account's store directory once its last stream
	// is deleted, racing with a stream created right after: a small stream
	// that is never deleted keeps the directory.
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: keepStream, Subjects: []string{keepStream}, Storage: jetstream.FileStorage}); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bench: create stream %s: %w", keepStream, err)
	}
	for _, name := range old {
		if name == keepStream {
			continue
		}
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			nc.Close()
			return nil, nil, fmt.Errorf("bench: delete stream %s: %w", name, err)
		}
	}
	if _, err := publish.EnsureStream(ctx, js, publish.StreamOptions{Name: stream, SubjectPrefix: contract.SubjectPrefix, Manage: true}); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	return nc, js, nil
}

// meter measures wall time, CPU and latencies of a scenario.
type meter struct {
	name      string
	start     time.Time
	cpu       time.Duration
	latencies []time.Duration
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startMeter(name string, n int) *meter {
	return &meter{name: name, start: time.Now(), cpu: cpuTime(), latencies: make([]time.Duration, n)}
}

func (m *meter) result() ScenarioResult {
	wall := time.Since(m.start)
	cpu := cpuTime() - m.cpu
	n := len(m.latencies)
	slices.Sort(m.latencies)
	pct := func(p float64) float64 {
		return float64(m.latencies[min(n-1, int(float64(n)*p))]) / float64(time.Millisecond)
	}
	return ScenarioResult{
		Name: m.name, Events: n, Seconds: wall.Seconds(), EventsPerSecond: float64(n) / wall.Seconds(),
		LatencyP50Ms: pct(0.50), LatencyP90Ms: pct(0.90), LatencyP99Ms: pct(0.99),
		CPUMicrosPerEvent: float64(cpu) / float64(time.Microsecond) / float64(n), CPU: cpu,
	}
}

// runRaw publishes pre-encoded messages with PublishMsgAsync.
func runRaw(ctx context.Context, url, stream string, enc *publish.Encoder, events []detector.Event, window int) (ScenarioResult, error) {
	msgs := make([]*nats.Msg, len(events))
	index := make(map[*nats.Msg]int, len(events))
	for i, ev := range events {
		m, err := enc.Encode(ev)
		if err != nil {
			return ScenarioResult{}, fmt.Errorf("bench raw: %w", err)
		}
		msgs[i] = m
		index[m] = i
	}
	sent := make([]time.Time, len(events))
	var m *meter
	var acked atomic.Int64
	var failed atomic.Int64
	allDone := make(chan struct{})
	onAck := func(_ jetstream.JetStream, msg *nats.Msg, _ *jetstream.PubAck) {
		i := index[msg]
		m.latencies[i] = time.Since(sent[i])
		if acked.Add(1) == int64(len(events)) {
			close(allDone)
		}
	}
	onErr := func(_ jetstream.JetStream, _ *nats.Msg, _ error) { failed.Add(1) }
	nc, js, err := scenario(ctx, url, stream, jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncAckHandler(onAck), jetstream.WithPublishAsyncErrHandler(onErr),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return ScenarioResult{}, err
	}
	defer nc.Close()
	m = startMeter("raw PublishAsync", len(events))
	for i, msg := range msgs {
		sent[i] = time.Now()
		for {
			_, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(10*time.Second))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return ScenarioResult{}, fmt.Errorf("bench raw: publish: %w", err)
			}
		}
	}
	select {
	case <-allDone:
	case <-ctx.Done():
		return ScenarioResult{}, fmt.Errorf("bench raw: %w", ctx.Err())
	}
	if n := failed.Load(); n > 0 {
		return ScenarioResult{}, fmt.Errorf("bench raw: %d publishes failed", n)
	}
	return m.result(), nil
}

// runRawFenced publishes pre-encoded messages with PublishMsgAsync, each
// fenced as the bridge fences them: Nats-Expected-Last-Subject-Sequence set
// to the stream sequence of the agent's previous event, so each agent has
// one event in flight and its next is sent from the acknowledgement of the
// previous; at most window agents are in flight at once.
func runRawFenced(ctx context.Context, url, stream string, enc *publish.Encoder, events []detector.Event, window int) (ScenarioResult, error) {
	type chain struct {
		subjects string
		idx      []int // indexes into events, in sequence order
		next     int
	}
	chains := map[string]*chain{}
	var order []*chain
	msgs := make([]*nats.Msg, len(events))
	owner := make(map[*nats.Msg]*chain, len(events))
	index := make(map[*nats.Msg]int, len(events))
	for i, ev := range events {
		m, err := enc.Encode(ev)
		if err != nil {
			return ScenarioResult{}, fmt.Errorf("bench raw fenced: %w", err)
		}
		c := chains[ev.AgentID]
		if c == nil {
			c = &chain{subjects: contract.AgentSubjects(contract.SubjectPrefix, ev.AgentID)}
			chains[ev.AgentID] = c
			order = append(order, c)
		}
		c.idx = append(c.idx, i)
		msgs[i], owner[m], index[m] = m, c, i
	}
	sent := make([]time.Time, len(events))
	tokens := make(chan struct{}, window)
	var m *meter
	var js jetstream.JetStream
	var acked, failed atomic.Int64
	allDone := make(chan struct{})
	publishNext := func(c *chain, last uint64) {
		i := c.idx[c.next]
		c.next++
		msg := msgs[i]
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(last, 10))
		msg.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, c.subjects)
		sent[i] = time.Now()
		if _, err := js.PublishMsgAsync(msg); err != nil {
			failed.Add(1)
		}
	}
	onAck := func(_ jetstream.JetStream, msg *nats.Msg, ack *jetstream.PubAck) {
		i := index[msg]
		m.latencies[i] = time.Since(sent[i])
		c := owner[msg]
		if c.next < len(c.idx) {
			publishNext(c, ack.Sequence)
		} else {
			<-tokens
		}
		if acked.Add(1) == int64(len(events)) {
			close(allDone)
		}
	}
	onErr := func(_ jetstream.JetStream, _ *nats.Msg, _ error) { failed.Add(1) }
	nc, js, err := scenario(ctx, url, stream, jetstream.WithPublishAsyncMaxPending(window+16),
		jetstream.WithPublishAsyncAckHandler(onAck), jetstream.WithPublishAsyncErrHandler(onErr),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return ScenarioResult{}, err
	}
	defer nc.Close()
	m = startMeter("raw PublishAsync, fenced", len(events))
	for _, c := range order {
		select {
		case tokens <- struct{}{}:
		case <-ctx.Done():
			return ScenarioResult{}, fmt.Errorf("bench raw fenced: %w", ctx.Err())
		}
		publishNext(c, 0)
	}
	select {
	case <-allDone:
	case <-ctx.Done():
		return ScenarioResult{}, fmt.Errorf("bench raw fenced: %w", ctx.Err())
	}
	if n := failed.Load(); n > 0 {
		return ScenarioResult{}, fmt.Errorf("bench raw fenced: %d publishes failed", n)
	}
	return m.result(), nil
}

// runPublisher publishes through publish.Publisher, one Enqueue per event as
// the pipeline does for an agent's change.
func runPublisher(ctx context.Context, url string, enc *publish.Encoder, events []detector.Event, window int, timeout time.Duration) (ScenarioResult, error) {
	stream := benchStream + "_BRIDGE"
	nc, _, err := scenario(ctx, url, stream)
	if err != nil {
		return ScenarioResult{}, err
	}
	defer nc.Close()
	p, err := publish.NewPublisher(nc, publish.Options{Encoder: enc, Stream: stream, MaxPending: window, PublishTimeout: timeout})
	if err != nil {
		return ScenarioResult{}, fmt.Errorf("bench bridge: %w", err)
	}
	res, err := Publish(ctx, p, events, nil)
	if cerr := p.Close(ctx); err == nil && cerr != nil {
		err = fmt.Errorf("bench bridge: %w", cerr)
	}
	return res, err
}

// Publish publishes events through p, one Enqueue per event as the
// pipeline does for an agent's change, waits for every event's
// acknowledgement and returns what it measured: wall time, latencies from
// Enqueue to the done callback, and this process's CPU (getrusage) from the
// first Enqueue to the last acknowledgement. p stays open. events must
// follow on from what p already published for their agents (MakeEvents'
// events in order, split anywhere, do). With pace, each Enqueue first
// waits for it (events handed over at its rate, as a bridge whose agents
// change at that rate hands them over); nil hands them over as fast as the
// window allows.
func Publish(ctx context.Context, p *publish.Publisher, events []detector.Event, pace *rate.Limiter) (ScenarioResult, error) {
	if len(events) == 0 {
		return ScenarioResult{}, errors.New("bench bridge: no events to publish")
	}
	var wg sync.WaitGroup
	var firstErr atomic.Value
	m := startMeter("bridge Publisher", len(events))
	for i := range events {
		if pace != nil {
			if err := pace.Wait(ctx); err != nil {
				return ScenarioResult{}, fmt.Errorf("bench bridge: pace: %w", err)
			}
		}
		wg.Add(1)
		start := time.Now()
		err := p.Enqueue(ctx, 0, events[i:i+1], func(_ uint64, err error) {
			m.latencies[i] = time.Since(start)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
			wg.Done()
		})
		if err != nil {
			wg.Done()
			return ScenarioResult{}, fmt.Errorf("bench bridge: %w", err) // the caller's Close ends what is held
		}
	}
	wg.Wait()
	res := m.result()
	if err, ok := firstErr.Load().(error); ok {
		return res, fmt.Errorf("bench bridge: publish: %w", err)
	}
	return res, nil
}

// runSDK sends each event with the CloudEvents SDK's JetStream sender, as a
// user of the SDK would: build the event, Send, wait for the ack.
func runSDK(ctx context.Context, url string, enc *publish.Encoder, events []detector.Event, senderPerEvent bool) (ScenarioResult, error) {
	stream := benchStream + "_SDK"
	if !senderPerEvent {
		stream += "_REUSED"
	}
	nc, _, err := scenario(ctx, url, stream)
	if err != nil {
		return ScenarioResult{}, err
	}
	defer nc.Close()
	sender, err := cejs.NewSenderFromConn(nc, stream, contract.SubjectPrefix, nil)
	if err != nil {
		return ScenarioResult{}, fmt.Errorf("bench sdk: new sender: %w", err)
	}
	name := "sdk-reused Send"
	if senderPerEvent {
		name = "sdk Send"
	}
	m := startMeter(name, len(events))
	for i, ev := range events {
		start := time.Now()
		ce, err := enc.CloudEvent(ev)
		if err != nil {
			return ScenarioResult{}, fmt.Errorf("bench sdk: %w", err)
		}
		// The SDK sender has one subject: set it per event, or make a
		// sender per event.
		if senderPerEvent {
			if sender, err = cejs.NewSenderFromConn(nc, stream, enc.Subject(ev), nil); err != nil {
				return ScenarioResult{}, fmt.Errorf("bench sdk: new sender: %w", err)
			}
		} else {
			sender.Subject = enc.Subject(ev)
		}
		if err := sender.Send(ctx, binding.ToMessage(&ce)); err != nil {
			return ScenarioResult{}, fmt.Errorf("bench sdk: send: %w", err)
		}
		m.latencies[i] = time.Since(start)
		if ctx.Err() != nil {
			return ScenarioResult{}, fmt.Errorf("bench sdk: %w", ctx.Err())
		}
	}
	return m.result(), nil
}
