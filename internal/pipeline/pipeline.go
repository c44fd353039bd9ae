// Package pipeline owns the bridge's protocol for each agent's history: it
// is the source.Sink that takes every poll result, asks the detector what
// changed, publishes the events fenced on the agent's last event on the
// stream and, once JetStream has stored them, records the agent's state in
// the state bucket (the derived current-state view). It also runs the stale
// check (presence.stale) and the optional snapshot loop (presence.snapshot).
//
// The stream is the single source of truth of each agent's history. Every
// event is published with the stream sequence of the agent's previous event
// as the expected last sequence of the agent's subjects, so JetStream stores
// it only where it follows on from that event (the Publisher). When the
// fence finds the history moved on (another bridge polling the same agent,
// a predecessor killed between publishing and recording, a message that is
// not this process's), the change is dropped, the agent's state is read
// back from the stream (the Journal) and adopted, and the latest
// observation is diffed again against it. Two writers therefore produce one
// history per agent, however long a crash or a partition lasted; leases
// only save paying the API twice.
//
// Backpressure: Observe blocks while the publisher's window is full, which
// holds back the poller of that agent. No lock is held across NATS I/O.
//
// See the package example for the wiring cmd/bridge uses: the pipeline is
// the poller's Sink, and is closed after the poller stops and before the
// publisher is closed.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/sync/errgroup"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/source"
)

// Publisher puts events on the stream, fenced. Enqueue takes one agent's
// events in sequence order, following on from the event at stream sequence
// afterStream (or from what the publisher itself stored later), blocks
// while the publisher's window is full, and calls done exactly once with
// the stream sequence of the last event when all of them are stored, or
// with an error (wrapping detector.ErrConflict when the agent's history on
// the stream moved on); done callbacks of one agent come in Enqueue order.
// Forget drops what it knows of agents this process no longer publishes
// for. *publish.Publisher implements it.
type Publisher interface {
	Enqueue(ctx context.Context, afterStream uint64, events []detector.Event, done func(streamSeq uint64, err error)) error
	Forget(agentIDs ...string)
}

// View records agents' states once their events are stored: the public
// current-state view. Record writes one state and returns once the view
// answered; RecordAsync writes it without waiting and calls done once with
// what Record would have returned (a later state of the agent recorded
// meanwhile may be written in its place). *statebucket.Store implements it.
type View interface {
	Record(ctx context.Context, state detector.AgentState) error
	RecordAsync(state detector.AgentState, done func(error))
	Forget(agentIDs ...string)
}

// Journal reads an agent's history back from the stream. Follow returns
// the agent's state as the stream holds it (nil: no event of the agent),
// starting from base, the last state known to be there (nil: none). Last
// returns the stream sequence of the agent's last message (0: none).
// *StreamJournal implements it.
type Journal interface {
	Follow(ctx context.Context, agentID string, base *detector.AgentState) (*detector.AgentState, error)
	Last(ctx context.Context, agentID string) (uint64, error)
}

// Options configures a Pipeline.
type Options struct {
	// Detector turns observations into changes; required.
	Detector *detector.Detector
	// Publisher publishes the events, fenced; required.
	Publisher Publisher
	// View records states once their events are stored; required.
	View View
	// Journal reads an agent's history back when the fence finds it moved
	// on; required.
	Journal Journal
	// Logger receives one line per failure; nil discards.
	Logger *slog.Logger
	// Metrics counts what the pipeline does; nil builds unregistered ones.
	Metrics *Metrics
	// StaleCheckInterval is how often agents are checked for staleness;
	// 0 means StaleCheckFor the detector's StaleAfter. The detector's
	// StaleAfter decides when one is.
	StaleCheckInterval time.Duration
	// SnapshotInterval is how often every agent gets a presence.snapshot;
	// 0 disables snapshots.
	SnapshotInterval time.Duration
	// CommitWorkers is how many goroutines handle publish outcomes (each
	// agent always on the same one, so in order): confirm the change and
	// hand its state to the view's RecordAsync; 0 means 4.
	CommitWorkers int
	// CommitTimeout bounds one read of an agent's history and one state
	// write of an adoption; 0 means 10 s. The view's own option bounds
	// its asynchronous writes.
	CommitTimeout time.Duration
	// OnPublished, when set, is called with every event once JetStream has
	// stored it, in sequence order per agent, from a commit worker: it must
	// not block for long. `bridge demo` prints each as a line.
	OnPublished func(detector.Event)
	// Beat, when set, is called on every stale check: the liveness
	// heartbeat of the pipeline's loops.
	Beat func()
	// Now is the clock of the stale and snapshot loops; nil means time.Now.
	Now func() time.Time
}

