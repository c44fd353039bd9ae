package source_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testlog"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// memStore is a WatermarkStore in memory.
type memStore struct {
	mu sync.Mutex
	w  *source.Watermark
}

func (m *memStore) LoadWatermark(context.Context) (source.Watermark, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.w == nil {
		return source.Watermark{}, false, nil
	}
	return *m.w, true, nil
}

func (m *memStore) SaveWatermark(_ context.Context, w source.Watermark) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.w = &w
	return nil
}

// pollNowRecorder records PollNow calls.
type pollNowRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (p *pollNowRecorder) PollNow(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids = append(p.ids, id)
}

// feedRig is a simulator on a fake clock and a Feed reading it.
type feedRig struct {
	sim    *simulator.Simulator
	now    time.Time
	mu     sync.Mutex
	client *source.Client
	rec    *recorder
	polls  *pollNowRecorder
	store  *memStore
	logs   *testlog.Buffer
}

func (r *feedRig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func (r *feedRig) advance(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = r.now.Add(d)
}

func newFeedRig(t *testing.T, agents int, lag time.Duration) *feedRig {
	t.Helper()
	r := &feedRig{now: time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC), rec: newRecorder(), polls: &pollNowRecorder{}, store: &memStore{}, logs: &testlog.Buffer{}}
	opts := simulator.DefaultOptions()
	opts.Agents, opts.FeedLag, opts.Now = agents, lag, r.clock
	var simURL string
	r.sim, simURL = serveSim(t, opts)
	var err error
	r.client, err = source.NewClient(source.ClientOptions{OrgURL: simURL, Tokens: source.StaticToken(simulator.DefaultToken), Now: r.clock})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *feedRig) feed(t *testing.T, filterMax int) (*source.Feed, *source.FeedMetrics) {
	t.Helper()
	m, err := source.NewFeedMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := source.NewFeed(source.FeedOptions{Reader: r.client, Sink: r.rec, Poller: r.polls, Store: r.store, Metrics: m,
		FilterMax: filterMax, PageSize: 2, Now: r.clock, Logger: slog.New(slog.NewTextHandler(r.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f.SetAgents(r.sim.AgentIDs())
	return f, m
}

// rows returns the presence IDs of the rows handed over for agent.
func (r *feedRig) rows(agent string) []string {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	var out []string
	for _, o := range r.rec.obs[agent] {
		if o.Row != nil {
			out = append(out, o.Row.PresenceID+"@"+o.Row.ChangedAt.Format(time.TimeOnly))
		}
	}
	return out
}

// TestFeedReadsEveryChangeOnceInOrder checks that each presence change of the
// ground truth is handed over once, in order, timed at the source, after the
// simulator's lag; that agents whose presence changed are polled; and that
// the watermark survives a new Feed on the same store without gap or
// duplicate; both with the agents named in $filter and filtered locally.
func TestFeedReadsEveryChangeOnceInOrder(t *testing.T) {
	for _, filterMax := range []int{25, 1} {
		t.Run(map[int]string{25: "agents in $filter", 1: "filtered locally"}[filterMax], func(t *testing.T) {
			r := newFeedRig(t, 3, 2*time.Second)
			ids := r.sim.AgentIDs()
			f, m := r.feed(t, filterMax)
			r.advance(2 * time.Second) // the agents' first rows are written
			f.Once(t.Context())
			if !f.Readable() {
				t.Fatal("feed not readable")
			}
			r.polls.mu.Lock()
			r.polls.ids = nil // the first rows' agents
			r.polls.mu.Unlock()
			r.advance(time.Second)
			mustSet(t, r.sim, ids[0], simulator.PresenceBusy)
			r.advance(500 * time.Millisecond)
			mustSet(t, r.sim, ids[0], simulator.PresenceAway) // half a second of Busy
			mustSet(t, r.sim, ids[1], simulator.PresenceBusy)
			f.Once(t.Context())
			if got := r.rows(ids[0]); len(got) != 1 {
				t.Fatalf("rows before the lag: %v, want the first row only", got)
			}
			r.advance(2 * time.Second)
			f.Once(t.Context())
			f.Once(t.Context()) // the overlap reads the same rows again: dropped by ID
			want := []string{simulator.PresenceBusy + "@09:00:03", simulator.PresenceAway + "@09:00:03"}
			if got := r.rows(ids[0]); len(got) != 3 || !slices.Equal(got[1:], want) {
				t.Fatalf("agent 0 rows %v, want %v", got, want)
			}
			if got := r.rows(ids[1]); len(got) != 2 {
				t.Fatalf("agent 1 rows %v, want its first and one change", got)
			}
			r.polls.mu.Lock()
			polled := slices.Clone(r.polls.ids)
			r.polls.mu.Unlock()
			slices.Sort(polled)
			wantPolled := []string{ids[0], ids[1]}
			slices.Sort(wantPolled)
			if !slices.Equal(polled, wantPolled) {
				t.Fatalf("polled %v, want %v once each", polled, wantPolled)
			}
			if d := testutil.ToFloat64(m.Rows.WithLabelValues("duplicate")); d == 0 {
				t.Error("no duplicate counted though the overlap read rows twice")
			}

			// A restart: a new Feed on the same store resumes from the watermark.
			mustSet(t, r.sim, ids[2], simulator.PresenceAway)
			r.advance(3 * time.Second)
			f2, _ := r.feed(t, filterMax)
			f2.Once(t.Context())
			if got := r.rows(ids[2]); len(got) != 2 {
				t.Fatalf("after the restart agent 2 rows %v, want the one change made meanwhile", got)
			}
			if got := r.rows(ids[0]); len(got) != 3 {
				t.Fatalf("after the restart agent 0 rows %v: handed over again", got)
			}
		})
	}
}

// TestFeedFallsBackAndCatchesUp checks that an unreadable table marks the
// feed down (log line, metric, readiness detail, still ready), that polls
// then carry no hold, and that the rows written meanwhile are handed over
// once it reads again.
func TestFeedFallsBackAndCatchesUp(t *testing.T) {
	for _, status := range []int{403, 404, 429, 500} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			r := newFeedRig(t, 2, 0)
			ids := r.sim.AgentIDs()
			f, m := r.feed(t, 25)
			f.Once(t.Context())
			hold := func() time.Duration {
				var got time.Duration
				_ = f.Sink(source.SinkFunc(func(_ context.Context, o source.Observation) error { got = o.FeedHold; return nil })).Observe(t.Context(), source.Observation{AgentID: ids[0]})
				return got
			}
			if hold() != source.DefaultFeedHold {
				t.Fatal("a poll while the feed reads carries no hold")
			}
			if err := r.sim.SetFaults(simulator.Faults{FeedStatus: status}); err != nil {
				t.Fatal(err)
			}
			r.advance(time.Second)
			mustSet(t, r.sim, ids[0], simulator.PresenceBusy)
			f.Once(t.Context())
			if f.Readable() || f.Fallback() || hold() == 0 {
				t.Fatal("one failed read: not readable, but no fallback yet")
			}
			r.advance(source.DefaultFeedInterval * 5)
			f.Once(t.Context())
			if f.Readable() || testutil.ToFloat64(m.Up) != 0 || testutil.ToFloat64(m.Fallbacks) != 1 {
				t.Fatalf("after a %d: readable %v, up %v, fallbacks %v", status, f.Readable(), testutil.ToFloat64(m.Up), testutil.ToFloat64(m.Fallbacks))
			}
			if ok, why := f.Readiness(); !ok || !strings.Contains(why, "polling alone") {
				t.Fatalf("readiness %v %q", ok, why)
			}
			if hold() != 0 {
				t.Fatal("a poll while the feed is down carries a hold")
			}
			if err := r.sim.SetFaults(simulator.Faults{}); err != nil {
				t.Fatal(err)
			}
			r.advance(time.Second)
			mustSet(t, r.sim, ids[0], simulator.PresenceAway)
			f.Once(t.Context())
			if got := r.rows(ids[0]); len(got) != 3 || !strings.HasPrefix(got[1], simulator.PresenceBusy) || !strings.HasPrefix(got[2], simulator.PresenceAway) {
				t.Fatalf("rows after recovery %v, want the first row and the two changes made while down", got)
			}
			logs := r.logs.String()
			if strings.Count(logs, "change feed unreadable") != 1 || strings.Count(logs, "change feed readable again") != 1 {
				t.Fatalf("want one line on each change, logs:\n%s", logs)
			}
		})
	}
}

func mustSet(t *testing.T, sim *simulator.Simulator, id, presence string) {
	t.Helper()
	if _, _, err := sim.SetPresence(id, presence); err != nil {
		t.Fatal(err)
	}
}

// TestPollNow checks that PollNow polls an agent ahead of its place in the
// interval, and only that agent.
func TestPollNow(t *testing.T) {
	r := newRig(t, 3, nil, func(o *source.PollerOptions) { o.Interval = time.Hour }, nil)
	r.start(t)
	count := func(id string) int {
		r.rec.mu.Lock()
		defer r.rec.mu.Unlock()
		return len(r.rec.obs[id])
	}
	before := count(r.healthy)
	other := count(r.faulty)
	r.poller.PollNow(strings.ToUpper(r.healthy))
	testwait.Until(t, 5*time.Second, "PollNow to poll the agent", func() bool { return count(r.healthy) != before })
	if count(r.faulty) != other {
		t.Error("PollNow polled another agent")
	}
}

// TestReadHistorySkipsForeignRows checks that rows without a valid ID,
// agent, presence or time are skipped and counted, and that a next link
// leaving the organisation is refused.
func TestReadHistorySkipsForeignRows(t *testing.T) {
	const good = `{"msdyn_agentstatushistoryid":"00000001-0000-4000-8000-000000000001","_msdyn_agentid_value":"394382b6-a4d4-ee11-904c-00224808a166","_msdyn_presenceid_value":"efdeb843-c07a-e811-8162-000d3aa11f50","msdyn_starttime":"2026-01-05T09:00:01Z","createdon":"2026-01-05T09:00:02Z"}`
	tests := []struct {
		name        string
		body        string
		wantRows    int
		wantSkipped int
		wantErr     bool
	}{
		{name: "one good row", body: `{"value":[` + good + `]}`, wantRows: 1},
		{name: "foreign rows", body: `{"value":[` + good + `,{"msdyn_agentstatushistoryid":"x"},` +
			strings.Replace(good, "2026-01-05T09:00:01Z", "yesterday", 1) + `,` +
			strings.Replace(good, `"_msdyn_presenceid_value":"efdeb843-c07a-e811-8162-000d3aa11f50"`, `"_msdyn_presenceid_value":null`, 1) + `,` +
			strings.Replace(good, "394382b6-a4d4-ee11-904c-00224808a166", "agent-7", 1) + `]}`, wantRows: 1, wantSkipped: 4},
		{name: "no value array", body: `{"rows":[]}`, wantErr: true},
		{name: "next link elsewhere", body: `{"value":[` + good + `],"@odata.nextLink":"https://elsewhere.example/api/data/v9.2/msdyn_agentstatushistories"}`, wantRows: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			c, err := source.NewClient(source.ClientOptions{OrgURL: srv.URL, Tokens: source.StaticToken("t")})
			if err != nil {
				t.Fatal(err)
			}
			rows, skipped, err := c.ReadHistory(t.Context(), source.HistoryQuery{Since: time.Now()})
			if (err != nil) != tt.wantErr || len(rows) != tt.wantRows || skipped != tt.wantSkipped {
				t.Fatalf("rows %d, skipped %d, err %v; want %d, %d, error %v", len(rows), skipped, err, tt.wantRows, tt.wantSkipped, tt.wantErr)
			}
			if len(rows) > 0 && (rows[0].BaseStatus != "Busy" || rows[0].PresenceName != "Busy" || rows[0].AgentID != "394382b6-a4d4-ee11-904c-00224808a166") {
				t.Errorf("row %+v: presence not resolved from the catalogue", rows[0])
			}
		})
	}
}
