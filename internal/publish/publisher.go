// publisher.go holds the Publisher: its options, its lifecycle (NewPublisher,
// Enqueue, Flush, Forget, Close) and Status. What happens to an event once
// it is queued is in the files named for each step: queue.go (per-agent
// queues, positions and the fenced send), ack.go (acknowledgements and the
// stored-message check), retry.go (retries of a failed publish) and
// completion.go (done callbacks and the window). errcodes.go names the
// JetStream error codes they compare.

package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
)

// Options configure a [Publisher].
type Options struct {
	// Encoder encodes events; required.
	Encoder *Encoder
	// Stream is the stream name: where the stored messages that decide
	// ambiguous answers are read, and what Status looks up; default
	// contract.Stream.
	Stream string
	// MaxPending is the window: how many events the publisher holds (queued,
	// awaiting their ack, or awaiting their done callback). A full window
	// blocks Enqueue. Default DefaultMaxPending.
	MaxPending int
	// PublishTimeout is how long an ack may take before the publish is
	// retried; default DefaultPublishTimeout. It also bounds the read of a
	// stored message that decides an ambiguous answer and Status's stream
	// lookup.
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

	// mu guards the fields from changed to stream, and the queues, batches
	// and items they hold (queue.go). It is never held across a network
	// call: sends, reads of stored messages and stream lookups happen after
	// it is released.
	mu sync.Mutex
	// changed is broadcast when window space frees, when the window
	// empties and when the state moves on; Enqueue and Flush wait on it.
	changed  *sync.Cond
	state    state
	inUse    int                    // events held, released after their done callback
	idles    uint64                 // how many times inUse dropped to 0, for Flush
	agents   map[string]*agentQueue // agents with events held
	inflight map[*nats.Msg]*item    // sent, awaiting ack or error
	parked   []*agentQueue          // waiting for the connection to return
	known    map[string]position    // per agent: its last event this process saw stored
	stream   jetstream.Stream       // looked up once, by streamHandle

	completions [completionWorkers]chan *batch // closed under mu, by Close
	stopWatch   context.CancelFunc             // ends watch
	wg          sync.WaitGroup                 // the completion workers and watch
	checks      sync.WaitGroup                 // stored messages being read (ack.go)
}

// state is where a Publisher is in its life; it only moves forward.
type state int

const (
	// stateOpen: Enqueue accepts events.
	stateOpen state = iota
	// stateClosing: Close began; Enqueue refuses events with ErrClosed
	// while what is held is still sent, retried and acknowledged.
	stateClosing
	// stateClosed: nothing is sent or retried any more and the completion
	// workers have been told to stop; every batch's done has been
	// dispatched.
	stateClosed
)

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
		agents:   make(map[string]*agentQueue),
		inflight: make(map[*nats.Msg]*item),
		known:    make(map[string]position),
	}
	p.changed = sync.NewCond(&p.mu)
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
	p.startCompletions()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	p.stopWatch = stopWatch
	status := nc.StatusChanged(nats.CONNECTED)
	p.wg.Add(1)
	go p.watch(watchCtx, status)
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
	b := &batch{done: done, agent: agent, size: len(events), left: len(events)}
	items, err := p.encodeBatch(b, events)
	if err != nil {
		return err
	}

	p.mu.Lock()
	if err := p.waitForSpaceLocked(ctx, len(events)); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("enqueue events of agent %s: %w", agent, err)
	}
	aq := p.agents[agent]
	if aq == nil {
		aq = p.newQueueLocked(agent, afterStream, events[0].Sequence)
	}
	if events[0].Sequence != aq.next {
		p.mu.Unlock()
		return fmt.Errorf("enqueue events of agent %s: sequence %d where %d follows on: %w", agent, events[0].Sequence, aq.next, detector.ErrConflict)
	}
	p.agents[agent] = aq
	aq.next = events[len(events)-1].Sequence + 1
	p.inUse += len(events)
	p.m.setWindow(p.inUse)
	b.enqueued = time.Now()
	aq.items = append(aq.items, items...)
	send := p.takeHeadLocked(aq)
	p.mu.Unlock()
	if send != nil {
		p.send(send)
	}
	return nil
}

