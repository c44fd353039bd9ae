package statebucket_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/statebucket"
	"github.com/ccaas/presence-bridge/schemas"
)

const (
	agentA    = "394382b6-a4d4-ee11-904c-00224808a166"
	available = "f523f628-c07a-e811-8162-000d3aa11f50"
	busy      = "efdeb843-c07a-e811-8162-000d3aa11f50"
	offline   = "70139190-c07a-e811-8162-000d3aa11f50"
)

// startJetStream runs an in-process JetStream server for the test and
// returns a JetStream context connected to it.
func startJetStream(t *testing.T) jetstream.JetStream { return natstest.JetStream(t) }

func snap(presenceID, name, base string, sessions int, at time.Time) source.Snapshot {
	return source.Snapshot{
		AgentID: agentA, AgentName: "Ada", PresenceID: presenceID, PresenceName: name, BaseStatus: base,
		ActiveBrowserSessions: sessions, LoginTime: 1700000000,
		AllowedChannels: []string{"voice", "chat"}, DisabledChannels: []string{}, ObservedAt: at,
	}
}

func ok(s source.Snapshot) source.Observation {
	return source.Observation{AgentID: s.AgentID, At: s.ObservedAt, Snapshot: &s, Class: source.ClassOK}
}

func TestPutGetConflict(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	store, err := statebucket.Open(ctx, js, statebucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if store.KeyValue().Bucket() != statebucket.DefaultBucket {
		t.Fatalf("bucket %q", store.KeyValue().Bucket())
	}
	if _, err := store.Get(ctx, agentA); !errors.Is(err, detector.ErrNotFound) {
		t.Fatalf("get of a missing agent: %v, want ErrNotFound", err)
	}
	st1, _ := detector.Diff(nil, snap(available, "Available", "Available", 1, time.Unix(100, 0)))
	rev1, err := store.Put(ctx, st1, 0)
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := detector.Diff(&st1, snap(busy, "Busy", "Busy", 1, time.Unix(200, 0)))

	tests := []struct {
		name     string
		expected uint64
		conflict bool
	}{
		{"create over an existing key", 0, true},
		{"stale revision", rev1 + 100, true},
		{"current revision", rev1, false},
		{"the same revision again", rev1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := store.Put(ctx, st2, tt.expected)
			if got := errors.Is(err, detector.ErrConflict); got != tt.conflict {
				t.Fatalf("put at revision %d: %v, conflict %v want %v", tt.expected, err, got, tt.conflict)
			}
			if !tt.conflict && err != nil {
				t.Fatal(err)
			}
		})
	}
	got, err := store.Get(ctx, agentA)
	if err != nil {
		t.Fatal(err)
	}
	if got.State.Sequence != st2.Sequence || got.State.Presence != st2.Presence || got.Revision <= rev1 {
		t.Fatalf("stored %+v at revision %d, want sequence %d presence %+v", got.State, got.Revision, st2.Sequence, st2.Presence)
	}

	// The stored value is the documented public JSON.
	e, err := store.KeyValue().Get(ctx, agentA)
	if err != nil {
		t.Fatal(err)
	}
	v, err := schemas.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(schemas.AgentState, e.Value()); err != nil {
		t.Fatalf("stored value %s: %v", e.Value(), err)
	}
}