// Bounds of StaleCheckFor.
const (
	MinStaleCheck = time.Second
	MaxStaleCheck = 5 * time.Second
)

// StaleCheckFor is how often agents are checked for staleness by default
// when an agent is stale after staleAfter: a twentieth of it, between
// MinStaleCheck and MaxStaleCheck (5 s at the default 2.5 minutes of a 10 s
// interval), so presence.stale follows the threshold by at most that. Each
// check walks every agent of the detector.
func StaleCheckFor(staleAfter time.Duration) time.Duration {
	return min(max(staleAfter/20, MinStaleCheck), MaxStaleCheck)
}

// Pipeline is the source.Sink of the bridge. Build it with New, run its
// loops with Run, and stop it with Close.
type Pipeline struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics

	mu     sync.Mutex
	order  map[string]*orderLock // agents being produced for: produce and enqueue in sequence order
	flows  map[string]*flow      // agents with changes in flight or being adopted
	active map[string]struct{}   // agents this process polls; nil: every agent
	// behind are the agents whose confirmed state the view could not
	// record, each with the number of the failure that put it there
	// (behindN counts them): recordBehind retries them.
	behind  map[string]uint64
	behindN uint64

	closeMu sync.RWMutex
	closed  bool
	busy    int           // changes in flight and adoptions under way; guarded by mu
	quiet   chan struct{} // closed when busy drops to zero; guarded by mu
	queues  []chan job
	workers sync.WaitGroup
	stop    chan struct{} // closed when Close gives up: adoptions stop

	statsMu sync.Mutex
	stats   Stats
}

var _ source.Sink = (*Pipeline)(nil)

// orderLock is an agent's lock for producing and enqueueing its changes in
// sequence order. It exists while some goroutine holds or waits for it.
type orderLock struct {
	mu    sync.Mutex
	users int // holding or waiting; guarded by Pipeline.mu
}

// flow is an agent's changes between enqueue and record, and whether its
// history is being adopted from the stream.
type flow struct {
	pending  int
	idle     chan struct{} // closed when pending drops to zero
	adopting bool
}

type job struct {
	change    *detector.Change
	streamSeq uint64
	err       error // the publish outcome
}

// Stats are counters for a human summary (bridge demo).
type Stats struct {
	// Observations is the number of poll results taken.
	Observations uint64
	// Errors is the number of failed polls, failed publishes and failed
	// state writes.
	Errors uint64
	// Events counts published (stored) events by type.
	Events map[string]uint64
	// Commits is the number of states recorded.
	Commits uint64
	// Conflicts is the number of changes dropped because the agent's
	// history on the stream had moved on.
	Conflicts uint64
}

