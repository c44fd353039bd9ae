package statebucket_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/statebucket"
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

// TestRecordOnlyForward: Record writes a state unless the bucket holds a
// later one, whoever wrote it, and a value it cannot use is overwritten.
func TestRecordOnlyForward(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	open := func() *statebucket.Store {
		store, err := statebucket.Open(ctx, js, statebucket.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return store
	}
	a, b := open(), open()
	state := func(seq uint64) detector.AgentState {
		return detector.AgentState{AgentID: agentA, AgentName: "Ada", Sequence: seq, StreamSequence: seq * 10}
	}
	tests := []struct {
		name   string
		writer *statebucket.Store
		seq    uint64
		want   uint64
	}{
		{"first write creates", a, 3, 3},
		{"another writer goes further", b, 5, 5},
		{"a writer behind does not move it back", a, 4, 5},
		{"the first writer goes further again", a, 6, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.writer.Record(ctx, state(tt.seq)); err != nil {
				t.Fatalf("Record: %v", err)
			}
			got, ok, err := a.Get(ctx, agentA)
			if err != nil || !ok {
				t.Fatalf("Get = %v, %v", ok, err)
			}
			if got.Sequence != tt.want || got.StreamSequence != tt.want*10 {
				t.Fatalf("stored sequence %d (stream %d), want %d", got.Sequence, got.StreamSequence, tt.want)
			}
		})
	}
	kv, err := js.KeyValue(ctx, contract.StateBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, agentA, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if err := a.Record(ctx, state(7)); err != nil {
		t.Fatalf("Record over an unusable value: %v", err)
	}
	if got, ok, err := b.Get(ctx, agentA); err != nil || !ok || got.Sequence != 7 {
		t.Fatalf("after overwriting the unusable value: %+v, %v, %v", got, ok, err)
	}
}

// TestLoadAllSkipsWhatItCannotUse: undecodable values and values naming
// another agent than their key are skipped and counted, never an error;
// the good ones load.
func TestLoadAllSkipsWhatItCannotUse(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	m, err := statebucket.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	store, err := statebucket.Open(ctx, js, statebucket.Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	const agentB = "0c3f7f1c-3e1b-4a5e-9d7a-2b0b1d1e2f30"
	if err := store.Record(ctx, detector.AgentState{AgentID: agentA, Sequence: 4, StreamSequence: 40}); err != nil {
		t.Fatal(err)
	}
	kv := store.KeyValue()
	for key, value := range map[string]string{
		agentB:                                 `{"agentId":"` + agentA + `","sequence":9}`, // names another agent
		"6a0d3a52-77a9-4b59-8d29-5fd3b0a0f7b1": `{"agentId": 12`,                            // undecodable
	} {
		if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	states, err := store.LoadAll(ctx)
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	if len(states) != 1 || states[0].AgentID != agentA || states[0].Sequence != 4 || states[0].StreamSequence != 40 {
		t.Fatalf("LoadAll = %+v, want only agent A at sequence 4", states)
	}
	if _, ok, err := store.Get(ctx, agentB); ok || err != nil {
		t.Fatalf("Get of a value naming another agent = %v, %v; want skipped", ok, err)
	}
	if got := testutil.ToFloat64(m.Skipped("other_agent")); got != 2 {
		t.Errorf("skipped other_agent = %v, want 2 (LoadAll and Get)", got)
	}
	if got := testutil.ToFloat64(m.Skipped("undecodable")); got != 1 {
		t.Errorf("skipped undecodable = %v, want 1", got)
	}
}

// TestRestartEmitsOnlyDifferences: a detector restored from a bucket
// written by a previous process resumes its sequences and emits only what
// changed.
func TestRestartEmitsOnlyDifferences(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	store, err := statebucket.Open(ctx, js, statebucket.Options{Bucket: "restart_test"})
	if err != nil {
		t.Fatal(err)
	}
	newDetector := func() *detector.Detector {
		d, err := detector.New(detector.Options{})
		if err != nil {
			t.Fatal(err)
		}
		states, err := store.LoadAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d.Restore(states...)
		return d
	}
	t0 := time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC)

	d1 := newDetector()
	var stream uint64
	for _, s := range []source.Snapshot{
		snap(available, "Available", "Available", 1, t0),
		snap(busy, "Busy", "Busy", 1, t0.Add(time.Minute)),
	} {
		if c := d1.Observe(ok(s)); c != nil {
			stream += uint64(len(c.Events))
			if err := store.Record(ctx, d1.Confirm(c, stream)); err != nil {
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
				if c.AfterStream != stream {
					t.Errorf("change follows stream sequence %d, want %d (the last recorded)", c.AfterStream, stream)
				}
				for i, e := range c.Events {
					types = append(types, e.Type)
					if e.Sequence != before.Sequence+uint64(i)+1 {
						t.Errorf("event %d has sequence %d after restart at %d", i, e.Sequence, before.Sequence)
					}
				}
			}
			if !slices.Equal(types, tt.types) {
				t.Fatalf("events %v, want %v", types, tt.types)
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

// recordAsync calls RecordAsync and waits for its done.
func recordAsync(t *testing.T, s *statebucket.Store, st detector.AgentState) error {
	t.Helper()
	done := make(chan error, 1)
	s.RecordAsync(st, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("RecordAsync of sequence %d: done not called", st.Sequence)
		return nil
	}
}

// TestRecordAsyncOnlyForward: RecordAsync writes as Record does, forward
// only whoever wrote last, and a burst of one agent's states, some out of
// order, leaves the latest with every value the bucket held in between
// moving forward.
func TestRecordAsyncOnlyForward(t *testing.T) {
	ctx := t.Context()
	js := startJetStream(t)
	a, err := statebucket.Open(ctx, js, statebucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := statebucket.Open(ctx, js, statebucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	state := func(seq uint64) detector.AgentState {
		return detector.AgentState{AgentID: agentA, AgentName: "Ada", Sequence: seq, StreamSequence: seq * 10}
	}
	stored := func() uint64 {
		t.Helper()
		got, ok, err := b.Get(ctx, agentA)
		if err != nil || !ok {
			t.Fatalf("Get = %v, %v", ok, err)
		}
		return got.Sequence
	}
	for _, step := range []struct {
		name   string
		writer *statebucket.Store
		seq    uint64
		want   uint64
	}{
		{"first write creates", a, 3, 3},
		{"the writer goes further on the revision it knows", a, 4, 4},
		{"another writer goes further", b, 6, 6},
		{"a writer behind does not move it back", a, 5, 6},
		{"a writer whose revision is old goes further", a, 7, 7},
	} {
		if err := recordAsync(t, step.writer, state(step.seq)); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := stored(); got != step.want {
			t.Fatalf("%s: stored sequence %d, want %d", step.name, got, step.want)
		}
	}

	// A burst, watched: every value stored goes further than the one before.
	w, err := a.KeyValue().Watch(ctx, agentA, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	seqs := []uint64{8, 9, 12, 10, 11, 13, 20, 14, 15, 16, 17, 18, 19}
	dones := make(chan error, len(seqs))
	for _, seq := range seqs {
		a.RecordAsync(state(seq), func(err error) { dones <- err })
	}
	for range seqs {
		select {
		case err := <-dones:
			if err != nil {
				t.Fatalf("burst: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("burst: a done was not called")
		}
	}
	if got := stored(); got != 20 {
		t.Fatalf("after the burst: stored sequence %d, want 20", got)
	}
	var last uint64
	for last < 20 {
		select {
		case e := <-w.Updates():
			if e == nil {
				continue
			}
			var st detector.AgentState
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				t.Fatal(err)
			}
			if st.Sequence <= last {
				t.Fatalf("the bucket moved from sequence %d to %d", last, st.Sequence)
			}
			last = st.Sequence
		case <-time.After(30 * time.Second):
			t.Fatalf("watching the burst: stopped at sequence %d", last)
		}
	}
}
