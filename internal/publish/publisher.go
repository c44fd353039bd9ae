package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
)

// Defaults of [Options].
const (
	DefaultMaxPending     = 1024
	DefaultPublishTimeout = 5 * time.Second
	DefaultRetryInitial   = 100 * time.Millisecond
	DefaultRetryMax       = 5 * time.Second
	completionWorkers     = 4
)

// Options configure a [Publisher].
type Options struct {
	// Encoder encodes events; required.
	Encoder *Encoder
	// Stream is the stream name, for Status; default contract.Stream.
	Stream string
	// MaxPending is the window: how many events the publisher holds (queued,
	// awaiting their ack, or awaiting their done callback). A full window
	// blocks Enqueue. Default DefaultMaxPending.
	MaxPending int
	// PublishTimeout is how long an ack may take before the publish is
	// retried; default DefaultPublishTimeout.
	PublishTimeout time.Duration
	// RetryInitial and RetryMax bound the exponential backoff between
	// attempts to publish one event; defaults DefaultRetryInitial and
	// DefaultRetryMax.
	RetryInitial, RetryMax time.Duration
	// Logger receives failures and retries; default discards them.
	Logger *slog.Logger
	// Metrics counts events, duplicates, latency, window use, errors and
	// retries; may be nil.
	Metrics *Metrics
}

// ErrClosed is returned by Enqueue after Close began.
var ErrClosed = errors.New("publisher closed")

// ErrRejected wraps a publish JetStream refused for good (the message is too
// large); the events after it in the same agent's queue fail with it too, so
// no gap is ever published.
var ErrRejected = errors.New("JetStream rejected the event")

// Publisher publishes events to JetStream asynchronously within a bounded
// window, one event in flight per agent so that each agent's events are
// stored in sequence order; a failed or unacknowledged publish is retried
// (same message ID) before the agent's next event is sent, while other
// agents proceed.
//
// Every event is fenced: it is published with
// Nats-Expected-Last-Subject-Sequence set to the stream sequence of the
// agent's previous event (on the agent's subjects <prefix>.<agentId>.>), so
// the stream stores it only where it follows on from that event. When the
// fence fails, the agent's last message is read: if it is this very event
// (an earlier attempt landed) the publish succeeded; otherwise the agent's
// history moved on (another writer, or a message that is not this
// process's) and the agent's queued events fail with an error wrapping
// detector.ErrConflict. No second version of an event ID can be stored,
// however long a crash or partition lasted. Create it with [NewPublisher]
// and stop it with [Publisher.Close].
type Publisher struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	enc  *Encoder
	opts Options
	log  *slog.Logger
	m    *Metrics

	mu       sync.Mutex
	inUse    int                    // events held, released after their done callback
	space    chan struct{}          // closed when window space frees
	idle     chan struct{}          // closed when inUse drops to 0
	agents   map[string]*agentQueue // agents with events held
	inflight map[*nats.Msg]*item    // sent, awaiting ack or error
	parked   []*agentQueue          // waiting for the connection to return
	known    map[string]position    // per agent: its last event this process saw stored
	closing  bool
	stopped  bool
	waiters  int  // Enqueue calls waiting for space
	drained  bool // completion channels closed

	completions [completionWorkers]chan *batch
	stop        chan struct{}
	wg          sync.WaitGroup
	checks      sync.WaitGroup // duplicate acknowledgements being checked
	stream      jetstream.Stream
}

// position is where an agent's history ends: the stream sequence and the
// agent's event sequence of its last event.
type position struct {
	stream, seq uint64
}

type batch struct {
	done     func(uint64, error)
	agent    string
	size     int
	left     int // events not yet acknowledged
	enqueued time.Time
	finished bool   // done dispatched
	last     uint64 // stream sequence of the last event acknowledged
	err      error
}

type item struct {
	msg      *nats.Msg
	id       string // the event ID (Nats-Msg-Id), read without touching msg
	typ      string
	seq      uint64 // the event's sequence
	b        *batch
	attempts int
}

type agentQueue struct {
	id       string
	subjects string   // <prefix>.<agentId>.>: the fence's subject filter
	last     position // what items[0] must follow on the stream
	next     uint64   // the sequence the next enqueued event must have
	items    []*item  // FIFO; items[0] is in flight, retrying or parked when busy
	busy     bool     // items[0] is being handled (in flight, timer or parked)
	retry    *time.Timer
	failures int
}

