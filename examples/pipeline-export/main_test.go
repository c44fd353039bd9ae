package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/examples/eventstest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.ndjson")

const (
	alice = "394382b6-a4d4-ee11-904c-00224808a166"
	bob   = "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"
)

func ev(agent, name, typ string, seq uint64, sec int, data string) eventstest.Event {
	return eventstest.Event{Agent: agent, Type: typ, Seq: seq, Time: time.Date(2025, 3, 4, 9, 0, sec, 0, time.UTC),
		Data: `{"agentId":"` + agent + `","agentName":"` + name + `",` + data + `}`}
}

func TestRun(t *testing.T) {
	before := []eventstest.Event{
		ev(alice, "Alice Adams", "presence.changed", 1, 0, `"previous":null,"current":{"id":"f523f628-c07a-e811-8162-000d3aa11f50","name":"Available","baseStatus":"Available"}`),
		ev(bob, "Bob Brown", "sessions.changed", 1, 1, `"change":"initial","previous":null,"current":{"activeBrowserSessions":2,"loginTime":1741078800}`),
	}
	after := []eventstest.Event{
		ev(alice, "Alice Adams", "agent.offline", 2, 2, `"reason":"presence","since":"2025-03-04T09:00:02Z","presence":{"id":"70139190-c07a-e811-8162-000d3aa11f50","name":"Offline","baseStatus":"Offline"},"activeBrowserSessions":1`),
		ev(bob, "Bob Brown", "channels.changed", 2, 3, `"previous":null,"current":{"allowed":["chat"],"disabled":[]},"added":{"allowed":["chat"],"disabled":[]},"removed":{"allowed":[],"disabled":[]}`),
	}
	tests := []struct {
		name   string
		since  func(mark time.Time) time.Time
		golden string
	}{
		{name: "everything", since: func(time.Time) time.Time { return time.Time{} }, golden: "all.ndjson"},
		{name: "since a time", since: func(mark time.Time) time.Time { return mark }, golden: "since.ndjson"},
		{name: "since after the end", since: func(time.Time) time.Time { return time.Now().Add(time.Hour) }, golden: "empty.ndjson"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, js := eventstest.StartJetStream(t)
			eventstest.Publish(t, js, before...)
			mark := time.Now()
			eventstest.Publish(t, js, after[0])

			if _, err := js.Publish(t.Context(), eventstest.SubjectPrefix+"."+alice+".presence.changed", []byte("not a cloudevent")); err != nil {
				t.Fatal(err)
			}
			eventstest.Publish(t, js, after[1:]...)

			var out, report bytes.Buffer
			res, err := run(t.Context(), nc, options{Stream: eventstest.Stream, SubjectPrefix: eventstest.SubjectPrefix, Since: tt.since(mark)}, &out, &report)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if lines := strings.Count(out.String(), "\n"); res.exported != lines {
				t.Errorf("run reported %d events, wrote %d lines", res.exported, lines)
			}
			if wantSkipped := tt.golden != "empty.ndjson"; (res.skipped == 1) != wantSkipped || (wantSkipped && !strings.Contains(report.String(), "skip stream sequence 4: ")) {
				t.Errorf("skipped %d, report %q", res.skipped, report.String())
			}
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("export:\n%s\nwant (%s):\n%s", out.String(), path, want)
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: "", want: time.Time{}},
		{in: "24h", want: now.Add(-24 * time.Hour)},
		{in: "2025-03-04T09:00:00Z", want: time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)},
		{in: "-1h", wantErr: true},
		{in: "yesterday", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseSince(tt.in, now)
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