// TestRestartEmitsOnlyDifferences: a detector built on a bucket written by a
// previous one resumes its sequences and emits only what changed.
func TestRestartEmitsOnlyDifferences(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	newDetector := func() *detector.Detector {
		store, err := statebucket.Open(ctx, js, statebucket.Options{Bucket: "restart_test"})
		if err != nil {
			t.Fatal(err)
		}
		d, err := detector.New(detector.Options{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Load(ctx); err != nil {
			t.Fatal(err)
		}
		return d
	}
	t0 := time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC)

	d1 := newDetector()
	for _, s := range []source.Snapshot{
		snap(available, "Available", "Available", 1, t0),
		snap(busy, "Busy", "Busy", 1, t0.Add(time.Minute)),
	} {
		if c := d1.Observe(ok(s)); c != nil {
			if err := d1.Commit(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	before, _ := d1.State(agentA)

	tests := []struct {
		name  string
		snap  source.Snapshot
		types []string
	}{
		{"unchanged while down", snap(busy, "Busy", "Busy", 1, t0.Add(time.Hour)), nil},
		{"changed while down", snap(offline, "Offline", "Offline", 0, t0.Add(time.Hour)),
			[]string{detector.TypePresenceChanged, detector.TypeSessionsChanged, detector.TypeAgentOffline}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d2 := newDetector()
			c := d2.Observe(ok(tt.snap))
			var types []string
			if c != nil {
				for i, e := range c.Events {
					types = append(types, e.Type)
					if e.Sequence != before.Sequence+uint64(i)+1 {
						t.Errorf("event %d has sequence %d after restart at %d", i, e.Sequence, before.Sequence)
					}
				}
			}
			if len(types) != len(tt.types) {
				t.Fatalf("events %v, want %v", types, tt.types)
			}
			for i := range types {
				if types[i] != tt.types[i] {
					t.Fatalf("events %v, want %v", types, tt.types)
				}
			}
			if c != nil {
				d := c.Events[0].Data.(detector.PresenceChangedData)
				if d.Previous == nil || d.Previous.ID != busy {
					t.Fatalf("previous presence %+v, want Busy from before the restart", d.Previous)
				}
			}
		})
	}
}

// TestTwoWritersFenced: two detectors on one bucket observe the same agent.
// The stored sequence only grows: a writer whose commit is covered by the
// stored state adopts it; one whose published events go further writes on
// top of it.
func TestTwoWritersFenced(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	var ds []*detector.Detector
	for range 2 {
		store, err := statebucket.Open(ctx, js, statebucket.Options{})
		if err != nil {
			t.Fatal(err)
		}
		d, err := detector.New(detector.Options{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	t0 := time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC)
	first := snap(available, "Available", "Available", 1, t0)
	c0, c1 := ds[0].Observe(ok(first)), ds[1].Observe(ok(first))
	if c0.Events[0].ID != c1.Events[0].ID {
		t.Fatalf("the same transition got IDs %s and %s", c0.Events[0].ID, c1.Events[0].ID)
	}
	if err := ds[0].Commit(ctx, c0); err != nil {
		t.Fatal(err)
	}
	// The second writer produced its next change before it lost.
	pending := ds[1].Observe(ok(snap(busy, "Busy", "Busy", 1, t0.Add(time.Second))))
	if err := ds[1].Commit(ctx, c1); !errors.Is(err, detector.ErrConflict) {
		t.Fatalf("second writer's commit of a covered sequence: %v, want ErrConflict", err)
	}
	if err := ds[1].Commit(ctx, pending); err != nil {
		t.Fatalf("a change beyond the stored sequence: %v, want it written on top", err)
	}
	// The first writer now sees the same transition; the bucket has it.
	n0 := ds[0].Observe(ok(snap(busy, "Busy", "Busy", 1, t0.Add(2*time.Second))))
	if n0.Events[0].ID != pending.Events[0].ID {
		t.Fatalf("the same transition got IDs %s and %s", n0.Events[0].ID, pending.Events[0].ID)
	}
	if err := ds[0].Commit(ctx, n0); !errors.Is(err, detector.ErrConflict) {
		t.Fatalf("first writer's commit of a covered sequence: %v, want ErrConflict", err)
	}
	if err := ds[0].Commit(ctx, n0); !errors.Is(err, detector.ErrDiscarded) {
		t.Fatalf("committing a covered change again: %v, want ErrDiscarded", err)
	}
	s0, _ := ds[0].State(agentA)
	s1, _ := ds[1].State(agentA)
	if s0.Sequence != pending.State.Sequence || s1.Sequence != s0.Sequence || s0.Presence.ID != busy {
		t.Fatalf("writers at %d and %d, want both at %d", s0.Sequence, s1.Sequence, pending.State.Sequence)
	}
	if c := ds[0].Observe(ok(snap(busy, "Busy", "Busy", 1, t0.Add(3*time.Second)))); c != nil {
		t.Fatalf("after adopting, the first writer re-emits %v", c.Events)
	}
}

// TestReloadContinuesAnotherWritersSequence: a standby that loaded the
// bucket long ago takes over an agent another bridge kept advancing; after
// Reload its next event continues the stored sequence and describes the
// change from the stored presence.
func TestReloadContinuesAnotherWritersSequence(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	open := func() *detector.Detector {
		store, err := statebucket.Open(ctx, js, statebucket.Options{Bucket: "reload_test"})
		if err != nil {
			t.Fatal(err)
		}
		d, err := detector.New(detector.Options{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Load(ctx); err != nil {
			t.Fatal(err)
		}
		return d
	}
	t0 := time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC)
	leader := open()
	commit := func(d *detector.Detector, s source.Snapshot) {
		t.Helper()
		if c := d.Observe(ok(s)); c != nil {
			if err := d.Commit(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit(leader, snap(available, "Available", "Available", 1, t0))
	standby := open() // loads sequence 3 (first sight)
	commit(leader, snap(busy, "Busy", "Busy", 1, t0.Add(time.Minute)))
	stored, _ := leader.State(agentA)

	for _, reload := range []bool{false, true} {
		d := standby
		if reload {
			if err := d.Reload(ctx, []string{agentA}); err != nil {
				t.Fatalf("Reload: %v", err)
			}
		}
		c := d.Observe(ok(snap(offline, "Offline", "Offline", 0, t0.Add(time.Hour))))
		if c == nil {
			t.Fatal("no change observed")
		}
		first := c.Events[0]
		continues := first.Sequence == stored.Sequence+1
		if continues != reload {
			t.Fatalf("reload=%v: first sequence %d, stored %d", reload, first.Sequence, stored.Sequence)
		}
		if reload {
			if p := first.Data.(detector.PresenceChangedData).Previous; p == nil || p.ID != busy {
				t.Fatalf("previous presence %+v, want the stored Busy", p)
			}
			continue
		}
		d.Abandon(c)
	}
}

// TestOpenVerifyOnly: with managing off a missing bucket is an error, not
// created; an existing one opens.
func TestOpenVerifyOnly(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	if _, err := statebucket.Open(ctx, js, statebucket.Options{Bucket: "provisioned", VerifyOnly: true}); !errors.Is(err, statebucket.ErrBucketMissing) {
		t.Fatalf("Open of a missing bucket with VerifyOnly = %v, want ErrBucketMissing", err)
	}
	if _, err := js.KeyValue(ctx, "provisioned"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("the bucket was created anyway: %v", err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "provisioned"}); err != nil {
		t.Fatal(err)
	}
	if _, err := statebucket.Open(ctx, js, statebucket.Options{Bucket: "provisioned", VerifyOnly: true}); err != nil {
		t.Fatalf("Open of a provisioned bucket: %v", err)
	}
}