// NewPublisher returns a publisher on nc. It owns goroutines until Close.
func NewPublisher(nc *nats.Conn, opts Options) (*Publisher, error) {
	if opts.Encoder == nil {
		return nil, errors.New("new publisher: encoder is required")
	}
	if opts.Stream == "" {
		opts.Stream = contract.Stream
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = DefaultPublishTimeout
	}
	if opts.RetryInitial <= 0 {
		opts.RetryInitial = DefaultRetryInitial
	}
	if opts.RetryMax < opts.RetryInitial {
		opts.RetryMax = max(DefaultRetryMax, opts.RetryInitial)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{
		nc:       nc,
		enc:      opts.Encoder,
		opts:     opts,
		log:      log.With("component", "publisher"),
		m:        opts.Metrics,
		space:    make(chan struct{}),
		idle:     make(chan struct{}),
		agents:   make(map[string]*agentQueue),
		inflight: make(map[*nats.Msg]*item),
		known:    make(map[string]position),
		stop:     make(chan struct{}),
	}
	close(p.idle)
	js, err := jetstream.New(nc,
		// The publisher bounds what is in flight itself; jetstream's own
		// limit must never stall a send made from the ack handler.
		jetstream.WithPublishAsyncMaxPending(opts.MaxPending*2+16),
		jetstream.WithPublishAsyncTimeout(opts.PublishTimeout),
		jetstream.WithPublishAsyncAckHandler(p.onAck),
		jetstream.WithPublishAsyncErrHandler(p.onError),
	)
	if err != nil {
		return nil, fmt.Errorf("new publisher: jetstream context: %w", err)
	}
	p.js = js
	for i := range p.completions {
		// At most one pending completion per held event: never blocks.
		p.completions[i] = make(chan *batch, opts.MaxPending+1)
		p.wg.Add(1)
		go p.runCompletions(p.completions[i])
	}
	status := nc.StatusChanged(nats.CONNECTED)
	p.wg.Add(1)
	go p.watch(status)
	return p, nil
}

// Enqueue queues events, all of one agent in sequence order, and returns once
// they are queued, blocking while the window is full (the backpressure on the
// source; a batch larger than the whole window waits for an empty window).
// afterStream is the stream sequence of the event the first one follows (0:
// the agent has none), as the caller last confirmed it; the publisher uses
// what it saw stored itself when that is newer. The events must continue
// the agent's sequence from what is queued or stored before them; a batch
// that does not is refused with an error wrapping detector.ErrConflict.
//
// done is called exactly once, on a publisher goroutine: with the stream
// sequence of the last event and nil once every event is stored (an
// earlier attempt of this very event that landed counts), with an error
// wrapping detector.ErrConflict when the agent's history on the stream moved
// on (the events were not stored), with an error wrapping ErrRejected if
// JetStream refused one for good, or with the Close context's error at
// shutdown. For one agent, done callbacks run in enqueue order; keep them
// short (they hold window space). ctx bounds only the wait for window
// space; when Enqueue returns an error nothing was queued and done is never
// called.
func (p *Publisher) Enqueue(ctx context.Context, afterStream uint64, events []detector.Event, done func(uint64, error)) error {
	if len(events) == 0 {
		return errors.New("enqueue events: no event")
	}
	agent := events[0].AgentID
	items := make([]item, len(events))
	ptrs := make([]*item, len(events))
	b := &batch{done: done, agent: agent, size: len(events), left: len(events)}
	for i, ev := range events {
		if ev.AgentID != agent {
			return fmt.Errorf("enqueue events: batch mixes agents %s and %s", agent, ev.AgentID)
		}
		if i > 0 && ev.Sequence <= events[i-1].Sequence {
			return fmt.Errorf("enqueue events of agent %s: sequence %d after %d", agent, ev.Sequence, events[i-1].Sequence)
		}
		msg, err := p.enc.Encode(ev)
		if err != nil {
			return fmt.Errorf("enqueue events of agent %s: %w", agent, err)
		}
		items[i] = item{msg: msg, id: ev.ID, typ: ev.Type, seq: ev.Sequence, b: b}
		ptrs[i] = &items[i]
	}

	p.mu.Lock()
	for {
		if p.closing {
			p.mu.Unlock()
			return fmt.Errorf("enqueue events of agent %s: %w", agent, ErrClosed)
		}
		if p.inUse == 0 || p.inUse+len(events) <= p.opts.MaxPending {
			break
		}
		space := p.space
		p.waiters++
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.waiters--
			p.mu.Unlock()
			return fmt.Errorf("enqueue events of agent %s: wait for publish window: %w", agent, ctx.Err())
		case <-space:
		}
		p.mu.Lock()
		p.waiters--
	}
	aq := p.agents[agent]
	if aq == nil {
		last, ok := p.known[agent]
		if !ok || last.stream < afterStream {
			// The caller read a newer position from the stream.
			last = position{stream: afterStream, seq: events[0].Sequence - 1}
		}
		aq = &agentQueue{id: agent, subjects: contract.AgentSubjects(p.enc.prefix, agent), last: last, next: last.seq + 1}
	}
	if events[0].Sequence != aq.next {
		p.mu.Unlock()
		return fmt.Errorf("enqueue events of agent %s: sequence %d where %d follows on: %w", agent, events[0].Sequence, aq.next, detector.ErrConflict)
	}
	p.agents[agent] = aq
	aq.next = events[len(events)-1].Sequence + 1
	if p.inUse == 0 {
		p.idle = make(chan struct{})
	}
	p.inUse += len(events)
	p.m.setWindow(p.inUse)
	b.enqueued = time.Now()
	aq.items = append(aq.items, ptrs...)
	send := p.takeHeadLocked(aq)
	p.mu.Unlock()
	if send != nil {
		p.send(send)
	}
	return nil
}

