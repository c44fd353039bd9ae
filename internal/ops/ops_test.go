package ops

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

const testStream = contract.Stream

// startStream runs an in-process JetStream server for one test, connects to
// it with opts and creates the events stream.
func startStream(t *testing.T, opts ...nats.Option) (*natstest.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns.ClientURL(), opts...)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: testStream, Subjects: []string{contract.StreamSubjects(contract.SubjectPrefix)}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return ns, nc, js
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestReadyz(t *testing.T) {
	type env struct {
		ns               *natstest.Server
		nc               *nats.Conn
		srv              *Server
		token, firstPoll *Flag
	}
	tests := []struct {
		name     string
		setup    func(t *testing.T, e *env)
		wantCode int
		wantBody string
	}{
		{
			name:     "healthy",
			setup:    func(t *testing.T, e *env) {},
			wantCode: 200,
			wantBody: `{"status":"ready","checks":{"first_poll":{"ok":true},"nats":{"ok":true},"stream":{"ok":true},"token":{"ok":true}}}`,
		},
		{
			name:     "no token yet",
			setup:    func(t *testing.T, e *env) { e.token.Set(false, "no token obtained yet") },
			wantCode: 503,
			wantBody: `{"status":"not_ready","checks":{"first_poll":{"ok":true},"nats":{"ok":true},"stream":{"ok":true},"token":{"ok":false,"reason":"no token obtained yet"}}}`,
		},
		{
			name:     "first poll round not done",
			setup:    func(t *testing.T, e *env) { e.firstPoll.Set(false, "first poll round not done") },
			wantCode: 503,
			wantBody: `{"status":"not_ready","checks":{"first_poll":{"ok":false,"reason":"first poll round not done"},"nats":{"ok":true},"stream":{"ok":true},"token":{"ok":true}}}`,
		},
		{
			name: "stream missing",
			setup: func(t *testing.T, e *env) {
				js, _ := jetstream.New(e.nc)
				if err := js.DeleteStream(t.Context(), testStream); err != nil {
					t.Fatalf("delete stream: %v", err)
				}
			},
			wantCode: 503,
			wantBody: `{"status":"not_ready","checks":{"first_poll":{"ok":true},"nats":{"ok":true},"stream":{"ok":false,"reason":"stream CCAAS_AGENTS not found"},"token":{"ok":true}}}`,
		},
		{
			name: "nats down",
			setup: func(t *testing.T, e *env) {
				changed := e.nc.StatusChanged(nats.RECONNECTING)
				e.ns.Stop()
				select {
				case <-changed:
				case <-time.After(10 * time.Second):
					t.Fatal("client did not notice the server going down")
				}
			},
			wantCode: 503,
			wantBody: `{"status":"not_ready","checks":{"first_poll":{"ok":true},"nats":{"ok":false,"reason":"reconnecting"},"stream":{"ok":false,"reason":"nats not connected"},"token":{"ok":true}}}`,
		},
		{
			name: "standby without token",
			setup: func(t *testing.T, e *env) {
				e.token.Set(false, "no token obtained yet")
				e.firstPoll.Set(false, "first poll round not done")
				e.srv.SetStandby(true, "not leader")
			},
			wantCode: 200,
			wantBody: `{"status":"standby","reason":"not leader","checks":{"first_poll":{"ok":true,"reason":"standby","skipped":true},"nats":{"ok":true},"stream":{"ok":true},"token":{"ok":true,"reason":"standby","skipped":true}}}`,
		},
		{
			name: "standby with nats down",
			setup: func(t *testing.T, e *env) {
				e.srv.SetStandby(true, "not leader")
				e.nc.Close()
			},
			wantCode: 503,
			wantBody: `{"status":"not_ready","checks":{"first_poll":{"ok":true,"reason":"standby","skipped":true},"nats":{"ok":false,"reason":"closed"},"stream":{"ok":false,"reason":"nats not connected"},"token":{"ok":true,"reason":"standby","skipped":true}}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, nc, js := startStream(t, nats.MaxReconnects(-1))
			e := &env{ns: ns, nc: nc, srv: newServer(t, Options{}),
				token: NewFlag("token", "unset"), firstPoll: NewFlag("first_poll", "unset")}
			e.token.Set(true, "")
			e.firstPoll.Set(true, "")
			sw := StreamCheck(js, testStream)
			e.srv.AddCheck(NATSCheck(nc))
			e.srv.AddCheck(sw)
			e.srv.AddActiveCheck(e.token)
			e.srv.AddActiveCheck(e.firstPoll)
			tt.setup(t, e)
			sw.Refresh(t.Context()) // what the loop does every interval while serving

			code, body := get(t, e.srv.Handler(), "/readyz")
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("GET /readyz = %d %s\nwant        %d %s", code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestHealthz(t *testing.T) {
	tests := []struct {
		name     string
		run      func(s *Server, clk *fakeClock)
		wantCode int
		wantBody string
	}{
		{
			name:     "no loops",
			run:      func(s *Server, clk *fakeClock) {},
			wantCode: 200,
			wantBody: `{"status":"ok","checks":{}}`,
		},
		{
			name: "loops beating",
			run: func(s *Server, clk *fakeClock) {
				poller := s.Heartbeat("poller", time.Minute)
				s.Heartbeat("publisher", time.Minute)
				clk.Advance(50 * time.Second)
				poller.Beat()
			},
			wantCode: 200,
			wantBody: `{"status":"ok","checks":{"poller":{"ok":true},"publisher":{"ok":true}}}`,
		},
		{
			name: "one loop wedged",
			run: func(s *Server, clk *fakeClock) {
				poller := s.Heartbeat("poller", time.Minute)
				s.Heartbeat("publisher", time.Minute)
				clk.Advance(2 * time.Minute)
				poller.Beat()
			},
			wantCode: 503,
			wantBody: `{"status":"wedged","checks":{"poller":{"ok":true},"publisher":{"ok":false,"reason":"no heartbeat for 2m0s (threshold 1m0s)"}}}`,
		},
		{
			name: "stopped loop not counted",
			run: func(s *Server, clk *fakeClock) {
				s.Heartbeat("poller", time.Minute).Stop()
				clk.Advance(2 * time.Minute)
			},
			wantCode: 200,
			wantBody: `{"status":"ok","checks":{}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
			s := newServer(t, Options{Now: clk.Now})
			tt.run(s, clk)
			code, body := get(t, s.Handler(), "/healthz")
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("GET /healthz = %d %s\nwant         %d %s", code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ccaas_bridge_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	global := prometheus.NewCounter(prometheus.CounterOpts{Name: "ccaas_bridge_global_registry_only_total", Help: "test"})
	prometheus.MustRegister(global)
	t.Cleanup(func() { prometheus.Unregister(global) })
	s := newServer(t, Options{Registry: reg, Version: "1.2.3"})
	code, body := get(t, s.Handler(), "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		`ccaas_bridge_build_info{goversion="` + runtime.Version() + `",version="1.2.3"} 1`,
		`ccaas_bridge_test_total 3`,
		"go_goroutines ",                // the Go runtime collector
		"go_memstats_heap_inuse_bytes ", // what GOMEMLIMIT is sized from
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "ccaas_bridge_global_registry_only_total") {
		t.Error("metrics served from the global registry")
	}
	if _, err := New(Options{Registry: reg, Version: "1.2.3"}); err == nil {
		t.Error("second New on one registry: want a duplicate registration error")
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without registry: want error")
	}
}

func TestServeShutsDownOnCancel(t *testing.T) {
	s := newServer(t, Options{ShutdownTimeout: time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != `{"status":"ok","checks":{}}` {
		t.Fatalf("GET /healthz = %d %s", resp.StatusCode, b)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Fatal("server still answering after shutdown")
	}
}

// TestReadyzMakesNoJetStreamRequest probes /readyz many times and watches
// the JetStream API subjects: no probe may send a request, the stream's
// state comes from the last lookup.
func TestReadyzMakesNoJetStreamRequest(t *testing.T) {
	ns, nc, js := startStream(t)
	spy, _ := natstest.Connect(t, ns.ClientURL())
	var requests atomic.Int64
	if _, err := spy.Subscribe("$JS.API.>", func(*nats.Msg) { requests.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	srv := newServer(t, Options{})
	sw := StreamCheck(js, testStream)
	srv.AddCheck(sw)
	if code, body := get(t, srv.Handler(), "/readyz"); code != 503 || !strings.Contains(body, "stream not checked yet") {
		t.Fatalf("GET /readyz before the first lookup = %d %s", code, body)
	}
	sw.Refresh(t.Context())
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "the lookup to reach the spy", func() bool { return requests.Load() >= 1 })
	before := requests.Load()
	for range 200 {
		if code, body := get(t, srv.Handler(), "/readyz"); code != 200 {
			t.Fatalf("GET /readyz = %d %s", code, body)
		}
	}
	// A marker request after the probes: once the spy has it, it has
	// everything sent before it.
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "the marker request", func() bool { return requests.Load() >= before+1 })
	if got := requests.Load() - before; got != 1 {
		t.Errorf("200 probes sent %d JetStream API requests, want none", got-1)
	}
}

// TestStreamWatchRefreshedWhileServing runs the server with a short lookup
// interval: a deleted stream shows on /readyz within a few intervals, and
// Serve waits for the loop when it stops.
func TestStreamWatchRefreshedWhileServing(t *testing.T) {
	_, _, js := startStream(t)
	srv := newServer(t, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	srv.AddCheck(NewStreamWatch(js, testStream, 20*time.Millisecond)) // added while serving, as cmd/bridge does

	testwait.Until(t, 10*time.Second, "ready", func() bool { code, _ := get(t, srv.Handler(), "/readyz"); return code == 200 })
	if err := js.DeleteStream(t.Context(), testStream); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "the missing stream on /readyz", func() bool {
		_, body := get(t, srv.Handler(), "/readyz")
		return strings.Contains(body, "stream "+testStream+" not found")
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestServerTimeouts checks that the operator port cuts off a client that
// never finishes its request headers, and closes an idle keep-alive
// connection.
func TestServerTimeouts(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		write string // sent once connected
	}{
		{"slow request headers", Options{ReadHeaderTimeout: 100 * time.Millisecond}, "GET /healthz HTTP/1.1\r\nHost: x\r\n"},
		{"idle keep-alive connection", Options{IdleTimeout: 100 * time.Millisecond}, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, tt.opts)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, ln) }()
			defer func() { cancel(); <-done }()

			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tt.write); err != nil {
				t.Fatal(err)
			}
			// The server closes the connection: reading ends with EOF (after
			// the response, for the idle case) well before this deadline.
			start := time.Now()
			if err := conn.SetReadDeadline(start.Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(conn)
			if err != nil {
				t.Fatalf("connection not closed by the server: %v", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("closed after %s", d)
			}
		})
	}
}

// TestShutdownIsBoundedByTheCallersContext: Shutdown waits for a request in
// flight while its context allows, cuts it off when the context ends, and
// Serve returns after it in both cases, whatever Options.ShutdownTimeout.
func TestShutdownIsBoundedByTheCallersContext(t *testing.T) {
	tests := []struct {
		name     string
		budget   time.Duration
		release  bool // the request in flight finishes before the budget ends
		wantErr  bool
		maxTaken time.Duration
	}{
		{name: "request finishes within the budget", budget: 30 * time.Second, release: true, maxTaken: 10 * time.Second},
		{name: "budget ends first", budget: 300 * time.Millisecond, wantErr: true, maxTaken: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, Options{ShutdownTimeout: time.Hour})
			entered := make(chan struct{})
			release := make(chan struct{})
			var once sync.Once
			s.AddCheck(CheckFunc("slow", func() (bool, string) {
				once.Do(func() { close(entered) })
				<-release
				return true, ""
			}))
			t.Cleanup(func() {
				select {
				case <-release:
				default:
					close(release)
				}
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- s.Serve(context.Background(), ln) }()

			answered := make(chan int, 1)
			go func() {
				resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
				if err != nil {
					answered <- 0
					return
				}
				resp.Body.Close()
				answered <- resp.StatusCode
			}()
			select {
			case <-entered:
			case <-time.After(5 * time.Second):
				t.Fatal("the request never reached the check")
			}

			ctx, cancel := context.WithTimeout(context.Background(), tt.budget)
			defer cancel()
			start := time.Now()
			shut := make(chan error, 1)
			go func() { shut <- s.Shutdown(ctx) }()
			if tt.release {
				// Shutdown is waiting for the request: let it finish.
				close(release)
			}
			var shutErr error
			select {
			case shutErr = <-shut:
			case <-time.After(tt.maxTaken):
				t.Fatalf("Shutdown did not return within %s", tt.maxTaken)
			}
			taken := time.Since(start)
			if (shutErr != nil) != tt.wantErr {
				t.Fatalf("Shutdown = %v, want error %v", shutErr, tt.wantErr)
			}
			if tt.wantErr && taken < tt.budget {
				t.Errorf("Shutdown gave up after %s, before its budget of %s", taken, tt.budget)
			}
			select {
			case err := <-served:
				if (err != nil) != tt.wantErr {
					t.Errorf("Serve = %v, want error %v", err, tt.wantErr)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return after Shutdown")
			}
			code := <-answered
			if tt.release && code != http.StatusOK {
				t.Errorf("request in flight answered %d, want 200", code)
			}
			if !tt.release && code != 0 {
				t.Errorf("request in flight answered %d after its connection was cut", code)
			}
			if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
				t.Error("server still answering after Shutdown")
			}
		})
	}
}

// TestProfiling serves Go's runtime profiles only when asked to.
func TestProfiling(t *testing.T) {
	for _, tc := range []struct {
		name      string
		profiling bool
		want      int
	}{
		{"off by default", false, http.StatusNotFound},
		{"on", true, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{Profiling: tc.profiling})
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
				code, body := get(t, s.Handler(), path)
				if code != tc.want {
					t.Errorf("GET %s = %d, want %d", path, code, tc.want)
				}
				if tc.profiling && path == "/debug/pprof/heap?debug=1" && !strings.Contains(body, "heap profile:") {
					t.Errorf("GET %s is not a heap profile: %.200s", path, body)
				}
			}
		})
	}
}
