// Package simulator is a fake Dynamics 365 Contact Center organisation served
// over real HTTP, the stand-in for a customer's organisation in the demo, the
// tests and the benchmarks. It imports nothing of the bridge, so it catches
// the client's mistakes rather than sharing them.
//
// It serves three Dataverse endpoints:
//
//   - GET /api/data/v9.2/CCaaS_GetPresence: the presence of the agent named by
//     the MSCRMCallerID header, with the keys and JSON types of the contract
//     plus "@odata.context"; 400 for a missing or malformed MSCRMCallerID, 401
//     without an accepted bearer token, 404 for an unknown agent, 405 (with
//     Allow: GET) for any other method, 429 and 5xx when faults say so. Error
//     bodies are shaped like Dataverse's: {"error":{"code":..,"message":..}}.
//     Options.CallForm decides whether the bare form, the function form
//     CCaaS_GetPresence(ApiVersion=@v)?@v='1.0', or both are accepted (the
//     other form is answered 400 or 404 0x8006088a); Options.NullEmpty,
//     ExtraKeys, Gzip and Inactive vary the bodies the documentation does
//     not pin down. Every answer carries the x-ms-ratelimit-* headers of
//     the user it was charged to.
//   - GET /api/data/v9.2/msdyn_presences: the presence catalogue as an OData
//     collection (the five out-of-box presences with their real IDs and the
//     custom ones), honouring $select.
//   - GET /api/data/v9.2/msdyn_agentstatuses and msdyn_agentstatushistories:
//     the agent-status tables (one row per agent with its current presence;
//     one row per presence change), consistent with the ground truth and
//     written Options.FeedLag after each change, through OData as Dataverse
//     serves them ($select, $filter, $orderby, Prefer: odata.maxpagesize and
//     @odata.nextLink, lookups as _<name>_value); Faults.FeedStatus refuses
//     them (feed.go).
//   - GET /api/data/v9.2/customapis: the definition of CCaaS_GetPresence with
//     its request parameters expanded, as Options.CallForm implies (or
//     Options.CustomAPIsStatus, for an application user without read access).
//
// The organisation has N agents with GUIDs and names drawn from a seeded
// math/rand/v2 generator. Step applies one round of random, realistic changes
// (log in, open and close tabs, log out, switch presence, channels disabled
// while busy and re-enabled when available); Run calls it on a ticker. Every
// change is appended to a ground-truth log (Changes). Tests can force changes
// (SetPresence, Login, Logout, SetSessions, SetChannels, SetState, AddAgent,
// RemoveAgent) and faults (SetFaults, SetAgentFault, SetQuota, SetTokenTTL,
// ExpireTokens), all safe while serving.
//
// Service protection is enforced as Dataverse does it, per user (the
// impersonated agent, or with QuotaScopeCaller the application user): by
// default 6,000 requests and 20 minutes of combined execution time in a
// sliding 5 minutes, and 52 concurrent, answered with the three 429 codes
// and Retry-After; a request sent before the Retry-After extends the
// penalty. Violations are counted in Stats, so tests can prove a client
// never trips them.
//
// See the package example for the wiring the tests use (New, Handler,
// IssueToken); `bridge simulate` fills the Options from its flags
// (RegisterFlags) and serves them with Serve.
package simulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// DefaultToken is the static bearer token DefaultOptions accepts, for the
// demo and `bridge simulate`.
const DefaultToken = "simulator-token"

