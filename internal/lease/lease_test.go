package lease_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/lease"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/testlog"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

const testTTL = time.Second

// interval is one period during which a process ran Leading for a shard.
type interval struct {
	instance   string
	shard      int
	start, end time.Time
}

// recorder collects the Leading intervals of every contender in a test.
type recorder struct {
	mu        sync.Mutex
	intervals []*interval
}

func (r *recorder) leading(instance string) func(ctx context.Context, shard int) {
	return func(ctx context.Context, shard int) {
		iv := &interval{instance: instance, shard: shard, start: time.Now()}
		r.mu.Lock()
		r.intervals = append(r.intervals, iv)
		r.mu.Unlock()
		<-ctx.Done()
		r.mu.Lock()
		iv.end = time.Now()
		r.mu.Unlock()
	}
}

// snapshot returns copies of the intervals; open ones have a zero end.
func (r *recorder) snapshot() []interval {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]interval, len(r.intervals))
	for i, iv := range r.intervals {
		out[i] = *iv
	}
	return out
}

// assertNoOverlap fails when two processes ran Leading for one shard at the
// same time.
func (r *recorder) assertNoOverlap(t *testing.T) {
	t.Helper()
	byShard := map[int][]interval{}
	for _, iv := range r.snapshot() {
		byShard[iv.shard] = append(byShard[iv.shard], iv)
	}
	for shard, ivs := range byShard {
		slices.SortFunc(ivs, func(a, b interval) int { return a.start.Compare(b.start) })
		for i := 1; i < len(ivs); i++ {
			prev := ivs[i-1]
			if prev.end.IsZero() || prev.end.After(ivs[i].start) {
				t.Errorf("shard %d: %s led from %v to %v while %s started at %v", shard,
					prev.instance, prev.start.Format(time.StampMilli), prev.end.Format(time.StampMilli),
					ivs[i].instance, ivs[i].start.Format(time.StampMilli))
			}
		}
	}
}

// startServer runs an in-process JetStream server for the test.
func startServer(t *testing.T) string {
	t.Helper()
	return natstest.Start(t).ClientURL()
}

func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natstest.Connect(t, url)
}

// contender is one process taking part in the election, on its own
// connection.
type contender struct {
	set     *lease.Set
	nc      *nats.Conn
	healthy atomic.Bool
	reg     *prometheus.Registry
	logs    *testlog.Buffer
	onHeld  atomic.Pointer[[]int] // the last OnChange report
	cancel  context.CancelFunc
	done    chan error
}

func startContender(t *testing.T, url, instance string, shards int, rec *recorder) *contender {
	t.Helper()
	return startContenderWith(t, url, instance, shards, rec.leading(instance))
}

func startContenderWith(t *testing.T, url, instance string, shards int, leading func(context.Context, int)) *contender {
	t.Helper()
	nc, _ := connect(t, url)
	return startContenderOn(t, nc, instance, shards, leading)
}

