package source

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/time/rate"
)

// Getter polls one agent; *Client implements it. Failures should be
// *PollError values so the Poller can classify them.
type Getter interface {
	Get(ctx context.Context, agentID string) (Snapshot, error)
}

// RepeatGetter is a Getter that recognises an answer repeating the agent's
// last one (see Client.Poll); *Client implements it. The Poller uses Poll
// when its Getter has it, with a LastAnswer per agent, and hands the
// answer's shared Snapshot (ObservedAt zero) to the Sink.
type RepeatGetter interface {
	Getter
	Poll(ctx context.Context, agentID string, last *LastAnswer) (snap *Snapshot, unchanged bool, err error)
}

// State is the poll state of one agent.
type State uint8

// Agent poll states.
const (
	StatePending     State = iota // configured, not polled yet
	StateHealthy                  // last poll succeeded
	StateBackingOff               // 401 after refresh, token, 5xx or transport failures: exponential backoff
	StateRateLimited              // 429: waiting for Retry-After
	StateUnpollable               // 400, 403, 404, 405: retried every PermanentRetry
	StateMalformed                // last body was not the documented shape; polled on schedule
	numStates
	stateNone State = math.MaxUint8
)

var stateNames = [numStates]string{"pending", "healthy", "backing_off", "rate_limited", "unpollable", "malformed"}

// String returns the state's name, as used in logs and the "state" label.
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return "none"
}

// Defaults of PollerOptions, equal to the BRIDGE_ variables' defaults.
const (
	DefaultRequestTimeout = 5 * time.Second
	DefaultMaxConcurrency = 32
	DefaultPermanentRetry = 5 * time.Minute
	DefaultBackoffMax     = 2 * time.Minute
	// BeatEvery is the longest the dispatch loop goes without calling
	// PollerOptions.Beat, idle or waiting for a free worker.
	BeatEvery = time.Second
)

// Bounds of SlotWidthFor.
const (
	MinSlotWidth = 10 * time.Millisecond
	MaxSlotWidth = 250 * time.Millisecond
)

// SlotWidthFor is the poller's default scheduling granularity for a poll
// interval: a hundredth of it, between MinSlotWidth and MaxSlotWidth (100 ms
// at the default 10 s). The agents due in one slot are handed to the workers
// together, so their answers, and the events and state writes they bring,
// share the wake-ups and system calls of the bridge's goroutines and
// connections instead of each paying for its own; no poll is later than one
// slot after its place in the interval.
func SlotWidthFor(interval time.Duration) time.Duration {
	return min(max(interval/100, MinSlotWidth), MaxSlotWidth)
}

// PollerOptions configures a Poller.
type PollerOptions struct {
	// Getter makes the requests, normally a *Client.
	Getter Getter
	// Sink receives every observation; it may block (backpressure).
	Sink Sink
	// Interval is how often each agent is polled (BRIDGE_POLL_INTERVAL).
	Interval time.Duration
	// RequestTimeout bounds one poll, 401 retry included
	// (BRIDGE_REQUEST_TIMEOUT); default the smaller of Interval and
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxConcurrency caps requests in flight (BRIDGE_MAX_CONCURRENCY); it is
	// the number of workers. Default DefaultMaxConcurrency.
	MaxConcurrency int
	// MaxRPS caps requests per second (BRIDGE_MAX_RPS); 0 means no cap
	// (the client still slows down when many agents get 429s).
	MaxRPS float64
	// PermanentRetry is how often an unpollable agent is retried
	// (BRIDGE_PERMANENT_RETRY); default DefaultPermanentRetry.
	PermanentRetry time.Duration
	// BackoffInitial is the first backoff after a failure; default
	// Interval, so that an outage of every agent never makes the bridge
	// poll faster than it does when all is well.
	BackoffInitial time.Duration
	// BackoffMax caps the backoff (BRIDGE_BACKOFF_MAX); default
	// DefaultBackoffMax.
	BackoffMax time.Duration
	// SlotWidth is the scheduling granularity; default
	// SlotWidthFor(Interval).
	SlotWidth time.Duration
	// DrainTimeout bounds the end of Run: after Run's context ends, the
	// requests already sent complete (each within RequestTimeout) and their
	// observations are handed to the Sink for at most this long, then Run
	// returns and what is left is dropped. Default: twice RequestTimeout.
	// The bridge sets it to BRIDGE_SHUTDOWN_TIMEOUT.
	DrainTimeout time.Duration
	// Beat, when set, is called by the dispatch loop each time round and at
	// least every BeatEvery while it waits (for the next due agent or for a
	// free worker), so a liveness heartbeat shows the loop is not wedged
	// without looking at the poller from outside. It must return at once.
	Beat func()
	// Logger receives one line per agent state change; default discards.
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
	// Clock defaults to SystemClock.
	Clock Clock
	// QuotaScope says who Dataverse charges each call to (BRIDGE_QUOTA_SCOPE):
	// ScopeAgent (default) or ScopeCaller. With ScopeCaller every request
	// is one identity's: a request-count or execution-time 429 pauses every
	// agent for its Retry-After, and the poller paces the sum of all agents
	// under CallerBudget.
	QuotaScope QuotaScope
	// CallerBudget is the service-protection budget of the application
	// user with ScopeCaller; zero fields take Dataverse's limits.
	CallerBudget Budget
}