// takeHeadLocked marks the agent's first event as being handled and returns
// it for sending, or nil when the agent is already busy or has nothing (or
// the connection is down: the agent is parked until it returns).
func (p *Publisher) takeHeadLocked(aq *agentQueue) *item {
	if aq.busy || len(aq.items) == 0 || p.stopped {
		return nil
	}
	aq.busy = true
	if !p.nc.IsConnected() {
		p.parked = append(p.parked, aq)
		return nil
	}
	it := aq.items[0]
	it.msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(aq.last.stream, 10))
	it.msg.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, aq.subjects)
	p.inflight[it.msg] = it
	return it
}

// send publishes an item registered in p.inflight; it must be called without
// p.mu held (jetstream calls onError under its own lock).
func (p *Publisher) send(it *item) {
	it.attempts++
	if it.attempts > 1 {
		p.m.incRetry()
	}
	if _, err := p.js.PublishMsgAsync(it.msg); err != nil {
		p.onError(p.js, it.msg, err)
	}
}

// onAck handles a JetStream acknowledgement (jetstream's ack goroutine). A
// duplicate acknowledgement is checked against the stored event first, off
// the ack goroutine.
func (p *Publisher) onAck(_ jetstream.JetStream, msg *nats.Msg, ack *jetstream.PubAck) {
	if ack.Duplicate {
		p.check(msg, func(ctx context.Context, st jetstream.Stream) (*jetstream.RawStreamMsg, error) {
			return st.GetMsg(ctx, ack.Sequence)
		})
		return
	}
	p.acked(msg, ack.Sequence, false)
}

// check reads, off the callback goroutine, the stored message that decides
// an ambiguous answer: the message at a duplicate acknowledgement's
// sequence, or the agent's last message after the fence failed. If it is
// this very event (an earlier attempt landed, or a restarted bridge
// republished it) the publish succeeded. Otherwise the agent's history
// moved on without it: the agent's queued events fail with an error
// wrapping detector.ErrConflict, so that the caller adopts the stream's
// history. When the stored message cannot be read, the publish is retried
// (and checked again).
func (p *Publisher) check(msg *nats.Msg, read func(context.Context, jetstream.Stream) (*jetstream.RawStreamMsg, error)) {
	p.mu.Lock()
	_, ok := p.inflight[msg]
	if ok {
		p.checks.Add(1)
	}
	p.mu.Unlock()
	if !ok {
		return
	}
	go func() {
		defer p.checks.Done()
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.PublishTimeout)
		defer cancel()
		st, err := p.streamHandle(ctx)
		var stored *jetstream.RawStreamMsg
		if err == nil {
			stored, err = read(ctx, st)
		}
		if err != nil {
			p.onError(p.js, msg, fmt.Errorf("read the stored event that decides the publish: %w", err))
			return
		}
		if storedIs(stored, msg) {
			p.acked(msg, stored.Sequence, true)
			return
		}
		p.conflict(msg, stored, err)
	}()
}

