package wholebench

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/source/pollbench"
)

// buildBridge builds cmd/bridge into a temporary directory.
func buildBridge(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bridge")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/ccaas/presence-bridge/cmd/bridge")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the bridge: %v\n%s", err, out)
	}
	return bin
}

// TestRunSmall runs both workloads with 200 agents polled every second
// through the built binary, with profiles, and checks every figure is
// measured (the bridge's with its embedded JetStream too), every derived
// one follows from the measured ones and the profiles are written.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six processes for about 30 s")
	}
	const agents = 200
	bin := buildBridge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const publishEvents = 1000
	profiles := filepath.Join(t.TempDir(), "profiles")
	res, err := Run(ctx, Options{Agents: agents, Interval: time.Second, Warmup: time.Second, Measure: 2 * time.Second,
		PublishEvents: publishEvents, ProfileDir: profiles, Executable: bin})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Workloads) != 2 || res.Workloads[0].Name != WorkloadQuiet || res.Workloads[1].Name != WorkloadChanging {
		t.Fatalf("workloads = %+v, want quiet then changing", res.Workloads)
	}
	for _, w := range res.Workloads {
		t.Run(w.Name, func(t *testing.T) {
			for name, p := range map[string]Process{"bridge": w.Bridge, "bare": w.Bare} {
				if p.Polls <= 0 || p.CPU <= 0 || p.PeakRSS <= 0 || p.RSS <= 0 || p.CPUPerPoll <= 0 {
					t.Errorf("%s: %+v, want polls, CPU, peak and final RSS and CPU per poll positive", name, p)
				}
				if p.RSS > p.PeakRSS {
					t.Errorf("%s: RSS %d above its peak %d", name, p.RSS, p.PeakRSS)
				}
				if p.Failed != 0 {
					t.Errorf("%s: %d polls failed", name, p.Failed)
				}
				if want := p.CPU / time.Duration(p.Polls); p.CPUPerPoll != want {
					t.Errorf("%s: CPU per poll %v, want CPU / polls = %v", name, p.CPUPerPoll, want)
				}
			}
			if want := float64(w.Bridge.CPUPerPoll) / float64(w.Bare.CPUPerPoll); w.Ratio != want {
				t.Errorf("ratio %v, want %v", w.Ratio, want)
			}
			if w.BridgePolls <= 0 {
				t.Errorf("bridge's own poll count %d, want positive", w.BridgePolls)
			}
			if want := float64(w.Bridge.PeakRSS-w.Bare.PeakRSS) / agents; w.RSSPerAgent != want {
				t.Errorf("RSS per agent beyond the bare loop %v, want %v", w.RSSPerAgent, want)
			}
			b := w.Burst
			if b.Duration <= 0 || b.CPU <= 0 || b.Events < 3*agents || b.CPUPerEvent != b.CPU/time.Duration(b.Events) {
				t.Errorf("burst %+v, want a positive duration and CPU, at least %d events and CPU per event = CPU / events", b, 3*agents)
			}
			pub := w.Publish
			if pub.Events != publishEvents || pub.CPU <= 0 || pub.Duration <= 0 || pub.CPUPerEvent != pub.CPU/publishEvents || pub.Paced != 0 {
				t.Errorf("publish path %+v, want %d events unpaced, positive CPU and duration, CPU per event = CPU / events", pub, publishEvents)
			}
			// Where the bridge published, the paced publish path hands
			// over as many events at the bridge's rate.
			if paced := w.PublishPaced; w.Events > 0 {
				wantPace := float64(w.Events) / res.Measure.Seconds()
				if paced.Events != w.Events || paced.CPU <= 0 || paced.CPUPerEvent != paced.CPU/time.Duration(w.Events) || math.Abs(paced.Paced-wantPace) > 0.001 {
					t.Errorf("paced publish path %+v, want %d events at %.3f/s, positive CPU, CPU per event = CPU / events", paced, w.Events, wantPace)
				}
				// CPU is read in clock ticks: at this size the bridge's CPU
				// beyond the bare loop can be zero, so can the ratio.
				if want := float64(w.CPUPerEvent) / float64(paced.CPUPerEvent); w.PacedRatio != want {
					t.Errorf("CPU per event %v of paced publishing's, want %v", w.PacedRatio, want)
				}
			} else if paced != (PublishPath{}) || w.PacedRatio != 0 {
				t.Errorf("no event published, yet a paced publish path %+v, ratio %v", paced, w.PacedRatio)
			}
			switch w.Name {
			case WorkloadQuiet:
				if w.Events != 0 || w.CPUPerEvent != 0 || w.PublishRatio != 0 {
					t.Errorf("quiet organisation: %d events, CPU per event %v, %v of publishing's, want none", w.Events, w.CPUPerEvent, w.PublishRatio)
				}
			case WorkloadChanging:
				want := (w.Bridge.CPU - w.Bare.CPUPerPoll*time.Duration(w.Bridge.Polls)) / time.Duration(w.Events)
				if w.Events <= 0 || w.CPUPerEvent != want {
					t.Errorf("changing organisation: %d events, CPU per event %v, want events and %v", w.Events, w.CPUPerEvent, want)
				}
				if want := float64(w.CPUPerEvent) / float64(pub.CPUPerEvent); w.PublishRatio != want {
					t.Errorf("changing organisation: CPU per event %v of publishing's, want %v", w.PublishRatio, want)
				}
			}
			// The bridge again with its embedded JetStream, against the
			// same simulator and the same bare loop.
			if e := w.Embedded; e == nil {
				t.Error("no measurement of the bridge with its embedded JetStream")
			} else {
				p := e.Bridge
				if p.Polls <= 0 || p.Failed != 0 || p.CPU <= 0 || p.PeakRSS <= 0 || p.CPUPerPoll != p.CPU/time.Duration(p.Polls) {
					t.Errorf("embedded: %+v, want answered polls, CPU, peak RSS and CPU per poll = CPU / polls", p)
				}
				if want := float64(p.CPUPerPoll) / float64(w.Bare.CPUPerPoll); e.Ratio != want {
					t.Errorf("embedded: ratio %v, want %v", e.Ratio, want)
				}
				if want := float64(p.PeakRSS-w.Bare.PeakRSS) / agents; e.RSSPerAgent != want {
					t.Errorf("embedded: RSS per agent beyond the bare loop %v, want %v", e.RSSPerAgent, want)
				}
				if b := e.Burst; b.Events < 3*agents || b.CPU <= 0 || b.CPUPerEvent != b.CPU/time.Duration(b.Events) {
					t.Errorf("embedded: burst %+v, want at least %d events, CPU, CPU per event = CPU / events", b, 3*agents)
				}
				switch {
				case w.Name == WorkloadQuiet && (e.Events != 0 || e.CPUPerEvent != 0):
					t.Errorf("embedded, quiet organisation: %d events, CPU per event %v, want none", e.Events, e.CPUPerEvent)
				case w.Name == WorkloadChanging && (e.Events <= 0 || e.CPUPerEvent != (p.CPU-w.Bare.CPUPerPoll*time.Duration(p.Polls))/time.Duration(e.Events)):
					t.Errorf("embedded, changing organisation: %d events, CPU per event %v, want events and CPU beyond the bare loop per event", e.Events, e.CPUPerEvent)
				}
			}
			for _, kind := range []string{"cpu", "heap"} {
				file := filepath.Join(profiles, w.Name+"-"+kind+".pprof")
				if n, err := gunzipped(file); err != nil || n == 0 {
					t.Errorf("%s: %d bytes, %v; want a gzip-compressed profile (pprof's format)", file, n, err)
				}
			}
		})
	}
	table := res.String()
	for _, s := range []string{"200 agents every 1s", "leases on", "quiet", "changing", "bridge/bare", "RSS",
		"publish CPU/event", "paced CPU/event", "bridge/publish", "bridge/paced publish", "embedded JetStream", profiles + "/<workload>-cpu.pprof"} {
		if !strings.Contains(table, s) {
			t.Errorf("table lacks %q:\n%s", s, table)
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil || back.Workloads[1].Events != res.Workloads[1].Events ||
		back.Workloads[1].Publish != res.Workloads[1].Publish || back.Workloads[1].PublishPaced != res.Workloads[1].PublishPaced || back.Workloads[1].PublishRatio != res.Workloads[1].PublishRatio ||
		back.Workloads[1].Bridge.RSS != res.Workloads[1].Bridge.RSS || !back.Embedded || back.Workloads[1].Embedded == nil || *back.Workloads[1].Embedded != *res.Workloads[1].Embedded {
		t.Errorf("JSON round trip: %v, %s", err, b)
	}
}

// gunzipped returns the length of file decompressed.
func gunzipped(file string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return 0, err
	}
	return io.Copy(io.Discard, z)
}

