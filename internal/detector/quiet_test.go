package detector

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/source"
)

// TestQuietPollsAsDiffed runs random sequences of polls (most of them
// repeating a shared Snapshot, as the source hands over unchanged answers),
// failures, feed holds and rows, stale checks, confirmations, abandons and
// adoptions through two detectors, one diffing every poll: every change,
// every stale check and every state must be the same.
func TestQuietPollsAsDiffed(t *testing.T) {
	const agent = "0b7a1c2e-0000-4000-8000-000000000001"
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	avail := Presence{ID: "f523f628-c07a-e811-8162-000d3aa11f50", Name: "Available", BaseStatus: source.BaseAvailable}
	busy := Presence{ID: "efdeb843-c07a-e811-8162-000d3aa11f50", Name: "Busy", BaseStatus: source.BaseBusy}
	// The answers the source shares: ObservedAt zero.
	var shared []*source.Snapshot
	for _, p := range []Presence{avail, busy} {
		for _, tabs := range []int{0, 2} {
			shared = append(shared, &source.Snapshot{AgentID: agent, AgentName: "Ada", PresenceID: p.ID, PresenceName: p.Name, BaseStatus: p.BaseStatus,
				ActiveBrowserSessions: tabs, LoginTime: t0.Unix(), AllowedChannels: []string{"voice", "chat"}, DisabledChannels: []string{}})
		}
	}
	// The presence of shared[0] by another name: the same presence by ID
	// (FeedHold keeps the state's name), a change without FeedHold.
	renamed := *shared[0]
	renamed.PresenceName = "Disponible"
	shared = append(shared, &renamed)
	for seed := uint64(1); seed <= 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		now := t0
		clock := func() time.Time { return now }
		fast, err := New(Options{StaleAfter: 5 * time.Second, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		slow, _ := New(Options{StaleAfter: 5 * time.Second, Now: clock})
		slow.noQuiet = true
		var pendFast, pendSlow []*Change // changes not yet confirmed, in order
		var streamSeq uint64
		compare := func(step int, what string, f, s *Change) {
			t.Helper()
			if (f == nil) != (s == nil) {
				t.Fatalf("seed %d step %d %s: change %v, diffing every poll %v", seed, step, what, f != nil, s != nil)
			}
			if f == nil {
				return
			}
			if !reflect.DeepEqual(f.Events, s.Events) || !reflect.DeepEqual(f.State, s.State) || f.AfterStream != s.AfterStream {
				t.Fatalf("seed %d step %d %s: change\n%+v\ndiffing every poll\n%+v", seed, step, what, *f, *s)
			}
			pendFast, pendSlow = append(pendFast, f), append(pendSlow, s)
		}
		for step := range 60 {
			now = now.Add(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
			o := source.Observation{AgentID: agent, At: now, Class: source.ClassOK}
			if rng.IntN(2) == 0 { // sent at times before the last poll ended
				o.Sent = now.Add(-time.Duration(rng.IntN(1000)) * time.Millisecond)
			}
			if rng.IntN(4) == 0 {
				o.FeedHold = 3 * time.Second
			}
			switch r := rng.IntN(20); {
			case r < 10: // a repeated answer, shared
				o.Snapshot = shared[rng.IntN(len(shared))]
			case r < 12: // a decoded answer
				s := *shared[rng.IntN(len(shared))]
				s.ObservedAt = now
				o.Snapshot = &s
			case r < 14:
				o.Class, o.Err = source.ClassServer, errTest
			case r == 14: // a feed row
				p := []Presence{avail, busy}[rng.IntN(2)]
				o.Row = &source.PresenceRow{RowID: "r", AgentID: agent, PresenceID: p.ID, PresenceName: p.Name, BaseStatus: p.BaseStatus,
					ChangedAt: now.Add(-time.Second), CreatedAt: now}
			case r == 15: // stale check
				fd, fn := fast.StaleCheck(now)
				sd, sn := slow.StaleCheck(now)
				if !reflect.DeepEqual(fd, sd) || fn != sn {
					t.Fatalf("seed %d step %d: stale due %v (%d stale), diffing every poll %v (%d stale)", seed, step, fd, fn, sd, sn)
				}
				compare(step, "stale", fast.MarkStale(agent, now), slow.MarkStale(agent, now))
				continue
			case r == 16: // the oldest pending change confirmed
				if len(pendFast) > 0 {
					streamSeq += uint64(len(pendFast[0].Events))
					fs, ss := fast.Confirm(pendFast[0], streamSeq), slow.Confirm(pendSlow[0], streamSeq)
					if !reflect.DeepEqual(fs, ss) {
						t.Fatalf("seed %d step %d: confirmed %+v, diffing every poll %+v", seed, step, fs, ss)
					}
					pendFast, pendSlow = pendFast[1:], pendSlow[1:]
				}
				continue
			case r == 17: // the newest pending change abandoned
				if n := len(pendFast); n > 0 {
					if fast.Abandon(pendFast[n-1]) != slow.Abandon(pendSlow[n-1]) {
						t.Fatalf("seed %d step %d: abandons differ", seed, step)
					}
					pendFast, pendSlow = pendFast[:n-1], pendSlow[:n-1]
				}
				continue
			case r == 18: // a poll or a row noted while the history is adopted, then a poll, then the adoption
				noted := source.Observation{AgentID: agent, At: now, Class: source.ClassOK, Snapshot: shared[rng.IntN(len(shared))]}
				if rng.IntN(2) == 0 {
					p := []Presence{avail, busy}[rng.IntN(2)]
					noted.Snapshot, noted.Row = nil, &source.PresenceRow{RowID: "n", AgentID: agent, PresenceID: p.ID, PresenceName: p.Name,
						BaseStatus: p.BaseStatus, ChangedAt: now.Add(-time.Second), CreatedAt: now}
				}
				fast.Note(noted)
				slow.Note(noted)
				if rng.IntN(2) == 0 {
					now = now.Add(time.Second)
					o.At, o.Snapshot = now, shared[0]
					compare(step, "observe while adopting", fast.Observe(o), slow.Observe(o))
				}
				base := fast.Base(agent)
				pendFast, pendSlow = nil, nil
				compare(step, "adopt", fast.Adopt(agent, base), slow.Adopt(agent, base))
				continue
			default: // a poll repeating the last shared answer
				o.Snapshot = shared[0]
			}
			compare(step, "observe", fast.Observe(o), slow.Observe(o))
		}
		fs, fok := fast.State(agent)
		ss, sok := slow.State(agent)
		if fok != sok || !reflect.DeepEqual(fs, ss) {
			t.Fatalf("seed %d: final state %+v, diffing every poll %+v", seed, fs, ss)
		}
	}
}

var errTest = &source.PollError{Class: source.ClassServer, StatusCode: 500}

// BenchmarkObserveUnchanged measures the detector taking a poll that
// repeats the agent's last (the shared Snapshot of an unchanged answer).
func BenchmarkObserveUnchanged(b *testing.B) {
	const agent = "0b7a1c2e-0000-4000-8000-000000000001"
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		noQuiet bool
	}{{name: "quiet"}, {name: "diffed", noQuiet: true}} {
		b.Run(tc.name, func(b *testing.B) {
			d, _ := New(Options{StaleAfter: time.Minute, Now: func() time.Time { return now }})
			d.noQuiet = tc.noQuiet
			snap := &source.Snapshot{AgentID: agent, AgentName: "Ada", PresenceID: "f523f628-c07a-e811-8162-000d3aa11f50", PresenceName: "Available",
				BaseStatus: source.BaseAvailable, ActiveBrowserSessions: 1, LoginTime: now.Unix(), AllowedChannels: []string{"voice"}, DisabledChannels: []string{}}
			if d.Observe(source.Observation{AgentID: agent, At: now, Class: source.ClassOK, Snapshot: snap}) == nil {
				b.Fatal("no first change")
			}
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Second)
				if c := d.Observe(source.Observation{AgentID: agent, At: now, Class: source.ClassOK, Snapshot: snap}); c != nil {
					b.Fatal("a repeated poll changed something")
				}
			}
		})
	}
}
