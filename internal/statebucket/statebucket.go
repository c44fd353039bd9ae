// Package statebucket implements detector.StateStore on a JetStream
// key-value bucket: key = agent ID, value = the agent's current state as
// JSON (schemas/agent-state.schema.json). The bucket is the bridge's public
// current-state view: a routing engine reads one agent with Get(agentId) or
// watches the whole bucket.
//
// Writes are compare-and-set on the key's revision, which fences two bridges
// writing the same agent: the second writer gets detector.ErrConflict.
//
//	store, err := statebucket.Open(ctx, js, statebucket.Options{Bucket: cfg.StateBucket})
//	det, err := detector.New(detector.Options{Store: store, ...})
package statebucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/detector"
)

// DefaultBucket is the bucket's default name (BRIDGE_STATE_BUCKET).
const DefaultBucket = "ccaas_agents"

// Options configures the bucket created when it is missing.
type Options struct {
	// Bucket is the bucket name; "" means DefaultBucket.
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
}

// ErrBucketMissing is returned by Open with VerifyOnly when the bucket does
// not exist.
var ErrBucketMissing = errors.New("state bucket does not exist and managing is off (BRIDGE_STREAM_MANAGE=false)")

// Store is the JetStream key-value implementation of detector.StateStore.
type Store struct {
	kv jetstream.KeyValue
}

var _ detector.StateStore = (*Store)(nil)

// Open binds to the bucket, creating it when it is missing (unless
// VerifyOnly).
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		opts.Bucket = DefaultBucket
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
	return &Store{kv: kv}, nil
}

// KeyValue returns the underlying bucket.
func (s *Store) KeyValue() jetstream.KeyValue { return s.kv }

// LoadAll returns every agent's state with its revision.
func (s *Store) LoadAll(ctx context.Context) ([]detector.StoredState, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch state bucket %s: %w", s.kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	var out []detector.StoredState
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
			st, err := decode(e)
			if err != nil {
				return nil, err
			}
			out = append(out, st)
		}
	}
}

// Get returns one agent's state, or an error matching detector.ErrNotFound.
func (s *Store) Get(ctx context.Context, agentID string) (detector.StoredState, error) {
	e, err := s.kv.Get(ctx, agentID)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return detector.StoredState{}, fmt.Errorf("get state of agent %s: %w", agentID, detector.ErrNotFound)
	}
	if err != nil {
		return detector.StoredState{}, fmt.Errorf("get state of agent %s: %w", agentID, err)
	}
	return decode(e)
}

// Put writes an agent's state if its revision is still expectedRevision (0:
// the agent has no state) and returns the new revision; otherwise it returns
// an error matching detector.ErrConflict.
func (s *Store) Put(ctx context.Context, state detector.AgentState, expectedRevision uint64) (uint64, error) {
	b, err := json.Marshal(state)
	if err != nil {
		return 0, fmt.Errorf("encode state of agent %s: %w", state.AgentID, err)
	}
	var rev uint64
	if expectedRevision == 0 {
		rev, err = s.kv.Create(ctx, state.AgentID, b)
	} else {
		rev, err = s.kv.Update(ctx, state.AgentID, b, expectedRevision)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("put state of agent %s at revision %d: %w: %w", state.AgentID, expectedRevision, detector.ErrConflict, err)
	}
	if err != nil {
		return 0, fmt.Errorf("put state of agent %s: %w", state.AgentID, err)
	}
	return rev, nil
}

func decode(e jetstream.KeyValueEntry) (detector.StoredState, error) {
	var st detector.AgentState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return detector.StoredState{}, fmt.Errorf("decode state of agent %s at revision %d: %w", e.Key(), e.Revision(), err)
	}
	if st.AgentID == "" {
		st.AgentID = e.Key()
	}
	return detector.StoredState{State: st, Revision: e.Revision()}, nil
}