// New validates opts and starts the commit workers; Close stops them.
func New(opts Options) (*Pipeline, error) {
	if opts.Detector == nil || opts.Publisher == nil || opts.View == nil || opts.Journal == nil {
		return nil, errors.New("new pipeline: Detector, Publisher, View and Journal are required")
	}
	if opts.StaleCheckInterval < 0 || opts.SnapshotInterval < 0 || opts.CommitWorkers < 0 || opts.CommitTimeout < 0 {
		return nil, errors.New("new pipeline: intervals, timeouts and worker counts must not be negative")
	}
	if opts.StaleCheckInterval == 0 {
		opts.StaleCheckInterval = StaleCheckFor(opts.Detector.StaleAfter())
	}
	if opts.CommitWorkers == 0 {
		opts.CommitWorkers = 4
	}
	if opts.CommitTimeout == 0 {
		opts.CommitTimeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := opts.Metrics
	if m == nil {
		var err error
		if m, err = NewMetrics(nil); err != nil {
			return nil, err
		}
	}
	p := &Pipeline{
		opts: opts, log: log, metrics: m,
		order: map[string]*orderLock{}, flows: map[string]*flow{}, behind: map[string]uint64{},
		stop: make(chan struct{}), quiet: make(chan struct{}), stats: Stats{Events: map[string]uint64{}},
	}
	close(p.quiet)
	for range opts.CommitWorkers {
		q := make(chan job, 256)
		p.queues = append(p.queues, q)
		p.workers.Add(1)
		go p.commitLoop(q)
	}
	return p, nil
}

// SetAgents sets the agents this process polls. An agent leaving the set is
// forgotten by the detector, the publisher and the view: no stale, snapshot
// or other event is ever produced for it here (a change of it in flight
// still completes). An agent joining it is caught up with the stream in the
// background (see catchUp). Before SetAgents is first called every agent is
// taken.
func (p *Pipeline) SetAgents(ids []string) {
	want := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		if n, ok := source.NormalizeGUID(id); ok {
			want[n] = struct{}{}
		}
	}
	p.mu.Lock()
	var gone, added []string
	for id := range p.active {
		if _, ok := want[id]; !ok {
			gone = append(gone, id)
		}
	}
	for id := range want {
		if _, ok := p.active[id]; !ok {
			added = append(added, id)
		}
	}
	p.active = want
	if len(added) > 0 {
		p.workLocked(1) // Close waits for the catch-up, which stops early
	}
	p.mu.Unlock()
	if len(added) > 0 {
		go func() {
			defer p.work(-1)
			p.catchUp(added)
		}()
	}
	for _, id := range gone {
		// Under the agent's order lock: a change being produced for it
		// completes first, and the next sees it gone.
		unlock := p.lockOrder(id)
		p.opts.Detector.Forget(id)
		unlock()
	}
	if len(gone) > 0 {
		p.opts.Publisher.Forget(gone...)
		p.opts.View.Forget(gone...)
	}
}

// catchUpChecks is how many agents' last messages catchUp reads at once.
const catchUpChecks = 8

// Results of a catch-up check (Metrics.CatchUps).
const (
	catchUpCurrent = "current"
	catchUpBehind  = "behind"
	catchUpError   = "error"
)

var catchUpResults = []string{catchUpCurrent, catchUpBehind, catchUpError}

// catchUp checks each agent this process has just taken, with a recorded
// state, against the stream: an agent whose last message there is after
// the one its recorded state names (a predecessor killed between
// publishing and recording, another writer, a message not the bridge's)
// has its history adopted, so its first poll is diffed against what the
// stream says. Without it, an agent back where its recorded state left it
// would publish nothing, and the stream would keep saying where it no
// longer is until its next change. Checks that fail (NATS unreachable) are
// retried with backoff while the agents are still taken. It runs counted
// as work (Close waits for it) except while it waits to retry, and stops
// when Close begins.
func (p *Pipeline) catchUp(agentIDs []string) {
	ctx, cancel := p.untilStop()
	defer cancel()
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(time.Second), backoff.WithMaxInterval(30*time.Second), backoff.WithMaxElapsedTime(0))
	for {
		failed, err := p.checkAgainstStream(ctx, agentIDs)
		if len(failed) == 0 {
			return
		}
		p.log.Warn("agents' recorded states could not be checked against the stream; retrying", "agents", len(failed), "err", err)
		agentIDs = failed
		p.work(-1) // not waited for while waiting
		select {
		case <-ctx.Done():
		case <-time.After(b.NextBackOff()):
		}
		p.work(1)
		if p.closing() || ctx.Err() != nil {
			return
		}
	}
}