// storedIs reports whether the stored message is the event msg carries.
func storedIs(stored *jetstream.RawStreamMsg, msg *nats.Msg) bool {
	return stored.Subject == msg.Subject &&
		stored.Header.Get(jetstream.MsgIDHeader) == msg.Header.Get(jetstream.MsgIDHeader) &&
		stored.Header.Get(headerTime) == msg.Header.Get(headerTime) &&
		bytes.Equal(stored.Data, msg.Data)
}

// conflict fails the agent's queued events: its history on the stream moved
// on to the stored message, which is not the event msg carries. When the
// stored message is the very one the event follows (a stream leader that
// had not applied it yet answered the fence), the publish is retried.
func (p *Publisher) conflict(msg *nats.Msg, stored *jetstream.RawStreamMsg, _ error) {
	p.mu.Lock()
	it := p.inflight[msg]
	if it == nil {
		p.mu.Unlock()
		return
	}
	if aq := p.agents[it.b.agent]; aq != nil && aq.last.stream == stored.Sequence {
		p.mu.Unlock()
		p.onError(p.js, msg, fmt.Errorf("the fence of event %s answered before the stream caught up with stream sequence %d", it.id, stored.Sequence))
		return
	}
	delete(p.inflight, msg)
	aq := p.agents[it.b.agent]
	delete(p.known, aq.id)
	id := it.id
	err := fmt.Errorf("publish event %s: the agent's history on the stream moved on (its last message, stream sequence %d, is %q): %w",
		id, stored.Sequence, stored.Header.Get(jetstream.MsgIDHeader), detector.ErrConflict)
	for _, b := range p.failAgentLocked(aq, err) {
		p.dispatchLocked(b)
	}
	p.mu.Unlock()
	p.m.incError(reasonConflict)
	p.log.Info("the agent's history on the stream moved on; its queued events are dropped and it is adopted from the stream",
		"agent", aq.id, "event", id, "stream_sequence", stored.Sequence)
}

// streamHandle returns the stream, looked up once.
func (p *Publisher) streamHandle(ctx context.Context) (jetstream.Stream, error) {
	p.mu.Lock()
	st := p.stream
	p.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := p.js.Stream(ctx, p.opts.Stream)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", p.opts.Stream, err)
	}
	p.mu.Lock()
	p.stream = st
	p.mu.Unlock()
	return st, nil
}

// acked completes an event stored at stream sequence seq and sends the
// agent's next one; duplicate says it was found stored by an earlier attempt.
func (p *Publisher) acked(msg *nats.Msg, seq uint64, duplicate bool) {
	p.mu.Lock()
	it := p.inflight[msg]
	if it == nil {
		p.mu.Unlock()
		return
	}
	delete(p.inflight, msg)
	aq := p.agents[it.b.agent]
	aq.items[0] = nil
	aq.items = aq.items[1:]
	aq.busy = false
	aq.failures = 0
	aq.last = position{stream: seq, seq: it.seq}
	p.known[aq.id] = aq.last
	b := it.b
	b.left--
	b.last = seq
	var complete *batch
	if b.left == 0 && !b.finished {
		b.finished = true
		complete = b
	}
	next := p.takeHeadLocked(aq)
	if len(aq.items) == 0 && !aq.busy {
		delete(p.agents, aq.id)
	}
	// Counted before the batch's done runs: whoever it wakes sees them.
	if duplicate {
		p.m.incDuplicate()
	}
	p.m.incPublished(it.typ)
	p.m.observeLatency(time.Since(b.enqueued).Seconds())
	if complete != nil {
		p.dispatchLocked(complete)
	}
	p.mu.Unlock()

	if next != nil {
		p.send(next)
	}
}

