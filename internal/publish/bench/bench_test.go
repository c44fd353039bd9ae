package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/publish"
)

func TestRunBenchSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, asJSON := range []bool{false, true} {
		var out bytes.Buffer
		res, err := RunBench(ctx, Options{Events: 3000, SDKEvents: 300, Agents: 500, MaxPending: 256, DataDir: t.TempDir(), JSON: asJSON}, &out)
		if err != nil {
			t.Fatalf("RunBench: %v", err)
		}
		for _, s := range []ScenarioResult{res.Raw, res.Bridge, res.SDK, res.SDKReused} {
			if s.EventsPerSecond <= 0 || s.LatencyP99Ms < s.LatencyP50Ms || s.Events == 0 {
				t.Errorf("implausible result %+v", s)
			}
		}
		if res.BridgeVsRaw <= 0 || res.BridgeVsSDK <= 0 {
			t.Errorf("ratios %v %v", res.BridgeVsRaw, res.BridgeVsSDK)
		}
		if asJSON {
			var back BenchResult
			if err := json.Unmarshal(out.Bytes(), &back); err != nil {
				t.Fatalf("JSON output: %v\n%s", err, out.String())
			}
			if back.Bridge.Events != 3000 {
				t.Errorf("JSON bridge events %d", back.Bridge.Events)
			}
		} else if !strings.Contains(out.String(), "bridge/raw") {
			t.Errorf("table output lacks the ratios:\n%s", out.String())
		}
	}
}

// TestRunBenchDefaultsToTheBridgeSettings: without options the bridge
// scenario publishes with the bridge's window and acknowledgement timeout.
func TestRunBenchDefaultsToTheBridgeSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	res, err := RunBench(ctx, Options{Events: 500, SDKEvents: 50, Agents: 50, DataDir: t.TempDir()}, &out)
	if err != nil {
		t.Fatalf("RunBench: %v", err)
	}
	if res.MaxPending != publish.DefaultMaxPending || res.PublishTimeoutSeconds != publish.DefaultPublishTimeout.Seconds() {
		t.Errorf("window %d, ack timeout %gs; want the bridge's %d and %s", res.MaxPending, res.PublishTimeoutSeconds,
			publish.DefaultMaxPending, publish.DefaultPublishTimeout)
	}
	if res.Bridge.Events != 500 {
		t.Errorf("bridge scenario published %d events", res.Bridge.Events)
	}
}