// checkAgainstStream is one pass of catchUp: it returns the agents whose
// check failed, with the first error.
func (p *Pipeline) checkAgainstStream(ctx context.Context, agentIDs []string) ([]string, error) {
	var (
		mu       sync.Mutex
		failed   []string
		firstErr error
	)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(catchUpChecks)
	for _, id := range agentIDs {
		if p.closing() {
			break
		}
		g.Go(func() error {
			if p.opts.Detector.Base(id) == nil || !p.quietAgent(id) {
				return nil // nothing recorded (its first sight meets the fence), or changes under way (they do)
			}
			rctx, rcancel := context.WithTimeout(ctx, p.opts.CommitTimeout)
			last, err := p.opts.Journal.Last(rctx, id)
			rcancel()
			// Read after the stream: a change of this process stored
			// meanwhile is either confirmed in base or still under way.
			base := p.opts.Detector.Base(id)
			switch {
			case err == nil && (base == nil || !p.quietAgent(id)):
			case err != nil:
				p.metrics.CatchUps.WithLabelValues(catchUpError).Inc()
				mu.Lock()
				failed = append(failed, id)
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			case last > base.StreamSequence:
				p.metrics.CatchUps.WithLabelValues(catchUpBehind).Inc()
				p.log.Info("the agent's recorded state is behind its history on the stream; adopting it", "agent", id, "stream_sequence", last)
				p.startAdoption(id)
			default:
				p.metrics.CatchUps.WithLabelValues(catchUpCurrent).Inc()
			}
			return nil
		})
	}
	_ = g.Wait()
	return failed, firstErr
}

// untilStop returns a context cancelled when Close gives up.
func (p *Pipeline) untilStop() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// quietAgent reports whether this process polls the agent and has no
// change of it in flight nor its history under adoption.
func (p *Pipeline) quietAgent(agentID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.active[agentID]; p.active != nil && !ok {
		return false
	}
	return p.flows[agentID] == nil
}

// closing reports whether Close has begun.
func (p *Pipeline) closing() bool {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	return p.closed
}

// takes reports whether this process polls the agent.
func (p *Pipeline) takes(agentID string) bool {
	takes, _ := p.standing(agentID)
	return takes
}

// Observe takes one poll result: the detector's change, if any, is enqueued
// for publishing. It blocks while the publisher's window is full. A result
// for an agent this process no longer polls is dropped.
func (p *Pipeline) Observe(ctx context.Context, o source.Observation) error {
	p.count(func(s *Stats) {
		s.Observations++
		if o.Class != source.ClassOK {
			s.Errors++
		}
	})
	return p.submit(ctx, o.AgentID,
		func() *detector.Change { return p.opts.Detector.Observe(o) },
		func() { p.opts.Detector.Note(o) })
}

// submit produces an agent's change under the agent's order lock and
// enqueues it, so that changes of one agent reach the publisher in sequence
// order whichever goroutine produced them. While the agent's history is
// being adopted from the stream nothing is produced: note records the
// observation for the adoption to diff.
func (p *Pipeline) submit(ctx context.Context, agentID string, produce func() *detector.Change, note func()) error {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed {
		return errors.New("pipeline closed")
	}
	defer p.lockOrder(agentID)()
	takes, adopting := p.standing(agentID)
	if !takes {
		return nil // not this process's, or left its set while waiting for the lock
	}
	if adopting {
		if note != nil {
			note()
		}
		return nil
	}
	c := produce()
	if c == nil {
		return nil
	}
	return p.enqueue(ctx, c)
}

// enqueue hands a change to the publisher; the agent's order lock is held.
func (p *Pipeline) enqueue(ctx context.Context, c *detector.Change) error {
	q := p.queue(c.AgentID)
	p.addPending(c.AgentID)
	err := p.opts.Publisher.Enqueue(ctx, c.AfterStream, c.Events, func(seq uint64, err error) { q <- job{change: c, streamSeq: seq, err: err} })
	if err != nil {
		err = fmt.Errorf("enqueue events of agent %s: %w", c.AgentID, err)
		q <- job{change: c, err: err}
		return err
	}
	return nil
}

// standing reports, in one look, whether this process polls the agent and
// whether its history is being adopted from the stream.
func (p *Pipeline) standing(agentID string) (takes, adopting bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active != nil {
		if _, ok := p.active[agentID]; !ok {
			return false, false
		}
	}
	f := p.flows[agentID]
	return true, f != nil && f.adopting
}

// work counts a change in flight or an adoption under way (n = ±1).
func (p *Pipeline) work(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.workLocked(n)
}

func (p *Pipeline) workLocked(n int) {
	if p.busy == 0 && n > 0 {
		p.quiet = make(chan struct{})
	}
	if p.busy += n; p.busy == 0 {
		close(p.quiet)
	}
}