// onError handles a failed publish. jetstream may call it while holding its
// own lock, so it must not publish: a retry is scheduled on a timer.
func (p *Publisher) onError(_ jetstream.JetStream, msg *nats.Msg, err error) {
	p.mu.Lock()
	it := p.inflight[msg]
	if it == nil {
		p.mu.Unlock()
		return
	}
	aq := p.agents[it.b.agent]
	reason, permanent := classify(err)
	if reason == reasonFenced {
		// The agent's last message is not the one this event follows:
		// read it to tell an earlier attempt that landed from history that
		// moved on. The event stays in flight until then.
		p.mu.Unlock()
		p.check(msg, func(ctx context.Context, st jetstream.Stream) (*jetstream.RawStreamMsg, error) {
			return st.GetLastMsgForSubject(ctx, aq.subjects)
		})
		return
	}
	delete(p.inflight, msg)
	p.m.incError(reason)
	if permanent {
		for _, b := range p.failAgentLocked(aq, fmt.Errorf("publish event %s: %w: %w", it.id, ErrRejected, err)) {
			p.dispatchLocked(b)
		}
		p.mu.Unlock()
		p.log.Error("JetStream rejected an event; the agent's queued events are dropped", "agent", aq.id,
			"event", it.id, "err", err)
		return
	}
	aq.failures++
	delay := backoffDelay(p.opts.RetryInitial, p.opts.RetryMax, aq.failures)
	if p.stopped {
		p.mu.Unlock()
		return
	}
	aq.retry = time.AfterFunc(delay, func() { p.retryHead(aq) })
	failures, attempts := aq.failures, it.attempts
	p.mu.Unlock()
	level := slog.LevelDebug
	if failures == 3 || failures%20 == 0 {
		level = slog.LevelWarn
	}
	p.log.Log(context.Background(), level, "publish failed, will retry", "agent", aq.id,
		"event", it.id, "attempt", attempts, "retry_in", delay, "reason", reason, "err", err)
}

// retryHead republishes the agent's first event after a backoff.
func (p *Publisher) retryHead(aq *agentQueue) {
	p.mu.Lock()
	aq.retry = nil
	if p.stopped || len(aq.items) == 0 {
		p.mu.Unlock()
		return
	}
	aq.busy = false
	it := p.takeHeadLocked(aq)
	p.mu.Unlock()
	if it != nil {
		p.send(it)
	}
}

// failAgentLocked fails every batch with events queued for the agent and
// empties its queue; it returns the batches whose done must be dispatched.
func (p *Publisher) failAgentLocked(aq *agentQueue, err error) []*batch {
	var failed []*batch
	for _, it := range aq.items {
		if !it.b.finished {
			it.b.finished = true
			it.b.err = err
			failed = append(failed, it.b)
		}
	}
	aq.items = nil
	aq.busy = false
	delete(p.agents, aq.id)
	return failed
}

// resumeParked sends the first event of every agent parked while the
// connection was down.
func (p *Publisher) resumeParked() {
	p.mu.Lock()
	if !p.nc.IsConnected() || len(p.parked) == 0 {
		p.mu.Unlock()
		return
	}
	parked := p.parked
	p.parked = nil
	var send []*item
	for _, aq := range parked {
		aq.busy = false
		if it := p.takeHeadLocked(aq); it != nil {
			send = append(send, it)
		}
	}
	p.mu.Unlock()
	if len(send) > 0 {
		p.log.Info("NATS is back, resuming publishing", "agents", len(send))
	}
	for _, it := range send {
		p.send(it)
	}
}

// watch resumes parked agents when the connection returns and refreshes the
// oldest-unpublished gauge.
func (p *Publisher) watch(status chan nats.Status) {
	defer p.wg.Done()
	defer p.nc.RemoveStatusListener(status)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-status:
			p.resumeParked()
		case <-tick.C:
			// A missed status event (its buffer is small) is caught here.
			p.resumeParked()
			p.m.setOldestAge(p.Status(context.Background()).OldestUnpublished.Seconds())
		}
	}
}

// dispatchLocked hands a finished batch to its agent's completion worker. The
// send never blocks: each channel holds more than the window's batches.
func (p *Publisher) dispatchLocked(b *batch) {
	if !p.drained {
		p.completions[shard(b.agent)] <- b
	}
}

// runCompletions calls done callbacks; batches of one agent always go to the
// same worker, in the order they completed, which is their enqueue order.
func (p *Publisher) runCompletions(ch chan *batch) {
	defer p.wg.Done()
	for b := range ch {
		if b.done != nil {
			b.done(b.last, b.err)
		}
		p.mu.Lock()
		p.inUse -= b.size
		p.m.setWindow(p.inUse)
		if p.waiters > 0 {
			close(p.space)
			p.space = make(chan struct{})
		}
		if p.inUse == 0 {
			close(p.idle)
		}
		p.mu.Unlock()
	}
}

// Forget drops what the publisher knows of the agents' positions on the
// stream (this process no longer publishes for them); agents with events
// queued keep theirs until the queue empties.
func (p *Publisher) Forget(agentIDs ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range agentIDs {
		if _, busy := p.agents[id]; !busy {
			delete(p.known, id)
		}
	}
}

// Flush waits until the window is empty: every event enqueued so far is
// acknowledged and its done callback returned.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush publisher: %w", ctx.Err())
	}
}