// encodeBatch checks that events are one agent's in increasing sequence
// order and encodes each into an item of b.
func (p *Publisher) encodeBatch(b *batch, events []detector.Event) ([]*item, error) {
	items := make([]item, len(events))
	ptrs := make([]*item, len(events))
	for i, ev := range events {
		if ev.AgentID != b.agent {
			return nil, fmt.Errorf("enqueue events: batch mixes agents %s and %s", b.agent, ev.AgentID)
		}
		if i > 0 && ev.Sequence <= events[i-1].Sequence {
			return nil, fmt.Errorf("enqueue events of agent %s: sequence %d after %d", b.agent, ev.Sequence, events[i-1].Sequence)
		}
		msg, err := p.enc.Encode(ev)
		if err != nil {
			return nil, fmt.Errorf("enqueue events of agent %s: %w", b.agent, err)
		}
		items[i] = item{msg: msg, id: ev.ID, typ: ev.Type, seq: ev.Sequence, b: b}
		ptrs[i] = &items[i]
	}
	return ptrs, nil
}

// waitForSpaceLocked waits, with p.mu held (Wait releases it meanwhile),
// until the window has room for n events (or is empty, for a batch larger
// than the window). It fails with ErrClosed once Close began and with ctx's
// error when ctx ends first.
func (p *Publisher) waitForSpaceLocked(ctx context.Context, n int) error {
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		if p.state != stateOpen {
			return ErrClosed
		}
		if p.inUse == 0 || p.inUse+n <= p.opts.MaxPending {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for publish window: %w", err)
		}
		if stop == nil {
			stop = context.AfterFunc(ctx, p.wake)
		}
		p.changed.Wait()
	}
}

// wake wakes every Enqueue and Flush waiting on p.changed, so that they see
// their context ended. Taking the lock orders the wake-up after the waiter's
// check of its context.
func (p *Publisher) wake() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.changed.Broadcast()
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
// acknowledged and its done callback returned. A window that empties and
// fills again while Flush waits counts as empty.
func (p *Publisher) Flush(ctx context.Context) error {
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	for idles := p.idles; p.inUse > 0 && p.idles == idles; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("flush publisher: %w", err)
		}
		if stop == nil {
			stop = context.AfterFunc(ctx, p.wake)
		}
		p.changed.Wait()
	}
	return nil
}

// Close stops accepting events, waits until everything in flight is
// acknowledged or ctx ends (then the remaining batches' done callbacks get
// ctx's error), and stops the publisher's goroutines. It does not close the
// NATS connection.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.state != stateOpen {
		p.mu.Unlock()
		return errors.New("close publisher: already closed")
	}
	p.state = stateClosing
	p.changed.Broadcast() // Enqueue calls waiting for space see it and fail
	p.mu.Unlock()

	flushErr := p.Flush(ctx)
	p.checks.Wait() // bounded by PublishTimeout

	p.mu.Lock()
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
	p.state = stateClosed
	p.changed.Broadcast()
	p.stopCompletionsLocked()
	p.mu.Unlock()
	p.stopWatch()
	p.wg.Wait()
	if flushErr != nil {
		return fmt.Errorf("close publisher: %d events unpublished: %w", heldEvents(failed), flushErr)
	}
	return nil
}

// heldEvents counts the events of bs not yet acknowledged.
func heldEvents(bs []*batch) int {
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

// Status reports the publisher's state: the window, the parked agents and
// the oldest unpublished event from memory, and, when NATS is connected,
// whether the stream exists, looked up on the server (one request, bounded
// by ctx and by Options.PublishTimeout, whichever ends first). It behaves
// the same whatever ctx is. While NATS is not connected it makes no request
// and StreamErr says so.
func (p *Publisher) Status(ctx context.Context) Status {
	st := Status{Connected: p.nc.IsConnected(), MaxPending: p.opts.MaxPending}
	p.mu.Lock()
	st.WindowInUse = p.inUse
	st.Parked = len(p.parked)
	st.OldestUnpublished = p.oldestUnpublishedLocked(time.Now())
	p.mu.Unlock()
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

// oldestUnpublishedLocked returns the age at now of the oldest event not
// yet acknowledged.
func (p *Publisher) oldestUnpublishedLocked(now time.Time) time.Duration {
	var oldest time.Duration
	for _, aq := range p.agents {
		if len(aq.items) > 0 {
			oldest = max(oldest, now.Sub(aq.items[0].b.enqueued))
		}
	}
	return oldest
}
