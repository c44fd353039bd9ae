// Package ops is the bridge's operator HTTP server: Prometheus metrics,
// liveness and readiness.
//
//   - GET /metrics serves the private *prometheus.Registry given in Options
//     (never the global one). New registers ccaas_bridge_build_info{version,
//     goversion} = 1 on it, and the Prometheus client's Go runtime (go_*)
//     and process (process_*) collectors.
//
//   - GET /healthz is liveness: 200 while every registered loop has beaten
//     within its threshold, 503 naming the wedged loop otherwise. It never
//     looks at NATS or the presence API: a broken dependency is not a reason
//     to restart the process.
//
//   - GET /readyz is readiness: 200 when every registered Check is ready, 503
//     otherwise, with a JSON body giving each check's state and reason:
//
//     {"status":"not_ready","checks":{"nats":{"ok":false,"reason":"reconnecting"},...}}
//
//     In standby (this replica is not the leader) checks added with
//     AddActiveCheck are skipped and the answer is 200 with status "standby":
//     the replica is healthy and ready to take over, but idle.
//
//   - GET /debug/pprof/... (only with Options.Profiling) serves Go's runtime
//     profiles (net/http/pprof): CPU, heap, allocations, goroutines, traces.
//     A CPU profile or trace must end within the server's WriteTimeout.
//
// See the package example for the wiring cmd/bridge uses.
//
// Heartbeats are beaten by the loops themselves (a dispatch loop, a
// coordinator), never by a goroutine of their own that looks at other
// packages' state: a loop waiting on NATS or on a lock is then exactly what
// /healthz sees.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Defaults applied by New to zero Options fields.
//
// Probes and scrapes are small requests on a local network: a client that
// sends its request, or reads the answer, more slowly than the timeouts is
// cut off rather than holding a connection.
const (
	DefaultShutdownTimeout = 5 * time.Second
	// DefaultReadHeaderTimeout bounds reading a request's headers.
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout bounds reading a whole request.
	DefaultReadTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds a response, from the end of the request
	// headers to its last byte (a /metrics scrape included).
	DefaultWriteTimeout = 30 * time.Second
	// DefaultIdleTimeout closes a keep-alive connection idle this long.
	DefaultIdleTimeout = 2 * time.Minute
)

// Status values in the JSON bodies.
const (
	StatusOK       = "ok"
	StatusReady    = "ready"
	StatusNotReady = "not_ready"
	StatusStandby  = "standby"
	StatusWedged   = "wedged"
)

// Options configures a Server.
type Options struct {
	// Registry is served on /metrics; required. The build-info metric is
	// registered on it.
	Registry *prometheus.Registry
	// Version is the bridge's version, the label of ccaas_bridge_build_info.
	Version string
	// Logger receives the server's lifecycle logs; discarded when nil.
	Logger *slog.Logger
	// ShutdownTimeout bounds the HTTP shutdown that follows the end of the
	// context passed to Serve; DefaultShutdownTimeout when zero. A
	// caller that must fit the shutdown into its own budget calls Shutdown
	// with a context carrying that deadline instead.
	ShutdownTimeout time.Duration
	// Now is the clock used for heartbeats; time.Now when nil. Tests set it.
	Now func() time.Time
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are the
	// HTTP server's timeouts; the Default… constants when zero.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// Profiling serves net/http/pprof's runtime profiles under
	// /debug/pprof/ (BRIDGE_PPROF); off when false.
	Profiling bool
}

// Check is one readiness condition. Ready must be cheap, safe for
// concurrent use, and make no network request (a probe must not load
// NATS or the presence API); reason says why it is not ready (and may say
// something useful when it is). A check that needs a request keeps its
// answer and refreshes it in a loop: see Refresher.
type Check interface {
	Name() string
	Ready() (ok bool, reason string)
}

// Refresher is a Check that refreshes its state in a loop: the Server runs
// Run while it serves (from Serve, or from AddCheck when added later) and
// waits for it to return after ctx is done.
type Refresher interface {
	Check
	Run(ctx context.Context)
}

// CheckFunc returns a Check named name that calls fn.
func CheckFunc(name string, fn func() (bool, string)) Check {
	return funcCheck{name: name, fn: fn}
}

type funcCheck struct {
	name string
	fn   func() (bool, string)
}

func (c funcCheck) Name() string               { return c.name }
func (c funcCheck) Ready() (ok bool, r string) { return c.fn() }

// Flag is a Check whose state is set by the code that knows it: "a token
// was obtained", "the first poll round is done". It is safe for concurrent
// use.
type Flag struct {
	name  string
	state atomic.Pointer[flagState]
}

type flagState struct {
	ok     bool
	reason string
}

var _ Check = (*Flag)(nil)

// NewFlag returns a Flag named name that is not ready, with reason.
func NewFlag(name, reason string) *Flag {
	f := &Flag{name: name}
	f.Set(false, reason)
	return f
}