// Close stops accepting events, waits until everything in flight is
// acknowledged or ctx ends (then the remaining batches' done callbacks get
// ctx's error), and stops the publisher's goroutines. It does not close the
// NATS connection.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return errors.New("close publisher: already closed")
	}
	p.closing = true
	close(p.space) // wake Enqueue calls waiting for space: they see closing
	p.space = make(chan struct{})
	p.mu.Unlock()

	flushErr := p.Flush(ctx)
	p.checks.Wait() // bounded by PublishTimeout

	p.mu.Lock()
	p.stopped = true
	var failed []*batch
	if flushErr != nil {
		for _, aq := range p.agents {
			if aq.retry != nil {
				aq.retry.Stop()
			}
			failed = append(failed, p.failAgentLocked(aq, ctx.Err())...)
		}
		clear(p.inflight)
		p.parked = nil
	}
	for _, b := range failed {
		p.dispatchLocked(b)
	}
	p.drained = true
	for _, ch := range p.completions {
		close(ch)
	}
	p.mu.Unlock()
	close(p.stop)
	p.wg.Wait()
	if flushErr != nil {
		return fmt.Errorf("close publisher: %d events unpublished: %w", p.heldEvents(failed), flushErr)
	}
	return nil
}

func (p *Publisher) heldEvents(bs []*batch) int {
	n := 0
	for _, b := range bs {
		n += b.left
	}
	return n
}

// Status is the publisher's state for readiness checks.
type Status struct {
	// Connected is whether the NATS connection is up.
	Connected bool
	// StreamPresent is whether the stream could be looked up (false when not
	// connected); StreamErr says why not.
	StreamPresent bool
	StreamErr     error
	// WindowInUse and MaxPending: events held and the window size.
	WindowInUse, MaxPending int
	// OldestUnpublished is the age of the oldest event not yet acknowledged.
	OldestUnpublished time.Duration
	// Parked is how many agents wait for the connection to return.
	Parked int
}

// Ready reports whether the bridge can publish: connected and stream present.
func (s Status) Ready() bool { return s.Connected && s.StreamPresent }

// Status reports the publisher's state. When ctx can end (it has a deadline
// or can be cancelled) the stream is also looked up on the server within it;
// with context.Background only local state is read and StreamPresent mirrors
// Connected. The lookup takes at most Options.PublishTimeout.
func (p *Publisher) Status(ctx context.Context) Status {
	st := Status{Connected: p.nc.IsConnected(), MaxPending: p.opts.MaxPending}
	now := time.Now()
	p.mu.Lock()
	st.WindowInUse = p.inUse
	st.Parked = len(p.parked)
	for _, aq := range p.agents {
		if len(aq.items) > 0 {
			if age := now.Sub(aq.items[0].b.enqueued); age > st.OldestUnpublished {
				st.OldestUnpublished = age
			}
		}
	}
	p.mu.Unlock()
	if ctx.Done() == nil {
		st.StreamPresent = st.Connected
		return st
	}
	if !st.Connected {
		st.StreamErr = errors.New("not connected to NATS")
		return st
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.PublishTimeout)
	defer cancel()
	if _, err := p.js.Stream(ctx, p.opts.Stream); err != nil {
		st.StreamErr = fmt.Errorf("look up stream %s: %w", p.opts.Stream, err)
		return st
	}
	st.StreamPresent = true
	return st
}

// classify names a publish failure for the errors metric and says whether it
// is permanent (retrying cannot help).
func classify(err error) (reason string, permanent bool) {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return reasonRejected, true
	case errors.As(err, &apiErr):
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return reasonFenced, false
		case jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return reasonRejected, true
		case jetstream.JSErrCodeStreamNotFound:
			return reasonNoStream, false
		}
		return reasonOther, false
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return reasonTimeout, false
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrReconnectBufExceeded):
		return reasonDisconnected, false
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return reasonNoStream, false
	}
	return reasonOther, false
}

// backoffDelay is the exponential backoff after n consecutive failures, with
// ±20% jitter.
func backoffDelay(initial, limit time.Duration, n int) time.Duration {
	d := initial
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	return d - d/10 + jitter
}

// shard picks the completion worker of an agent (FNV-1a).
func shard(agent string) int {
	h := uint32(2166136261)
	for i := 0; i < len(agent); i++ {
		h ^= uint32(agent[i])
		h *= 16777619
	}
	return int(h % completionWorkers)
}
