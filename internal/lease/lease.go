// Package lease decides which bridge process polls which agents when several
// replicas run: one leader lease per shard, held in a JetStream key-value
// bucket with revision checks, so that normally one process works on a shard
// at a time and a standby takes over when the holder dies.
//
// Leases are for efficiency, not correctness: they keep replicas from paying
// the presence API twice for the same agents. What keeps each agent's history
// consistent when two processes do work on one shard (a holder cut off from
// NATS while a standby took over) is the stream's per-agent fence, not the
// lease. A holder therefore never gives a shard up because it cannot reach
// NATS: it keeps leading until it sees that another process holds the shard.
//
// # Protocol
//
// The bucket (Options.Bucket, created when missing, history 1) holds one key
// per shard, "shard.<k>", whose value names the holder (instance ID and a
// random session ID per process), and one key per process,
// "member.<instance>.<session>", which tells the others it is alive and how
// many processes share the work. With TTL = Options.TTL:
//
//   - a free shard (key absent or deleted) is taken with Create, which
//     succeeds for exactly one contender;
//   - the holder renews with Update on its last revision every TTL/3 while
//     Options.Healthy says it is healthy, retrying every TTL/20 after an
//     error (NATS unreachable, a timeout) for as long as it takes;
//   - the holder steps down only when it sees another process's record on
//     the shard key: a renewal refused because the revision moved, and the
//     key read back names another session, or the coordinator's watch
//     delivering another session's write made after this holder took the
//     shard. A renewal whose answer was lost (the write landed, the reply
//     did not) is recognised by reading the key back and is not a loss;
//   - a contender that has seen the same revision for 3/4 TTL (measured on its
//     own monotonic clock from when it saw the revision, so clock skew between
//     hosts does not matter) treats the lease as expired and takes it over
//     with Update on that revision, which fails if the holder renewed in the
//     meantime.
//
// The coordinator decides nothing before its watcher of the bucket has
// delivered the bucket's initial values; a watcher that has not said so
// within a TTL is replaced.
//
// A dead, unhealthy or cut-off holder therefore loses its shards to a live
// contender 3/4 TTL after its last renewal; a cut-off holder goes on leading
// meanwhile and after, and learns of the takeover when NATS answers again.
// With no other process able to take over, a holder keeps its shards through
// a NATS outage of any length and renews them when NATS is back. On shutdown
// (the context given to Run ends) a holder releases its shards by deleting
// the keys, and a standby takes them over immediately.
//
// # Balance
//
// Every process tries to hold every shard nobody holds, but prefers balance:
// it takes a free shard at once only while it holds fewer than its fair share
// (shards divided by live, healthy members, rounded up) and no live member
// holds fewer; otherwise it waits until the shard has been free for a whole
// TTL. A process that holds two or more shards more than the least loaded
// member releases one per TTL. With N processes and N shards each ends up
// with one, and the survivors pick up the shards of a process that dies.
//
// # Wiring
//
// See the package example for the wiring cmd/bridge uses: an [Assignment]
// turns the shards held into the agents polled, and the Set runs until
// shutdown releases it.
//
// Leading runs in its own goroutine for each shard acquired; its context is
// cancelled when the lease is lost to another process, released or the Set
// shuts down, and the lease is released only after Leading has returned.
// Leading's context does not end because NATS is unreachable.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
)

// Defaults applied by New to zero fields of Options.
const (
	DefaultTTL    = 15 * time.Second
	DefaultShards = 1
)

const (
	shardPrefix  = "shard."
	memberPrefix = "member."
)

// Options configure a Set.
type Options struct {
	// JetStream is the connection the bucket lives on; required.
	JetStream jetstream.JetStream
	// Bucket is the key-value bucket of the leases; contract.LeaseBucket when
	// empty. It is created when missing.
	Bucket string
	// Replicas is the bucket's replica count when this Set creates it;
	// 1 when zero.
	Replicas int
	// TTL bounds how long a dead or cut-off holder keeps its shards from a
	// live contender; DefaultTTL when zero. Every process sharing a bucket
	// must use the same TTL.
	TTL time.Duration
	// Shards is the number of shards; DefaultShards when zero.
	Shards int
	// InstanceID names this process in the bucket and in logs (the pod
	// name); a random ID when empty.
	InstanceID string
	// Leading is called in its own goroutine when this process acquires a
	// shard; its context ends when the lease ends: released, the Set shut
	// down, or another process seen holding the shard, never merely because
	// NATS cannot be reached. Required.
	Leading func(ctx context.Context, shard int)
	// OnChange, when set, is called with the sorted shards held after each
	// acquisition or loss (and once with none when Run starts), one call at
	// a time. It must return quickly.
	OnChange func(held []int)
	// Healthy, when set, gates acquisition and renewal: an unhealthy process
	// takes no shard and stops renewing, so that a healthy process may take
	// its shards over after 3/4 TTL. It keeps leading until it sees that
	// another process has.
	Healthy func() bool
	// Metrics, when set, receives ccaas_bridge_leader{shard}.
	Metrics *Metrics
	// Logger receives acquisitions, losses and errors; discarded when nil.
	Logger *slog.Logger
}