// Set records whether the condition holds and why.
func (f *Flag) Set(ok bool, reason string) {
	f.state.Store(&flagState{ok: ok, reason: reason})
}

// Name returns the flag's name.
func (f *Flag) Name() string { return f.name }

// Ready returns the last state Set.
func (f *Flag) Ready() (bool, string) {
	s := f.state.Load()
	return s.ok, s.reason
}

// Server is the operator HTTP server. Its methods are safe for concurrent
// use.
type Server struct {
	opts    Options
	logger  *slog.Logger
	handler http.Handler

	mu          sync.Mutex
	loopCtx     context.Context // set while serving: Refresher loops run under it
	loops       sync.WaitGroup
	checks      []registeredCheck
	standby     bool
	standbyWhy  string
	heartbeats  map[int]*Heartbeat
	nextBeatKey int

	httpMu   sync.Mutex
	hs       *http.Server  // set by Serve
	closing  bool          // Shutdown was called
	shutDown chan struct{} // closed when Shutdown has finished
	shutErr  error         // Shutdown's result, read after shutDown is closed
}

type registeredCheck struct {
	check  Check
	active bool // skipped in standby
}

// New returns a Server; it registers the build-info metric on
// opts.Registry.
func New(opts Options) (*Server, error) {
	if opts.Registry == nil {
		return nil, errors.New("ops server: a prometheus registry is required")
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&opts.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{&opts.ReadTimeout, DefaultReadTimeout},
		{&opts.WriteTimeout, DefaultWriteTimeout},
		{&opts.IdleTimeout, DefaultIdleTimeout},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "ccaas_bridge_build_info",
		Help:        "Always 1; the labels give the bridge's version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": opts.Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	for _, c := range []struct {
		what string
		c    prometheus.Collector
	}{
		{"build info metric", buildInfo},
		{"Go runtime metrics", collectors.NewGoCollector()},
		{"process metrics", collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})},
	} {
		if err := opts.Registry.Register(c.c); err != nil {
			return nil, fmt.Errorf("register %s: %w", c.what, err)
		}
	}
	s := &Server{opts: opts, logger: logger, heartbeats: map[int]*Heartbeat{}, shutDown: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{Registry: opts.Registry}))
	mux.HandleFunc("GET /healthz", s.serveHealthz)
	mux.HandleFunc("GET /readyz", s.serveReadyz)
	if opts.Profiling {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s.handler = mux
	return s, nil
}

// Handler returns the HTTP handler serving /metrics, /healthz and /readyz
// (and /debug/pprof/ with Options.Profiling).
func (s *Server) Handler() http.Handler { return s.handler }

// AddCheck registers a readiness check that applies in every state,
// standby included (NATS connected, stream present).
func (s *Server) AddCheck(c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, registeredCheck{check: c})
	s.startLoopLocked(c)
}

// AddActiveCheck registers a readiness check that applies only while this
// replica is active, not in standby (token obtained, first poll round
// done).
func (s *Server) AddActiveCheck(c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, registeredCheck{check: c, active: true})
	s.startLoopLocked(c)
}

// startLoopLocked runs c's refresh loop when c is a Refresher and the
// server is serving; Serve starts the loops of checks added before it.
func (s *Server) startLoopLocked(c Check) {
	r, ok := c.(Refresher)
	if !ok || s.loopCtx == nil || s.loopCtx.Err() != nil {
		return
	}
	ctx := s.loopCtx
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		r.Run(ctx)
	}()
}

// SetStandby switches standby on (with a reason such as "not leader") or
// off.
func (s *Server) SetStandby(standby bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.standby, s.standbyWhy = standby, reason
}

// CheckResult is one check's state in a /readyz body, or one loop's in a
// /healthz body.
type CheckResult struct {
	OK      bool   `json:"ok"`
	Reason  string `json:"reason,omitempty"`
	Skipped bool   `json:"skipped,omitempty"`
}

// Report is the JSON body of /readyz and /healthz.
type Report struct {
	Status string                 `json:"status"`
	Reason string                 `json:"reason,omitempty"`
	Checks map[string]CheckResult `json:"checks"`
}

// Readiness evaluates every check and returns the /readyz report and
// whether the replica is ready (standby counts as ready).
func (s *Server) Readiness() (Report, bool) {
	s.mu.Lock()
	checks := append([]registeredCheck(nil), s.checks...)
	standby, why := s.standby, s.standbyWhy
	s.mu.Unlock()

	rep := Report{Status: StatusReady, Checks: make(map[string]CheckResult, len(checks))}
	ready := true
	for _, rc := range checks {
		name := rc.check.Name()
		if standby && rc.active {
			rep.Checks[name] = CheckResult{OK: true, Skipped: true, Reason: "standby"}
			continue
		}
		ok, reason := rc.check.Ready()
		rep.Checks[name] = CheckResult{OK: ok, Reason: reason}
		ready = ready && ok
	}
	switch {
	case !ready:
		rep.Status = StatusNotReady
	case standby:
		rep.Status, rep.Reason = StatusStandby, why
	}
	return rep, ready
}