func (p *Pipeline) addPending(agentID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.workLocked(1)
	f := p.flowLocked(agentID)
	if f.pending == 0 {
		f.idle = make(chan struct{})
	}
	f.pending++
}

func (p *Pipeline) flowLocked(agentID string) *flow {
	f := p.flows[agentID]
	if f == nil {
		f = &flow{}
		p.flows[agentID] = f
	}
	return f
}

func (p *Pipeline) donePending(agentID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.flows[agentID]
	if f == nil || f.pending == 0 {
		return
	}
	if f.pending--; f.pending == 0 {
		close(f.idle)
		if !f.adopting {
			delete(p.flows, agentID)
		}
	}
}

// waitIdle waits until none of the agent's changes is between enqueue and
// record, or Close gives up.
func (p *Pipeline) waitIdle(agentID string) bool {
	p.mu.Lock()
	f := p.flows[agentID]
	var idle chan struct{}
	if f != nil && f.pending > 0 {
		idle = f.idle
	}
	p.mu.Unlock()
	if idle == nil {
		return true
	}
	select {
	case <-idle:
		return true
	case <-p.stop:
		return false
	}
}

// lockOrder takes the agent's order lock and returns its unlock. The lock
// is dropped from p.order once nobody holds or waits for it, so the map
// holds only the agents being produced for.
func (p *Pipeline) lockOrder(agentID string) (unlock func()) {
	p.mu.Lock()
	l := p.order[agentID]
	if l == nil {
		l = &orderLock{}
		p.order[agentID] = l
	}
	l.users++
	p.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		p.mu.Lock()
		defer p.mu.Unlock()
		if l.users--; l.users == 0 {
			delete(p.order, agentID)
		}
	}
}

func (p *Pipeline) queue(agentID string) chan job {
	return p.queues[int(maphash.String(workerSeed, agentID)%uint64(len(p.queues)))]
}

// workerSeed seeds the hash that picks an agent's worker: fixed for the
// process, so an agent always has the same worker.
var workerSeed = maphash.MakeSeed()

// commitLoop handles the publish outcomes of its agents in order: record on
// success, abandon (and adopt the stream's history on a conflict) on
// failure.
func (p *Pipeline) commitLoop(q chan job) {
	defer p.workers.Done()
	for j := range q {
		if !p.handle(j) {
			p.finishChange(j.change.AgentID)
		}
	}
}

// finishChange ends a change between enqueue and record.
func (p *Pipeline) finishChange(agentID string) {
	p.donePending(agentID)
	p.work(-1)
}

// handle handles one publish outcome; it reports whether the change's
// state is being recorded, in which case the record's completion finishes
// the change.
func (p *Pipeline) handle(j job) (recording bool) {
	c := j.change
	if j.err != nil {
		current := p.opts.Detector.Abandon(c)
		if errors.Is(j.err, detector.ErrConflict) {
			p.metrics.Conflicts.Inc()
			p.count(func(s *Stats) { s.Conflicts++ })
			if current {
				p.startAdoption(c.AgentID)
			}
			return false
		}
		p.metrics.PublishFailures.Inc()
		p.count(func(s *Stats) { s.Errors++ })
		p.log.Warn("publishing failed; the events will be re-emitted from the agent's last state",
			"agent", c.AgentID, "sequence", c.State.Sequence, "err", j.err)
		return false
	}
	for _, e := range c.Events {
		if p.opts.OnPublished != nil {
			p.opts.OnPublished(e)
		}
	}
	p.count(func(s *Stats) {
		for _, e := range c.Events {
			s.Events[e.Type]++
		}
	})
	st := p.opts.Detector.Confirm(c, j.streamSeq)
	agentID := c.AgentID
	p.opts.View.RecordAsync(st, func(err error) {
		defer p.finishChange(agentID)
		if err != nil {
			p.count(func(s *Stats) { s.Errors++ })
			p.log.Error("recording the agent's state failed; retried until recorded", "agent", agentID, "err", err)
			p.markBehind(agentID)
			return
		}
		p.count(func(s *Stats) { s.Commits++ })
	})
	return true
}

