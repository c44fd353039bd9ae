package source

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The change feed reads Dynamics 365 Contact Center's agent-status tables,
// as Microsoft's entity reference names them: msdyn_agentstatushistory
// (entity set msdyn_agentstatushistories, "records any changes to agent's
// presence or available capacity") row by row since a watermark on
// createdon, and msdyn_agentstatus (msdyn_agentstatuses, one row per agent)
// to check it is readable.
const (
	// HistoryEntitySet is msdyn_agentstatushistory's Web API entity set.
	HistoryEntitySet = "msdyn_agentstatushistories"
	// StatusEntitySet is msdyn_agentstatus's Web API entity set.
	StatusEntitySet = "msdyn_agentstatuses"
	// historySelect are the only columns the feed reads.
	historySelect = "msdyn_agentstatushistoryid,_msdyn_agentid_value,_msdyn_presenceid_value,msdyn_starttime,createdon"
)

// Defaults of FeedOptions.
const (
	// DefaultFeedInterval is how often the feed reads (BRIDGE_FEED_INTERVAL).
	DefaultFeedInterval = time.Second
	// DefaultFeedOverlap is how far before its watermark each read starts,
	// for clock skew and rows committed late; rows read twice are dropped
	// by ID.
	DefaultFeedOverlap = 5 * time.Second
	// DefaultFeedPageSize is the Prefer: odata.maxpagesize of each read.
	DefaultFeedPageSize = 500
	// DefaultFeedFilterMax is the largest agent list named in $filter;
	// longer lists are filtered locally.
	DefaultFeedFilterMax = 25
	// DefaultFeedHold is how long polls must keep seeing a presence the
	// feed has not reported before the poll's presence is published.
	DefaultFeedHold = 30 * time.Second
	// feedFallbackReads is how many read intervals the feed may fail
	// before the bridge falls back to polling alone (at least
	// minFeedFallback): a throttled read or two delays the feed, it does
	// not stop it.
	feedFallbackReads = 5
	minFeedFallback   = 5 * time.Second
	// DefaultFeedReadTimeout bounds one read, every page included.
	DefaultFeedReadTimeout = 30 * time.Second
	// maxFeedPages bounds one read (a catch-up after a long outage goes on
	// at the next read).
	maxFeedPages = 200
)

// Watermark is how far the change feed has read: the newest createdon read,
// and the IDs of the rows created within the overlap before it (read
// again by the next read, never handed over twice).
type Watermark struct {
	// CreatedOn is the newest createdon read; zero before the first read.
	CreatedOn time.Time `json:"createdOn"`
	// Seen are the IDs of rows created at or after CreatedOn minus the
	// overlap.
	Seen []string `json:"seen,omitempty"`
}

// WatermarkStore keeps the feed's watermark across restarts. The bridge
// keeps it in a JetStream key-value bucket; the source declares only this.
type WatermarkStore interface {
	// LoadWatermark returns the stored watermark; found is false when none
	// is stored.
	LoadWatermark(ctx context.Context) (w Watermark, found bool, err error)
	// SaveWatermark stores w.
	SaveWatermark(ctx context.Context, w Watermark) error
}

// HistoryQuery is one read of msdyn_agentstatushistory.
type HistoryQuery struct {
	// Since is the earliest createdon read (ge).
	Since time.Time
	// Agents, when not empty, are named in $filter.
	Agents []string
	// PageSize is Prefer: odata.maxpagesize.
	PageSize int
	// MaxPages bounds the pages followed.
	MaxPages int
}

// HistoryReader reads history rows created since a time, oldest first;
// *Client implements it. skipped counts rows it could not use.
type HistoryReader interface {
	ReadHistory(ctx context.Context, q HistoryQuery) (rows []PresenceRow, skipped int, err error)
}

// PollNower polls an agent ahead of its place; *Poller implements it.
type PollNower interface {
	PollNow(agentID string)
}

// wireHistoryRow is one msdyn_agentstatushistory row as read.
type wireHistoryRow struct {
	ID       *string `json:"msdyn_agentstatushistoryid"`
	Agent    *string `json:"_msdyn_agentid_value"`
	Presence *string `json:"_msdyn_presenceid_value"`
	Start    *string `json:"msdyn_starttime"`
	Created  *string `json:"createdon"`
}

