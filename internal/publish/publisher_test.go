package publish

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/natstest"
)

// eventSource hands out each agent's events with consecutive sequences.
type eventSource struct {
	r    *rand.Rand
	next map[int]uint64
}

func newEventSource(seed uint64) *eventSource {
	return &eventSource{r: rand.New(rand.NewPCG(seed, seed)), next: map[int]uint64{}}
}

// batch returns n consecutive events of agent i.
func (s *eventSource) batch(i, n int) []detector.Event {
	evs := make([]detector.Event, n)
	for k := range evs {
		s.next[i]++
		evs[k] = testEvent(s.r, i, s.next[i])
	}
	return evs
}

// streamContents reads the whole stream and returns, per agent, the sequences
// in stream order, failing on an event the SDK cannot decode.
func streamContents(t *testing.T, js jetstream.JetStream, stream string) map[string][]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Right after a stream leader change the new leader may not answer yet
	// ("no responders"): read the whole stream again until it does.
	for {
		got, err := readStream(ctx, js, stream)
		if err == nil {
			return got
		}
		if errors.Is(err, errStoredEvent) || ctx.Err() != nil {
			t.Fatalf("read the stream: %v", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // the pace of the retries, not a synchronisation
		}
	}
}

// errStoredEvent marks a stored message that is not a valid event.
var errStoredEvent = errors.New("stored event")