// startContenderOn starts a contender on a connection the test made; it is
// healthy while its Healthy flag is set and nc is connected, as in the
// bridge.
func startContenderOn(t *testing.T, nc *nats.Conn, instance string, shards int, leading func(context.Context, int)) *contender {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	c := &contender{nc: nc, reg: prometheus.NewRegistry(), logs: &testlog.Buffer{}, done: make(chan error, 1)}
	c.healthy.Store(true)
	set, err := lease.New(lease.Options{
		JetStream:  js,
		TTL:        testTTL,
		Shards:     shards,
		InstanceID: instance,
		Leading:    leading,
		OnChange:   func(held []int) { c.onHeld.Store(&held) },
		Healthy:    func() bool { return c.healthy.Load() && nc.IsConnected() },
		Metrics:    lease.NewMetrics(c.reg),
		Logger:     slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("new lease set: %v", err)
	}
	c.set = set
	// Opened first with a generous deadline, as the bridge retries it: on a
	// loaded runner several contenders creating the bucket at once can take
	// longer than one JetStream API timeout.
	octx, ocancel := context.WithTimeout(context.Background(), time.Minute)
	err = set.Open(octx)
	ocancel()
	if err != nil {
		t.Fatalf("open lease bucket: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { c.done <- set.Run(ctx) }()
	t.Cleanup(c.stop(t))
	return c
}

// stop returns a function that ends the contender and waits for Run.
func (c *contender) stop(t *testing.T) func() {
	return func() {
		c.cancel()
		select {
		case err := <-c.done:
			if err != nil {
				t.Errorf("run %s: %v", c.set.InstanceID(), err)
			}
			c.done <- nil
		case <-time.After(time.Minute):
			t.Errorf("run %s did not return after cancel", c.set.InstanceID())
		}
	}
}

func leaders(cs []*contender, shard int) []*contender {
	var out []*contender
	for _, c := range cs {
		if c.set.IsLeader(shard) {
			out = append(out, c)
		}
	}
	return out
}

// leaseRevision returns the current revision of a shard key.
func leaseRevision(t *testing.T, js jetstream.JetStream, shard int) uint64 {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), contract.LeaseBucket)
	if err != nil {
		t.Fatalf("open bucket: %v", err)
	}
	e, err := kv.Get(context.Background(), fmt.Sprintf("shard.%d", shard))
	if err != nil {
		return 0
	}
	return e.Revision()
}

func TestOneLeaderAmongContenders(t *testing.T) {
	url := startServer(t)
	_, js := connect(t, url)
	rec := &recorder{}
	cs := []*contender{
		startContender(t, url, "a", 1, rec),
		startContender(t, url, "b", 1, rec),
	}
	testwait.Until(t, 3*testTTL, "a leader", func() bool { return len(leaders(cs, 0)) == 1 })
	leader := leaders(cs, 0)[0]
	rev := leaseRevision(t, js, 0)
	testwait.Until(t, 3*testTTL, "three renewals", func() bool { return leaseRevision(t, js, 0) >= rev+3 })

	if got := leaders(cs, 0); len(got) != 1 || got[0] != leader {
		t.Fatalf("leaders after renewals = %d, want only the first leader", len(got))
	}
	if n := len(rec.snapshot()); n != 1 {
		t.Errorf("Leading ran %d times, want once", n)
	}
	for _, c := range cs {
		want := 0.0
		if c == leader {
			want = 1
		}
		if got := leaderValue(t, c.reg, "0"); got != want {
			t.Errorf("%s: ccaas_bridge_leader{shard=0} = %v, want %v", c.set.InstanceID(), got, want)
		}
		wantHeld := []int{}
		if c == leader {
			wantHeld = []int{0}
		}
		if got := c.onHeld.Load(); got == nil || !slices.Equal(*got, wantHeld) {
			t.Errorf("%s: last OnChange = %v, want %v", c.set.InstanceID(), got, wantHeld)
		}
	}
	rec.assertNoOverlap(t)
}

// leaderValue reads ccaas_bridge_leader{shard} from reg.
func leaderValue(t *testing.T, reg *prometheus.Registry, shard string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ccaas_bridge_leader" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "shard" && l.GetValue() == shard {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("ccaas_bridge_leader{shard=%q} not registered", shard)
	return 0
}

// renewalTimes records when each write of a shard key was seen, and returns
// a function giving the time of the last one written by instance.
func renewalTimes(t *testing.T, js jetstream.JetStream, shard int) func(instance string) time.Time {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := js.KeyValue(ctx, contract.LeaseBucket)
	if err != nil {
		t.Fatalf("open bucket: %v", err)
	}
	w, err := kv.Watch(ctx, fmt.Sprintf("shard.%d", shard))
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	var mu sync.Mutex
	last := map[string]time.Time{}
	go func() {
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var rec struct {
				Instance string `json:"instance"`
			}
			if err := json.Unmarshal(e.Value(), &rec); err == nil {
				mu.Lock()
				last[rec.Instance] = time.Now()
				mu.Unlock()
			}
		}
	}()
	return func(instance string) time.Time {
		mu.Lock()
		defer mu.Unlock()
		return last[instance]
	}
}