// QuotaScope says who Dataverse charges a CCaaS_GetPresence call to.
type QuotaScope string

// Quota scopes.
const (
	// ScopeAgent: each call is charged to the impersonated agent
	// (MSCRMCallerID), as the CCaaS_GetPresence contract says.
	ScopeAgent QuotaScope = "agent"
	// ScopeCaller: every call is charged to the application user, as
	// Dataverse's generic service-protection documentation describes.
	ScopeCaller QuotaScope = "caller"
)

// ParseQuotaScope parses BRIDGE_QUOTA_SCOPE: agent or caller.
func ParseQuotaScope(s string) (QuotaScope, error) {
	switch QuotaScope(strings.ToLower(strings.TrimSpace(s))) {
	case "", ScopeAgent:
		return ScopeAgent, nil
	case ScopeCaller:
		return ScopeCaller, nil
	}
	return ScopeAgent, fmt.Errorf("quota scope %q is not agent or caller", s)
}

// Budget is one identity's service-protection budget.
type Budget struct {
	// Requests per Window; default DataverseRequestsPerWindow.
	Requests int
	// Window; default DataverseWindow.
	Window time.Duration
	// ExecutionTime is the combined execution time allowed per Window;
	// default DataverseExecutionTime.
	ExecutionTime time.Duration
	// Concurrent requests at most; default DataverseConcurrentPerUser.
	Concurrent int
}

func (b Budget) withDefaults() Budget {
	if b.Requests <= 0 {
		b.Requests = DataverseRequestsPerWindow
	}
	if b.Window <= 0 {
		b.Window = DataverseWindow
	}
	if b.ExecutionTime <= 0 {
		b.ExecutionTime = DataverseExecutionTime
	}
	if b.Concurrent <= 0 {
		b.Concurrent = DataverseConcurrentPerUser
	}
	return b
}

// pacingShare is the share of a budget the poller plans to use, leaving
// room for retries, bridge check and other clients of the same user.
const pacingShare = 0.9

// RequestRate is the steady request rate that uses pacingShare of the
// request budget.
func (b Budget) RequestRate() float64 {
	b = b.withDefaults()
	return pacingShare * float64(b.Requests) / b.Window.Seconds()
}

// agent is the poll state of one agent. Fields other than id, phase and
// last are guarded by Poller.mu; last is used only by the worker polling
// the agent (one at a time).
type agent struct {
	id      string
	phase   int64                       // offset in the interval, ns
	last    LastAnswer                  // the last answer decoded, with RepeatGetter
	slot    int64                       // absolute wheel slot while queued
	bo      *backoff.ExponentialBackOff // only while backing off
	state   State
	removed bool
	polled  bool
	queued  bool // on the wheel
	again   bool // PollNow while being polled: poll again at once
	// failure is the last poll's failure, for readiness (class, HTTP
	// status, Dataverse code; Agents unused); nil when it succeeded.
	failure *FailureCount
}

