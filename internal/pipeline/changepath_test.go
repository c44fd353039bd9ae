package pipeline_test

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/statebucket"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// changeOnly skips BenchmarkChangePath's publish baseline, so that a CPU
// profile shows the change path alone:
// go test -run '^$' -bench ChangePath -benchtime 20x -cpuprofile /tmp/cpu.out ./internal/pipeline -args -changeonly
var changeOnly = flag.Bool("changeonly", false, "BenchmarkChangePath measures the change path only, without its publish baseline (for profiles)")

// changeAgents is how many agents BenchmarkChangePath changes each round.
const changeAgents = 2_000

// baselinePrefix and baselineStream are where the publish baseline of
// BenchmarkChangePath publishes: its own subjects and stream on the same
// server, so that the two do not share a fence.
const (
	baselinePrefix = "baseline.agents"
	baselineStream = "BASELINE"
)

// cpuTime is the CPU (user and system) this process has used so far: the
// test's goroutines, the bridge's and the in-process server's.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mallocs is how many heap objects this process has allocated so far.
func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// phase accumulates the CPU, allocations and events of one side of
// BenchmarkChangePath over its rounds.
type phase struct {
	cpu    time.Duration
	allocs uint64
	events int
}

// measure runs f, which handles n events, and adds what it cost.
func (ph *phase) measure(n int, f func()) {
	runtime.GC()
	a, c := mallocs(), cpuTime()
	f()
	ph.cpu += cpuTime() - c
	ph.allocs += mallocs() - a
	ph.events += n
}

func (ph *phase) microsPerEvent() float64 {
	return float64(ph.cpu) / float64(time.Microsecond) / float64(ph.events)
}

func (ph *phase) allocsPerEvent() float64 { return float64(ph.allocs) / float64(ph.events) }

// wired is the detector, pipeline, publisher and state bucket as
// cmd/bridge's lifecycle wires them (one connection, one JetStream
// client), on an in-process JetStream server.
type wired struct {
	url   string
	det   *detector.Detector
	pipe  *pipeline.Pipeline
	pub   *publish.Publisher
	store *statebucket.Store
}