// TestStandbyTakesOverWithinTTL: a standby takes a shard over within TTL of
// the holder's last renewal when the holder stops renewing. The old holder
// steps down as soon as it sees that, and not before: one whose connection
// is gone for good cannot see it and goes on leading.
func TestStandbyTakesOverWithinTTL(t *testing.T) {
	tests := []struct {
		name         string
		kill         func(c *contender)
		seesTakeover bool
	}{
		{"leader connection dies", func(c *contender) { c.nc.Close() }, false},
		{"leader becomes unhealthy", func(c *contender) { c.healthy.Store(false) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := startServer(t)
			_, js := connect(t, url)
			rec := &recorder{}
			a := startContender(t, url, "a", 1, rec)
			testwait.Until(t, 3*testTTL, "a to lead", func() bool { return a.set.IsLeader(0) })
			b := startContender(t, url, "b", 1, rec)
			lastRenewal := renewalTimes(t, js, 0)
			rev := leaseRevision(t, js, 0)
			testwait.Until(t, 3*testTTL, "a renewal seen by b", func() bool { return leaseRevision(t, js, 0) > rev && !lastRenewal("a").IsZero() })

			tt.kill(a)
			// b holds the shard a moment before its Leading function starts:
			// wait for both.
			testwait.Until(t, 3*testTTL, "b to take over and lead", func() bool { return b.set.IsLeader(0) && len(rec.snapshot()) >= 2 })
			ivs := rec.snapshot()
			if len(ivs) != 2 || ivs[0].instance != "a" || ivs[1].instance != "b" {
				t.Fatalf("leading intervals = %+v, want a then b", ivs)
			}
			if gap := ivs[1].start.Sub(lastRenewal("a")); gap > testTTL {
				t.Errorf("b took over %s after a's last renewal, want within TTL %s", gap, testTTL)
			}
			if !strings.Contains(b.logs.String(), "took over expired shard lease") {
				t.Errorf("b's logs do not show a takeover:\n%s", b.logs)
			}
			if tt.seesTakeover {
				testwait.Until(t, testTTL, "a to step down after seeing b", func() bool { return !a.set.IsLeader(0) })
				if logs := a.logs.String(); !strings.Contains(logs, "another process took the shard") {
					t.Errorf("a stepped down for another reason:\n%s", logs)
				}
				// Nobody may take a lease over before 3/4 TTL without a
				// renewal: a stepping down earlier gave up on its own.
				if led := rec.snapshot()[0].end.Sub(lastRenewal("a")); led < testTTL*3/4-100*time.Millisecond {
					t.Errorf("a stopped leading %s after its last renewal, before anybody could take over", led)
				}
				return
			}
			if !a.set.IsLeader(0) || !rec.snapshot()[0].end.IsZero() {
				t.Errorf("a stopped leading without seeing b take over")
			}
		})
	}
}

func TestRevisionConflictLosesLeadershipAtOnce(t *testing.T) {
	url := startServer(t)
	_, js := connect(t, url)
	rec := &recorder{}
	a := startContender(t, url, "a", 1, rec)
	testwait.Until(t, 3*testTTL, "a to lead", func() bool { return a.set.IsLeader(0) })

	kv, err := js.KeyValue(context.Background(), contract.LeaseBucket)
	if err != nil {
		t.Fatalf("open bucket: %v", err)
	}
	if _, err := kv.Put(context.Background(), "shard.0", []byte(`{"instance":"intruder","session":"x","healthy":true}`)); err != nil {
		t.Fatalf("overwrite lease: %v", err)
	}
	testwait.Until(t, testTTL, "a to step down", func() bool { return !a.set.IsLeader(0) })
	if logs := a.logs.String(); !strings.Contains(logs, "another process took the shard") {
		t.Fatalf("a stepped down for another reason:\n%s", logs)
	}
	if got := leaderValue(t, a.reg, "0"); got != 0 {
		t.Errorf("ccaas_bridge_leader{shard=0} after loss = %v, want 0", got)
	}
	// The intruder never renews, so a takes the shard back once it expires.
	testwait.Until(t, 3*testTTL, "a to take the expired lease back", func() bool { return a.set.IsLeader(0) })
	rec.assertNoOverlap(t)
}