// Poller polls every configured agent once per Interval. Agents are spread
// evenly over the interval by a stable per-agent offset (a hash of the
// agent ID), so neither the start nor the end of an outage produces a
// burst. Due agents are collected from a time-slot wheel (SlotWidth slots)
// by one dispatcher goroutine and polled by a fixed pool of MaxConcurrency
// workers, behind a rate limiter of MaxRPS. At most one request per agent is
// in flight, and the next poll of an agent is scheduled only once the Sink
// has taken the previous observation.
type Poller struct {
	getter         Getter
	repeat         RepeatGetter // getter, when it recognises repeated answers
	sink           Sink
	interval       int64
	requestTimeout time.Duration
	drainTimeout   time.Duration
	beat           func()
	workers        int
	permanentRetry int64
	backoffInitial time.Duration
	backoffMax     time.Duration
	slotWidth      int64
	log            *slog.Logger
	metrics        *Metrics
	clock          Clock
	epoch          time.Time
	limiter        *rate.Limiter
	throttle       *throttle
	scope          QuotaScope
	budget         Budget
	gate           *gate
	pauseUntil     atomic.Int64 // ns since epoch: no request before (ScopeCaller)

	jobs chan *agent
	wake chan struct{}

	mu          sync.Mutex
	agents      map[string]*agent
	wheel       [][]*agent
	cursor      int64 // next absolute slot to process
	queued      int   // entries in the wheel
	wakeAt      int64 // slot the dispatcher sleeps until
	counts      [numStates]int
	polledCount int
	firstRound  bool

	inflight atomic.Int64 // dispatched, not yet rescheduled
}

// NewPoller validates opts and returns a Poller with no agents; call
// SetAgents and Run.
func NewPoller(opts PollerOptions) (*Poller, error) {
	if opts.Getter == nil || opts.Sink == nil {
		return nil, errors.New("build poller: Getter and Sink are required")
	}
	if opts.Interval <= 0 {
		return nil, fmt.Errorf("build poller: poll interval %s is not positive", opts.Interval)
	}
	if opts.MaxRPS < 0 {
		return nil, fmt.Errorf("build poller: MaxRPS %v is negative", opts.MaxRPS)
	}
	p := &Poller{
		getter: opts.Getter, sink: opts.Sink, interval: int64(opts.Interval),
		requestTimeout: opts.RequestTimeout, drainTimeout: opts.DrainTimeout, beat: opts.Beat, workers: opts.MaxConcurrency,
		permanentRetry: int64(opts.PermanentRetry), backoffInitial: opts.BackoffInitial,
		backoffMax: opts.BackoffMax, slotWidth: int64(opts.SlotWidth),
		log: opts.Logger, metrics: opts.Metrics, clock: opts.Clock,
		agents: map[string]*agent{},
	}
	p.repeat, _ = opts.Getter.(RepeatGetter)
	if p.requestTimeout <= 0 {
		p.requestTimeout = min(opts.Interval, DefaultRequestTimeout)
	}
	if p.drainTimeout <= 0 {
		p.drainTimeout = 2 * p.requestTimeout
	}
	if p.workers <= 0 {
		p.workers = DefaultMaxConcurrency
	}
	if p.permanentRetry <= 0 {
		p.permanentRetry = int64(DefaultPermanentRetry)
	}
	if p.backoffInitial <= 0 {
		p.backoffInitial = opts.Interval
	}
	if p.backoffMax <= 0 {
		p.backoffMax = DefaultBackoffMax
	}
	p.backoffInitial = min(p.backoffInitial, p.backoffMax)
	if p.slotWidth <= 0 {
		p.slotWidth = int64(SlotWidthFor(opts.Interval))
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.clock == nil {
		p.clock = SystemClock{}
	}
	n := min(max(p.interval/p.slotWidth, 16), 1<<16)
	p.wheel = make([][]*agent, n)
	p.epoch = p.clock.Now()
	p.wakeAt = math.MaxInt64
	p.jobs = make(chan *agent, p.workers)
	p.wake = make(chan struct{}, 1)
	p.scope = opts.QuotaScope
	if p.scope == "" {
		p.scope = ScopeAgent
	}
	p.budget = opts.CallerBudget.withDefaults()
	base := rate.Inf
	if opts.MaxRPS > 0 {
		base = rate.Limit(opts.MaxRPS)
	}
	inflight := p.workers
	if p.scope == ScopeCaller {
		// Every request is the application user's: pace the sum.
		base = min(base, rate.Limit(p.budget.RequestRate()))
		inflight = min(inflight, p.budget.Concurrent)
	}
	burst := 1
	if base != rate.Inf {
		burst = max(1, int(float64(base)/10))
	}
	p.limiter = rate.NewLimiter(base, burst)
	p.throttle = &throttle{p: p, base: base, burst: burst, factor: 1, execLimit: rate.Inf}
	p.gate = newGate(inflight, p.metrics)
	p.metrics.rateFactor(1)
	return p, nil
}

// since returns ns since the poller's epoch.
func (p *Poller) since() int64 { return int64(p.clock.Now().Sub(p.epoch)) }

// phaseOf spreads agents over the interval by a hash of their ID: stable
// for an agent whatever the other agents are.
func phaseOf(id string, interval int64) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return int64(h.Sum64() % uint64(interval))
}