// wire builds the components on a new in-process server.
func wire(b *testing.B) *wired {
	ctx := b.Context()
	url := startServer(b)
	nc := connectConn(b, url)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	pubMetrics, err := publish.NewMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	viewMetrics, err := statebucket.NewMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	store, err := statebucket.Open(ctx, js, statebucket.Options{Bucket: contract.StateBucket, Metrics: viewMetrics})
	if err != nil {
		b.Fatal(err)
	}
	enc, err := publish.NewEncoder(publish.EncoderOptions{
		Source: "https://contoso.crm.dynamics.com", SubjectPrefix: contract.SubjectPrefix, BridgeVersion: "v1.2.3", MaxPayload: int(nc.MaxPayload()),
	})
	if err != nil {
		b.Fatal(err)
	}
	pub, err := publish.NewPublisher(nc, publish.Options{Encoder: enc, Stream: contract.Stream, Metrics: pubMetrics})
	if err != nil {
		b.Fatal(err)
	}
	det, err := detector.New(detector.Options{StaleAfter: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	pipeMetrics, err := pipeline.NewMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Options{
		Detector: det, Publisher: pub, View: store, Metrics: pipeMetrics,
		Journal: pipeline.NewStreamJournal(pipeline.JournalOptions{JetStream: js, Stream: contract.Stream, SubjectPrefix: contract.SubjectPrefix, Metrics: pipeMetrics}),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Close(cctx); err != nil {
			b.Error(err)
		}
		if err := pub.Close(cctx); err != nil {
			b.Error(err)
		}
	})
	return &wired{url: url, det: det, pipe: p, pub: pub, store: store}
}

// changeSnapshot is agent i's observation in round r: the presence
// alternates between Available and Busy, nothing else changes, so each
// round is one presence.changed per agent.
func changeSnapshot(id string, i, r int, at time.Time) *source.Snapshot {
	s := memSnapshot(id, 0, at)
	if r%2 == 1 {
		pr := memPresences[1]
		s.PresenceID, s.PresenceName, s.BaseStatus = pr[0], pr[1], pr[2]
	}
	s.AgentName = fmt.Sprintf("Agent %05d", i)
	return s
}

// BenchmarkChangePath measures one presence change on its way through the
// bridge, from observation (pipeline.Observe) to the agent's state recorded
// in the bucket, beside the publish path alone in the same run: every
// round changes the presence of 2,000 agents (one presence.changed each)
// and waits until every change is recorded, then publishes as many
// events, built beforehand, through a publish.Publisher alone (one
// Enqueue per event, as `bridge bench` does) and waits for their acks.
// Both figures are CPU per event of the whole process (getrusage), so
// both include the in-process JetStream server's CPU; allocations are the
// process's heap objects per event, the server's included. The snapshots
// handed to Observe are built inside the change path's measurement, as a
// poll's decoding builds them.
//
//	go test -run '^$' -bench ChangePath -benchtime 20x ./internal/pipeline
func BenchmarkChangePath(b *testing.B) {
	ctx := b.Context()
	ids := memAgentIDs()[:changeAgents]
	w := wire(b)
	w.pipe.SetAgents(ids)

	// The baseline's own stream and publisher, on the same server.
	bnc := connectConn(b, w.url)
	bjs, err := jetstream.New(bnc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := publish.EnsureStream(ctx, bjs, publish.StreamOptions{Name: baselineStream, SubjectPrefix: baselinePrefix, Manage: true}); err != nil {
		b.Fatal(err)
	}
	benc, err := publish.NewEncoder(publish.EncoderOptions{
		Source: "https://contoso.crm.dynamics.com", SubjectPrefix: baselinePrefix, BridgeVersion: "v1.2.3", MaxPayload: int(bnc.MaxPayload()),
	})
	if err != nil {
		b.Fatal(err)
	}
	bpub, err := publish.NewPublisher(bnc, publish.Options{Encoder: benc, Stream: baselineStream})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := bpub.Close(cctx); err != nil {
			b.Error(err)
		}
	})

	// First sight of every agent: three events each, not measured.
	at := time.Now()
	for i, id := range ids {
		if err := w.pipe.Observe(ctx, source.Observation{AgentID: id, At: at, Class: source.ClassOK, Snapshot: changeSnapshot(id, i, 0, at)}); err != nil {
			b.Fatal(err)
		}
	}
	testwait.Until(b, 2*time.Minute, "every agent's first state recorded", func() bool { return w.pipe.Stats().Commits >= changeAgents })

	var change, base phase
	round := 0
	for b.Loop() {
		round++
		commits := w.pipe.Stats().Commits
		change.measure(changeAgents, func() {
			at := time.Now()
			for i, id := range ids {
				if err := w.pipe.Observe(ctx, source.Observation{AgentID: id, At: at, Class: source.ClassOK, Snapshot: changeSnapshot(id, i, round, at)}); err != nil {
					b.Fatal(err)
				}
			}
			testwait.Until(b, 2*time.Minute, fmt.Sprintf("round %d: every change recorded", round), func() bool {
				return w.pipe.Stats().Commits >= commits+changeAgents
			})
		})

		if *changeOnly {
			continue
		}
		events := baselineEvents(ids, uint64(round), time.Now())
		base.measure(len(events), func() {
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failed error
			wg.Add(len(events))
			for i := range events {
				err := bpub.Enqueue(ctx, 0, events[i:i+1], func(_ uint64, err error) {
					if err != nil {
						mu.Lock()
						failed = err
						mu.Unlock()
					}
					wg.Done()
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			if failed != nil {
				b.Fatal(failed)
			}
		})
	}
	st := w.pipe.Stats()
	if want := uint64(changeAgents * (round + 1)); st.Events[detector.TypePresenceChanged] != want || st.Commits != want || st.Errors != 0 || st.Conflicts != 0 {
		b.Fatalf("after %d rounds: %+v, want %d presence changes and commits", round, st, want)
	}
	b.ReportMetric(change.microsPerEvent(), "change-µs/event")
	b.ReportMetric(change.allocsPerEvent(), "change-allocs/event")
	if base.events > 0 {
		b.ReportMetric(base.microsPerEvent(), "publish-µs/event")
		b.ReportMetric(change.microsPerEvent()/base.microsPerEvent(), "ratio")
		b.ReportMetric(base.allocsPerEvent(), "publish-allocs/event")
	}
}

// baselineEvents is one presence.changed per agent with sequence seq, as
// the detector builds it.
func baselineEvents(ids []string, seq uint64, at time.Time) []detector.Event {
	events := make([]detector.Event, len(ids))
	since := at.Add(-10 * time.Second)
	dur := 10.0
	for i, id := range ids {
		prev, cur := memPresences[0], memPresences[1]
		if seq%2 == 0 {
			prev, cur = cur, prev
		}
		name := fmt.Sprintf("Agent %05d", i)
		events[i] = detector.Event{
			ID: detector.EventID(id, seq), Type: detector.TypePresenceChanged, AgentID: id, AgentName: name, Sequence: seq, Time: at,
			Data: detector.PresenceChangedData{
				AgentID: id, AgentName: name,
				Previous:      &detector.Presence{ID: prev[0], Name: prev[1], BaseStatus: prev[2]},
				Current:       detector.Presence{ID: cur[0], Name: cur[1], BaseStatus: cur[2]},
				PreviousSince: &since, PreviousDurationSeconds: &dur,
			},
		}
	}
	return events
}
