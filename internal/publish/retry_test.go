package publish

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/natstest"
)

func TestJetStreamUnavailable(t *testing.T) {
	api := func(code jetstream.ErrorCode, desc string) error {
		return &jetstream.APIError{Code: 503, ErrorCode: code, Description: desc}
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"temporarily unavailable", fmt.Errorf("create stream S: %w", api(10008, "JetStream system temporarily unavailable")), true},
		{"insufficient resources", fmt.Errorf("create stream S: %w", api(10023, "insufficient resources")), true},
		{"no suitable peers", fmt.Errorf("create stream S: %w", api(10005, "no suitable peers for placement")), true},
		{"cluster cannot handle", api(10009, "JetStream cluster can not handle request"), true},
		{"stream offline", api(10118, "stream is offline"), true},
		{"no responders, as the client reports it", fmt.Errorf("look up stream S: %w", jetstream.ErrJetStreamNotEnabled), true},
		{"no responders", fmt.Errorf("request: %w", nats.ErrNoResponders), true},
		{"request timeout", fmt.Errorf("look up stream S: %w", nats.ErrTimeout), true},
		{"attempt deadline", fmt.Errorf("look up stream S: %w", context.DeadlineExceeded), true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"settings differ", &StreamMismatchError{Stream: "S", Diffs: []SettingDiff{{Setting: "storage", Have: "Memory", Want: "File"}}}, false},
		{"update refused", &StreamMismatchError{Stream: "S", UpdateErr: api(10023, "insufficient resources")}, false},
		{"stream missing, management off", fmt.Errorf("ensure stream S: %w", ErrStreamMissing), false},
		{"not enabled for the account", api(jetstream.JSErrCodeJetStreamNotEnabledForAccount, "jetstream not enabled for account"), false},
		{"permission violation", fmt.Errorf("create stream S: %w: Publish to \"$JS.API.STREAM.CREATE.S\"", nats.ErrPermissionViolation), false},
		{"stream not found", jetstream.ErrStreamNotFound, false},
		{"bad request", api(10003, "bad request"), false},
		{"connection closed", nats.ErrConnectionClosed, false},
		{"cancelled", context.Canceled, false},
		{"unknown", errors.New("something else"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := JetStreamUnavailable(tt.err); got != tt.want {
				t.Errorf("JetStreamUnavailable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// clusterNode is one server of a test cluster that the test starts when it
// wants.
type clusterNode struct {
	name  string
	port  int // client port
	start func() *embeddednats.Server
}

// testCluster prepares a cluster of n JetStream servers with fixed ports;
// the first seeds have routes to each other, the others routes to the
// seeds (they join a formed cluster). None runs yet. It returns the nodes
// and the client URL list of all of them.
// clusterSeq numbers the test clusters of this process.
var clusterSeq atomic.Int64

// clusterName is a test cluster's name of its own: a node of another
// cluster (another test process running at the same time) that took a port
// probed free here refuses this cluster's routes instead of joining it and
// lending it a meta leader.
func clusterName() string {
	return fmt.Sprintf("bridge-test-%d-%d", os.Getpid(), clusterSeq.Add(1))
}

func testCluster(t *testing.T, n, seeds int) ([]*clusterNode, string) {
	t.Helper()
	routePorts := natstest.FreePorts(t, n)
	clientPorts := natstest.FreePorts(t, n)
	var routes, urls []string
	for i := range n {
		if i < seeds {
			routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(routePorts[i]))
		}
		urls = append(urls, "nats://127.0.0.1:"+strconv.Itoa(clientPorts[i]))
	}
	cluster := clusterName()
	nodes := make([]*clusterNode, n)
	for i := range n {
		node := &clusterNode{name: fmt.Sprintf("n%d", i+1), port: clientPorts[i]}
		dir := t.TempDir()
		node.start = func() *embeddednats.Server {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			srv, err := embeddednats.Start(ctx, embeddednats.Options{
				Listen: "127.0.0.1:" + strconv.Itoa(node.port), DataDir: dir, ServerName: node.name, ReadyTimeout: time.Minute, // a loaded runner can take long to form the cluster; this only catches a hang
				Configure: func(o *server.Options) error {
					o.Cluster = server.ClusterOpts{Name: cluster, Host: "127.0.0.1", Port: routePorts[i]}
					o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
					return nil
				},
			})
			if err != nil {
				t.Fatalf("start %s: %v", node.name, err)
			}
			t.Cleanup(srv.Shutdown)
			return srv
		}
		nodes[i] = node
	}
	return nodes, strings.Join(urls, ",")
}

// retries records the readiness reasons RetryUnavailable reports.
type retries struct {
	mu      sync.Mutex
	reasons []string
}

func (r *retries) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

func (r *retries) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reasons...)
}

func (r *retries) countContaining(s string) int {
	n := 0
	for _, x := range r.snapshot() {
		if strings.Contains(x, s) {
			n++
		}
	}
	return n
}

// TestRetryUnavailableWaitsForTheCluster: the bridge's replicated stream
// and buckets are set up against a cluster that cannot place them yet: one
// node of three freshly started (no meta leader), or a formed cluster with
// fewer peers than replicas. Every attempt is retried with a readiness
// reason, never returned, and all three are created once the missing nodes
// are up.
func TestRetryUnavailableWaitsForTheCluster(t *testing.T) {
	tests := []struct {
		name         string
		nodes, seeds int
		replicas     int
		// prepare starts what runs before the set-up begins; it returns
		// the nodes to start once retries were seen.
		prepare func(t *testing.T, nodes []*clusterNode) []*clusterNode
		// reasons are parts of the readiness reasons expected while the
		// cluster cannot place the assets (nil: any).
		reasons []string
	}{
		{
			name: "one node of three, no meta leader", nodes: 3, seeds: 3, replicas: 3,
			prepare: func(t *testing.T, nodes []*clusterNode) []*clusterNode {
				nodes[0].start()
				return nodes[1:]
			},
		},
		{
			name: "three peers for five replicas", nodes: 5, seeds: 3, replicas: 5,
			prepare: func(t *testing.T, nodes []*clusterNode) []*clusterNode {
				srvs := make([]*embeddednats.Server, 3)
				for i, n := range nodes[:3] {
					srvs[i] = n.start()
				}
				waitUntil(t, 60*time.Second, "a meta leader", func() bool {
					for _, s := range srvs {
						if s.NATS().JetStreamIsLeader() {
							return true
						}
					}
					return false
				})
				return nodes[3:]
			},
			reasons: []string{"peers", "insufficient resources"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			nodes, urls := testCluster(t, tt.nodes, tt.seeds)
			later := tt.prepare(t, nodes)

			nc, err := Connect(ctx, ConnOptions{URL: urls, ReconnectWait: 50 * time.Millisecond})
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			t.Cleanup(nc.Close)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatalf("jetstream: %v", err)
			}
			assets := []struct {
				what string
				op   func(context.Context) error
			}{
				{"stream " + contract.Stream, func(ctx context.Context) error {
					_, err := EnsureStream(ctx, js, StreamOptions{Manage: true, Replicas: tt.replicas})
					return err
				}},
				{"state bucket", func(ctx context.Context) error {
					_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "retry_state", History: 1, Replicas: tt.replicas})
					return err
				}},
				{"lease bucket", func(ctx context.Context) error {
					_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "retry_leases", History: 1, Replicas: tt.replicas})
					return err
				}},
			}
			rec := make([]*retries, len(assets))
			results := make([]chan error, len(assets))
			for i, a := range assets {
				rec[i], results[i] = &retries{}, make(chan error, 1)
				go func() {
					results[i] <- RetryUnavailable(ctx, a.what, a.op, RetryOptions{Conn: nc, OnRetry: rec[i].add})
				}()
			}
			// Until the missing nodes start, every asset is retried, with
			// the expected reason, and nothing returns.
			for i, a := range assets {
				for {
					got := rec[i].snapshot()
					matched := len(tt.reasons) == 0
					for _, r := range tt.reasons {
						matched = matched || rec[i].countContaining(r) > 0
					}
					if len(got) >= 2 && matched {
						break
					}
					select {
					case err := <-results[i]:
						t.Fatalf("RetryUnavailable(%s) returned %v while the cluster could not place it", a.what, err)
					case <-ctx.Done():
						t.Fatalf("%s: retries %q, want two or more with one of %q", a.what, got, tt.reasons)
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
			before := make([]int, len(assets))
			for i := range assets {
				before[i] = len(rec[i].snapshot())
			}
			for _, n := range later {
				n.start()
			}
			for i, a := range assets {
				select {
				case err := <-results[i]:
					if err != nil {
						t.Fatalf("RetryUnavailable(%s) = %v, want success once the cluster is whole", a.what, err)
					}
				case <-ctx.Done():
					t.Fatalf("%s not created after the missing nodes started; reasons %q", a.what, rec[i].snapshot())
				}
				for _, r := range rec[i].snapshot() {
					if !strings.HasPrefix(r, "jetstream: "+a.what+": ") {
						t.Errorf("readiness reason %q does not start with %q", r, "jetstream: "+a.what+": ")
					}
				}
				t.Logf("%s: %d retries before the missing nodes started, %d in all; reasons %q",
					a.what, before[i], len(rec[i].snapshot()), uniq(rec[i].snapshot()))
			}
			st, err := js.Stream(ctx, contract.Stream)
			if err != nil {
				t.Fatalf("stream after the retries: %v", err)
			}
			if r := st.CachedInfo().Config.Replicas; r != tt.replicas {
				t.Errorf("stream replicas = %d, want %d", r, tt.replicas)
			}
		})
	}
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// TestRetryUnavailableStopsOnPermanentErrors: a stream whose settings
// differ, refused permissions and the end of the context end the retries at
// once with the error.
func TestRetryUnavailableStopsOnPermanentErrors(t *testing.T) {
	srv := startServer(t, func(o *server.Options) error {
		o.Users = []*server.User{
			{Username: "admin", Password: "admin-pw"},
			{Username: "nojs", Password: "nojs-pw", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Deny: []string{"$JS.API.>"}},
			}},
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(user, pw string) (*nats.Conn, jetstream.JetStream) {
		nc, err := Connect(ctx, ConnOptions{URL: srv.ClientURL(), User: user, Password: pw})
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}
	adminNC, admin := connect("admin", "admin-pw")
	if _, err := EnsureStream(ctx, admin, StreamOptions{Manage: true, Storage: "memory"}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	noJSNC, noJS := connect("nojs", "nojs-pw")

	cancelled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	tests := []struct {
		name    string
		ctx     context.Context
		nc      *nats.Conn
		op      func(context.Context) error
		wantErr func(error) bool
	}{
		{
			name: "stream settings differ",
			ctx:  ctx,
			nc:   adminNC,
			op: func(ctx context.Context) error {
				_, err := EnsureStream(ctx, admin, StreamOptions{Manage: true, Storage: "file"})
				return err
			},
			wantErr: func(err error) bool { var m *StreamMismatchError; return errors.As(err, &m) },
		},
		{
			name: "permissions refused",
			ctx:  ctx,
			nc:   noJSNC,
			op: func(ctx context.Context) error {
				_, err := EnsureStream(ctx, noJS, StreamOptions{Manage: true})
				return err
			},
			wantErr: func(err error) bool { return errors.Is(err, nats.ErrPermissionViolation) },
		},
		{
			name:    "context ended",
			ctx:     cancelled,
			op:      func(context.Context) error { return jetstream.ErrJetStreamNotEnabled },
			wantErr: func(err error) bool { return errors.Is(err, context.Canceled) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			var reasons retries
			start := time.Now()
			err := RetryUnavailable(tt.ctx, "stream "+contract.Stream, func(ctx context.Context) error {
				calls.Add(1)
				return tt.op(ctx)
			}, RetryOptions{Conn: tt.nc, OnRetry: reasons.add})
			if err == nil || !tt.wantErr(err) {
				t.Fatalf("RetryUnavailable = %v", err)
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("op ran %d times, want once", n)
			}
			if r := reasons.snapshot(); len(r) != 0 {
				t.Errorf("readiness reasons %q for an error that is not retried", r)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}
