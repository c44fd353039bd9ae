package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// Known secrets: none of them may appear in anything the bridge writes.
const (
	secretToken        = "tok-S3CRET-3f9a1c7e5d20"
	secretWrongToken   = "wrong-S3CRET-8b1d4e6f"
	secretClientSecret = "azure-S3CRET-b71e0c9a4f"
	secretNATSPassword = "nats-S3CRET-9d2e4b6a13"
	natsUser           = "bridge"
)

var secrets = []string{secretToken, secretWrongToken, secretClientSecret, secretNATSPassword}

// opsAddr returns the operator HTTP address the bridge logged.
func opsAddr(t *testing.T, p *proc) string {
	t.Helper()
	var addr string
	testwait.Until(t, waitScale*20*time.Second, "the operator http address in the logs", func() bool {
		sc := bufio.NewScanner(strings.NewReader(p.output()))
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "operator http listening" {
				addr = line.Addr
				return true
			}
		}
		return false
	})
	return addr
}

// scrape returns the body of an operator endpoint ("" when unreachable).
func scrape(addr, path string) string {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricSum sums the samples of the exposition whose series starts with
// prefix (a metric name, optionally with the start of its labels).
func metricSum(body, prefix string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// assertNoSecret fails the test for every known secret found in text.
func assertNoSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range secrets {
		if i := strings.Index(text, s); i >= 0 {
			t.Errorf("%s contains the secret %q: …%s…", what, s, text[max(0, i-200):min(len(text), i+len(s)+50)])
		}
	}
}

// TestSecretsNeverLeak runs the bridge with a known bearer token, a known
// Entra ID client secret in its environment and a NATS server requiring a
// known password, forces the failures that make it log errors (401s,
// malformed responses, a NATS server restart), and checks that none of the
// secrets appears in its logs, its metrics or its health answers. Then
// `bridge check` runs with a wrong token and NATS credentials in the URL,
// and with Entra ID credentials against an unreachable authority, and its
// output must not show them either.
func TestSecretsNeverLeak(t *testing.T) {
	r := newHarness(t, 4, 17, withSim(func(o *simulator.Options) { o.StaticTokens = []string{secretToken} }), withNATSUser(natsUser, secretNATSPassword))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := r.env(map[string]string{
		"BRIDGE_LEASE_ENABLED": "false",
		"GORACE":               raceExitNow,
		"BRIDGE_POLL_INTERVAL": testInterval.String(),
		"BRIDGE_TOKEN":         secretToken,
		"BRIDGE_NATS_USER":     natsUser,
		"BRIDGE_NATS_PASSWORD": secretNATSPassword,
		"AZURE_TENANT_ID":      "00000000-0000-0000-0000-000000000001",
		"AZURE_CLIENT_ID":      "00000000-0000-0000-0000-000000000002",
		"AZURE_CLIENT_SECRET":  secretClientSecret,
		"BRIDGE_LOG_LEVEL":     "debug",
	})
	p := r.start(env, "run")
	addr := opsAddr(t, p)
	var metrics string
	metricAbove := func(prefix string, n float64) func() bool {
		return func() bool {
			metrics = scrape(addr, "/metrics")
			return metricSum(metrics, prefix) > n
		}
	}
	testwait.Until(t, waitScale*20*time.Second, "successful polls", metricAbove(`ccaas_bridge_polls_total{result="ok"}`, 0))

	// The API refuses the token for a while.
	for _, id := range r.sim.AgentIDs() {
		if err := r.sim.SetAgentFault(id, simulator.AgentFault{Status: http.StatusUnauthorized, Count: 4}); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Until(t, waitScale*20*time.Second, "401s counted", metricAbove(`ccaas_bridge_polls_total{result="unauthorized"}`, 0))

	// Then answers with broken bodies, of every kind.
	if err := r.sim.SetFaults(simulator.Faults{RateMalformed: 0.6}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, waitScale*20*time.Second, "malformed responses counted", metricAbove(`ccaas_bridge_polls_total{result="malformed"}`, 3))
	if err := r.sim.SetFaults(simulator.Faults{}); err != nil {
		t.Fatal(err)
	}

	// Then NATS goes away and comes back: the bridge reconnects with its
	// password, and publishes again.
	r.ns.Restart()
	testwait.Until(t, waitScale*30*time.Second, "a NATS reconnect counted", metricAbove("ccaas_bridge_nats_reconnects_total", 0))
	published := metricSum(metrics, "ccaas_bridge_events_published_total")
	mustSim(t)(r.sim.SetPresence(r.sim.AgentIDs()[0], simulator.PresenceAway))
	testwait.Until(t, waitScale*30*time.Second, "a publish after the reconnect", metricAbove("ccaas_bridge_events_published_total", published))

	health := scrape(addr, "/healthz") + scrape(addr, "/readyz")
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
	logs := p.output()
	// The failures were logged (so the check below covers error paths).
	for _, want := range []string{"401", "malformed", "reconnect"} {
		if !strings.Contains(strings.ToLower(logs), want) {
			t.Errorf("the logs never mention %q: the failures were not exercised", want)
		}
	}
	assertNoSecret(t, "bridge logs", logs)
	assertNoSecret(t, "/metrics", metrics)
	assertNoSecret(t, "/healthz and /readyz", health)

	// bridge check with a wrong token and the NATS password in the URL.
	natsURL := strings.Replace(r.ns.ClientURL(), "nats://", fmt.Sprintf("nats://%s:%s@", natsUser, secretNATSPassword), 1)
	check := func(name string, extra map[string]string) {
		t.Run(name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range env {
				e[k] = v
			}
			for k, v := range extra {
				if v == "" {
					delete(e, k)
				} else {
					e[k] = v
				}
			}
			cmd := exec.CommandContext(ctx, bridgeBin, "check", "--timeout", "3s")
			cmd.Env = bridgeEnv(e)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("bridge check passed with a bad credential:\n%s", out)
			}
			if !strings.Contains(string(out), "fail") && !strings.Contains(string(out), "FAIL") {
				t.Errorf("bridge check does not report a failed step:\n%s", out)
			}
			t.Logf("bridge check:\n%s", out)
			assertNoSecret(t, "bridge check output", string(out))
		})
	}
	check("wrong token", map[string]string{
		"BRIDGE_TOKEN": secretWrongToken, "BRIDGE_NATS_URL": natsURL, "BRIDGE_NATS_USER": "", "BRIDGE_NATS_PASSWORD": "",
	})
	check("entra id unreachable", map[string]string{
		"BRIDGE_TOKEN": "", "AZURE_AUTHORITY_HOST": "https://127.0.0.1:1/", "BRIDGE_NATS_URL": natsURL,
		"BRIDGE_NATS_USER": "", "BRIDGE_NATS_PASSWORD": "",
	})
	check("wrong nats password", map[string]string{
		"BRIDGE_NATS_PASSWORD": secretWrongToken,
	})
}
