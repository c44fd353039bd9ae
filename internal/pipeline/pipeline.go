// Package pipeline glues the bridge's stages: it is the source.Sink that
// takes every poll result, asks the detector what changed, hands the events
// to the publisher and, once JetStream has acknowledged them, commits the
// agent's state to the state bucket (publish first, then commit: a crash in
// between republishes the same event IDs, which JetStream drops as
// duplicates within the stream's duplicate window). It also runs the stale
// check (presence.stale) and the optional snapshot loop (presence.snapshot).
//
// Backpressure: Observe blocks while the publisher's window is full, which
// holds back the poller of that agent.
//
// The stream is the authority on what consumers saw. With a Journal, the
// pipeline reconciles each agent with its events on the stream before the
// agent's first observation in the process and after a commit conflict
// (Detector.Reconcile): events a killed predecessor published without
// committing, or another bridge published first under the same IDs, are
// adopted, so the next events follow on from them.
//
// Wiring, in cmd/bridge (after the detector has loaded the bucket):
//
//	p, err := pipeline.New(pipeline.Options{Detector: det, Publisher: pub, Logger: log, Metrics: m,
//		SnapshotInterval: cfg.SnapshotInterval, OnPublished: printLine,
//		Journal: pipeline.NewStreamJournal(js, cfg.Stream, cfg.SubjectPrefix)})
//	go p.Run(ctx)                  // stale and snapshot loops, until ctx is done
//	poller.Run(ctx, p)             // p is the source.Sink
//	err = p.Close(shutdownCtx)     // after the source stopped, before pub.Close
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/source"
)

// Publisher puts events on the stream. Enqueue takes one agent's events in
// sequence order, blocks while the publisher's window is full, and calls
// done exactly once when all of them are acknowledged (a duplicate counts as
// success) or failed; done callbacks of one agent come in Enqueue order.
// *publish.Publisher implements it.
type Publisher interface {
	Enqueue(ctx context.Context, events []detector.Event, done func(error)) error
}

// Options configures a Pipeline.
type Options struct {
	// Detector turns observations into changes and commits them; required.
	Detector *detector.Detector
	// Publisher publishes the events; required.
	Publisher Publisher
	// Logger receives one line per failure; nil discards.
	Logger *slog.Logger
	// Metrics counts what the pipeline does; nil builds unregistered ones.
	Metrics *Metrics
	// StaleCheckInterval is how often agents are checked for staleness;
	// 0 means one second. The detector's StaleAfter decides when one is.
	StaleCheckInterval time.Duration
	// SnapshotInterval is how often every agent gets a presence.snapshot;
	// 0 disables snapshots.
	SnapshotInterval time.Duration
	// CommitWorkers is how many goroutines commit states (each agent always
	// on the same one, so in order); 0 means 4.
	CommitWorkers int
	// CommitTimeout bounds one state commit; 0 means 10 s.
	CommitTimeout time.Duration
	// OnPublished, when set, is called with every event once JetStream has
	// acknowledged it, in sequence order per agent, from a commit worker:
	// it must not block for long. `bridge demo` prints each as a line.
	OnPublished func(detector.Event)
	// Now is the clock of the stale and snapshot loops; nil means time.Now.
	Now func() time.Time
	// Journal reads agents' events back from the stream. When set, the
	// pipeline reconciles an agent with the stream (Detector.Reconcile)
	// before its first observation in this process and after a commit
	// conflict, so that events a killed predecessor published without
	// committing, or another bridge published first under the same IDs, are
	// followed on from rather than contradicted. NewStreamJournal is the
	// JetStream implementation; nil trusts the state bucket alone.
	Journal Journal
}

// Journal reads agents' events back from the stream. AgentEvents returns an
// agent's events with sequences above after, in sequence order.
// *StreamJournal implements it. (That the stream holds a change's events as
// published needs no read-back: the publisher checks every duplicate
// acknowledgement against the stored event and fails the change with
// detector.ErrConflict when another writer's event holds the ID.)
type Journal interface {
	AgentEvents(ctx context.Context, agentID string, after uint64) ([]detector.Event, error)
}

