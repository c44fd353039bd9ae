package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestRunBenchSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, asJSON := range []bool{false, true} {
		var out bytes.Buffer
		res, err := RunBench(ctx, BenchOptions{Events: 3000, SDKEvents: 300, Agents: 500, MaxPending: 256, DataDir: t.TempDir(), JSON: asJSON}, &out)
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