// nextPhase returns the first time after t (ns since epoch) at which agent
// a's slot in the interval comes round.
func (p *Poller) nextPhase(a *agent, t int64) int64 {
	d := t - a.phase
	if d < 0 {
		return a.phase
	}
	return a.phase + (d/p.interval+1)*p.interval
}

// SetAgents replaces the set of polled agents: agents not in ids stop being
// polled (a poll in flight finishes and is still reported), new ones are
// scheduled at their place in the interval. IDs are GUIDs in any case;
// others are skipped and logged.
func (p *Poller) SetAgents(ids []string) {
	want := make(map[string]struct{}, len(ids))
	for _, raw := range ids {
		id, ok := NormalizeGUID(raw)
		if !ok {
			p.log.Warn("agent ID is not a GUID; not polled", "agent", truncate(raw))
			continue
		}
		want[id] = struct{}{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.since()
	for id, a := range p.agents {
		if _, ok := want[id]; ok {
			continue
		}
		a.removed = true
		delete(p.agents, id)
		p.counts[a.state]--
		p.metrics.agentState(a.state, stateNone)
		if a.polled {
			p.polledCount--
		}
	}
	for id := range want {
		if _, ok := p.agents[id]; ok {
			continue
		}
		a := &agent{id: id, phase: phaseOf(id, p.interval), state: StatePending}
		p.agents[id] = a
		p.counts[StatePending]++
		p.metrics.agentState(stateNone, StatePending)
		p.insertLocked(a, p.nextPhase(a, now))
	}
}

// insertLocked queues a for time due (ns since epoch). The wheel fires an
// entry at the first slot boundary at or after due, never before.
func (p *Poller) insertLocked(a *agent, due int64) {
	s := (due + p.slotWidth - 1) / p.slotWidth
	s = max(s, p.cursor)
	a.slot = s
	a.queued = true
	n := int64(len(p.wheel))
	p.wheel[s%n] = append(p.wheel[s%n], a)
	p.queued++
	if s < p.wakeAt {
		p.wakeAt = s
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// Run polls until ctx is done, then finishes what it started and returns
// ctx's error: no poll is scheduled or started after ctx ends (an agent due,
// queued for a worker or waiting on the rate limiter is left for a later
// Run), but every request already sent completes (within RequestTimeout)
// and its observation is handed to the Sink with a context that ctx's end
// does not cancel, bounded by DrainTimeout. Run returns only after those
// hand-offs (or DrainTimeout).
func (p *Poller) Run(ctx context.Context) error {
	drain, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(p.drainTimeout, cancelDrain)
		context.AfterFunc(drain, func() { t.Stop() })
	})
	defer stop()
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() { p.work(ctx, drain) })
	}
	p.dispatch(ctx)
	wg.Wait()
	// Agents handed out but not started: back on the wheel, due now.
	for {
		select {
		case a := <-p.jobs:
			p.requeue(a)
		default:
			return ctx.Err()
		}
	}
}

// requeue puts an agent that was handed out but not polled back on the
// wheel, due at once.
func (p *Poller) requeue(a *agent) {
	p.reschedule(a, p.since())
	p.inflight.Add(-1)
}