// Options configure a Simulator. Start from DefaultOptions; zero durations
// and limits take their defaults.
type Options struct {
	// Agents is the number of agents created by New.
	Agents int
	// Seed seeds the generator of agents and changes.
	Seed uint64
	// ChangeInterval is the period of Run as started by ListenAndServe.
	// Default 2 s.
	ChangeInterval time.Duration
	// ChangeProbability is the probability that an agent changes in one
	// Step. Default 0.25.
	ChangeProbability float64
	// CustomPresences are the organisation's custom presences; nil means
	// DefaultCustomPresences, an empty slice none. The five out-of-box
	// presences are always present.
	CustomPresences []Presence
	// StaticTokens are bearer tokens accepted for the simulator's life.
	StaticTokens []string
	// TokenTTL is the age beyond which tokens from IssueToken get 401;
	// zero means never.
	TokenTTL time.Duration
	// ValidateToken, when set, is asked about tokens that are neither static
	// nor issued by IssueToken.
	ValidateToken TokenValidator
	// Quota is the service-protection enforcement per user.
	Quota Quota
	// Faults are the randomised faults of CCaaS_GetPresence.
	Faults Faults
	// FaultSeed seeds the generator of fault decisions. Default Seed+1.
	FaultSeed uint64
	// CallForm is the form of the CCaaS_GetPresence call the organisation
	// accepts: CallFormBare (default), CallFormFunction or CallFormBoth.
	// The customapis table describes the API accordingly.
	CallForm string
	// CustomAPIsStatus, when not zero, is the status of every customapis
	// request (e.g. 403 for an application user without read access).
	CustomAPIsStatus int
	// NullEmpty sends null for empty channel lists and for the Timestamp
	// of agents who are not logged in.
	NullEmpty bool
	// ExtraKeys adds undocumented keys of several JSON types to every
	// presence body.
	ExtraKeys bool
	// Gzip compresses presence bodies when the request accepts gzip.
	Gzip bool
	// Inactive adds the system's Inactive presence (InactivePresence) to
	// the catalogue; agents get it only through SetPresence, as the system
	// sets it when an agent misses notifications.
	Inactive bool
	// FeedLag is the delay between a presence change and its rows in the
	// agent-status tables (msdyn_agentstatuses, msdyn_agentstatushistories):
	// a row is written, and visible, FeedLag after the change it records.
	FeedLag time.Duration
	// RequestLogSize is how many arrival times to keep per agent for
	// RequestTimes; zero keeps none.
	RequestLogSize int
	// MaxChanges bounds the ground-truth log to its most recent entries;
	// zero keeps every change.
	MaxChanges int
	// OnRequest, when set, is called with every answered request before the
	// response is written. It must be quick and safe for concurrent use.
	OnRequest func(Request)
	// OnChange, when set, is called with every change as it is logged,
	// under the simulator's lock: it must be quick and must not call the
	// Simulator.
	OnChange func(Change)
	// Now is the clock; default time.Now. Login times, change times,
	// service-protection windows, bursts and token ages follow it; injected
	// latency is real time.
	Now func() time.Time
	// Logger receives debug lines for changes and info lines for serving;
	// default discards.
	Logger *slog.Logger
}

// DefaultOptions returns the options of the demo: 25 agents, seed 1, a
// change round every 2 s, DefaultToken accepted, Dataverse's quota, no
// faults.
func DefaultOptions() Options {
	return Options{
		Agents:            25,
		Seed:              1,
		ChangeInterval:    2 * time.Second,
		ChangeProbability: 0.25,
		StaticTokens:      []string{DefaultToken},
		Quota:             Quota{}.withDefaults(),
	}
}

// Simulator is a fake Dynamics 365 organisation. Its methods are safe for
// concurrent use.
type Simulator struct {
	opts   Options
	now    func() time.Time
	logger *slog.Logger
	start  time.Time

	mu      sync.Mutex // guards the model below
	rng     *rand.Rand
	cat     *catalogue
	agents  map[string]*agent
	order   []string
	names   map[string]bool
	seq     uint64
	changes []Change

	fmu         sync.Mutex // guards the faults below
	frng        *rand.Rand
	faults      Faults
	agentFaults map[string]AgentFault

	qmu    sync.Mutex // guards the quota below
	quota  Quota
	users  map[string]*userQuota
	qstats quotaStats

	tmu          sync.Mutex // guards the tokens below
	issued       map[string]time.Time
	tokenTTL     time.Duration
	tokensIssued int

	smu  sync.Mutex // guards the request log
	rlog requestLog

	// feed holds the agent-status tables; guarded by mu.
	feed feedTables
}

