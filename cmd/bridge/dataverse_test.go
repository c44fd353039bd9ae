package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// orgServer serves a simulator on a fixed loopback address that a test can
// take down (connection refused) and bring back.
type orgServer struct {
	t    *testing.T
	addr string
	h    http.Handler
	srv  *http.Server
}

func newOrgServer(t *testing.T, h http.Handler) *orgServer {
	t.Helper()
	o := &orgServer{t: t, h: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.addr = ln.Addr().String()
	o.serve(ln)
	t.Cleanup(func() { o.down() })
	return o
}

func (o *orgServer) serve(ln net.Listener) {
	o.srv = &http.Server{Handler: o.h}
	go o.srv.Serve(ln)
}

func (o *orgServer) down() {
	if o.srv != nil {
		o.srv.Close()
		o.srv = nil
	}
}

func (o *orgServer) up() {
	o.t.Helper()
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		o.t.Fatalf("listen again on %s: %v", o.addr, err)
	}
	o.serve(ln)
}

// TestReadyzTellsTheTruthAboutTheSource: with a wrong token /readyz is 503
// within two poll intervals, naming the class, the status and the agents
// affected; with the token fixed but the organisation unreachable it stays
// 503 with the new reason; once polls succeed it is 200 again.
func TestReadyzTellsTheTruthAboutTheSource(t *testing.T) {
	const interval = time.Second
	h := newHarness(t, 4, 21)
	org := newOrgServer(t, h.sim.Handler())
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("pasted-the-wrong-one"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := h.start(h.env(map[string]string{
		"BRIDGE_ORG_URL": "http://" + org.addr, "BRIDGE_TOKEN": "", "BRIDGE_TOKEN_FILE": tokenFile,
		"BRIDGE_POLL_INTERVAL": interval.String(), "BRIDGE_BACKOFF_MAX": "1s",
	}), "run")
	ops := opsAddr(t, p)
	testwait.Until(t, waitScale*30*time.Second, "polling started", func() bool { return strings.Contains(p.output(), `"msg":"bridge running"`) })
	started := time.Now()
	var body string
	testwait.Until(t, waitScale*3*interval, "503 naming the refused token", func() bool {
		body = scrape(ops, "/readyz")
		return strings.Contains(body, `"status":"not_ready"`) && strings.Contains(body, "unauthorized (HTTP 401")
	})
	if took := time.Since(started); took > 2*interval+500*time.Millisecond {
		t.Errorf("not ready after %s, want within two poll intervals (%s)", took, 2*interval)
	}
	for _, want := range []string{"4 of 4 agents failing", "for 4 agents", "no token accepted", "Bearer"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz %s does not say %q", body, want)
		}
	}
	if strings.Contains(body, h.sim.AgentIDs()[0]) {
		t.Errorf("/readyz lists agents: %s", body)
	}

	// The right token, but the organisation is gone.
	org.down()
	if err := os.WriteFile(tokenFile, []byte(simulator.DefaultToken), 0o600); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, waitScale*10*time.Second, "503 naming the unreachable organisation", func() bool {
		body = scrape(ops, "/readyz")
		return strings.Contains(body, `"status":"not_ready"`) && strings.Contains(body, "most: transport") && strings.Contains(body, "unreachable")
	})

	org.up()
	testwait.Until(t, waitScale*15*time.Second, "ready once polls succeed", func() bool {
		return strings.Contains(scrape(ops, "/readyz"), `"status":"ready"`)
	})
}