// dispatch hands due agents to the workers, slot by slot, and beats.
func (p *Poller) dispatch(ctx context.Context) {
	var due []*agent
	n := int64(len(p.wheel))
	for {
		p.doBeat()
		p.mu.Lock()
		nowSlot := p.since() / p.slotWidth
		due = due[:0]
		if p.cursor <= nowSlot {
			first, last := p.cursor, nowSlot
			if last-first >= n {
				first = last - n + 1
			}
			for s := first; s <= last; s++ {
				b := p.wheel[s%n]
				keep := b[:0]
				for _, a := range b {
					switch {
					case a.removed:
						p.queued--
						a.queued = false
					case a.slot <= nowSlot:
						p.queued--
						a.queued = false
						due = append(due, a)
					default:
						keep = append(keep, a)
					}
				}
				clear(b[len(keep):])
				p.wheel[s%n] = keep
			}
			p.cursor = nowSlot + 1
		}
		// Sleep until the next non-empty slot.
		p.wakeAt = math.MaxInt64
		if p.queued > 0 {
			for s := p.cursor; s < p.cursor+n; s++ {
				if len(p.wheel[s%n]) > 0 {
					p.wakeAt = s
					break
				}
			}
		}
		wakeAt := p.wakeAt
		p.inflight.Add(int64(len(due)))
		p.mu.Unlock()

		for i, a := range due {
			if !p.handOut(ctx, a) {
				for _, b := range due[i:] {
					p.requeue(b)
				}
				clear(due)
				return
			}
		}
		clear(due)

		var wait time.Duration = math.MaxInt64
		if wakeAt != math.MaxInt64 {
			wait = time.Duration(wakeAt*p.slotWidth - p.since())
		}
		if p.beat != nil {
			wait = min(wait, BeatEvery)
		}
		var timer Timer
		var timerC <-chan time.Time
		if wait != math.MaxInt64 {
			timer = p.clock.NewTimer(wait)
			timerC = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-timerC:
		case <-p.wake:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// handOut gives a to a worker, beating while all are busy. It reports false
// when ctx ended first.
func (p *Poller) handOut(ctx context.Context, a *agent) bool {
	if ctx.Err() != nil {
		return false
	}
	if p.beat == nil {
		select {
		case p.jobs <- a:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		t := p.clock.NewTimer(BeatEvery)
		select {
		case p.jobs <- a:
			t.Stop()
			return true
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C():
			p.doBeat()
		}
	}
}

func (p *Poller) doBeat() {
	if p.beat != nil {
		p.beat()
	}
}

// work polls agents handed out by dispatch until ctx ends; a poll under way
// then finishes under drain.
func (p *Poller) work(ctx, drain context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-p.jobs:
			if ctx.Err() != nil {
				p.requeue(a) // not started: left for a later Run
				return
			}
			p.poll(ctx, drain, a)
			p.inflight.Add(-1)
		}
	}
}

// deferIfPaused reschedules a without a request while every request of
// the application user is paused (ScopeCaller, after a request-count or
// execution-time 429), and reports whether it did.
func (p *Poller) deferIfPaused(a *agent) bool {
	until := p.pauseUntil.Load()
	if until == 0 || p.since() >= until {
		return false
	}
	p.mu.Lock()
	if !a.removed {
		p.insertLocked(a, until)
	}
	p.mu.Unlock()
	return true
}

// poll polls one agent, reports the observation and reschedules the agent.
// Nothing is sent once ctx has ended; a request sent completes under drain
// (and RequestTimeout) and its observation goes to the Sink under drain.
func (p *Poller) poll(ctx, drain context.Context, a *agent) {
	if p.deferIfPaused(a) {
		return
	}
	if err := p.limiter.Wait(ctx); err != nil {
		p.reschedule(a, p.since()) // not started: left for a later Run
		return
	}
	if err := p.gate.acquire(ctx); err != nil {
		p.reschedule(a, p.since()) // not started: left for a later Run
		return
	}
	if p.deferIfPaused(a) {
		p.gate.cancel()
		return
	}
	start := p.clock.Now()
	rctx, cancel := context.WithTimeout(drain, p.requestTimeout)
	snap, unchanged, err := p.get(rctx, a)
	cancel()
	end := p.clock.Now()
	var pe *PollError
	kind := KindNone
	if errors.As(err, &pe) {
		kind = pe.Kind
	}
	p.gate.release(kind)
	if drain.Err() != nil {
		// The drain was cut short: the result says nothing about the agent.
		a.last.Forget()
		p.reschedule(a, p.since())
		return
	}
	class := ClassOf(err)
	p.metrics.poll(class, end.Sub(start), end)
	if unchanged && class == ClassOK {
		p.metrics.pollUnchanged()
	}
	p.throttle.observe(class, end, end.Sub(start))
	obs := Observation{AgentID: a.id, At: end, Sent: start, Class: class, Err: err}
	if class == ClassOK {
		obs.Snapshot = snap
	} else {
		a.last.Forget() // the next answer is decoded, whatever it is
	}
	next := p.record(a, class, err, int64(end.Sub(p.epoch)))
	if err := p.sink.Observe(drain, obs); err != nil && drain.Err() == nil {
		p.log.Warn("observation not taken", "agent", a.id, "err", err)
	}
	p.reschedule(a, next)
}

// get polls a through the RepeatGetter when there is one (an answer
// repeating a's last is then not decoded: unchanged), else through Get.
func (p *Poller) get(ctx context.Context, a *agent) (*Snapshot, bool, error) {
	if p.repeat != nil {
		return p.repeat.Poll(ctx, a.id, &a.last)
	}
	snap, err := p.getter.Get(ctx, a.id)
	return &snap, false, err
}

// reschedule queues a, unless it was removed, for due (ns since epoch), or
// at once when PollNow asked for it meanwhile and a is not backing off.
func (p *Poller) reschedule(a *agent, due int64) {
	p.mu.Lock()
	if a.again && p.eager(a) {
		due = min(due, p.since())
	}
	a.again = false
	if !a.removed {
		p.insertLocked(a, due)
	}
	p.mu.Unlock()
}

// eager reports whether a may be polled ahead of its place: it is not
// backing off, throttled or unpollable. p.mu is held.
func (p *Poller) eager(a *agent) bool {
	return a.bo == nil && a.state != StateRateLimited && a.state != StateUnpollable && a.state != StateBackingOff
}

// PollNow polls an agent as soon as a worker is free, ahead of its place in
// the interval: the change feed saw its presence change, and the poll
// brings its sessions, channels and authoritative current record. An
// agent being polled is polled again right after; an agent backing off,
// throttled or unpollable keeps its schedule; an unknown one is ignored.
// The regular polls go on at the agent's place in the interval.
func (p *Poller) PollNow(agentID string) {
	id, ok := NormalizeGUID(agentID)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.agents[id]
	if a == nil || a.removed || !p.eager(a) {
		return
	}
	if !a.queued {
		a.again = true
		return
	}
	now := p.since()
	if a.slot*p.slotWidth <= now {
		return // due already
	}
	n := int64(len(p.wheel))
	b := p.wheel[a.slot%n]
	if i := slices.Index(b, a); i >= 0 {
		p.wheel[a.slot%n] = slices.Delete(b, i, i+1)
		p.queued--
	}
	p.insertLocked(a, now)
}

// record updates a's state after a poll ending at now (ns since epoch) and
// returns when a is due next.
func (p *Poller) record(a *agent, class ErrorClass, err error, now int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var next int64
	var to State
	var pe *PollError
	errors.As(err, &pe)
	switch class {
	case ClassOK:
		to = StateHealthy
		a.bo = nil
		next = p.nextPhase(a, now)
	case ClassMalformed:
		to = StateMalformed
		next = p.nextPhase(a, now)
	case ClassPermanent:
		to = StateUnpollable
		a.bo = nil
		next = p.nextPhase(a, now+max(p.permanentRetry-p.interval, 0))
	case ClassRateLimited:
		to = StateRateLimited
		wait := p.nextBackoff(a)
		if pe != nil && pe.RetryAfter > 0 {
			// Dataverse extends the penalty of a client that keeps
			// sending: wait the whole Retry-After (capped by the client at
			// RetryAfterCeiling).
			wait = min(pe.RetryAfter, RetryAfterCeiling)
		}
		next = satAdd(now, wait)
		if p.scope == ScopeCaller && (pe == nil || pe.Kind != KindConcurrency) {
			// The identity charged is the application user: no request
			// for any agent before the Retry-After.
			for {
				cur := p.pauseUntil.Load()
				if next <= cur || p.pauseUntil.CompareAndSwap(cur, next) {
					break
				}
			}
			p.metrics.identityPaused()
		}
	case ClassServer:
		to = StateBackingOff
		wait := p.nextBackoff(a)
		if pe != nil && pe.RetryAfter > 0 {
			wait = max(wait, min(pe.RetryAfter, p.backoffMax))
		}
		next = satAdd(now, wait)
	default: // ClassAuth, ClassToken, ClassTransport
		to = StateBackingOff
		next = satAdd(now, p.nextBackoff(a))
	}
	if class == ClassOK {
		a.failure = nil
	} else {
		f := FailureCount{Class: class, Kind: KindNone}
		if pe != nil {
			f.Status, f.Code, f.Kind = pe.StatusCode, pe.Code, pe.Kind
		}
		if a.failure == nil || *a.failure != f {
			a.failure = &f // kept apart: most agents' polls succeed
		}
	}
	if a.removed {
		return next
	}
	if !a.polled {
		a.polled = true
		p.polledCount++
		if p.polledCount >= len(p.agents) {
			p.firstRound = true
		}
	}
	if from := a.state; from != to {
		a.state = to
		p.counts[from]--
		p.counts[to]++
		p.metrics.agentState(from, to)
		p.logTransition(a, from, to, class, err, time.Duration(next-now))
	}
	return next
}

// satAdd adds d to t (ns) without overflowing.
func satAdd(t int64, d time.Duration) int64 {
	if d > 0 && t > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	return t + int64(d)
}

func (p *Poller) nextBackoff(a *agent) time.Duration {
	if a.bo == nil {
		a.bo = backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(p.backoffInitial),
			backoff.WithMaxInterval(p.backoffMax),
			backoff.WithMultiplier(2),
			backoff.WithMaxElapsedTime(0),
		)
	}
	return min(a.bo.NextBackOff(), p.backoffMax)
}

func (p *Poller) logTransition(a *agent, from, to State, class ErrorClass, err error, next time.Duration) {
	switch {
	case to == StateHealthy && from == StatePending:
		p.log.Debug("agent polled", "agent", a.id)
	case to == StateHealthy:
		p.log.Info("agent recovered", "agent", a.id, "from", from.String())
	default:
		attrs := []any{"agent", a.id, "from", from.String(), "to", to.String(),
			"result", string(class), "next_poll_in", next.Round(time.Millisecond), "err", err}
		var pe *PollError
		if errors.As(err, &pe) {
			if pe.StatusCode != 0 {
				attrs = append(attrs, "status", pe.StatusCode)
			}
			if pe.Code != "" {
				attrs = append(attrs, "code", pe.Code)
			}
			if pe.Message != "" {
				attrs = append(attrs, "message", pe.Message)
			}
			if h := pe.Hint(); h != "" {
				attrs = append(attrs, "fix", h)
			}
		}
		p.log.Warn("agent poll failing", attrs...)
	}
}

// Status is a snapshot of the poller's state for metrics and health checks.
type Status struct {
	// Agents is the number of configured agents.
	Agents int
	// FirstRoundDone is true once every configured agent had been polled at
	// least once; it stays true.
	FirstRoundDone bool
	// Polled counts agents polled at least once; Succeeding those whose
	// last poll succeeded.
	Polled, Succeeding int
	// Failing counts agents whose last poll failed, by their last failure:
	// class, HTTP status and Dataverse code.
	Failing []FailureCount
}

// FailureCount is the number of agents whose last poll failed the same way.
type FailureCount struct {
	Class  ErrorClass
	Status int
	Code   string
	Kind   CodeKind
	Agents int
}

// Status returns the current state counts.
func (p *Poller) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{Agents: len(p.agents), FirstRoundDone: p.firstRound}
	failing := map[FailureCount]int{}
	for _, a := range p.agents {
		if a.polled {
			st.Polled++
			if a.failure == nil {
				st.Succeeding++
			} else {
				failing[*a.failure]++
			}
		}
	}
	for f, n := range failing {
		f.Agents = n
		st.Failing = append(st.Failing, f)
	}
	slices.SortFunc(st.Failing, func(a, b FailureCount) int {
		if a.Agents != b.Agents {
			return b.Agents - a.Agents
		}
		return strings.Compare(string(a.Class)+a.Code, string(b.Class)+b.Code)
	})
	return st
}