// New validates opts and builds a Simulator with opts.Agents agents, each
// logged in or out at random, their initial states the first entries of the
// ground-truth log.
func New(opts Options) (*Simulator, error) {
	if opts.Agents < 0 {
		return nil, fmt.Errorf("new simulator: negative agent count %d", opts.Agents)
	}
	if opts.ChangeInterval < 0 {
		return nil, fmt.Errorf("new simulator: negative change interval %v", opts.ChangeInterval)
	}
	if p := opts.ChangeProbability; math.IsNaN(p) || p < 0 || p > 1 {
		return nil, fmt.Errorf("new simulator: change probability %v is not in [0, 1]", p)
	}
	if opts.TokenTTL < 0 || opts.RequestLogSize < 0 || opts.MaxChanges < 0 || opts.FeedLag < 0 {
		return nil, errors.New("new simulator: negative token TTL, request log size, change log size or feed lag")
	}
	if err := opts.Quota.validate(); err != nil {
		return nil, fmt.Errorf("new simulator: %w", err)
	}
	if err := opts.Faults.validate(); err != nil {
		return nil, fmt.Errorf("new simulator: %w", err)
	}
	switch opts.CallForm {
	case "", CallFormBare, CallFormFunction, CallFormBoth:
	default:
		return nil, fmt.Errorf("new simulator: call form %q is not %s, %s or %s", opts.CallForm, CallFormBare, CallFormFunction, CallFormBoth)
	}
	if st := opts.CustomAPIsStatus; st != 0 && (st < 400 || st > 599) {
		return nil, fmt.Errorf("new simulator: customapis status %d is not an error status", st)
	}
	for _, t := range opts.StaticTokens {
		if t == "" {
			return nil, errors.New("new simulator: empty static token")
		}
	}
	if opts.ChangeInterval == 0 {
		opts.ChangeInterval = 2 * time.Second
	}
	if opts.ChangeProbability == 0 {
		opts.ChangeProbability = 0.25
	}
	if opts.FaultSeed == 0 {
		opts.FaultSeed = opts.Seed + 1
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	custom := opts.CustomPresences
	if custom == nil {
		custom = DefaultCustomPresences()
	}
	if opts.Inactive {
		custom = append(slices.Clone(custom), InactivePresence())
	}
	cat, err := newCatalogue(custom)
	if err != nil {
		return nil, fmt.Errorf("new simulator: %w", err)
	}
	s := &Simulator{
		opts:        opts,
		now:         opts.Now,
		logger:      opts.Logger,
		rng:         rand.New(rand.NewPCG(opts.Seed, 0x9e3779b97f4a7c15)),
		cat:         cat,
		agents:      make(map[string]*agent),
		names:       make(map[string]bool),
		frng:        rand.New(rand.NewPCG(opts.FaultSeed, 0x6a09e667f3bcc909)),
		faults:      opts.Faults.withDefaults(),
		agentFaults: make(map[string]AgentFault),
		quota:       opts.Quota.withDefaults(),
		users:       make(map[string]*userQuota),
		qstats:      quotaStats{byUser: make(map[string]int)},
		issued:      make(map[string]time.Time),
		tokenTTL:    opts.TokenTTL,
		rlog: requestLog{
			byStatus: make(map[int]int),
			byReason: make(map[string]int),
			times:    make(map[string][]time.Time),
		},
	}
	s.start = s.now()
	s.mu.Lock()
	for range opts.Agents {
		s.addLocked("", "", s.start)
	}
	s.mu.Unlock()
	return s, nil
}

// Run calls Step every interval until ctx ends, then returns nil.
func (s *Simulator) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("run simulator: interval %v is not positive", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.Step()
		}
	}
}

// ListenAndServe listens on addr and calls Serve.
func (s *Simulator) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for simulator on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves Handler on ln and runs the changes every
// Options.ChangeInterval until ctx ends; it then shuts the server down
// (waiting up to 5 s for requests in flight), closes ln and returns nil, or
// the error that stopped the server.
func (s *Simulator) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.logger.Info("simulator listening", "addr", ln.Addr().String(), "agents", len(s.AgentIDs()))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(runCtx, s.opts.ChangeInterval) })
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- srv.Serve(ln) })
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("serve simulator: %w", err)
	}
	cancel()
	shutCtx, shutCancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer shutCancel()
	if serr := srv.Shutdown(shutCtx); serr != nil && err == nil {
		err = fmt.Errorf("shut down simulator: %w", serr)
	}
	wg.Wait()
	return err
}