func (s *Server) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	rep, ok := s.Readiness()
	writeReport(w, rep, ok)
}

// Heartbeat is a liveness signal for one long-running loop: the loop calls
// Beat each time round; /healthz fails when it has not for longer than the
// threshold. Stop removes it when the loop ends normally.
type Heartbeat struct {
	s         *Server
	key       int
	name      string
	threshold time.Duration
	last      atomic.Int64 // unix nanoseconds
}

// Heartbeat registers a loop named name that must beat at least every
// threshold; registration counts as the first beat.
func (s *Server) Heartbeat(name string, threshold time.Duration) *Heartbeat {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextBeatKey++
	hb := &Heartbeat{s: s, key: s.nextBeatKey, name: name, threshold: threshold}
	hb.Beat()
	s.heartbeats[hb.key] = hb
	return hb
}

// Beat records that the loop is alive now.
func (h *Heartbeat) Beat() { h.last.Store(h.s.opts.Now().UnixNano()) }

// Stop unregisters the heartbeat; call it when the loop returns.
func (h *Heartbeat) Stop() {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	delete(h.s.heartbeats, h.key)
}

// Liveness evaluates every heartbeat and returns the /healthz report and
// whether the process is alive.
func (s *Server) Liveness() (Report, bool) {
	s.mu.Lock()
	hbs := make([]*Heartbeat, 0, len(s.heartbeats))
	for _, hb := range s.heartbeats {
		hbs = append(hbs, hb)
	}
	s.mu.Unlock()
	sort.Slice(hbs, func(i, j int) bool { return hbs[i].key < hbs[j].key })

	now := s.opts.Now()
	rep := Report{Status: StatusOK, Checks: make(map[string]CheckResult, len(hbs))}
	alive := true
	for _, hb := range hbs {
		age := now.Sub(time.Unix(0, hb.last.Load())).Round(time.Millisecond)
		res := CheckResult{OK: age <= hb.threshold}
		if !res.OK {
			res.Reason = fmt.Sprintf("no heartbeat for %s (threshold %s)", age, hb.threshold)
			alive = false
		}
		if prev, dup := rep.Checks[hb.name]; dup && !prev.OK {
			continue // keep the failing one of two loops with one name
		}
		rep.Checks[hb.name] = res
	}
	if !alive {
		rep.Status = StatusWedged
	}
	return rep, alive
}

func (s *Server) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	rep, ok := s.Liveness()
	writeReport(w, rep, ok)
}

func writeReport(w http.ResponseWriter, rep Report, ok bool) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if ok {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	// Encoding a map of plain structs cannot fail; a write error means the
	// prober went away.
	_ = json.NewEncoder(w).Encode(rep)
}

// Serve serves on a listener the caller opened (so that an address in use
// is known before anything starts); it closes ln. It serves until ctx is
// done (then shuts down within Options.ShutdownTimeout) or until Shutdown is
// called (then it returns Shutdown's result once Shutdown has finished). While it serves it runs the loops of the Refresher checks, and
// waits for them before it returns. Serve may be called once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		WriteTimeout:      s.opts.WriteTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.httpMu.Lock()
	if s.closing {
		s.httpMu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.hs = hs
	s.httpMu.Unlock()
	loopCtx, stopLoops := context.WithCancel(ctx)
	s.mu.Lock()
	s.loopCtx = loopCtx
	for _, rc := range s.checks {
		s.startLoopLocked(rc.check)
	}
	s.mu.Unlock()
	defer func() {
		stopLoops()
		s.loops.Wait()
	}()
	s.logger.Info("operator http listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()

	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			<-s.shutDown // Shutdown was called: wait until it is done
			return s.shutErr
		}
		return fmt.Errorf("serve operator http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownTimeout)
	defer cancel()
	shutdownErr := s.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve operator http: %w", err)
	}
	return shutdownErr
}

// Shutdown stops the HTTP server: it stops accepting connections, waits for
// the requests in flight until ctx ends, and then closes whatever is left,
// so it returns by ctx's deadline. Serve returns once Shutdown has finished.
// It returns an error when requests had to be cut off. Calls after the
// first return the first one's result once it is done; a call before Serve
// makes Serve return at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.httpMu.Lock()
	if s.closing {
		s.httpMu.Unlock()
		select {
		case <-s.shutDown:
			return s.shutErr
		case <-ctx.Done():
			return fmt.Errorf("shut down operator http: %w", ctx.Err())
		}
	}
	s.closing = true
	hs := s.hs
	s.httpMu.Unlock()
	defer close(s.shutDown)
	if hs == nil {
		return nil
	}
	if err := hs.Shutdown(ctx); err != nil {
		_ = hs.Close()
		s.shutErr = fmt.Errorf("shut down operator http: %w", err)
		s.logger.Warn("operator http stopped with requests cut off", "err", err)
		return s.shutErr
	}
	s.logger.Info("operator http stopped")
	return nil
}
