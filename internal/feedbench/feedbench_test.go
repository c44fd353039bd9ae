package feedbench_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/feedbench"
)

// TestFeedBenchSmall runs both modes on a small organisation: with the feed
// every presence change, the short ones included, reaches the stream, for
// fewer requests than polling alone.
func TestFeedBenchSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole bridge twice")
	}
	var out bytes.Buffer
	res, err := feedbench.Run(t.Context(), feedbench.Options{
		Agents: 60, Measure: 4 * time.Second, ChangeEvery: 4 * time.Second, Lag: 200 * time.Millisecond,
		PollAlone: time.Second, PollWithFeed: 4 * time.Second, FeedInterval: 200 * time.Millisecond, ShortUnder: 2 * time.Second,
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || !strings.Contains(out.String(), "feed + polls") {
		t.Fatalf("results %+v\n%s", res, out.String())
	}
	poll, feed := res[0], res[1]
	if feed.Changes < 20 || feed.Detected != feed.Changes {
		t.Errorf("feed: %d of %d changes on the stream", feed.Detected, feed.Changes)
	}
	if feed.Short == 0 || feed.ShortSeen != feed.Short {
		t.Errorf("feed: %d of %d short presences on the stream", feed.ShortSeen, feed.Short)
	}
	if feed.RequestsPerSecond >= poll.RequestsPerSecond {
		t.Errorf("feed + polls %.1f requests/s, polling alone %.1f", feed.RequestsPerSecond, poll.RequestsPerSecond)
	}
	if feed.LatencyP99 <= 0 || feed.LatencyP50 > feed.LatencyP99 {
		t.Errorf("feed latency p50 %.2f p99 %.2f", feed.LatencyP50, feed.LatencyP99)
	}
	t.Log("\n" + out.String())
}