func TestProfileLength(t *testing.T) {
	for _, tt := range []struct{ measure, want time.Duration }{
		{20 * time.Second, 20 * time.Second},
		{2500 * time.Millisecond, 2 * time.Second},
		{300 * time.Millisecond, time.Second},
		{time.Minute, maxProfile},
	} {
		if got := profileLength(tt.measure); got != tt.want {
			t.Errorf("profileLength(%s) = %s, want %s", tt.measure, got, tt.want)
		}
	}
}

func TestScrape(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		want      bridgeCounts
		wantError bool
	}{
		{"labelled samples summed", "# HELP ccaas_bridge_polls_total polls\n# TYPE ccaas_bridge_polls_total counter\n" +
			"ccaas_bridge_polls_total{result=\"ok\"} 1500\nccaas_bridge_polls_total{result=\"timeout\"} 3\n" +
			"ccaas_bridge_events_published_total{type=\"presence.changed\"} 40\nccaas_bridge_events_published_total{type=\"sessions.changed\"} 2\n",
			bridgeCounts{polls: 1503, published: 42}, false},
		{"unlabelled sample", "ccaas_bridge_events_published_total 7\n", bridgeCounts{published: 7}, false},
		{"other metrics and prefixes ignored", "ccaas_bridge_polls_total_other 5\nccaas_bridge_polls 9\ngo_goroutines 12\n", bridgeCounts{}, false},
		{"label value with a space", "ccaas_bridge_polls_total{result=\"a b\"} 2 1700000000000\n", bridgeCounts{polls: 2}, false},
		{"unreadable value", "ccaas_bridge_polls_total{result=\"ok\"} many\n", bridgeCounts{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			got, err := scrape(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
			if (err != nil) != tt.wantError {
				t.Fatalf("error %v, want error %v", err, tt.wantError)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadUsage(t *testing.T) {
	u, err := readUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.peak <= 0 {
		t.Errorf("peak RSS of this process %d, want positive", u.peak)
	}
	if _, err := readUsage(-1); err == nil {
		t.Error("usage of pid -1: no error")
	}
}

func TestMainRejects(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown workload", []string{"-workload", "busy"}, `workload "busy"`},
		{"unknown role", []string{"-role", "judge"}, `unknown role "judge"`},
		{"simulator of an unknown workload", []string{"-role", "sim", "-workload", "quiet,changing"}, `workload "quiet,changing"`},
		{"unknown flag", []string{"-agent", "3"}, "flag provided but not defined"},
		{"publish role without a server", []string{"-role", "publish"}, "-nats-url is required"},
		{"publish role without events", []string{"-role", "publish", "-nats-url", "nats://127.0.0.1:1", "-publish-events", "0"}, "want both positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Main(context.Background(), []string{"/nonexistent/bridge", "wholebench"}, tt.args, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestFirstLine(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
		sent   bool
	}{
		{"one write", []string{"http://127.0.0.1:1234\n"}, "http://127.0.0.1:1234", true},
		{"split over writes, rest discarded", []string{"nats://127.0", ".0.1:4222\nmore\n", "and more\n"}, "nats://127.0.0.1:4222", true},
		{"no newline yet", []string{"http://127.0.0.1"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &firstLine{line: make(chan string, 1)}
			for _, w := range tt.writes {
				if n, err := f.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			select {
			case got := <-f.line:
				if !tt.sent || got != tt.want {
					t.Errorf("line %q, want %q (sent %v)", got, tt.want, tt.sent)
				}
			default:
				if tt.sent {
					t.Errorf("no line, want %q", tt.want)
				}
			}
		})
	}
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	var b tailBuffer
	for i := range 3 * tailBytes / 10 {
		fmt.Fprintf(&b, "line %04d\n", i)
	}
	s := b.String()
	if len(s) > tailBytes || !strings.HasSuffix(s, fmt.Sprintf("line %04d\n", 3*tailBytes/10-1)) {
		t.Errorf("tail of %d bytes ending %q, want at most %d bytes ending with the last line", len(s), s[max(0, len(s)-20):], tailBytes)
	}
}

// TestPresenceCountsByCaller checks the simulator role's counts: only
// CCaaS_GetPresence requests count, the bare loop's apart from the
// bridge's, and an answer other than 200 counts as failed.
func TestPresenceCountsByCaller(t *testing.T) {
	var counts presenceCounts
	h := counts.count(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, "{}")
	}))
	for _, tc := range []struct {
		path, agent string
	}{
		{"/api/data/v9.2/CCaaS_GetPresence", "bridge"},
		{"/api/data/v9.2/CCaaS_GetPresence?fail=1", "bridge"},
		{"/api/data/v9.2/CCaaS_GetPresence", pollbench.BareUserAgent},
		{"/api/data/v9.2/CCaaS_GetPresence", pollbench.BareUserAgent},
		{"/api/data/v9.2/CCaaS_GetPresence?fail=1", pollbench.BareUserAgent},
		{"/api/data/v9.2/msdyn_presences", "bridge"},
		{"/api/data/v9.2/msdyn_presences", pollbench.BareUserAgent},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		r.Header.Set("User-Agent", tc.agent)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	want := simCounts{Bridge: callerCounts{Presence: 2, Failed: 1}, Bare: callerCounts{Presence: 3, Failed: 1}}
	if got := counts.load(); got != want {
		t.Errorf("counts = %+v, want %+v", got, want)
	}
}