func TestShutdownHandsOverAtOnce(t *testing.T) {
	url := startServer(t)
	rec := &recorder{}
	a := startContender(t, url, "a", 1, rec)
	testwait.Until(t, 3*testTTL, "a to lead", func() bool { return a.set.IsLeader(0) })
	b := startContender(t, url, "b", 1, rec)

	stopped := time.Now()
	a.stop(t)()
	// Released keys are taken at once, well before a lease could expire.
	testwait.Until(t, testTTL/2, "b to lead after a released", func() bool { return b.set.IsLeader(0) })
	if d := time.Since(stopped); d >= testTTL*3/4 {
		t.Errorf("handover took %s, want less than the expiry of %s", d, testTTL*3/4)
	}
	rec.assertNoOverlap(t)
}

func TestLeadingThatReturnsIsNotRestartedAtOnce(t *testing.T) {
	url := startServer(t)
	var mu sync.Mutex
	var starts []time.Time
	c := startContenderWith(t, url, "a", 1, func(context.Context, int) {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(starts)
	}
	testwait.Until(t, 4*testTTL, "the shard to be taken a second time", func() bool { return count() >= 2 })
	mu.Lock()
	gap := starts[1].Sub(starts[0])
	mu.Unlock()
	if gap < testTTL*9/10 {
		t.Errorf("Leading restarted %s after it returned, want the shard left alone for a TTL (%s)", gap, testTTL)
	}
	if !strings.Contains(c.logs.String(), "leading function returned") {
		t.Errorf("logs do not say why the shard was released:\n%s", c.logs)
	}
}

func TestProcessesSplitShards(t *testing.T) {
	tests := []struct {
		name      string
		processes int
		shards    int
		staggered bool // the first process starts alone and takes every shard
	}{
		{"three processes three shards together", 3, 3, false},
		{"three processes three shards, two join late", 3, 3, true},
		{"two processes four shards", 2, 4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := startServer(t)
			rec := &recorder{}
			var cs []*contender
			cs = append(cs, startContender(t, url, "p0", tt.shards, rec))
			if tt.staggered {
				testwait.Until(t, 3*testTTL, "p0 to take every shard", func() bool { return len(cs[0].set.Held()) == tt.shards })
			}
			for i := 1; i < tt.processes; i++ {
				cs = append(cs, startContender(t, url, fmt.Sprintf("p%d", i), tt.shards, rec))
			}
			each := tt.shards / tt.processes
			balanced := func() bool {
				seen := map[int]bool{}
				for _, c := range cs {
					held := c.set.Held()
					if len(held) != each {
						return false
					}
					for _, k := range held {
						if seen[k] {
							return false
						}
						seen[k] = true
					}
				}
				return len(seen) == tt.shards
			}
			testwait.Until(t, 8*testTTL, "every process to hold its share", balanced)
			rec.assertNoOverlap(t)
		})
	}
}

func TestShardOf(t *testing.T) {
	t.Run("stable", func(t *testing.T) {
		// Golden values: changing them moves agents between shards in a
		// running deployment.
		tests := []struct {
			id     string
			shards int
			want   int
		}{
			{"394382b6-a4d4-ee11-904c-00224808a166", 1, 0},
			{"394382b6-a4d4-ee11-904c-00224808a166", 3, 0},
			{"394382B6-A4D4-EE11-904C-00224808A166", 3, 0},
			{"394382b6-a4d4-ee11-904c-00224808a166", 16, 3},
			{"00000000-0000-0000-0000-000000000000", 16, 1},
			{"FFFFFFFF-ffff-ffff-ffff-ffffffffffff", 7, 2},
		}
		for _, tt := range tests {
			if got := lease.ShardOf(tt.id, tt.shards); got != tt.want {
				t.Errorf("ShardOf(%s, %d) = %d, want %d", tt.id, tt.shards, got, tt.want)
			}
			if got := fnv1aShard(tt.id, tt.shards); got != tt.want {
				t.Errorf("reference FNV-1a of %s mod %d = %d, want %d", tt.id, tt.shards, got, tt.want)
			}
		}
	})
	t.Run("even", func(t *testing.T) {
		const agents = 30000
		ids := make([]string, agents)
		for i := range ids {
			ids[i] = uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint(i))).String()
		}
		for _, shards := range []int{2, 3, 5, 16} {
			counts := make([]int, shards)
			for _, id := range ids {
				k := lease.ShardOf(id, shards)
				if k < 0 || k >= shards {
					t.Fatalf("ShardOf(%s, %d) = %d, out of range", id, shards, k)
				}
				counts[k]++
			}
			mean := float64(agents) / float64(shards)
			for k, n := range counts {
				if math.Abs(float64(n)-mean) > 0.05*mean {
					t.Errorf("%d shards: shard %d has %d agents, want within 5%% of %.0f", shards, k, n, mean)
				}
			}
			total := 0
			for k := range shards {
				total += len(lease.AgentsOf(ids, k, shards))
			}
			if total != agents {
				t.Errorf("%d shards: AgentsOf covers %d agents, want %d", shards, total, agents)
			}
		}
	})
}