// TestParameterRequiredOrganisation: an organisation whose CCaaS_GetPresence
// requires ApiVersion is polled for every agent, whether the bridge may
// read the custom API's definition or learns the form from the first call.
func TestParameterRequiredOrganisation(t *testing.T) {
	for _, readable := range []bool{true, false} {
		t.Run(fmt.Sprintf("definition readable %v", readable), func(t *testing.T) {
			h := newHarness(t, 5, 5, withSim(func(o *simulator.Options) {
				o.CallForm = simulator.CallFormFunction
				if !readable {
					o.CustomAPIsStatus = http.StatusForbidden
				}
			}))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			p := h.start(h.env(nil), "run")
			c := h.collect(ctx)
			testwait.Until(t, waitScale*30*time.Second, "every agent on the stream", func() bool { return h.caughtUp(c) })
			h.sim.Step()
			testwait.Until(t, waitScale*20*time.Second, "a round of changes on the stream", func() bool { return h.caughtUp(c) })
			out := p.output()
			if !strings.Contains(out, `"msg":"presence call form"`) {
				t.Errorf("the form in use is not logged:\n%s", out)
			}
			switched := strings.Count(out, "presence call form switched")
			if readable && (switched != 0 || !strings.Contains(out, `"form":"function","configured":"auto","definition_read":true`)) {
				t.Errorf("definition readable: %d switches; logs:\n%s", switched, out)
			}
			if !readable && switched != 1 {
				t.Errorf("definition not readable: %d switches, want 1; logs:\n%s", switched, out)
			}
			if n := h.sim.Stats().ByReason["call-form"]; n > 32 {
				t.Errorf("%d requests in the wrong form", n)
			}
		})
	}
}

// TestOversizedChannelListStillReachesTheStream: an agent whose channel
// list makes its channels.changed event larger than the server's
// max_payload is published truncated (flagged), and its later presence
// changes reach the stream.
func TestOversizedChannelListStillReachesTheStream(t *testing.T) {
	const maxPayload = 64 << 10
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := newHarness(t, 3, 8, withNATS(natstest.WithConfigure(func(o *server.Options) error { o.MaxPayload = maxPayload; return nil })))
	big := h.sim.AgentIDs()[0]
	var channels []string
	for i := range 900 { // about 40 KB: the state fits, current + added do not
		channels = append(channels, fmt.Sprintf("queue-%04d-%s", i, strings.Repeat("x", 32)))
	}
	if _, _, err := h.sim.SetChannels(big, channels, nil); err != nil {
		t.Fatal(err)
	}
	p := h.start(h.env(nil), "run")
	c := h.collect(ctx)
	testwait.Until(t, waitScale*30*time.Second, "every agent on the stream", func() bool { return h.caughtUp(c) })
	for _, next := range []string{simulator.PresenceAway, simulator.PresenceBusy} {
		if _, _, err := h.sim.SetPresence(big, next); err != nil {
			t.Fatal(err)
		}
		testwait.Until(t, waitScale*20*time.Second, "the presence change on the stream", func() bool { return h.caughtUp(c) })
	}
	events, errs := c.snapshot()
	if len(errs) > 0 {
		t.Fatalf("invalid events: %v", errs)
	}
	truncated := false
	for _, ev := range events {
		if ev.Agent == big && ev.Type == "channels.changed" {
			truncated = ev.Data["truncated"] == true
			if len(ev.raw) > maxPayload {
				t.Errorf("event data of %d bytes", len(ev.raw))
			}
		}
	}
	if !truncated {
		t.Errorf("the channels.changed event of the oversized list is not flagged truncated")
	}
	if strings.Contains(p.output(), "maximum payload exceeded") {
		t.Errorf("a publish was rejected for its size:\n%s", p.output())
	}
}