// Retries of the view's failed writes (recordBehind): the first a second
// after the failure, then backing off to one every 30 s while the view
// keeps failing.
const (
	recordRetryFirst = time.Second
	recordRetryMax   = 30 * time.Second
)

// markBehind notes that the view lacks the agent's confirmed state.
func (p *Pipeline) markBehind(agentID string) {
	p.mu.Lock()
	p.behindN++
	p.behind[agentID] = p.behindN
	n := len(p.behind)
	p.mu.Unlock()
	p.metrics.StateBehind.Set(float64(n))
}

// clearBehind removes the agent's mark unless a later failure renewed it
// (mark 0: whatever the mark).
func (p *Pipeline) clearBehind(agentID string, mark uint64) {
	p.mu.Lock()
	if m, ok := p.behind[agentID]; ok && (mark == 0 || m == mark) {
		delete(p.behind, agentID)
	}
	n := len(p.behind)
	p.mu.Unlock()
	p.metrics.StateBehind.Set(float64(n))
}

// recordBehind records, until ctx ends, the confirmed state of every agent
// whose state write failed, so that the view catches up with the stream
// without waiting for the agent's next change. A round stops at the first
// write that fails again (NATS is likely unreachable) and the next waits
// longer, up to recordRetryMax.
func (p *Pipeline) recordBehind(ctx context.Context) {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(recordRetryFirst), backoff.WithMaxInterval(recordRetryMax), backoff.WithMaxElapsedTime(0))
	t := time.NewTimer(recordRetryFirst)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wait := recordRetryFirst
		if err := p.recordBehindOnce(ctx); err != nil {
			wait = b.NextBackOff()
			p.log.Warn("recording agents' states again failed; retrying", "retry_in", wait.String(), "err", err)
		} else {
			b.Reset()
		}
		t.Reset(wait)
	}
}

// recordBehindOnce records the confirmed state of each agent marked behind.
func (p *Pipeline) recordBehindOnce(ctx context.Context) error {
	p.mu.Lock()
	marks := make(map[string]uint64, len(p.behind))
	for id, m := range p.behind {
		marks[id] = m
	}
	p.mu.Unlock()
	for id, mark := range marks {
		st := p.opts.Detector.Base(id)
		if st == nil || !p.takes(id) {
			p.clearBehind(id, mark) // forgotten meanwhile: nothing to record
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, p.opts.CommitTimeout)
		err := p.opts.View.Record(rctx, *st)
		cancel()
		if err != nil {
			return err
		}
		p.clearBehind(id, mark)
	}
	return nil
}

// startAdoption adopts the agent's history from the stream in the
// background, unless that is already under way.
func (p *Pipeline) startAdoption(agentID string) {
	p.mu.Lock()
	f := p.flowLocked(agentID)
	if f.adopting {
		p.mu.Unlock()
		return
	}
	f.adopting = true
	p.workLocked(1)
	p.mu.Unlock()
	go func() {
		defer p.work(-1)
		p.adopt(agentID)
	}()
}

// adopt waits until the agent's changes in flight are done, reads its
// history from the stream (retrying with backoff while the stream cannot
// be read), adopts it and publishes what the latest observation adds.
func (p *Pipeline) adopt(agentID string) {
	defer func() {
		p.mu.Lock()
		if f := p.flows[agentID]; f != nil {
			f.adopting = false
			if f.pending == 0 {
				delete(p.flows, agentID)
			}
		}
		p.mu.Unlock()
	}()
	if !p.waitIdle(agentID) {
		return
	}
	ctx, cancel := p.untilStop()
	defer cancel()
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second), backoff.WithMaxElapsedTime(0))
	var st *detector.AgentState
	for {
		if !p.takes(agentID) {
			return
		}
		rctx, rcancel := context.WithTimeout(ctx, p.opts.CommitTimeout)
		var err error
		st, err = p.opts.Journal.Follow(rctx, agentID, p.opts.Detector.Base(agentID))
		rcancel()
		if err == nil {
			break
		}
		p.metrics.Adoptions.WithLabelValues("error").Inc()
		p.log.Warn("reading the agent's history from the stream failed; retrying", "agent", agentID, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(b.NextBackOff()):
		}
	}
	p.metrics.Adoptions.WithLabelValues("adopted").Inc()
	if st != nil {
		// The view follows the stream, also where nothing new is published.
		rctx, rcancel := context.WithTimeout(ctx, p.opts.CommitTimeout)
		if err := p.opts.View.Record(rctx, *st); err != nil {
			p.log.Warn("recording the agent's state adopted from the stream failed; retried until recorded", "agent", agentID, "err", err)
			p.markBehind(agentID)
		}
		rcancel()
	}

	// Also after Close began: this finishes an observation taken before.
	if !p.takes(agentID) {
		return
	}
	defer p.lockOrder(agentID)()
	c := p.opts.Detector.Adopt(agentID, st)
	p.mu.Lock()
	if f := p.flows[agentID]; f != nil {
		f.adopting = false
	}
	p.mu.Unlock()
	if c != nil {
		if err := p.enqueue(ctx, c); err != nil {
			p.log.Warn("publishing the agent's change after adopting its history failed", "agent", agentID, "err", err)
		}
	}
}