// throttle slows the whole client when many agents get 429 in the same
// second: it halves the limiter's rate (down to 1/16 of the base) and
// doubles it again every second without such a burst.
type throttle struct {
	p      *Poller
	mu     sync.Mutex
	base   rate.Limit
	burst  int
	factor float64
	window time.Time
	total  int
	n429   int
	// With ScopeCaller: the moving mean response time and the rate that
	// keeps the execution-time budget (rate.Inf otherwise).
	meanTook  time.Duration
	execLimit rate.Limit
}

// stormMin is the fewest 429s in a second that count as many agents being
// rate-limited at once (also at least a tenth of the responses).
const stormMin = 5

func (t *throttle) observe(class ErrorClass, now time.Time, took time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.window.IsZero() {
		t.window = now
	}
	if now.Sub(t.window) >= time.Second {
		storm := t.n429 >= stormMin && t.n429*10 >= t.total
		old := t.factor

		switch {
		case storm:
			t.factor = max(t.factor/2, 1.0/16)
		case t.factor < 1:
			t.factor = min(1, t.factor*2)
		}
		if t.factor != old {
			t.apply()
			t.p.log.Warn("client request rate changed after 429 responses", "factor", t.factor,
				"limit_rps", float64(t.p.limiter.Limit()), "rate_limited_last_second", t.n429)
		}
		t.window, t.total, t.n429 = now, 0, 0
	}
	t.total++
	if t.p.scope == ScopeCaller && class != ClassRateLimited && took > 0 {
		// Execution time per second of wall time must stay within
		// pacingShare of ExecutionTime/Window: at the mean response time
		// (a moving average of the answers that were executed), that
		// allows this many requests a second.
		if t.meanTook == 0 {
			t.meanTook = took
		} else {
			t.meanTook += (took - t.meanTook) / 8
		}
		b := t.p.budget
		allowed := rate.Limit(pacingShare * b.ExecutionTime.Seconds() / b.Window.Seconds() / t.meanTook.Seconds())
		if t.execLimit == rate.Inf || math.Abs(float64(allowed-t.execLimit)) > 0.1*float64(t.execLimit) {
			t.execLimit = allowed
			t.apply()
		}
	}
	if class == ClassRateLimited {
		t.n429++
	}
}