// Set holds the leases of every shard this process may work on. Build it with
// New and run it with Run.
type Set struct {
	opts    Options
	session string
	timing  timing
	log     *slog.Logger

	mu       sync.Mutex
	kv       jetstream.KeyValue // the bucket, once Open succeeded
	held     map[int]*holding
	released map[int]time.Time // when this process last released each shard

	changeMu sync.Mutex // serialises OnChange calls
}

// timing derives every interval of the protocol from the TTL.
type timing struct {
	ttl         time.Duration
	renewEvery  time.Duration // holder renews this long after its last renewal
	retryEvery  time.Duration // holder retries a failed renewal this often
	expireAfter time.Duration // contender takes over a revision unchanged this long
	tick        time.Duration // contender looks at the bucket this often
	freeGrace   time.Duration // a process over its fair share waits this long
}

func newTiming(ttl time.Duration) timing {
	return timing{
		ttl:         ttl,
		renewEvery:  ttl / 3,
		retryEvery:  ttl / 20,
		expireAfter: ttl * 3 / 4,
		tick:        ttl / 10,
		freeGrace:   ttl,
	}
}

// holding is one shard this process holds.
type holding struct {
	acquired uint64        // revision of the write that took the shard
	release  chan struct{} // closed to ask the holder to release the shard
	lost     chan struct{} // closed when another process is seen holding the shard
	done     chan struct{} // closed when the holder goroutine has finished
	once     sync.Once
	lostOnce sync.Once
}

func (h *holding) askRelease() { h.once.Do(func() { close(h.release) }) }

func (h *holding) markLost() { h.lostOnce.Do(func() { close(h.lost) }) }

// record is the value of a shard or member key.
type record struct {
	Instance string    `json:"instance"`
	Session  string    `json:"session"`
	Shard    *int      `json:"shard,omitempty"`
	Healthy  bool      `json:"healthy"`
	Written  time.Time `json:"written"`
	TTL      string    `json:"ttl"`
}

// New validates opts and returns a Set ready to Run.
func New(opts Options) (*Set, error) {
	if opts.JetStream == nil {
		return nil, errors.New("lease: a JetStream connection is required")
	}
	if opts.Leading == nil {
		return nil, errors.New("lease: a Leading function is required")
	}
	if opts.Bucket == "" {
		opts.Bucket = contract.LeaseBucket
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.TTL < 100*time.Millisecond {
		return nil, fmt.Errorf("lease: TTL %s is too short (at least 100ms)", opts.TTL)
	}
	if opts.Shards == 0 {
		opts.Shards = DefaultShards
	}
	if opts.Shards < 0 {
		return nil, fmt.Errorf("lease: shard count %d must be positive", opts.Shards)
	}
	session := strings.ReplaceAll(uuid.NewString(), "-", "")
	if opts.InstanceID == "" {
		opts.InstanceID = "bridge-" + session[:8]
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Set{
		opts:     opts,
		session:  session,
		timing:   newTiming(opts.TTL),
		log:      log.With("instance", opts.InstanceID),
		held:     make(map[int]*holding),
		released: make(map[int]time.Time),
	}, nil
}

// Open opens the lease bucket, creating it when missing. Run opens it when
// Open was not called; calling Open first lets the caller retry it while
// JetStream is not ready (publish.RetryUnavailable) before anything runs.
func (s *Set) Open(ctx context.Context) error {
	s.mu.Lock()
	opened := s.kv != nil
	s.mu.Unlock()
	if opened {
		return nil
	}
	kv, err := openBucket(ctx, s.opts.JetStream, s.opts.Bucket, s.opts.Replicas)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.kv = kv
	s.mu.Unlock()
	return nil
}

// Held returns the shards this process holds now, sorted.
func (s *Set) Held() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.held))
	for k := range s.held {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// IsLeader reports whether this process holds shard.
func (s *Set) IsLeader(shard int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.held[shard]
	return ok
}

func (s *Set) healthy() bool { return s.opts.Healthy == nil || s.opts.Healthy() }

func shardKey(k int) string { return shardPrefix + strconv.Itoa(k) }

func (s *Set) memberKey() string {
	return memberPrefix + sanitizeKey(s.opts.InstanceID) + "." + s.session
}

// sanitizeKey replaces every character not allowed in a key token.
func sanitizeKey(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func (s *Set) encode(shard *int, healthy bool) []byte {
	b, _ := json.Marshal(record{
		Instance: s.opts.InstanceID,
		Session:  s.session,
		Shard:    shard,
		Healthy:  healthy,
		Written:  time.Now().UTC(),
		TTL:      s.opts.TTL.String(),
	})
	return b
}

// openBucket returns the lease bucket, creating it when missing.
func openBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open lease bucket %s: %w", bucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "ccaas presence bridge: leader leases per shard",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create lease bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// ShardOf returns the shard, in [0, shards), of an agent: FNV-1a (32 bit) of
// the lower-case agent ID modulo shards. It never changes for a given ID and
// shard count. shards below 2 yields 0.
func ShardOf(agentID string, shards int) int {
	if shards < 2 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(agentID)))
	return int(h.Sum32() % uint32(shards))
}

// AgentsOf returns the agents of ids that belong to shard, in their order.
func AgentsOf(ids []string, shard, shards int) []string {
	out := make([]string, 0, len(ids)/max(shards, 1)+1)
	for _, id := range ids {
		if ShardOf(id, shards) == shard {
			out = append(out, id)
		}
	}
	return out
}