// Run runs the stale check, the retries of failed state writes and, when
// enabled, the snapshot loop until ctx is done. It returns nil after ctx is
// done.
func (p *Pipeline) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { p.every(ctx, p.opts.StaleCheckInterval, p.checkStale) })
	wg.Go(func() { p.recordBehind(ctx) })
	if p.opts.SnapshotInterval > 0 {
		wg.Go(func() { p.every(ctx, p.opts.SnapshotInterval, p.snapshot) })
	}
	wg.Wait()
	return nil
}

func (p *Pipeline) every(ctx context.Context, d time.Duration, f func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

// checkStale publishes presence.stale for every agent due at the clock's
// now; Run calls it every StaleCheckInterval.
func (p *Pipeline) checkStale(ctx context.Context) {
	if p.opts.Beat != nil {
		p.opts.Beat()
	}
	now := p.opts.Now()
	due, stale := p.opts.Detector.StaleCheck(now)
	for _, id := range due {
		if !p.takes(id) {
			continue
		}
		marked := false
		if err := p.submit(ctx, id, func() *detector.Change {
			c := p.opts.Detector.MarkStale(id, now)
			marked = c != nil
			return c
		}, nil); err != nil {
			p.log.Warn("publishing presence.stale failed", "agent", id, "err", err)
		}
		if marked {
			stale++
		}
	}
	p.metrics.StaleAgents.Set(float64(stale))
}

func (p *Pipeline) snapshot(ctx context.Context) {
	now := p.opts.Now()
	for _, id := range p.opts.Detector.SnapshotDue() {
		if !p.takes(id) {
			continue
		}
		if err := p.submit(ctx, id, func() *detector.Change { return p.opts.Detector.Snapshot(id, now) }, nil); err != nil {
			p.log.Warn("publishing presence.snapshot failed", "agent", id, "err", err)
		}
	}
}

// Stats returns the counters so far.
func (p *Pipeline) Stats() Stats {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	s := p.stats
	s.Events = make(map[string]uint64, len(p.stats.Events))
	for k, v := range p.stats.Events {
		s.Events[k] = v
	}
	return s
}

func (p *Pipeline) count(f func(*Stats)) {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	f(&p.stats)
}

// Close refuses further observations, waits until every enqueued change has
// been stored and recorded (or failed) and every adoption under way has
// published what its observation adds, then stops the commit workers. Call
// it after the source has stopped and before the publisher is closed. When
// ctx ends first, adoptions stop and it returns ctx's error; the changes
// not stored are produced again from the stream after a restart.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closeMu.Lock()
	if p.closed {
		p.closeMu.Unlock()
		return nil
	}
	p.closed = true
	p.closeMu.Unlock()

	for {
		p.mu.Lock()
		busy, quiet := p.busy, p.quiet
		p.mu.Unlock()
		if busy == 0 {
			break
		}
		select {
		case <-quiet:
		case <-ctx.Done():
			close(p.stop)
			return fmt.Errorf("close pipeline: waiting for changes in flight: %w", ctx.Err())
		}
	}
	close(p.stop)
	for _, q := range p.queues {
		close(q)
	}
	p.workers.Wait()
	return nil
}