// apply sets the limiter to factor × base, where an unlimited base is the
// rate the configured agents need.
func (t *throttle) apply() {
	t.p.metrics.rateFactor(t.factor)
	if t.factor >= 1 {
		limit := min(t.base, t.execLimit)
		t.p.limiter.SetLimit(limit)
		if limit < t.base {
			// Paced below the configured rate: no bursts above it either.
			t.p.limiter.SetBurst(max(1, int(float64(limit)/10)))
		} else {
			t.p.limiter.SetBurst(t.burst)
		}
		return
	}
	base := t.base
	if base == rate.Inf {
		t.p.mu.Lock()
		n := len(t.p.agents)
		t.p.mu.Unlock()
		base = rate.Limit(float64(max(n, 1)) / time.Duration(t.p.interval).Seconds())
	}
	t.p.limiter.SetLimit(min(rate.Limit(max(float64(base)*t.factor, 0.1)), t.execLimit))
	t.p.limiter.SetBurst(1)
}

// gate caps the requests in flight. A concurrency 429 (0x80072326)
// shortens the cap by a quarter; every 8 × cap answers without one it
// grows by one again, up to the configured maximum.
type gate struct {
	mu      sync.Mutex
	cap     int
	max     int
	inUse   int
	okSince int
	freed   chan struct{} // closed when a slot frees or the cap grows
	metrics *Metrics
}

func newGate(n int, m *Metrics) *gate {
	m.setInflightCap(n)
	return &gate{cap: n, max: n, freed: make(chan struct{}), metrics: m}
}

// acquire waits for a slot.
func (g *gate) acquire(ctx context.Context) error {
	for {
		g.mu.Lock()
		if g.inUse < g.cap {
			g.inUse++
			g.mu.Unlock()
			return nil
		}
		ch := g.freed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// cancel frees a slot not used for a request.
func (g *gate) cancel() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inUse--
	close(g.freed)
	g.freed = make(chan struct{})
}

// release frees a slot after an answer of the given kind.
func (g *gate) release(kind CodeKind) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inUse--
	switch {
	case kind == KindConcurrency:
		g.cap = max(1, g.cap*3/4)
		g.okSince = 0
		g.metrics.setInflightCap(g.cap)
	case g.cap < g.max:
		if g.okSince++; g.okSince >= 8*g.cap {
			g.cap++
			g.okSince = 0
			g.metrics.setInflightCap(g.cap)
		}
	}
	close(g.freed)
	g.freed = make(chan struct{})
}