// Pipeline is the source.Sink of the bridge. Build it with New, run its
// loops with Run, and stop it with Close.
type Pipeline struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics

	orderMu    sync.Mutex
	order      map[string]*sync.Mutex // per agent: detect and enqueue in sequence order
	reconciled map[string]bool        // agents reconciled with the stream; guarded by orderMu
	pending    map[string]*pending    // changes enqueued and not yet handled, by agent; guarded by orderMu

	closeMu  sync.RWMutex
	closed   bool
	inflight sync.WaitGroup
	queues   []chan job
	workers  sync.WaitGroup

	statsMu sync.Mutex
	stats   Stats
}

var _ source.Sink = (*Pipeline)(nil)

// pending counts an agent's changes between enqueue and commit; idle is
// closed when the count drops to zero.
type pending struct {
	n    int
	idle chan struct{}
}

type job struct {
	change *detector.Change
	err    error // the publish outcome
}

// Stats are counters for a human summary (bridge demo).
type Stats struct {
	// Observations is the number of poll results taken.
	Observations uint64
	// Errors is the number of failed polls, failed publishes and failed
	// commits.
	Errors uint64
	// Events counts published (acknowledged) events by type.
	Events map[string]uint64
	// Commits is the number of state commits.
	Commits uint64
	// Conflicts is the number of commits lost to another writer.
	Conflicts uint64
	// StaleAgents is the number of agents currently stale.
	StaleAgents int
}