// historyURL builds the query of q.
func (c *Client) historyURL(q HistoryQuery) string {
	filter := "createdon ge " + q.Since.UTC().Format("2006-01-02T15:04:05Z")
	if len(q.Agents) > 0 {
		parts := make([]string, len(q.Agents))
		for i, id := range q.Agents {
			parts[i] = "_msdyn_agentid_value eq " + id
		}
		filter += " and (" + strings.Join(parts, " or ") + ")"
	}
	v := url.Values{
		"$select":  {historySelect},
		"$filter":  {filter},
		"$orderby": {"createdon asc,msdyn_agentstatushistoryid asc"},
	}
	return c.orgBase + APIPath + HistoryEntitySet + "?" + v.Encode()
}

// ReadHistory reads the history rows of q, following @odata.nextLink, and
// resolves each row's presence name and base status from the catalogue.
// Rows without a valid ID, agent, presence or time are skipped and counted.
func (c *Client) ReadHistory(ctx context.Context, q HistoryQuery) ([]PresenceRow, int, error) {
	if q.PageSize <= 0 {
		q.PageSize = DefaultFeedPageSize
	}
	if q.MaxPages <= 0 {
		q.MaxPages = maxFeedPages
	}
	var out []PresenceRow
	skipped := 0
	next := c.historyURL(q)
	for page := 0; next != "" && page < q.MaxPages; page++ {
		var body struct {
			Value    []wireHistoryRow `json:"value"`
			NextLink string           `json:"@odata.nextLink"`
		}
		if err := c.getJSONPaged(ctx, next, q.PageSize, &body); err != nil {
			return out, skipped, fmt.Errorf("read %s: %w", HistoryEntitySet, err)
		}
		if body.Value == nil {
			return out, skipped, fmt.Errorf("read %s: response has no value array", HistoryEntitySet)
		}
		for _, w := range body.Value {
			r, ok := c.historyRow(w)
			if !ok {
				skipped++
				continue
			}
			out = append(out, r)
		}
		next = body.NextLink
		if next != "" && !strings.HasPrefix(next, c.orgBase+"/") {
			return out, skipped, fmt.Errorf("read %s: next link %q leaves the organisation", HistoryEntitySet, truncate(next))
		}
	}
	return out, skipped, nil
}

func (c *Client) historyRow(w wireHistoryRow) (PresenceRow, bool) {
	if w.ID == nil || w.Agent == nil || w.Presence == nil || w.Start == nil || w.Created == nil {
		return PresenceRow{}, false
	}
	id, ok1 := NormalizeGUID(*w.ID)
	agent, ok2 := NormalizeGUID(*w.Agent)
	presence, ok3 := NormalizeGUID(*w.Presence)
	start, err1 := time.Parse(time.RFC3339Nano, *w.Start)
	created, err2 := time.Parse(time.RFC3339Nano, *w.Created)
	if !ok1 || !ok2 || !ok3 || err1 != nil || err2 != nil {
		return PresenceRow{}, false
	}
	return PresenceRow{RowID: id, AgentID: agent, PresenceID: presence, PresenceName: c.catalogue.Name(presence),
		BaseStatus: c.catalogue.BaseStatus(presence), ChangedAt: start.UTC(), CreatedAt: created.UTC()}, true
}

// CheckFeedTables reads one row of each agent-status table: nil when both
// are readable (the feed can run), or the first error (an *HTTPError for
// a Dataverse answer: 403 without read privilege, 404 for a table the
// organisation does not have).
func (c *Client) CheckFeedTables(ctx context.Context) error {
	for _, set := range []string{StatusEntitySet, HistoryEntitySet} {
		sel := "msdyn_agentstatusid"
		if set == HistoryEntitySet {
			sel = "msdyn_agentstatushistoryid"
		}
		var body struct {
			Value []map[string]any `json:"value"`
		}
		if err := c.getJSONPaged(ctx, c.orgBase+APIPath+set+"?$select="+sel+"&$top=1", 1, &body); err != nil {
			return fmt.Errorf("read %s: %w", set, err)
		}
	}
	return nil
}

