package pipeline_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// heapProfile names the file BenchmarkMemoryPerAgent writes the heap
// profile to once every component is filled (empty: none):
// go test -run '^$' -bench MemoryPerAgent -benchtime 1x ./internal/pipeline -args -heapprofile=/tmp/heap.out
var heapProfile = flag.String("heapprofile", "", "write the heap profile of BenchmarkMemoryPerAgent, every component filled, to this file")

// memLogin is every agent's login Timestamp.
const memLogin = 1_796_000_000

// memAgents is how many agents BenchmarkMemoryPerAgent holds.
const memAgents = 10_000

// heapInUse returns the bytes of live heap objects after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// perAgent is the growth from before to after, per agent.
func perAgent(before, after uint64) float64 {
	return (float64(after) - float64(before)) / memAgents
}

// memPresences is a presence catalogue as the simulator's org has it.
var memPresences = [][3]string{
	{available, "Available", "Available"},
	{busy, "Busy", "Busy"},
	{away, "Away", "Away"},
	{offline, "Offline", "Offline"},
}

// memSnapshot is agent i's observation at, every string freshly allocated
// as a decoded answer's are.
func memSnapshot(id string, i int, at time.Time) *source.Snapshot {
	pr := memPresences[i%len(memPresences)]
	return &source.Snapshot{
		AgentID: strings.Clone(id), AgentName: fmt.Sprintf("Agent %05d", i),
		PresenceID: strings.Clone(pr[0]), PresenceName: strings.Clone(pr[1]), BaseStatus: strings.Clone(pr[2]),
		ActiveBrowserSessions: 1, LoginTime: memLogin,
		AllowedChannels:  []string{strings.Clone("chat"), strings.Clone("email"), strings.Clone("voice")},
		DisabledChannels: []string{strings.Clone("sms")},
		ObservedAt:       at,
	}
}

// keptSnapshot is agent i's answer as source.Client.Poll returns it and
// keeps it as the agent's last answer: decoded, its values shared through
// in, the agent's ID the poller's, no ObservedAt (the Observation's At is
// its time). A Detector holds this Snapshot itself, not a copy.
func keptSnapshot(in *source.Interner, id string, i int) *source.Snapshot {
	s := memSnapshot(id, i, time.Time{})
	s.AgentID = id
	in.Snapshot(s)
	return s
}

func memAgentIDs() []string {
	ids := make([]string, memAgents)
	for i := range ids {
		ids[i] = fmt.Sprintf("3f2504e0-4f89-11d3-9a0c-%012x", i)
	}
	return ids
}

// BenchmarkMemoryPerAgent measures the heap each component holds per
// agent at 10,000 agents, each observed once (the start-up burst: three
// events and one state write per agent) and then once more unchanged:
//
//   - poller: source.NewPoller after SetAgents, nothing polled;
//   - detector: a Detector alone, every observation's change confirmed as
//     the pipeline confirms it, with each agent's latest answer, which it
//     shares with the source's LastAnswer (the source holds no other);
//   - wired: the detector, the pipeline, the publisher and the state bucket
//     as cmd/bridge wires them, on an in-process JetStream server whose own
//     memory (the stream and the bucket it stores) is included; the heap
//     profile (-args -heapprofile=FILE) splits it by allocation site.
func BenchmarkMemoryPerAgent(b *testing.B) {
	if *heapProfile != "" {
		defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
		runtime.MemProfileRate = 64 // fine enough to split a few bytes per agent
	}
	ids := memAgentIDs()
	for b.Loop() {
		// The poller.
		before := heapInUse()
		poller, err := source.NewPoller(source.PollerOptions{
			Getter:   getterFunc(func(context.Context, string) (source.Snapshot, error) { return source.Snapshot{}, nil }),
			Sink:     source.SinkFunc(func(context.Context, source.Observation) error { return nil }),
			Interval: 10 * time.Second,
		})
		if err != nil {
			b.Fatal(err)
		}
		poller.SetAgents(ids)
		b.ReportMetric(perAgent(before, heapInUse()), "poller-B/agent")
		runtime.KeepAlive(poller)

		// The detector alone.
		before = heapInUse()
		det := memFillDetector(b, ids)
		b.ReportMetric(perAgent(before, heapInUse()), "detector-B/agent")
		runtime.KeepAlive(det)

		// The whole of it, wired.
		b.ReportMetric(memWired(b, ids), "wired-B/agent")
	}
}

// memFillDetector observes every agent twice, confirming each change: the
// first answer decoded, the second the same Snapshot, as source.Client.Poll
// hands them over.
func memFillDetector(b *testing.B, ids []string) *detector.Detector {
	in := source.NewInterner()
	det, err := detector.New(detector.Options{StaleAfter: time.Minute, Interner: in})
	if err != nil {
		b.Fatal(err)
	}
	kept := make([]*source.Snapshot, len(ids))
	var stream uint64
	for round := range 2 {
		at := time.Now()
		for i, id := range ids {
			if round == 0 {
				kept[i] = keptSnapshot(in, id, i)
			}
			c := det.Observe(source.Observation{AgentID: id, At: at, Class: source.ClassOK, Snapshot: kept[i]})
			if (c != nil) != (round == 0) {
				b.Fatalf("round %d, agent %s: change %v", round, id, c)
			}
			if c != nil {
				stream += uint64(len(c.Events))
				det.Confirm(c, stream)
			}
		}
	}
	return det
}

// memWired fills the wired components and returns their growth per agent.
func memWired(b *testing.B, ids []string) float64 {
	ctx := b.Context()
	w := wire(b)
	p, pub := w.pipe, w.pub
	before := heapInUse()
	p.SetAgents(ids)
	for round := range 2 {
		at := time.Now()
		for i, id := range ids {
			if err := p.Observe(ctx, source.Observation{AgentID: id, At: at, Class: source.ClassOK, Snapshot: memSnapshot(id, i, at)}); err != nil {
				b.Fatal(err)
			}
		}
		testwait.Until(b, 2*time.Minute, fmt.Sprintf("round %d: every agent's state recorded", round), func() bool { return p.Stats().Commits >= memAgents })
	}
	if err := pub.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	grown := perAgent(before, heapInUse())
	if *heapProfile != "" {
		f, err := os.Create(*heapProfile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	if st := p.Stats(); st.Commits != memAgents || st.Events[detector.TypePresenceChanged] != memAgents {
		b.Fatalf("stats after two rounds: %+v", st)
	}
	return grown
}

// getterFunc adapts a function to a source.Getter.
type getterFunc func(ctx context.Context, agentID string) (source.Snapshot, error)

// Get calls f.
func (f getterFunc) Get(ctx context.Context, id string) (source.Snapshot, error) { return f(ctx, id) }
