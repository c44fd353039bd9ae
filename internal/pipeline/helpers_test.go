package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/statebucket"
	"github.com/ccaas/presence-bridge/internal/streamcheck"
	"github.com/ccaas/presence-bridge/schemas"
)

const (
	streamName = contract.Stream
	available  = "f523f628-c07a-e811-8162-000d3aa11f50"
	busy       = "efdeb843-c07a-e811-8162-000d3aa11f50"
	away       = "3dacae76-c07a-e811-8162-000d3aa11f50"
	offline    = "70139190-c07a-e811-8162-000d3aa11f50"
)

// startServer runs an in-process JetStream server with the events stream.
func startServer(t testing.TB) string {
	t.Helper()
	srv := natstest.Start(t)
	js := connect(t, srv.ClientURL())
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: streamName, Subjects: []string{contract.StreamSubjects(contract.SubjectPrefix)}, Duplicates: 2 * time.Minute, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL()
}

// connect returns a JetStream client on a connection of its own to url.
func connect(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Connect(t, url)
	return js
}

// connectConn returns a connection of its own to url.
func connectConn(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, _ := natstest.Connect(t, url)
	return nc
}

// testPublisher is the bridge's real publisher, closed once.
type testPublisher struct {
	*publish.Publisher
	once sync.Once
}

// newPublisher returns the bridge's real publisher on nc, with the
// project's CloudEvents encoder; it is closed when the test ends, or
// earlier with close.
func newPublisher(t *testing.T, nc *nats.Conn) *testPublisher {
	t.Helper()
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: "https://contoso.crm.dynamics.com", BridgeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := publish.NewPublisher(nc, publish.Options{Encoder: enc, Stream: streamName, PublishTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tp := &testPublisher{Publisher: pub}
	t.Cleanup(func() { tp.close(t) })
	return tp
}

// close closes the publisher once, after everything enqueued is
// acknowledged.
func (p *testPublisher) close(t *testing.T) {
	t.Helper()
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Error(err)
		}
	})
}

// bridge is one detector and pipeline on a connection of their own.
type bridge struct {
	det       *detector.Detector
	pipe      *pipeline.Pipeline
	pub       *testPublisher
	store     *statebucket.Store
	metrics   *pipeline.Metrics
	published chan detector.Event
	cancel    context.CancelFunc
	done      chan struct{}
}

