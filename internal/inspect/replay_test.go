package inspect

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/ccaas/presence-bridge/internal/contract"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestReplay(t *testing.T) {
	tests := []struct {
		name string
		// opts gets the times marked between the three published batches.
		opts    func(t1, t2 time.Time) ReplayOptions
		wantIDs []string
		golden  string // file under testdata/ holding the exact output
	}{
		{
			name:    "everything",
			opts:    func(_, _ time.Time) ReplayOptions { return ReplayOptions{} },
			wantIDs: []string{alice + "-1", alice + "-2", bob + "-1", alice + "-3", bob + "-2", bob + "-3", alice + "-4"},
			golden:  "replay-all.ndjson",
		},
		{
			name:    "one agent",
			opts:    func(_, _ time.Time) ReplayOptions { return ReplayOptions{Agent: bob} },
			wantIDs: []string{bob + "-1", bob + "-2", bob + "-3"},
		},
		{
			name:    "one type",
			opts:    func(_, _ time.Time) ReplayOptions { return ReplayOptions{Type: "presence.changed"} },
			wantIDs: []string{alice + "-1", bob + "-1", alice + "-3"},
		},
		{
			name:    "since",
			opts:    func(t1, _ time.Time) ReplayOptions { return ReplayOptions{Since: t1} },
			wantIDs: []string{alice + "-3", bob + "-2", bob + "-3", alice + "-4"},
		},
		{
			name:    "since and until",
			opts:    func(t1, t2 time.Time) ReplayOptions { return ReplayOptions{Since: t1, Until: t2} },
			wantIDs: []string{alice + "-3", bob + "-2"},
		},
		{
			name:    "until with agent",
			opts:    func(_, t2 time.Time) ReplayOptions { return ReplayOptions{Until: t2, Agent: alice} },
			wantIDs: []string{alice + "-1", alice + "-2", alice + "-3"},
		},
		{
			name: "nothing matches",
			opts: func(_, _ time.Time) ReplayOptions {
				return ReplayOptions{Agent: "00000000-0000-0000-0000-000000000000"}
			},
			wantIDs: nil,
		},
		{
			name:    "since after the last event",
			opts:    func(_, _ time.Time) ReplayOptions { return ReplayOptions{Since: time.Now().Add(time.Hour)} },
			wantIDs: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := startJetStream(t)
			all := fixture()
			publishFixture(t, js, 0, all[:3]...)
			t1 := time.Now()
			publishFixture(t, js, 3*time.Second, all[3:5]...)
			t2 := time.Now()
			publishFixture(t, js, 5*time.Second, all[5:]...)

			var out, progress bytes.Buffer
			sum, err := Replay(t.Context(), js, tt.opts(t1, t2), &out, &progress)
			if err != nil {
				t.Fatalf("Replay: %v", err)
			}
			if progress.Len() != 0 {
				t.Errorf("progress written to a non-terminal: %q", progress.String())
			}
			var ids []string
			var times []time.Time
			for _, line := range strings.SplitAfter(out.String(), "\n") {
				if line == "" {
					continue
				}
				if !strings.HasSuffix(line, "\n") {
					t.Fatalf("last line not terminated: %q", line)
				}
				var e event.Event
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("line is not a CloudEvent in JSON: %v: %s", err, line)
				}
				if err := e.Validate(); err != nil {
					t.Fatalf("invalid CloudEvent: %v: %s", err, line)
				}
				ids = append(ids, e.ID())
				times = append(times, e.Time())
			}
			if !slices.Equal(ids, tt.wantIDs) {
				t.Errorf("replayed IDs %v, want %v", ids, tt.wantIDs)
			}
			if sum.Events != len(ids) {
				t.Errorf("summary counts %d events, %d written", sum.Events, len(ids))
			}
			if len(times) > 0 && (!sum.First.Equal(times[0]) || !sum.Last.Equal(times[len(times)-1])) {
				t.Errorf("summary spans %s..%s, events %s..%s", sum.First, sum.Last, times[0], times[len(times)-1])
			}
			if tt.golden != "" {
				checkGolden(t, tt.golden, out.Bytes())
			}
		})
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestReplayProgressBar(t *testing.T) {
	js := startJetStream(t)
	publishFixture(t, js, 0, fixture()...)
	var out, bar, report bytes.Buffer
	sum, err := replay(t.Context(), js, ReplayOptions{}, &out, &bar, &report)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	n := sum.Events
	if n != 7 || strings.Count(out.String(), "\n") != 7 {
		t.Fatalf("replayed %d events (%d lines), want 7", n, strings.Count(out.String(), "\n"))
	}
	if !strings.Contains(bar.String(), "replay") {
		t.Errorf("no progress bar drawn: %q", bar.String())
	}
}