// FeedOptions configures a Feed.
type FeedOptions struct {
	// Reader reads the history table; required.
	Reader HistoryReader
	// Sink receives every new row as an Observation (Row set); required.
	Sink Sink
	// Poller, when set, polls every agent whose presence changed in a read.
	Poller PollNower
	// Store keeps the watermark across restarts; nil keeps it in memory.
	Store WatermarkStore
	// Interval is the period of the reads; DefaultFeedInterval when zero.
	Interval time.Duration
	// Overlap is how far before the watermark each read starts;
	// DefaultFeedOverlap when zero.
	Overlap time.Duration
	// PageSize is Prefer: odata.maxpagesize; DefaultFeedPageSize when zero.
	PageSize int
	// FilterMax is the largest agent list named in $filter;
	// DefaultFeedFilterMax when zero.
	FilterMax int
	// Hold is the Observation.FeedHold the feed's Sink wrapper gives polls
	// while the feed is readable; DefaultFeedHold when zero.
	Hold time.Duration
	// FallbackAfter is how long reads may fail before the bridge falls
	// back to polling alone; 5 intervals (at least 5 s) when zero.
	FallbackAfter time.Duration
	// ReadTimeout bounds one read, every page included;
	// DefaultFeedReadTimeout when zero.
	ReadTimeout time.Duration
	// Metrics counts reads and rows; nil builds unregistered ones.
	Metrics *FeedMetrics
	// Logger receives one line on each change between readable and
	// unreadable; nil discards.
	Logger *slog.Logger
	// Beat, when set, is called on every read: the loop's heartbeat.
	Beat func()
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Feed reads the agent-status history as a change feed: every Interval the
// rows created since its watermark (less Overlap), paged, only the columns
// it needs, for the configured agents (named in $filter when they are few,
// filtered locally otherwise). Each new row goes to the Sink as a presence
// observation timed at the source, in the order the changes happened, and
// its agent is polled at once. When the table cannot be read (403, 404,
// throttling, server errors) the bridge polls alone and the Feed says so
// (log line, metric, readiness detail); once a read succeeds again it
// catches up from its watermark, which survives restarts in the Store.
type Feed struct {
	opts    FeedOptions
	log     *slog.Logger
	metrics *FeedMetrics

	mu     sync.Mutex
	agents map[string]struct{}
	list   []string
	wm     Watermark
	loaded bool

	up        atomic.Bool               // the last read succeeded
	downSince atomic.Pointer[time.Time] // first failed read of the current outage
	fallback  atomic.Bool               // polling alone: unreadable for FallbackAfter
	why       atomic.Pointer[string]
}

// NewFeed validates opts and returns a Feed with no agents.
func NewFeed(opts FeedOptions) (*Feed, error) {
	if opts.Reader == nil || opts.Sink == nil {
		return nil, errors.New("build change feed: Reader and Sink are required")
	}
	if opts.Interval < 0 || opts.Overlap < 0 || opts.PageSize < 0 || opts.FilterMax < 0 || opts.Hold < 0 {
		return nil, errors.New("build change feed: intervals, sizes and the hold must not be negative")
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultFeedInterval
	}
	if opts.Overlap == 0 {
		opts.Overlap = DefaultFeedOverlap
	}
	if opts.PageSize == 0 {
		opts.PageSize = DefaultFeedPageSize
	}
	if opts.FilterMax == 0 {
		opts.FilterMax = DefaultFeedFilterMax
	}
	if opts.Hold == 0 {
		opts.Hold = DefaultFeedHold
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultFeedReadTimeout
	}
	if opts.FallbackAfter <= 0 {
		opts.FallbackAfter = max(feedFallbackReads*opts.Interval, minFeedFallback)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := opts.Metrics
	if m == nil {
		var err error
		if m, err = NewFeedMetrics(nil); err != nil {
			return nil, err
		}
	}
	f := &Feed{opts: opts, log: log, metrics: m, agents: map[string]struct{}{}}
	why := "no read yet"
	f.why.Store(&why)
	return f, nil
}

// SetAgents sets the agents whose rows are handed over.
func (f *Feed) SetAgents(ids []string) {
	set := make(map[string]struct{}, len(ids))
	list := make([]string, 0, len(ids))
	for _, raw := range ids {
		if id, ok := NormalizeGUID(raw); ok {
			if _, dup := set[id]; !dup {
				set[id] = struct{}{}
				list = append(list, id)
			}
		}
	}
	slices.Sort(list)
	f.mu.Lock()
	f.agents, f.list = set, list
	f.mu.Unlock()
}

// Fallback reports whether the bridge polls alone: the feed has been
// unreadable for FallbackAfter. Before its first read, and through shorter
// failures, the feed counts as reporting presence.
func (f *Feed) Fallback() bool {
	if f.fallback.Load() {
		return true
	}
	since := f.downSince.Load()
	return since != nil && f.opts.Now().Sub(*since) >= f.opts.FallbackAfter
}

// Watermark returns the feed's watermark.
func (f *Feed) Watermark() Watermark {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Watermark{CreatedOn: f.wm.CreatedOn, Seen: slices.Clone(f.wm.Seen)}
}

// Sink wraps the poller's Sink: unless the bridge has fallen back to
// polling alone, poll results carry FeedHold, so the detector takes
// presence changes from the feed (in order, with their times) and polls
// reconcile; in fallback, polls report presence alone.
func (f *Feed) Sink(next Sink) Sink {
	return SinkFunc(func(ctx context.Context, o Observation) error {
		if o.Row == nil && !f.Fallback() {
			o.FeedHold = f.opts.Hold
		}
		return next.Observe(ctx, o)
	})
}

// Readiness is the feed's /readyz check: always ready (the bridge polls
// alone while the feed is unreadable), with a detail saying which.
func (f *Feed) Readiness() (bool, string) {
	if f.up.Load() {
		return true, "change feed reading, watermark " + f.Watermark().CreatedOn.UTC().Format(time.RFC3339)
	}
	reason := *f.why.Load()
	if since := f.downSince.Load(); since != nil {
		if f.Fallback() {
			return true, fmt.Sprintf("change feed unreadable since %s (%s): polling alone", since.UTC().Format(time.RFC3339), reason)
		}
		return true, fmt.Sprintf("change feed read failing since %s (%s): retrying", since.UTC().Format(time.RFC3339), reason)
	}
	return true, "change feed: " + reason
}

// Run reads every Interval until ctx ends, then saves the watermark and
// returns nil. A failed read is retried at the next tick (after
// Retry-After when throttled, at most FallbackAfter). Beat is called before
// every read: a read lasts at most ReadTimeout.
func (f *Feed) Run(ctx context.Context) error {
	f.load(ctx)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			f.save(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
		}
		if f.opts.Beat != nil {
			f.opts.Beat()
		}
		wait := f.Once(ctx)
		t.Reset(max(wait, f.opts.Interval))
	}
}

// load reads the stored watermark once; without one the feed starts at
// the first read's time, less the overlap (history before the bridge
// started is not replayed: the first polls give every agent's state).
func (f *Feed) load(ctx context.Context) {
	f.mu.Lock()
	loaded := f.loaded
	f.mu.Unlock()
	if loaded {
		return
	}
	var wm Watermark
	found := false
	if f.opts.Store != nil {
		var err error
		wm, found, err = f.opts.Store.LoadWatermark(ctx)
		if err != nil {
			f.log.Warn("change feed watermark not loaded; starting from now", "err", err)
			found = false
		}
	}
	if !found {
		wm = Watermark{CreatedOn: f.opts.Now().UTC()}
	} else {
		f.log.Info("change feed resumes from its watermark", "watermark", wm.CreatedOn.UTC().Format(time.RFC3339))
	}
	f.mu.Lock()
	f.wm, f.loaded = wm, true
	f.mu.Unlock()
}

func (f *Feed) save(ctx context.Context) {
	if f.opts.Store == nil {
		return
	}
	wm := f.Watermark()
	if wm.CreatedOn.IsZero() {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := f.opts.Store.SaveWatermark(sctx, wm); err != nil {
		f.metrics.WatermarkSaves.WithLabelValues("error").Inc()
		f.log.Warn("change feed watermark not saved", "err", err)
		return
	}
	f.metrics.WatermarkSaves.WithLabelValues("ok").Inc()
}

// Once makes one read: it hands every new row to the Sink, polls the
// agents whose presence changed, and advances and saves the watermark. It
// returns how long to wait at least before the next read (a Retry-After).
func (f *Feed) Once(ctx context.Context) time.Duration {
	f.load(ctx)
	f.mu.Lock()
	wm, agents, list := f.wm, f.agents, f.list
	f.mu.Unlock()
	q := HistoryQuery{Since: wm.CreatedOn.Add(-f.opts.Overlap), PageSize: f.opts.PageSize}
	if len(list) <= f.opts.FilterMax {
		q.Agents = list
	}
	if len(list) == 0 {
		return 0
	}
	start := f.opts.Now()
	rctx, cancel := context.WithTimeout(ctx, f.opts.ReadTimeout)
	rows, skipped, err := f.opts.Reader.ReadHistory(rctx, q)
	cancel()
	f.metrics.ReadSeconds.Observe(f.opts.Now().Sub(start).Seconds())
	if skipped > 0 {
		f.metrics.Rows.WithLabelValues("malformed").Add(float64(skipped))
		f.log.Warn("change feed rows skipped: not of the documented shape", "rows", skipped)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		return f.down(err)
	}
	f.metrics.Reads.WithLabelValues("ok").Inc()
	f.setUp(wm)

	seen := make(map[string]struct{}, len(wm.Seen))
	for _, id := range wm.Seen {
		seen[id] = struct{}{}
	}
	newest := wm.CreatedOn
	var fresh []PresenceRow
	for _, r := range rows {
		if r.CreatedAt.After(newest) {
			newest = r.CreatedAt
		}
		if _, dup := seen[r.RowID]; dup {
			f.metrics.Rows.WithLabelValues("duplicate").Inc()
			continue
		}
		seen[r.RowID] = struct{}{}
		if _, ok := agents[r.AgentID]; !ok {
			f.metrics.Rows.WithLabelValues("other_agent").Inc()
			continue
		}
		fresh = append(fresh, r)
	}
	// In the order the changes happened; rows of the same second in the
	// order they were written.
	slices.SortStableFunc(fresh, func(a, b PresenceRow) int {
		return cmp.Or(a.ChangedAt.Compare(b.ChangedAt), a.CreatedAt.Compare(b.CreatedAt))
	})
	now := f.opts.Now()
	changed := map[string]bool{}
	var order []string
	for i := range fresh {
		r := fresh[i]
		if err := f.opts.Sink.Observe(ctx, Observation{AgentID: r.AgentID, At: now, Class: ClassOK, Row: &r}); err != nil {
			f.log.Warn("change feed row not taken", "agent", r.AgentID, "err", err)
			if ctx.Err() != nil {
				return 0 // the watermark stays: the rows are read again
			}
		}
		f.metrics.Rows.WithLabelValues("delivered").Inc()
		f.metrics.Latency.Observe(max(now.Sub(r.ChangedAt), 0).Seconds())
		if !changed[r.AgentID] {
			changed[r.AgentID] = true
			order = append(order, r.AgentID)
		}
	}
	if f.opts.Poller != nil {
		for _, id := range order {
			f.opts.Poller.PollNow(id)
		}
	}
	next := Watermark{CreatedOn: newest}
	floor := newest.Add(-f.opts.Overlap)
	for _, r := range rows {
		if !r.CreatedAt.Before(floor) {
			next.Seen = append(next.Seen, r.RowID)
		}
	}
	slices.Sort(next.Seen)
	next.Seen = slices.Compact(next.Seen)
	f.mu.Lock()
	advanced := !next.CreatedOn.Equal(f.wm.CreatedOn) || !slices.Equal(next.Seen, f.wm.Seen)
	f.wm = next
	f.mu.Unlock()
	f.metrics.Watermark.Set(float64(newest.UnixMilli()) / 1000)
	if advanced {
		f.save(ctx)
	}
	return 0
}

// setUp marks the feed readable, logging the end of a fallback.
func (f *Feed) setUp(wm Watermark) {
	f.metrics.Up.Set(1)
	since := f.downSince.Swap(nil)
	wasFallback := f.fallback.Swap(false)
	if f.up.Swap(true) {
		return
	}
	switch {
	case wasFallback && since != nil:
		f.log.Info("change feed readable again; catching up from its watermark",
			"watermark", wm.CreatedOn.UTC().Format(time.RFC3339), "unreadable_for", f.opts.Now().Sub(*since).Round(time.Millisecond).String())
	case since == nil:
		f.log.Info("change feed reading", "watermark", wm.CreatedOn.UTC().Format(time.RFC3339))
	}
}

// down records a failed read and, once reads have failed for
// FallbackAfter, falls back to polling alone, logging it; it returns the
// Retry-After to honour.
func (f *Feed) down(err error) time.Duration {
	class := "transport"
	var he *HTTPError
	var wait time.Duration
	if errors.As(err, &he) {
		class = feedErrorClass(he.StatusCode)
		wait = he.RetryAfter
	}
	f.metrics.Reads.WithLabelValues(class).Inc()
	reason := class + ": " + err.Error()
	f.why.Store(&reason)
	f.up.Store(false)
	now := f.opts.Now()
	f.downSince.CompareAndSwap(nil, &now)
	f.log.Debug("change feed read failed", "class", class, "err", err)
	if f.Fallback() && !f.fallback.Swap(true) {
		f.metrics.Up.Set(0)
		f.metrics.Fallbacks.Inc()
		f.log.Warn("change feed unreadable; polling alone until it reads again", "class", class, "since", f.downSince.Load().UTC().Format(time.RFC3339), "err", err)
	}
	return min(wait, f.opts.FallbackAfter)
}

// feedErrorClass names a failed read's status for the metric label.
func feedErrorClass(status int) string {
	switch {
	case status == 401 || status == 403:
		return "forbidden"
	case status == 404:
		return "missing"
	case status == 429:
		return "throttled"
	case status >= 500:
		return "server_error"
	}
	return "rejected"
}