// TestCheckInEachSimulatorMode runs `bridge check` as an operator would
// against organisations that differ in call form, quota scope and grants.
func TestCheckInEachSimulatorMode(t *testing.T) {
	tests := []struct {
		name      string
		sim       func(*simulator.Options)
		fault     *simulator.AgentFault
		env       map[string]string
		wantExit0 bool
		want      []string
	}{
		{"parameter required, definition readable", func(o *simulator.Options) { o.CallForm = simulator.CallFormFunction }, nil, nil, true,
			[]string{"function form, from the custom API's definition", "PASS  call form", "function form: ", "each impersonated agent (agent scope)"}},
		{"parameter required, definition not readable", func(o *simulator.Options) {
			o.CallForm, o.CustomAPIsStatus = simulator.CallFormFunction, http.StatusForbidden
		}, nil, nil, true, []string{"definition not readable (read custom API CCaaS_GetPresence: HTTP 403 0x80040220", "function form: "}},
		{"caller scope applied, agent configured", func(o *simulator.Options) { o.Quota.Scope = simulator.QuotaScopeCaller }, nil, nil, false,
			[]string{"the application user for every agent (caller scope)", "FAIL  quota scope", "fix: set BRIDGE_QUOTA_SCOPE=caller"}},
		{"caller scope applied and configured", func(o *simulator.Options) { o.Quota.Scope = simulator.QuotaScopeCaller }, nil,
			map[string]string{"BRIDGE_QUOTA_SCOPE": "caller"}, true, []string{"PASS  quota scope"}},
		{"act on behalf missing", nil, &simulator.AgentFault{Status: 403, Code: "0x8004a110"}, nil, false,
			[]string{"FAIL  presence", "0x8004a110", "fix: ", "not through a team"}},
		{"not allowlisted", nil, &simulator.AgentFault{Status: 405}, nil, false,
			[]string{"FAIL  presence", "HTTP 405", "allowlisted"}},
		{"wrong token", nil, nil, map[string]string{"BRIDGE_TOKEN": "not-the-token"}, false,
			[]string{"FAIL  presence", "HTTP 401", "audience"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 3, 4, withSim(tt.sim))
			if tt.fault != nil {
				if err := h.sim.SetAgentFault(h.sim.AgentIDs()[0], *tt.fault); err != nil {
					t.Fatal(err)
				}
			}
			out, stderr, code := runCLI(t, h.env(tt.env), "check")
			if (code == 0) != tt.wantExit0 {
				t.Errorf("exit %d", code)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if t.Failed() {
				t.Logf("bridge check:\n%s%s", out, stderr)
			}
		})
	}
}

// TestNullsExtraKeysAndGzipPublishLikeNormalBodies: an organisation that
// sends nulls for empty lists and for the Timestamp of logged-out agents,
// undocumented keys and gzip bodies, and has the Inactive presence, is
// followed event for event with no malformed poll.
func TestNullsExtraKeysAndGzipPublishLikeNormalBodies(t *testing.T) {
	h := newHarness(t, 6, 17, withSim(func(o *simulator.Options) { o.NullEmpty, o.ExtraKeys, o.Gzip, o.Inactive = true, true, true, true }))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids := h.sim.AgentIDs()
	if _, _, err := h.sim.Logout(ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.sim.SetChannels(ids[1], nil, nil); err != nil {
		t.Fatal(err)
	}
	p := h.start(h.env(nil), "run")
	ops := opsAddr(t, p)
	c := h.collect(ctx)
	testwait.Until(t, waitScale*30*time.Second, "every agent on the stream", func() bool { return h.caughtUp(c) })
	if _, _, err := h.sim.SetPresence(ids[2], simulator.PresenceInactive); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, waitScale*20*time.Second, "the Inactive presence on the stream", func() bool { return h.caughtUp(c) })
	for range 3 {
		h.sim.Step()
		testwait.Until(t, waitScale*20*time.Second, "a round of changes on the stream", func() bool { return h.caughtUp(c) })
	}
	events, errs := c.snapshot()
	if len(errs) > 0 {
		t.Fatalf("invalid events: %v", errs)
	}
	inactive := false
	for _, ev := range events {
		if ev.Agent == ids[2] && ev.Type == "presence.changed" {
			if cur, _ := ev.Data["current"].(map[string]any); cur["baseStatus"] == "Inactive" {
				inactive = true
			}
		}
	}
	if !inactive {
		t.Error("no presence.changed to the Inactive base status")
	}
	if n := metricSum(scrape(ops, "/metrics"), "ccaas_bridge_malformed_responses_total"); n != 0 {
		t.Errorf("%v malformed responses", n)
	}
}