// TestReplaySkipsUndecodable puts messages that are no CloudEvent, or whose
// header values are not valid percent-encoding, among the events: Replay
// exports every event, names each skipped message and counts them.
func TestReplaySkipsUndecodable(t *testing.T) {
	js := startJetStream(t)
	all := fixture()
	publishFixture(t, js, 0, all[:2]...)
	if _, err := js.Publish(t.Context(), contract.SubjectPrefix+"."+alice+".presence.changed", []byte("not a cloudevent")); err != nil {
		t.Fatal(err)
	}
	publishFixture(t, js, 2*time.Second, all[2:4]...)
	bad := nats.NewMsg(contract.SubjectPrefix + "." + bob + ".presence.changed")
	bad.Header.Set("ce-specversion", "1.0")
	bad.Header.Set("ce-id", "x-1")
	bad.Header.Set("ce-type", "presence.changed")
	bad.Header.Set("ce-source", "https://contoso.example/%C0%A0") // overlong UTF-8: the binding says reject
	bad.Data = []byte("{}")
	if _, err := js.PublishMsg(t.Context(), bad); err != nil {
		t.Fatal(err)
	}
	publishFixture(t, js, 4*time.Second, all[4:]...)

	var out, progress bytes.Buffer
	sum, err := Replay(t.Context(), js, ReplayOptions{}, &out, &progress)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if n := strings.Count(out.String(), "\n"); n != len(all) {
		t.Errorf("exported %d events, want %d:\n%s", n, len(all), out.String())
	}
	for _, want := range []string{
		"replay: skip stream sequence 3: undecodable message",
		"replay: skip stream sequence 6: undecodable message",
	} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("report %q lacks %q", progress.String(), want)
		}
	}
	if sum.Events != len(all) || sum.Skipped != 2 || !strings.HasSuffix(sum.String(), "; 2 undecodable messages skipped") {
		t.Errorf("summary %+v (%q), want %d events and 2 skipped", sum, sum.String(), len(all))
	}
}

func TestReplayErrors(t *testing.T) {
	tests := []struct {
		name    string
		opts    ReplayOptions
		wantErr string
	}{
		{name: "unknown stream", opts: ReplayOptions{Stream: "NOPE"}, wantErr: "look up stream NOPE: "},
		{
			name:    "until before since",
			opts:    ReplayOptions{Since: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), Until: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)},
			wantErr: "replay: --until is before --since (2026-11-27T09:00:00Z < 2026-11-27T10:00:00Z)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := startJetStream(t)
			var out bytes.Buffer
			_, err := Replay(t.Context(), js, tt.opts, &out, &out)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("Replay = %v, want prefix %q", err, tt.wantErr)
			}
		})
	}
}

func TestReplayEmptyStream(t *testing.T) {
	js := startJetStream(t)
	var out bytes.Buffer
	sum, err := Replay(t.Context(), js, ReplayOptions{}, &out, &out)
	if err != nil || out.Len() != 0 || sum.Events != 0 {
		t.Fatalf("Replay of an empty stream = %v, %+v, output %q; want nil and nothing", err, sum, out.String())
	}
	if got := sum.String(); got != "replay: no event in the selected range" {
		t.Errorf("summary %q", got)
	}
}

func TestReplaySummaryString(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		sum  ReplaySummary
		want string
	}{
		{ReplaySummary{}, "replay: no event in the selected range"},
		{ReplaySummary{Events: 1, First: t0, Last: t0}, "replay: 1 event written, at 2026-11-27T09:00:00Z"},
		{ReplaySummary{Events: 42, First: t0, Last: t0.Add(61*time.Minute + 400*time.Millisecond)}, "replay: 42 events written, from 2026-11-27T09:00:00Z to 2026-11-27T10:01:00Z (1h1m0s)"},
	}
	for _, tt := range tests {
		if got := tt.sum.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.sum, got, tt.want)
		}
	}
}