// readStream reads the stream once: every event's sequence by agent.
func readStream(ctx context.Context, js jetstream.JetStream, stream string) (map[string][]uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	got := map[string][]uint64{}
	if info.State.Msgs == 0 {
		return got, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	for n := uint64(0); n < info.State.Msgs; {
		batch, err := cons.Fetch(int(min(500, info.State.Msgs-n)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		for m := range batch.Messages() {
			n++
			ce, err := Decode(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			if err != nil {
				return nil, fmt.Errorf("%w: decode: %w", errStoredEvent, err)
			}
			seq, err := ParseSequence(ce)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", errStoredEvent, err)
			}
			got[ce.Subject()] = append(got[ce.Subject()], seq)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("fetch batch: %w", err)
		}
	}
	return got, nil
}

// checkExactlyOnceInOrder checks that every agent's stored sequences are
// 1..want[agent], in order, each once.
func checkExactlyOnceInOrder(t *testing.T, got map[string][]uint64, want map[int]uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("stream holds events of %d agents, want %d", len(got), len(want))
	}
	for i, n := range want {
		seqs := got[testAgentID(i)]
		if uint64(len(seqs)) != n {
			t.Errorf("agent %d: %d events stored, want %d (%v)", i, len(seqs), n, seqs)
			continue
		}
		for k, s := range seqs {
			if s != uint64(k+1) {
				t.Errorf("agent %d: event %d has sequence %d: lost, duplicated or out of order (%v)", i, k, s, seqs)
				break
			}
		}
	}
}

type testPub struct {
	*Publisher
	nc  *nats.Conn
	js  jetstream.JetStream
	reg *prometheus.Registry
	m   *Metrics
}

func newTestPublisher(t *testing.T, url string, opts Options, stream StreamOptions) *testPub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	nc, err := Connect(ctx, ConnOptions{URL: url, ReconnectWait: 50 * time.Millisecond, Metrics: m})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if stream.Name != "" || stream.Manage {
		for {
			attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
			_, err := EnsureStream(attempt, js, stream)
			cancelAttempt()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("ensure stream: %v", err)
			}
			// A cluster elects its meta leader first: try again.
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	opts.Encoder = testEncoder(t)
	opts.Metrics = m
	p, err := NewPublisher(nc, opts)
	if err != nil {
		t.Fatalf("new publisher: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return &testPub{Publisher: p, nc: nc, js: js, reg: reg, m: m}
}

// Publish enqueues events and waits until they are stored.
func (p *testPub) Publish(ctx context.Context, events []detector.Event) error {
	res := make(chan error, 1)
	if err := p.Enqueue(ctx, 0, events, func(_ uint64, err error) { res <- err }); err != nil {
		return err
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// doneCounter collects done callbacks and checks per-agent order.
type doneCounter struct {
	mu    sync.Mutex
	errs  []error
	last  map[string]uint64
	order []string
	ok    atomic.Int64
	// done counts the events whose callback ran, published or failed. A
	// callback runs before the publisher frees the events' window space.
	done   atomic.Int64
	signal chan struct{}
}

func newDoneCounter() *doneCounter {
	return &doneCounter{last: map[string]uint64{}, signal: make(chan struct{}, 1)}
}

func (d *doneCounter) callback(evs []detector.Event) func(uint64, error) {
	agent, first, last := evs[0].AgentID, evs[0].Sequence, evs[len(evs)-1].Sequence
	return func(_ uint64, err error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if err != nil {
			d.errs = append(d.errs, err)
		} else {
			d.ok.Add(int64(last - first + 1))
		}
		d.done.Add(int64(last - first + 1))
		if prev := d.last[agent]; prev+1 != first {
			d.order = append(d.order, fmt.Sprintf("agent %s: done for %d..%d after %d", agent, first, last, prev))
		}
		d.last[agent] = last
		select {
		case d.signal <- struct{}{}:
		default:
		}
	}
}

func (d *doneCounter) check(t *testing.T, wantOK int64) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.errs) > 0 {
		t.Errorf("%d done callbacks failed, first: %v", len(d.errs), d.errs[0])
	}
	if len(d.order) > 0 {
		t.Errorf("done callbacks out of order: %v", d.order[:min(5, len(d.order))])
	}
	if got := d.ok.Load(); got != wantOK {
		t.Errorf("done reported %d events published, want %d", got, wantOK)
	}
}

func TestPublisherSDKConsumerDecodes(t *testing.T) {
	srv := startServer(t, nil)
	p := newTestPublisher(t, srv.ClientURL(), Options{}, StreamOptions{Manage: true})
	src := newEventSource(1)
	var sent []detector.Event
	for i := range 5 {
		evs := src.batch(i, 3)
		sent = append(sent, evs...)
		if err := p.Publish(context.Background(), evs); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	consumer, err := cejs.NewConsumerFromConn(p.nc, contract.Stream, "ccaas.agents.>", nil,
		[]nats.SubOpt{nats.BindStream(contract.Stream), nats.DeliverAll(), nats.AckNone()})
	if err != nil {
		t.Fatalf("SDK consumer: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inbound := make(chan error, 1)
	go func() { inbound <- consumer.OpenInbound(ctx) }()
	enc := testEncoder(t)
	for k := range sent {
		msg, err := consumer.Receive(ctx)
		if err != nil {
			t.Fatalf("receive %d: %v", k, err)
		}
		got, err := binding.ToEvent(ctx, msg)
		if err != nil {
			t.Fatalf("SDK decode: %v", err)
		}
		want, err := enc.CloudEvent(sent[k])
		if err != nil {
			t.Fatal(err)
		}
		if !sameEvent(got, &want) {
			t.Fatalf("received\n%s\nwant\n%s", got, &want)
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("received event invalid: %v", err)
		}
	}
	cancel()
	if err := <-inbound; err != nil {
		t.Errorf("SDK consumer: %v", err)
	}
	_ = consumer.Close(context.Background())
	if got := testutil.ToFloat64(p.m.published.WithLabelValues(sent[0].Type)); got == 0 {
		t.Errorf("published metric for %s is 0", sent[0].Type)
	}
}

// TestPublisherEarlierAttemptThatLandedIsSuccess: a publish whose earlier
// attempt was stored (its acknowledgement was lost, or a restarted process
// publishes exactly what its predecessor stored) finds its own event at the
// end of the agent's history and succeeds, counted as a duplicate, without
// storing it twice.
func TestPublisherEarlierAttemptThatLandedIsSuccess(t *testing.T) {
	srv := startServer(t, nil)
	p := newTestPublisher(t, srv.ClientURL(), Options{}, StreamOptions{Manage: true})
	ctx := context.Background()
	evs := newEventSource(2).batch(7, 2)
	if err := p.Publish(ctx, evs); err != nil {
		t.Fatalf("publish: %v", err)
	}
	st, err := p.js.Stream(ctx, contract.Stream)
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Another process, knowing only that the first event is stored.
	q := newTestPublisher(t, srv.ClientURL(), Options{}, StreamOptions{})
	res := make(chan error, 1)
	if err := q.Enqueue(ctx, first.Sequence, evs[1:], func(_ uint64, err error) { res <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("republishing the stored last event: %v", err)
	}
	if got := testutil.ToFloat64(q.m.duplicates); got != 1 {
		t.Errorf("duplicates = %v, want 1", got)
	}
	checkExactlyOnceInOrder(t, streamContents(t, p.js, contract.Stream), map[int]uint64{7: 2})
}

// TestPublisherOrderUnderRetries publishes into a stream that refuses new
// messages beyond a limit (discard new) so publishes of many agents fail and
// are retried; raising the limit lets them through. Each agent's events must
// be stored in sequence order, each once.
func TestPublisherOrderUnderRetries(t *testing.T) {
	srv := startServer(t, nil)
	_, js := connectJS(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := jetstream.StreamConfig{
		Name: contract.Stream, Subjects: []string{"ccaas.agents.>"}, MaxAge: DefaultStreamMaxAge,
		Duplicates: DefaultDuplicateWindow, MaxMsgs: 50, Discard: jetstream.DiscardNew,
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	p := newTestPublisher(t, srv.ClientURL(), Options{MaxPending: 1024, RetryInitial: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond}, StreamOptions{})
	src := newEventSource(3)
	dc := newDoneCounter()
	const agents, rounds = 40, 10
	for round := range rounds {
		for i := range agents {
			evs := src.batch(i, 1+(i+round)%3)
			if err := p.Enqueue(ctx, 0, evs, dc.callback(evs)); err != nil {
				t.Fatalf("enqueue: %v", err)
			}
		}
	}
	// Wait until the limit made publishes fail, then lift it.
	for testutil.ToFloat64(p.m.retries) < 20 {
		select {
		case <-ctx.Done():
			t.Fatal("no retries happened")
		case <-dc.signal:
		case <-time.After(10 * time.Millisecond):
		}
	}
	cfg.MaxMsgs = -1
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("lift limit: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	want := map[int]uint64{}
	var total int64
	for i, n := range src.next {
		want[i] = n
		total += int64(n)
	}
	dc.check(t, total)
	checkExactlyOnceInOrder(t, streamContents(t, js, contract.Stream), want)
	if got := p.Status(ctx); got.WindowInUse != 0 || !got.Ready() {
		t.Errorf("status after flush %+v", got)
	}
}

func TestPublisherWindowBlocksEnqueue(t *testing.T) {
	srv := startServer(t, nil)
	// No stream yet: nothing can be acknowledged, so the window fills.
	p := newTestPublisher(t, srv.ClientURL(), Options{MaxPending: 4, RetryInitial: 10 * time.Millisecond}, StreamOptions{})
	src := newEventSource(4)
	dc := newDoneCounter()
	for i := range 4 {
		evs := src.batch(i, 1)
		if err := p.Enqueue(context.Background(), 0, evs, dc.callback(evs)); err != nil {
			t.Fatalf("enqueue: %v", err)
		}
	}
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := p.Enqueue(short, 0, src.batch(9, 1), func(uint64, error) { t.Error("done called for an event never queued") })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Enqueue into a full window: %v, want deadline exceeded", err)
	}
	st := p.Status(context.Background())
	if st.WindowInUse != 4 {
		t.Errorf("window in use %d, want 4", st.WindowInUse)
	}
	if st := p.Status(short); st.Ready() {
		t.Errorf("ready without a stream: %+v", st)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if _, err := EnsureStream(ctx, p.js, StreamOptions{Manage: true}); err != nil {
		t.Fatalf("ensure stream: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	dc.check(t, 4)
}

func TestPublisherCloseFailsWhatIsLeft(t *testing.T) {
	srv := startServer(t, nil)
	p := newTestPublisher(t, srv.ClientURL(), Options{RetryInitial: 10 * time.Millisecond}, StreamOptions{})
	evs := newEventSource(5).batch(1, 2)
	res := make(chan error, 2)
	if err := p.Enqueue(context.Background(), 0, evs, func(_ uint64, err error) { res <- err }); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want deadline exceeded", err)
	}
	if err := <-res; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("done = %v, want deadline exceeded", err)
	}
	if err := p.Enqueue(context.Background(), 0, evs, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Close = %v, want ErrClosed", err)
	}
	select {
	case err := <-res:
		t.Fatalf("done called twice (%v)", err)
	default:
	}
}

func TestPublisherRejectsBadBatches(t *testing.T) {
	srv := startServer(t, nil)
	p := newTestPublisher(t, srv.ClientURL(), Options{}, StreamOptions{Manage: true})
	src := newEventSource(6)
	mixed := append(src.batch(1, 1), src.batch(2, 1)...)
	backwards := src.batch(3, 2)
	backwards[0], backwards[1] = backwards[1], backwards[0]
	for name, evs := range map[string][]detector.Event{"mixed agents": mixed, "sequence backwards": backwards} {
		if err := p.Enqueue(context.Background(), 0, evs, func(uint64, error) { t.Errorf("%s: done called", name) }); err == nil {
			t.Errorf("%s: Enqueue accepted", name)
		}
	}
}

// TestPublisherSurvivesOutage stops the server for seconds while events keep
// being enqueued, restarts it on the same store and port, and checks that
// every event arrived once, in order per agent.
func TestPublisherSurvivesOutage(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := embeddednats.Start(ctx, embeddednats.Options{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	addr := srv.Addr()
	p := newTestPublisher(t, srv.ClientURL(), Options{MaxPending: 64, PublishTimeout: time.Second,
		RetryInitial: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}, StreamOptions{Manage: true})

	src := newEventSource(7)
	dc := newDoneCounter()
	const agents = 50
	var produced atomic.Int64
	producerDone := make(chan error, 1)
	stopProducing := make(chan struct{})
	go func() {
		for round := 0; ; round++ {
			for i := range agents {
				select {
				case <-stopProducing:
					producerDone <- nil
					return
				default:
				}
				evs := src.batch(i, 1+(i+round)%2)
				if err := p.Enqueue(ctx, 0, evs, dc.callback(evs)); err != nil {
					producerDone <- err
					return
				}
				produced.Add(int64(len(evs)))
			}
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	waitFor("events before the outage", func() bool { return dc.ok.Load() > 200 })
	srv.Shutdown()
	outage := time.Now()
	// The window fills and the source is held back.
	waitFor("a full window while disconnected", func() bool {
		st := p.Status(context.Background())
		return st.WindowInUse >= 60 && !st.Connected
	})
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	if st := p.Status(short); st.Ready() {
		t.Errorf("ready during the outage: %+v", st)
	}
	cancelShort()
	// Backpressure, asserted on the mechanism rather than on how fast the
	// machine runs the producer: Enqueue admits events only into free
	// window space, and space is freed only after an event's callback, so
	// the source can never be more than MaxPending events ahead of the
	// callbacks. The producer loops without pause, so without backpressure
	// it would be thousands ahead within the outage. (Callbacks may still
	// run during the outage for events acknowledged just before it.)
	const maxPending = 64
	ahead := func() int64 {
		p := produced.Load() // read first: the callbacks only grow
		return p - dc.done.Load()
	}
	for {
		if a := ahead(); a > maxPending {
			t.Fatalf("the source is %d events ahead of the callbacks during the outage, beyond the window of %d", a, maxPending)
		}
		if time.Since(outage) >= 3*time.Second { // the outage lasts three seconds
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("timed out during the outage")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if st := p.Status(context.Background()); st.Connected {
		t.Fatalf("connected during the outage: %+v", st)
	}
	srv2, err := embeddednats.Start(ctx, embeddednats.Options{Listen: addr, DataDir: dir})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer srv2.Shutdown()
	base := dc.ok.Load()
	waitFor("events after the outage", func() bool { return dc.ok.Load() > base+200 })
	close(stopProducing)
	if err := <-producerDone; err != nil {
		t.Fatalf("producer: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	want := map[int]uint64{}
	for i, n := range src.next {
		want[i] = n
	}
	dc.check(t, produced.Load())
	checkExactlyOnceInOrder(t, streamContents(t, p.js, contract.Stream), want)
	if got := testutil.ToFloat64(p.m.reconnects); got < 1 {
		t.Errorf("reconnects metric %v, want >= 1", got)
	}
}

// TestPublisherClusterLeaderLoss runs a three-node cluster with a stream of
// three replicas and shuts the stream leader down mid-run.
func TestPublisherClusterLeaderLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	routePorts := natstest.FreePorts(t, 3)
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(p))
	}
	servers := map[string]*embeddednats.Server{}
	var urls []string
	cluster := clusterName()
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		srv, err := embeddednats.Start(ctx, embeddednats.Options{
			Listen: "127.0.0.1:-1", DataDir: t.TempDir(), ServerName: name, ReadyTimeout: time.Minute, // a loaded runner can take long to form the cluster; this only catches a hang
			Configure: func(o *server.Options) error {
				o.Cluster = server.ClusterOpts{Name: cluster, Host: "127.0.0.1", Port: routePorts[i]}
				o.Routes = server.RoutesFromStr(joinComma(routes))
				return nil
			},
		})
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		servers[name] = srv
		t.Cleanup(srv.Shutdown)
		urls = append(urls, srv.ClientURL())
	}
	p := newTestPublisher(t, joinComma(urls), Options{MaxPending: 256, PublishTimeout: time.Second,
		RetryInitial: 20 * time.Millisecond, RetryMax: 300 * time.Millisecond},
		StreamOptions{Manage: true, Replicas: 3, DuplicateWindow: time.Minute})

	src := newEventSource(8)
	dc := newDoneCounter()
	const agents = 60
	var produced int64
	enqueueRound := func(round int) {
		for i := range agents {
			evs := src.batch(i, 1+(i+round)%2)
			if err := p.Enqueue(ctx, 0, evs, dc.callback(evs)); err != nil {
				t.Fatalf("enqueue: %v", err)
			}
			produced += int64(len(evs))
		}
	}
	for round := range 5 {
		enqueueRound(round)
	}
	st, err := p.js.Stream(ctx, contract.Stream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("stream leader unknown: %v", err)
	}
	leader := info.Cluster.Leader
	servers[leader].Shutdown()
	for round := 5; round < 15; round++ {
		enqueueRound(round)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	want := map[int]uint64{}
	for i, n := range src.next {
		want[i] = n
	}
	dc.check(t, produced)
	checkExactlyOnceInOrder(t, streamContents(t, p.js, contract.Stream), want)
	info, err = st.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.Cluster.Leader == leader || info.Cluster.Leader == "" {
		t.Errorf("stream leader after shutdown = %q (was %q)", info.Cluster.Leader, leader)
	}
	t.Logf("leader %s shut down; new leader %s; retries %v", leader, info.Cluster.Leader, testutil.ToFloat64(p.m.retries))
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

// TestPublisherDuplicateOfAnotherWritersEventIsAConflict: JetStream
// acknowledges as a duplicate an event whose ID another writer already
// stored with other content. That event never reached consumers, so its
// batch and the agent's later events fail with detector.ErrConflict; an
// event whose ID holds exactly this event is a success.
func TestPublisherDuplicateOfAnotherWritersEventIsAConflict(t *testing.T) {
	srv := startServer(t, nil)
	p := newTestPublisher(t, srv.ClientURL(), Options{}, StreamOptions{Manage: true})
	ctx := context.Background()
	evs := newEventSource(3).batch(4, 3)

	// Another writer stored the first event's ID with an earlier observation.
	other := evs[0]
	other.Time = other.Time.Add(-time.Minute)
	msg, err := p.enc.Encode(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(other.ID)); err != nil {
		t.Fatalf("other writer: %v", err)
	}

	err = p.Publish(ctx, evs)
	if !errors.Is(err, detector.ErrConflict) {
		t.Fatalf("Publish = %v, want an error wrapping detector.ErrConflict", err)
	}
	stored := streamContents(t, p.js, contract.Stream)
	if n := len(stored[testAgentID(4)]); n != 1 {
		t.Fatalf("stream holds %d events of the agent, want only the other writer's one (the later events must not follow it)", n)
	}

	// Republishing exactly what is stored is a plain duplicate: success.
	if err := p.Publish(ctx, []detector.Event{other}); err != nil {
		t.Fatalf("republishing the stored event: %v", err)
	}
}

// TestPublisherFenceStoresOneHistoryPerAgent: two publishers (two bridges)
// publish the same agent's sequences with different content. The fence
// lets exactly one version of each event in; the other's batch fails with
// detector.ErrConflict, also long after any duplicate window, and a batch
// that follows on from the stored history (afterStream) is stored.
func TestPublisherFenceStoresOneHistoryPerAgent(t *testing.T) {
	srv := startServer(t, nil)
	a := newTestPublisher(t, srv.ClientURL(), Options{}, StreamOptions{Manage: true, DuplicateWindow: time.Second})
	b := newTestPublisher(t, srv.ClientURL(), Options{}, StreamOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src := newEventSource(2)
	mine := src.batch(1, 3)
	theirs := make([]detector.Event, len(mine))
	for i, e := range mine {
		e.Time = e.Time.Add(-time.Minute) // an earlier observation: other content, same IDs
		theirs[i] = e
	}
	if err := a.Publish(ctx, mine); err != nil {
		t.Fatalf("first writer: %v", err)
	}
	for _, wait := range []time.Duration{0, 1500 * time.Millisecond} {
		time.Sleep(wait) // past the duplicate window: the fence alone must hold
		err := b.Publish(ctx, theirs)
		if !errors.Is(err, detector.ErrConflict) {
			t.Fatalf("second writer after %s: %v, want an error wrapping detector.ErrConflict", wait, err)
		}
	}
	stored := streamContents(t, a.js, contract.Stream)
	if got := stored[testAgentID(1)]; !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("stream holds sequences %v of the agent, want [1 2 3] once", got)
	}
	// The second writer, told where the history ends, follows on from it.
	st, err := a.js.Stream(ctx, contract.Stream)
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(ctx, contract.AgentSubjects(contract.SubjectPrefix, testAgentID(1)))
	if err != nil {
		t.Fatal(err)
	}
	next := src.batch(1, 1)
	next[0].Sequence, next[0].ID = 4, detector.EventID(testAgentID(1), 4)
	res := make(chan error, 1)
	var at uint64
	if err := b.Enqueue(ctx, last.Sequence, next, func(seq uint64, err error) { at = seq; res <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("follow-on batch: %v", err)
	}
	if at <= last.Sequence {
		t.Fatalf("follow-on event stored at stream sequence %d, after %d", at, last.Sequence)
	}
	// A retry of a stored event (its ack was lost) is found stored: success.
	if err := b.Publish(ctx, next); err != nil && !errors.Is(err, detector.ErrConflict) {
		t.Fatalf("republishing: %v", err)
	}
}

// TestPublisherStatusIsTheSameWhateverTheContext checks that Status gives
// the same answer for a context that can never end and for one that can:
// while connected it looks the stream up on the server either way.
func TestPublisherStatusIsTheSameWhateverTheContext(t *testing.T) {
	srv := startServer(t, nil)
	p := newTestPublisher(t, srv.ClientURL(), Options{PublishTimeout: 2 * time.Second}, StreamOptions{})
	contexts := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"background", func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
		{"cancellable", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 10*time.Second)
		}},
	}
	phases := []struct {
		name          string
		enter         func(t *testing.T)
		connected     bool
		streamPresent bool
		streamErr     func(error) bool
	}{
		{
			name:      "no stream",
			enter:     func(*testing.T) {},
			connected: true,
			streamErr: func(err error) bool { return errors.Is(err, jetstream.ErrStreamNotFound) },
		},
		{
			name: "stream present",
			enter: func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := EnsureStream(ctx, p.js, StreamOptions{Manage: true}); err != nil {
					t.Fatalf("ensure stream: %v", err)
				}
			},
			connected: true, streamPresent: true,
			streamErr: func(err error) bool { return err == nil },
		},
		{
			name: "disconnected",
			enter: func(t *testing.T) {
				lost := p.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING)
				defer p.nc.RemoveStatusListener(lost)
				srv.Shutdown()
				deadline := time.NewTimer(10 * time.Second)
				defer deadline.Stop()
				for p.nc.IsConnected() {
					select {
					case <-lost:
					case <-deadline.C:
						t.Fatal("still connected after the server stopped")
					}
				}
			},
			streamErr: func(err error) bool { return err != nil },
		},
	}
	for _, ph := range phases {
		ph.enter(t)
		for _, c := range contexts {
			ctx, cancel := c.ctx()
			st := p.Status(ctx)
			cancel()
			if st.Connected != ph.connected || st.StreamPresent != ph.streamPresent || st.Ready() != (ph.connected && ph.streamPresent) {
				t.Errorf("%s, %s context: status %+v, want connected %v and stream present %v", ph.name, c.name, st, ph.connected, ph.streamPresent)
			}
			if !ph.streamErr(st.StreamErr) {
				t.Errorf("%s, %s context: stream error %v", ph.name, c.name, st.StreamErr)
			}
			if st.MaxPending != DefaultMaxPending || st.WindowInUse != 0 {
				t.Errorf("%s, %s context: window %d of %d, want 0 of %d", ph.name, c.name, st.WindowInUse, st.MaxPending, DefaultMaxPending)
			}
		}
	}
}