// New validates opts and starts the commit workers; Close stops them.
func New(opts Options) (*Pipeline, error) {
	if opts.Detector == nil || opts.Publisher == nil {
		return nil, errors.New("new pipeline: Detector and Publisher are required")
	}
	if opts.StaleCheckInterval < 0 || opts.SnapshotInterval < 0 || opts.CommitWorkers < 0 || opts.CommitTimeout < 0 {
		return nil, errors.New("new pipeline: intervals, timeouts and worker counts must not be negative")
	}
	if opts.StaleCheckInterval == 0 {
		opts.StaleCheckInterval = time.Second
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
	p := &Pipeline{opts: opts, log: log, metrics: m, order: map[string]*sync.Mutex{}, reconciled: map[string]bool{}, pending: map[string]*pending{}, stats: Stats{Events: map[string]uint64{}}}
	for range opts.CommitWorkers {
		q := make(chan job, 256)
		p.queues = append(p.queues, q)
		p.workers.Add(1)
		go p.commitLoop(q)
	}
	return p, nil
}

// Observe takes one poll result: the detector's change, if any, is enqueued
// for publishing. It blocks while the publisher's window is full.
func (p *Pipeline) Observe(ctx context.Context, o source.Observation) error {
	p.metrics.Observations.WithLabelValues(string(o.Class)).Inc()
	p.count(func(s *Stats) {
		s.Observations++
		if o.Class != source.ClassOK {
			s.Errors++
		}
	})
	return p.submit(ctx, o.AgentID, func() *detector.Change { return p.opts.Detector.Observe(o) })
}

// submit produces an agent's change under the agent's order lock and
// enqueues it, so that changes of one agent reach the publisher in sequence
// order whichever goroutine produced them.
func (p *Pipeline) submit(ctx context.Context, agentID string, produce func() *detector.Change) error {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed {
		return errors.New("pipeline closed")
	}
	mu := p.orderLock(agentID)
	mu.Lock()
	defer mu.Unlock()
	if err := p.reconcile(ctx, agentID); err != nil {
		return err
	}
	if p.opts.Journal != nil {
		// One change of an agent at a time: the next is numbered from a
		// state the stream is known to hold.
		if err := p.waitIdle(ctx, agentID); err != nil {
			return err
		}
	}
	c := produce()
	if c == nil {
		return nil
	}
	q := p.queue(agentID)
	p.inflight.Add(1)
	p.addPending(agentID)
	err := p.opts.Publisher.Enqueue(ctx, c.Events, func(err error) { q <- job{change: c, err: err} })
	if err != nil {
		err = fmt.Errorf("enqueue events of agent %s: %w", agentID, err)
		q <- job{change: c, err: err}
		return err
	}
	return nil
}

// reconcile reconciles the agent with the stream if it has not been since
// this process started or since its last commit conflict; the agent's order
// lock is held. On failure nothing is produced: the next observation tries
// again rather than number events from a state the stream may contradict.
func (p *Pipeline) reconcile(ctx context.Context, agentID string) error {
	if p.opts.Journal == nil {
		return nil
	}
	p.orderMu.Lock()
	done := p.reconciled[agentID]
	p.orderMu.Unlock()
	if done {
		return nil
	}
	// Changes of this agent still in flight would be numbered from the
	// state Reconcile replaces: let them finish first.
	if err := p.waitIdle(ctx, agentID); err != nil {
		return err
	}
	ahead, err := p.opts.Detector.Reconcile(ctx, agentID, p.opts.Journal.AgentEvents)
	if err != nil {
		p.metrics.Reconciles.WithLabelValues("error").Inc()
		return fmt.Errorf("reconcile agent %s with the stream: %w", agentID, err)
	}
	if ahead {
		p.metrics.Reconciles.WithLabelValues("adopted").Inc()
	} else {
		p.metrics.Reconciles.WithLabelValues("in_step").Inc()
	}
	p.orderMu.Lock()
	p.reconciled[agentID] = true
	p.orderMu.Unlock()
	return nil
}

func (p *Pipeline) addPending(agentID string) {
	p.orderMu.Lock()
	defer p.orderMu.Unlock()
	pd := p.pending[agentID]
	if pd == nil {
		pd = &pending{idle: make(chan struct{})}
		p.pending[agentID] = pd
	}
	pd.n++
}

func (p *Pipeline) donePending(agentID string) {
	p.orderMu.Lock()
	defer p.orderMu.Unlock()
	pd := p.pending[agentID]
	if pd == nil {
		return
	}
	if pd.n--; pd.n == 0 {
		close(pd.idle)
		delete(p.pending, agentID)
	}
}

// waitIdle waits until none of the agent's changes is between enqueue and
// commit.
func (p *Pipeline) waitIdle(ctx context.Context, agentID string) error {
	p.orderMu.Lock()
	pd := p.pending[agentID]
	p.orderMu.Unlock()
	if pd == nil {
		return nil
	}
	select {
	case <-pd.idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for agent %s's changes in flight: %w", agentID, ctx.Err())
	}
}

// unreconcile makes the agent's next observation reconcile it first.
func (p *Pipeline) unreconcile(agentID string) {
	p.orderMu.Lock()
	delete(p.reconciled, agentID)
	p.orderMu.Unlock()
}

func (p *Pipeline) orderLock(agentID string) *sync.Mutex {
	p.orderMu.Lock()
	defer p.orderMu.Unlock()
	mu := p.order[agentID]
	if mu == nil {
		mu = &sync.Mutex{}
		p.order[agentID] = mu
	}
	return mu
}

func (p *Pipeline) queue(agentID string) chan job {
	h := fnv.New32a()
	_, _ = h.Write([]byte(agentID))
	return p.queues[int(h.Sum32()%uint32(len(p.queues)))]
}

// commitLoop handles the publish outcomes of its agents in order: commit on
// success, abandon on failure.
func (p *Pipeline) commitLoop(q chan job) {
	defer p.workers.Done()
	for j := range q {
		p.handle(j)
		p.donePending(j.change.AgentID)
		p.inflight.Done()
	}
}

func (p *Pipeline) handle(j job) {
	c := j.change
	if j.err != nil {
		p.opts.Detector.Abandon(c)
		if errors.Is(j.err, detector.ErrConflict) {
			// The stream holds another event under one of these IDs.
			p.unreconcile(c.AgentID)
		}
		p.metrics.PublishFailures.Inc()
		p.count(func(s *Stats) { s.Errors++ })
		p.log.Warn("publishing failed; the events will be re-emitted from the agent's last state",
			"agent", c.AgentID, "sequence", c.State.Sequence, "err", j.err)
		return
	}
	for _, e := range c.Events {
		p.metrics.Events.WithLabelValues(e.Type).Inc()
		if p.opts.OnPublished != nil {
			p.opts.OnPublished(e)
		}
	}
	p.count(func(s *Stats) {
		for _, e := range c.Events {
			s.Events[e.Type]++
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.CommitTimeout)
	defer cancel()
	err := p.opts.Detector.Commit(ctx, c)
	switch {
	case err == nil:
		p.metrics.StateCommits.WithLabelValues("ok").Inc()
		p.count(func(s *Stats) { s.Commits++ })
	case errors.Is(err, detector.ErrConflict):
		// Another writer: what it published under our IDs may differ from
		// what we sent. The agent's next observation reads the stream first.
		p.unreconcile(c.AgentID)
		p.metrics.StateCommits.WithLabelValues("conflict").Inc()
		p.metrics.Conflicts.Inc()
		p.count(func(s *Stats) { s.Conflicts++ })
	case errors.Is(err, detector.ErrDiscarded):
		p.metrics.StateCommits.WithLabelValues("discarded").Inc()
	default:
		p.metrics.StateCommits.WithLabelValues("error").Inc()
		p.count(func(s *Stats) { s.Errors++ })
		p.log.Error("committing agent state failed; the next change of the agent retries", "agent", c.AgentID, "err", err)
	}
}

// Run runs the stale check and, when enabled, the snapshot loop until ctx
// is done. It returns nil after ctx is done.
func (p *Pipeline) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { p.every(ctx, p.opts.StaleCheckInterval, p.checkStale) })
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

// CheckStale publishes presence.stale for every agent due at the clock's
// now; Run calls it every StaleCheckInterval.
func (p *Pipeline) checkStale(ctx context.Context) {
	now := p.opts.Now()
	for _, id := range p.opts.Detector.StaleDue(now) {
		if err := p.submit(ctx, id, func() *detector.Change { return p.opts.Detector.MarkStale(id, now) }); err != nil {
			p.log.Warn("publishing presence.stale failed", "agent", id, "err", err)
		}
	}
	p.metrics.StaleAgents.Set(float64(p.opts.Detector.StaleAgents()))
}

func (p *Pipeline) snapshot(ctx context.Context) {
	now := p.opts.Now()
	for _, id := range p.opts.Detector.SnapshotDue() {
		if err := p.submit(ctx, id, func() *detector.Change { return p.opts.Detector.Snapshot(id, now) }); err != nil {
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
	s.StaleAgents = p.opts.Detector.StaleAgents()
	return s
}

func (p *Pipeline) count(f func(*Stats)) {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	f(&p.stats)
}

// Close refuses further observations, waits until every enqueued change has
// been acknowledged and committed (or failed), then stops the commit
// workers. Call it after the source has stopped and before the publisher is
// closed. When ctx ends first it returns ctx's error; the uncommitted
// changes are then republished with the same IDs after a restart.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closeMu.Lock()
	if p.closed {
		p.closeMu.Unlock()
		return nil
	}
	p.closed = true
	p.closeMu.Unlock()

	drained := make(chan struct{})
	go func() {
		p.inflight.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		return fmt.Errorf("close pipeline: waiting for in-flight commits: %w", ctx.Err())
	}
	for _, q := range p.queues {
		close(q)
	}
	p.workers.Wait()
	return nil
}
