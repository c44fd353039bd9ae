// Package statebucket keeps the bridge's public current-state view in a
// JetStream key-value bucket: key = agent ID, value = the agent's current
// state as JSON (schemas/agent-state.schema.json), with the stream sequence
// of its last event. A routing engine reads one agent with Get(agentId) or
// watches the whole bucket.
//
// The view is derived from the stream, which is the authority on every
// agent's history: it is written after the agent's events are stored, only
// ever forward (a value is never replaced by one with a lower sequence, so
// two writers cannot move it back), and read at start as the fast path to
// every agent's state. A value that cannot be decoded, or that names another
// agent than its key, is skipped (counted, one warning) and that agent's
// state is taken from the stream instead; it never stops the bridge.
//
// See the package example for the wiring cmd/bridge uses (Open, LoadAll,
// Get; the pipeline calls RecordAsync, and Record after an adoption).
package statebucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
)

// Options configures the bucket created when it is missing.
type Options struct {
	// Bucket is the bucket name; "" means contract.StateBucket.
	Bucket string
	// Replicas is the number of replicas of a created bucket; 0 means 1.
	Replicas int
	// Storage is the storage of a created bucket; the zero value is file.
	Storage jetstream.StorageType
	// History is how many values per key a created bucket keeps; 0 means 1.
	History uint8
	// VerifyOnly refuses to create a missing bucket (BRIDGE_STREAM_MANAGE
	// false: the team provisions the bucket itself).
	VerifyOnly bool
	// Logger receives one warning per skipped value; nil discards.
	Logger *slog.Logger
	// Metrics counts skipped values and writes; nil counts nothing.
	Metrics *Metrics
	// WriteTimeout bounds one write of RecordAsync; 0 means
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
}

// ErrBucketMissing is returned by Open with VerifyOnly when the bucket does
// not exist.
var ErrBucketMissing = errors.New("state bucket does not exist and managing is off (BRIDGE_STREAM_MANAGE=false)")

// Metrics counts what the view does.
type Metrics struct {
	skipped *prometheus.CounterVec
	writes  *prometheus.CounterVec
}

// NewMetrics registers the view's metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_state_values_skipped_total",
			Help: "State bucket values skipped at load because they cannot be used (undecodable, or naming another agent than their key); those agents' states are taken from the stream.",
		}, []string{"reason"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_state_commits_total",
			Help: "State bucket writes after an agent's events are stored, by result (ok, behind: another writer had recorded a later state, error).",
		}, []string{"result"}),
	}
	for _, r := range []string{reasonUndecodable, reasonOtherAgent} {
		m.skipped.WithLabelValues(r)
	}
	for _, r := range []string{resultOK, resultBehind, resultError} {
		m.writes.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.skipped, m.writes} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register state bucket metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Label values of the metrics.
const (
	reasonUndecodable = "undecodable"
	reasonOtherAgent  = "other_agent"
	resultOK          = "ok"
	resultBehind      = "behind"
	resultError       = "error"
)

// Skipped is the counter of values skipped for reason ("undecodable",
// "other_agent").
func (m *Metrics) Skipped(reason string) prometheus.Counter { return m.skipped.WithLabelValues(reason) }

func (m *Metrics) skip(reason string) {
	if m != nil {
		m.skipped.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) write(result string) {
	if m != nil {
		m.writes.WithLabelValues(result).Inc()
	}
}

// Store is the bucket: the bridge's current-state view.
type Store struct {
	kv      jetstream.KeyValue
	log     *slog.Logger
	metrics *Metrics

	async        *asyncWriter // nil: RecordAsync calls Record
	writeTimeout time.Duration

	mu       sync.Mutex
	revs     map[string]seen      // per key: the last revision seen and its value's sequence
	writes   map[string]*write    // per key: the RecordAsync write in flight (write.go)
	inflight map[*nats.Msg]*write // RecordAsync writes sent, awaiting their answer
}

// seen is a key's revision and the sequence of the state stored at it (0
// when the value is unusable): a write on that revision replaces that
// state, so Record only makes it when its own state goes further.
type seen struct {
	rev, seq uint64
}

func newStore(kv jetstream.KeyValue, opts Options) *Store {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	return &Store{
		kv: kv, log: log, metrics: opts.Metrics, writeTimeout: opts.WriteTimeout,
		revs: map[string]seen{}, writes: map[string]*write{}, inflight: map[*nats.Msg]*write{},
	}
}

// Open binds to the bucket, creating it when it is missing (unless
// VerifyOnly).
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		opts.Bucket = contract.StateBucket
	}
	kv, err := js.KeyValue(ctx, opts.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && opts.VerifyOnly {
		return nil, fmt.Errorf("open state bucket %s: %w", opts.Bucket, ErrBucketMissing)
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      opts.Bucket,
			Description: "CCaaS presence bridge: current state per agent (schemas/agent-state.schema.json)",
			History:     max(opts.History, 1),
			Replicas:    max(opts.Replicas, 1),
			Storage:     opts.Storage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, opts.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open state bucket %s: %w", opts.Bucket, err)
	}
	s := newStore(kv, opts)
	if s.async, err = s.newAsyncWriter(ctx, js, kv, s.writeTimeout); err != nil {
		return nil, fmt.Errorf("open state bucket %s: %w", opts.Bucket, err)
	}
	return s, nil
}