// openStore connects to url and opens the state bucket on that connection.
func openStore(t *testing.T, url string) (*nats.Conn, jetstream.JetStream, *statebucket.Store) {
	t.Helper()
	nc := connectConn(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := statebucket.Open(t.Context(), js, statebucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, store
}

func startBridge(t *testing.T, url string, staleAfter time.Duration, now func() time.Time) *bridge {
	t.Helper()
	return startBridgeWrapped(t, url, staleAfter, now, wrappers{})
}

// wrappers replace parts of a test bridge with ones wrapping the real
// parts (nil: the real one).
type wrappers struct {
	view    func(pipeline.View) pipeline.View
	journal func(pipeline.Journal) pipeline.Journal
}

// startBridgeWrapped is startBridge whose pipeline records and reads the
// stream through w's wrappers.
func startBridgeWrapped(t *testing.T, url string, staleAfter time.Duration, now func() time.Time, w wrappers) *bridge {
	t.Helper()
	nc, js, store := openStore(t, url)
	var view pipeline.View = store
	if w.view != nil {
		view = w.view(store)
	}
	var journal pipeline.Journal = pipeline.NewStreamJournal(pipeline.JournalOptions{JetStream: js, Stream: streamName, SubjectPrefix: contract.SubjectPrefix})
	if w.journal != nil {
		journal = w.journal(journal)
	}
	det, err := detector.New(detector.Options{StaleAfter: staleAfter, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	states, err := store.LoadAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	det.Restore(states...)
	b := &bridge{det: det, store: store, published: make(chan detector.Event, 10000), done: make(chan struct{})}
	if b.metrics, err = pipeline.NewMetrics(nil); err != nil {
		t.Fatal(err)
	}
	b.pub = newPublisher(t, nc)
	b.pipe, err = pipeline.New(pipeline.Options{
		Detector: det, Publisher: b.pub.Publisher, View: view, StaleCheckInterval: 10 * time.Millisecond, Metrics: b.metrics,
		Journal:     journal,
		OnPublished: func(e detector.Event) { b.published <- e }, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	b.cancel = cancel
	go func() {
		defer close(b.done)
		_ = b.pipe.Run(ctx)
	}()
	t.Cleanup(func() { b.stop(t) })
	return b
}

func (b *bridge) stop(t *testing.T) {
	t.Helper()
	b.cancel()
	<-b.done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.pipe.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b.pub.close(t)
}

func observe(t *testing.T, p *pipeline.Pipeline, o source.Observation) {
	t.Helper()
	if err := p.Observe(t.Context(), o); err != nil {
		t.Fatal(err)
	}
}

type snap struct {
	agent, name, presence, presenceName, base string
	sessions                                  int
	login                                     int64
	at                                        time.Time
}

func (s snap) ok() source.Observation {
	login := s.login
	if login == 0 {
		login = 1700000000
	}
	return source.Observation{AgentID: s.agent, At: s.at, Class: source.ClassOK, Snapshot: &source.Snapshot{
		AgentID: s.agent, AgentName: s.name, PresenceID: s.presence, PresenceName: s.presenceName, BaseStatus: s.base,
		ActiveBrowserSessions: s.sessions, LoginTime: login, AllowedChannels: []string{"voice"}, DisabledChannels: []string{}, ObservedAt: s.at,
	}}
}

func failed(agent string, class source.ErrorClass, at time.Time) source.Observation {
	return source.Observation{AgentID: agent, At: at, Class: class, Err: fmt.Errorf("poll failed: %s", class)}
}

// streamEvent is one event read back from the stream as a consumer sees it.
type streamEvent struct {
	id, agent, typ string
	sequence       uint64
	data           json.RawMessage
	// previous and current are the data's previous and current as sent, or
	// "" when the data has none.
	previous, current string
}

// checked is what streamcheck reads of the event.
func (e streamEvent) checked() streamcheck.Event {
	return streamcheck.Event{ID: e.id, Agent: e.agent, Type: e.typ, Sequence: e.sequence, Previous: e.previous, Current: e.current}
}

// readStream decodes every message of the stream with the CloudEvents SDK
// and validates its data against the type's schema.
func readStream(t *testing.T, url string) []streamEvent {
	t.Helper()
	js := connect(t, url)
	ctx := t.Context()
	st, err := js.Stream(ctx, streamName)
	if err != nil {
		t.Fatal(err)
	}
	v, err := schemas.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	var out []streamEvent
	for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		raw, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ce, err := publish.Decode(&nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data})
		if err != nil {
			t.Fatal(err)
		}
		n, err := publish.ParseSequence(ce)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(ce.Type(), ce.Data()); err != nil {
			t.Fatalf("event %s: %v", ce.ID(), err)
		}
		if ce.DataSchema() != contract.DataSchema(ce.Type()) {
			t.Fatalf("event %s dataschema %s", ce.ID(), ce.DataSchema())
		}
		var d struct {
			Previous json.RawMessage `json:"previous"`
			Current  json.RawMessage `json:"current"`
		}
		if err := json.Unmarshal(ce.Data(), &d); err != nil {
			t.Fatalf("event %s: %v", ce.ID(), err)
		}
		out = append(out, streamEvent{id: ce.ID(), agent: ce.Subject(), typ: ce.Type(), sequence: n, data: ce.Data(),
			previous: string(d.Previous), current: string(d.Current)})
	}
	return out
}

// checkSequences asserts that every agent's events in the stream have the
// sequences 1..n in order, without gap or duplicate, under the IDs the
// detector gives them, and returns them by agent.
func checkSequences(t *testing.T, events []streamEvent) map[string][]streamEvent {
	t.Helper()
	by, problems := streamcheck.Sequences(events, streamEvent.checked)
	if len(problems) > 0 {
		t.Fatal(problems[0])
	}
	for _, e := range events {
		if e.id != detector.EventID(e.agent, e.sequence) {
			t.Fatalf("agent %s: event %s with sequence %d", e.agent, e.id, e.sequence)
		}
	}
	return by
}

func typesOf(events []streamEvent) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.typ)
	}
	return out
}

// checkFollowOn asserts that each presence.changed, sessions.changed and
// channels.changed has as previous the current of the agent's prior event
// of the same type (null for the first): no event contradicts the stream.
func checkFollowOn(t *testing.T, events []streamEvent) {
	t.Helper()
	for _, p := range streamcheck.Chained(events, streamEvent.checked) {
		t.Error(p)
	}
}