// fnv1aShard is FNV-1a 32 of the lower-case ID modulo shards, computed
// independently of the package.
func fnv1aShard(id string, shards int) int {
	h := uint32(2166136261)
	for _, b := range []byte(strings.ToLower(id)) {
		h ^= uint32(b)
		h *= 16777619
	}
	return int(h % uint32(shards))
}

// TestOpenBeforeRun: Open creates the bucket (and may be called again); Run
// then uses it and leads.
func TestOpenBeforeRun(t *testing.T) {
	url := startServer(t)
	_, js := connect(t, url)
	rec := &recorder{}
	set, err := lease.New(lease.Options{JetStream: js, TTL: testTTL, InstanceID: "a", Leading: rec.leading("a")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := js.KeyValue(ctx, contract.LeaseBucket); err == nil {
		t.Fatal("bucket exists before Open")
	}
	for range 2 {
		if err := set.Open(ctx); err != nil {
			t.Fatalf("open: %v", err)
		}
	}
	if _, err := js.KeyValue(ctx, contract.LeaseBucket); err != nil {
		t.Fatalf("bucket after Open: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	testwait.Until(t, 3*testTTL, "a to lead", func() bool { return set.IsLeader(0) })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

// lostMarkerJS is a real JetStream whose lease bucket's first watcher never
// delivers the end of the initial values (the nil entry), as a watcher
// whose consumer could not report its pending count would not.
type lostMarkerJS struct {
	jetstream.JetStream
	watches atomic.Int32
}

func (j *lostMarkerJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	return &lostMarkerKV{KeyValue: kv, js: j}, nil
}

type lostMarkerKV struct {
	jetstream.KeyValue
	js *lostMarkerJS
}

func (kv *lostMarkerKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := kv.KeyValue.WatchAll(ctx, opts...)
	if err != nil || kv.js.watches.Add(1) > 1 {
		return w, err
	}
	out := &markerlessWatcher{KeyWatcher: w, updates: make(chan jetstream.KeyValueEntry)}
	go func() {
		defer close(out.updates)
		for e := range w.Updates() {
			if e != nil {
				out.updates <- e
			}
		}
	}()
	return out, nil
}

type markerlessWatcher struct {
	jetstream.KeyWatcher
	updates chan jetstream.KeyValueEntry
}

func (w *markerlessWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

// TestWatcherWithoutInitialValuesIsReplaced: a watcher that never says it
// has delivered the bucket's initial values would keep the coordinator
// from ever deciding anything; it is replaced after a TTL and the process
// takes the free shard.
func TestWatcherWithoutInitialValuesIsReplaced(t *testing.T) {
	url := startServer(t)
	nc, real := connect(t, url)
	if _, err := real.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: contract.LeaseBucket}); err != nil {
		t.Fatal(err)
	}
	js := &lostMarkerJS{JetStream: real}
	led := make(chan int, 1)
	set, err := lease.New(lease.Options{
		JetStream: js, TTL: testTTL, InstanceID: "a",
		Leading: func(ctx context.Context, shard int) {
			led <- shard
			<-ctx.Done()
		},
		Healthy: nc.IsConnected,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-led:
	case <-time.After(time.Minute):
		t.Fatalf("no shard taken a minute after start (%d watches)", js.watches.Load())
	}
	if n := js.watches.Load(); n < 2 {
		t.Errorf("the shard was taken on watch %d: the lost marker did not happen", n)
	}
}