// KeyValue returns the underlying bucket.
func (s *Store) KeyValue() jetstream.KeyValue { return s.kv }

// LoadAll returns every agent's state the bucket holds in a usable form. A
// value that cannot be decoded, or whose agentId is not its key, is
// skipped: counted, logged once, and left for the stream to answer for.
func (s *Store) LoadAll(ctx context.Context) ([]detector.AgentState, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch state bucket %s: %w", s.kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	var out []detector.AgentState
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("load state bucket %s: %w", s.kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("load state bucket %s: watcher closed", s.kv.Bucket())
			}
			if e == nil { // initial values delivered
				return out, nil
			}
			st, reason, err := decode(e)
			s.saw(e.Key(), e.Revision(), st.Sequence, err == nil)
			if err != nil {
				s.metrics.skip(reason)
				s.log.Warn("state bucket value skipped; the agent's state is taken from the stream", "key", e.Key(), "revision", e.Revision(), "err", err)
				continue
			}
			out = append(out, st)
		}
	}
}

// Get returns one agent's state; ok is false when the bucket has none, or
// none usable.
func (s *Store) Get(ctx context.Context, agentID string) (st detector.AgentState, ok bool, err error) {
	e, err := s.kv.Get(ctx, agentID)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("get state of agent %s: %w", agentID, err)
	}
	st, reason, err := decode(e)
	s.saw(agentID, e.Revision(), st.Sequence, err == nil)
	if err != nil {
		s.metrics.skip(reason)
		s.log.Warn("state bucket value skipped; the agent's state is taken from the stream", "key", agentID, "revision", e.Revision(), "err", err)
		return st, false, nil
	}
	return st, true, nil
}

// saw remembers the newest revision seen of a key and its state's sequence.
func (s *Store) saw(key string, rev, seq uint64, usable bool) {
	if !usable {
		seq = 0
	}
	s.mu.Lock()
	if rev > s.revs[key].rev {
		s.revs[key] = seen{rev: rev, seq: seq}
	}
	s.mu.Unlock()
}

// Forget drops what the store remembers of the agents' keys.
func (s *Store) Forget(agentIDs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range agentIDs {
		delete(s.revs, id)
	}
}

// Record writes an agent's state unless the bucket already holds a later
// one (a higher sequence: another writer recorded further), with the key's
// revision as the fence of each attempt; an unusable value is overwritten.
func (s *Store) Record(ctx context.Context, state detector.AgentState) error {
	b, err := json.Marshal(state)
	if err != nil {
		s.metrics.write(resultError)
		return fmt.Errorf("encode state of agent %s: %w", state.AgentID, err)
	}
	s.mu.Lock()
	cur, known := s.revs[state.AgentID]
	s.mu.Unlock()
	const attempts = 5
	for range attempts {
		if known && cur.seq >= state.Sequence {
			s.metrics.write(resultBehind)
			return nil
		}
		var rev uint64
		var err error
		if known {
			rev, err = s.kv.Update(ctx, state.AgentID, b, cur.rev)
		} else {
			rev, err = s.kv.Create(ctx, state.AgentID, b)
		}
		if err == nil {
			s.saw(state.AgentID, rev, state.Sequence, true)
			s.metrics.write(resultOK)
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			s.metrics.write(resultError)
			return fmt.Errorf("record state of agent %s: %w", state.AgentID, err)
		}
		// Another revision: read it, and write on top unless it is ahead.
		e, gerr := s.kv.Get(ctx, state.AgentID)
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted):
			known = false
			continue
		case gerr != nil:
			s.metrics.write(resultError)
			return fmt.Errorf("record state of agent %s: re-read after %w: %w", state.AgentID, err, gerr)
		}
		st, _, derr := decode(e)
		if derr != nil {
			st.Sequence = 0
		}
		s.saw(state.AgentID, e.Revision(), st.Sequence, derr == nil)
		known, cur = true, seen{rev: e.Revision(), seq: st.Sequence}
	}
	s.metrics.write(resultError)
	return fmt.Errorf("record state of agent %s: %d attempts lost to other writers", state.AgentID, attempts)
}

// decode decodes a bucket value; on failure it says why, as a metric label.
func decode(e jetstream.KeyValueEntry) (detector.AgentState, string, error) {
	var st detector.AgentState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, reasonUndecodable, fmt.Errorf("decode state of agent %s at revision %d: %w", e.Key(), e.Revision(), err)
	}
	if st.AgentID != e.Key() {
		return st, reasonOtherAgent, fmt.Errorf("state under key %s at revision %d names agent %q", e.Key(), e.Revision(), st.AgentID)
	}
	return st, "", nil
}
