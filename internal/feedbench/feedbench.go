// Package feedbench measures what the change feed buys: in one run, the
// whole bridge (source, detector, fenced publisher, state bucket, on an
// in-process JetStream) follows a simulated organisation of N agents whose
// presences change at a realistic rate, first polling alone, then with the
// change feed and slower polls. For each it reports the API requests per
// second, the detection latency from a change at the source to its
// presence.changed acknowledged by the stream (p50, p99), and the share of
// presences shorter than ShortUnder that reached the stream.
//
// Run it with `bridge feedbench` (docs/feed.md has the numbers).
package feedbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/statebucket"
)

// Options configure a run; zero values take the defaults.
type Options struct {
	// Agents in the organisation; default 10,000.
	Agents int
	// ChangeEvery is the mean time between two changes of one agent
	// (presence, sessions or channels); default 5 minutes.
	ChangeEvery time.Duration
	// Lag is the simulator's delay between a change and its history row;
	// default 500 ms.
	Lag time.Duration
	// Measure is the measured period of each mode; default 60 s.
	Measure time.Duration
	// PollAlone is the poll interval of the polling-alone mode; default 10 s.
	PollAlone time.Duration
	// PollWithFeed is the poll interval beside the feed; default 60 s.
	PollWithFeed time.Duration
	// FeedInterval is the feed's read interval; default 1 s.
	FeedInterval time.Duration
	// ShortUnder is what counts as a short presence; default 10 s.
	ShortUnder time.Duration
	// Concurrency is the poller's workers; default source.DefaultMaxConcurrency.
	Concurrency int
	// JSON writes the results as JSON instead of a table.
	JSON bool
	// Logger receives progress lines; nil discards.
	Logger *slog.Logger
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Agents <= 0 {
		o.Agents = 10000
	}
	def(&o.ChangeEvery, 5*time.Minute)
	def(&o.Lag, 500*time.Millisecond)
	def(&o.Measure, time.Minute)
	def(&o.PollAlone, 10*time.Second)
	def(&o.PollWithFeed, time.Minute)
	def(&o.FeedInterval, time.Second)
	def(&o.ShortUnder, 10*time.Second)
	if o.Concurrency <= 0 {
		o.Concurrency = source.DefaultMaxConcurrency
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Result is one mode's measurements.
type Result struct {
	Mode                string  `json:"mode"`
	Agents              int     `json:"agents"`
	PollIntervalSeconds float64 `json:"pollIntervalSeconds"`
	FeedIntervalSeconds float64 `json:"feedIntervalSeconds,omitempty"`
	MeasuredSeconds     float64 `json:"measuredSeconds"`
	Requests            int64   `json:"requests"`
	// FeedRequests are the reads of the agent-status tables among Requests.
	FeedRequests      int64   `json:"feedRequests"`
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	// Changes are the presence changes made in the measured period;
	// Detected those whose presence.changed reached the stream.
	Changes  int `json:"changes"`
	Detected int `json:"detected"`
	// LatencyP50 and LatencyP99 are seconds from the change at the source to
	// its event acknowledged by the stream.
	LatencyP50 float64 `json:"latencyP50Seconds"`
	LatencyP99 float64 `json:"latencyP99Seconds"`
	// Short are the presences shorter than ShortUnder; ShortSeen those on
	// the stream.
	Short      int     `json:"short"`
	ShortSeen  int     `json:"shortSeen"`
	ShortShare float64 `json:"shortShare"`
}

// Run measures both modes, one after the other, and writes the results to
// w side by side.
func Run(ctx context.Context, o Options, w io.Writer) ([]Result, error) {
	o.defaults()
	var out []Result
	for _, feed := range []bool{false, true} {
		r, err := runMode(ctx, o, feed)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	if o.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return out, enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "mode\tagents\tpoll\tAPI req/s\tchanges\tdetected\tlatency p50\tlatency p99\tpresences < %s on the stream\t\n", o.ShortUnder)
	for _, r := range out {
		fmt.Fprintf(tw, "%s\t%d\t%gs\t%.1f\t%d\t%d\t%.2fs\t%.2fs\t%d of %d (%.1f%%)\t\n", r.Mode, r.Agents, r.PollIntervalSeconds, r.RequestsPerSecond,
			r.Changes, r.Detected, r.LatencyP50, r.LatencyP99, r.ShortSeen, r.Short, 100*r.ShortShare)
	}
	if err := tw.Flush(); err != nil {
		return out, err
	}
	if len(out) == 2 && out[0].RequestsPerSecond > 0 {
		fmt.Fprintf(w, "feed + polls use %.1f%% of the requests of polling alone\n", 100*out[1].RequestsPerSecond/out[0].RequestsPerSecond)
	}
	return out, nil
}

// change is one presence change of the ground truth.
type change struct {
	at       time.Time
	presence string
	end      time.Time // when the next presence began; zero if none yet
	seenAt   time.Time // when its event was acknowledged; zero if never
}

// truth records the ground truth's presence changes in the measured period
// and matches the stream's presence.changed events to them.
type truth struct {
	mu        sync.Mutex
	measuring bool
	byAgent   map[string][]*change
}

func (t *truth) onChange(c simulator.Change) {
	if !c.Fields.Has(simulator.FieldPresence) || c.Kind == simulator.KindRemoved {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.byAgent[c.AgentID]
	if n := len(list); n > 0 && list[n-1].end.IsZero() {
		list[n-1].end = c.At
	}
	if t.measuring {
		t.byAgent[c.AgentID] = append(list, &change{at: c.At, presence: c.State.PresenceID})
	}
}

// onPublished matches an acknowledged presence.changed to the earliest
// unmatched change of its agent to that presence made before it.
func (t *truth) onPublished(e detector.Event) {
	d, ok := e.Data.(detector.PresenceChangedData)
	if !ok {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.byAgent[e.AgentID]
	start := 0
	for i, c := range list {
		if !c.seenAt.IsZero() {
			start = i + 1
		}
	}
	for _, c := range list[start:] {
		if c.seenAt.IsZero() && c.presence == d.Current.ID && !c.at.After(now) {
			c.seenAt = now
			return
		}
	}
}

func runMode(ctx context.Context, o Options, feedOn bool) (Result, error) {
	mode, poll := "polling alone", o.PollAlone
	if feedOn {
		mode, poll = "feed + polls", o.PollWithFeed
	}
	log := o.Logger.With("mode", mode)
	res := Result{Mode: mode, Agents: o.Agents, PollIntervalSeconds: poll.Seconds()}
	if feedOn {
		res.FeedIntervalSeconds = o.FeedInterval.Seconds()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	tr := &truth{byAgent: map[string][]*change{}}
	var requests, feedRequests, counting atomic.Int64
	simOpts := simulator.DefaultOptions()
	simOpts.Agents, simOpts.FeedLag = o.Agents, o.Lag
	simOpts.ChangeInterval, simOpts.ChangeProbability = time.Second, min(1, time.Second.Seconds()/o.ChangeEvery.Seconds())
	simOpts.OnChange = tr.onChange
	simOpts.OnRequest = func(r simulator.Request) {
		if counting.Load() == 1 {
			requests.Add(1)
			if r.Endpoint == simulator.EndpointAgentStatusHistories || r.Endpoint == simulator.EndpointAgentStatuses {
				feedRequests.Add(1)
			}
		}
	}
	sim, err := simulator.New(simOpts)
	if err != nil {
		return res, err
	}
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()

	dir, err := os.MkdirTemp("", "feedbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	ns, err := embeddednats.Start(ctx, embeddednats.Options{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		return res, fmt.Errorf("start jetstream: %w", err)
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	const stream, prefix = contract.Stream, contract.SubjectPrefix
	if _, err := publish.EnsureStream(ctx, js, publish.StreamOptions{Name: stream, SubjectPrefix: prefix, MaxAge: time.Hour, Replicas: 1,
		Storage: "file", DuplicateWindow: 2 * time.Minute, Manage: true}); err != nil {
		return res, err
	}
	reg := prometheus.NewRegistry()
	viewMetrics, err := statebucket.NewMetrics(reg)
	if err != nil {
		return res, err
	}
	store, err := statebucket.Open(ctx, js, statebucket.Options{Bucket: contract.StateBucket, Replicas: 1, Storage: jetstream.FileStorage, Logger: log, Metrics: viewMetrics})
	if err != nil {
		return res, err
	}
	pubMetrics, err := publish.NewMetrics(reg)
	if err != nil {
		return res, err
	}
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: srv.URL, SubjectPrefix: prefix, BridgeVersion: "feedbench", MaxPayload: int(nc.MaxPayload())})
	if err != nil {
		return res, err
	}
	pub, err := publish.NewPublisher(nc, publish.Options{Encoder: enc, Stream: stream, Logger: log, Metrics: pubMetrics})
	if err != nil {
		return res, err
	}
	det, err := detector.New(detector.Options{Logger: log})
	if err != nil {
		return res, err
	}
	pipeMetrics, err := pipeline.NewMetrics(reg)
	if err != nil {
		return res, err
	}
	pipe, err := pipeline.New(pipeline.Options{Detector: det, Publisher: pub, View: store, Logger: log, Metrics: pipeMetrics, OnPublished: tr.onPublished,
		Journal: pipeline.NewStreamJournal(pipeline.JournalOptions{JetStream: js, Stream: stream, SubjectPrefix: prefix, Logger: log, Metrics: pipeMetrics})})
	if err != nil {
		return res, err
	}
	srcMetrics, err := source.NewMetrics(reg)
	if err != nil {
		return res, err
	}
	catalogue := source.NewCatalogue(nil)
	client, err := source.NewClient(source.ClientOptions{OrgURL: srv.URL, Tokens: source.StaticToken(simulator.DefaultToken), Catalogue: catalogue,
		MaxConns: o.Concurrency, Metrics: srcMetrics, Logger: log})
	if err != nil {
		return res, err
	}
	presences, err := client.ListPresences(ctx)
	if err != nil {
		return res, fmt.Errorf("read presences: %w", err)
	}
	catalogue.Set(presences)

	var sink source.Sink = pipe
	var feed *source.Feed
	later := &laterPoller{}
	if feedOn {
		feedMetrics, err := source.NewFeedMetrics(reg)
		if err != nil {
			return res, err
		}
		feed, err = source.NewFeed(source.FeedOptions{Reader: client, Sink: pipe, Poller: later, Interval: o.FeedInterval, Metrics: feedMetrics, Logger: log})
		if err != nil {
			return res, err
		}
		sink = feed.Sink(pipe)
	}
	poller, err := source.NewPoller(source.PollerOptions{Getter: client, Sink: sink, Interval: poll, MaxConcurrency: o.Concurrency, Metrics: srcMetrics, Logger: log})
	if err != nil {
		return res, err
	}
	later.p = poller
	ids := sim.AgentIDs()
	pipe.SetAgents(ids)
	poller.SetAgents(ids)

	var wg sync.WaitGroup
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	wg.Go(func() { _ = pipe.Run(runCtx) })
	wg.Go(func() { _ = poller.Run(runCtx) })
	if feed != nil {
		feed.SetAgents(ids)
		wg.Go(func() { _ = feed.Run(runCtx) })
	}

	// Warm-up: every agent's first sight.
	log.Info("warming up: first poll of every agent", "interval", poll)
	for !poller.Status().FirstRoundDone {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if feedOn {
		// The first reads hand over every agent's first row (written when the
		// simulated organisation was built); measure once the watermark's
		// overlap has passed them.
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(source.DefaultFeedOverlap + o.Lag + 2*o.FeedInterval):
		}
	}
	// Measure: changes at the configured rate for Measure.
	log.Info("measuring", "for", o.Measure)
	tr.mu.Lock()
	tr.measuring = true
	tr.mu.Unlock()
	changes, stopChanges := context.WithCancel(ctx)
	changesDone := make(chan struct{})
	go func() {
		defer close(changesDone)
		_ = sim.Run(changes, simOpts.ChangeInterval)
	}()
	counting.Store(1)
	began := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(o.Measure):
	}
	counting.Store(0)
	elapsed := time.Since(began)
	tr.mu.Lock()
	tr.measuring = false
	tr.mu.Unlock()
	stopChanges()
	<-changesDone
	// Tail: changes near the end are detected within a poll interval (or
	// the feed's lag and interval) and published.
	tail := poll + 5*time.Second
	if feedOn {
		tail = o.Lag + 2*o.FeedInterval + 5*time.Second
	}
	log.Info("letting the last changes reach the stream", "for", tail)
	select {
	case <-ctx.Done():
	case <-time.After(tail):
	}
	stopRun()
	wg.Wait()
	cctx, cancelClose := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancelClose()
	_ = pipe.Close(cctx)
	_ = pub.Close(cctx)
	if err := ctx.Err(); err != nil {
		return res, err
	}

	res.MeasuredSeconds = elapsed.Seconds()
	res.Requests, res.FeedRequests = requests.Load(), feedRequests.Load()
	res.RequestsPerSecond = float64(res.Requests) / elapsed.Seconds()
	var lat []float64
	tr.mu.Lock()
	for _, list := range tr.byAgent {
		for _, c := range list {
			res.Changes++
			if !c.seenAt.IsZero() {
				res.Detected++
				lat = append(lat, c.seenAt.Sub(c.at).Seconds())
			}
			if !c.end.IsZero() && c.end.Sub(c.at) < o.ShortUnder {
				res.Short++
				if !c.seenAt.IsZero() {
					res.ShortSeen++
				}
			}
		}
	}
	tr.mu.Unlock()
	slices.Sort(lat)
	res.LatencyP50, res.LatencyP99 = quantile(lat, 0.50), quantile(lat, 0.99)
	if res.Short > 0 {
		res.ShortShare = float64(res.ShortSeen) / float64(res.Short)
	}
	return res, nil
}

// quantile returns the q-quantile of sorted (nearest rank), 0 when empty.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// laterPoller forwards PollNow to the poller, built after the feed.
type laterPoller struct{ p *source.Poller }

func (l *laterPoller) PollNow(id string) {
	if l.p != nil {
		l.p.PollNow(id)
	}
}
