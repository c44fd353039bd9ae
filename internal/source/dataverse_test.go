package source_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// allHealthy reports whether every agent's last poll succeeded.
func allHealthy(r *rig, n int) bool {
	st := r.poller.Status()
	return st.FirstRoundDone && st.Succeeding == n
}

func TestCallFormDiscovered(t *testing.T) {
	tests := []struct {
		name       string
		sim        func(*simulator.Options)
		call       source.CallForm
		wantForm   source.CallForm
		discovered bool // customapis readable
		wantOK     bool
	}{
		{"function required, definition readable", func(o *simulator.Options) { o.CallForm = simulator.CallFormFunction }, source.CallAuto, source.CallFunction, true, true},
		{"function required, definition not readable: the first answer decides", func(o *simulator.Options) {
			o.CallForm, o.CustomAPIsStatus = simulator.CallFormFunction, 403
		}, source.CallAuto, source.CallFunction, false, true},
		{"bare only, definition readable", func(o *simulator.Options) { o.CallForm = simulator.CallFormBare }, source.CallAuto, source.CallBare, true, true},
		{"both accepted", func(o *simulator.Options) { o.CallForm = simulator.CallFormBoth }, source.CallAuto, source.CallFunction, true, true},
		{"function forced where only bare works", func(o *simulator.Options) { o.CallForm = simulator.CallFormBare }, source.CallFunction, source.CallFunction, true, false},
		{"bare forced where the parameter is required", func(o *simulator.Options) { o.CallForm = simulator.CallFormFunction }, source.CallBare, source.CallBare, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const agents = 6
			r := newRigWith(t, agents, tt.sim, func(o *source.ClientOptions) { o.Call = tt.call }, nil, nil)
			form, err := r.client.DiscoverCallForm(t.Context())
			if tt.call == source.CallAuto && (err == nil) != tt.discovered {
				t.Fatalf("DiscoverCallForm error %v, want readable=%v", err, tt.discovered)
			}
			if err != nil && !strings.Contains(err.Error(), "0x80040220") {
				t.Errorf("discovery error %q does not carry the Dataverse code", err)
			}
			r.start(t)
			if !tt.wantOK {
				testwait.Until(t, 5*time.Second, "every agent unpollable", func() bool { return r.state()["unpollable"] == agents })
				if r.client.CallForm() != tt.wantForm {
					t.Errorf("forced form changed to %s", r.client.CallForm())
				}
				logs := r.logs.String()
				if !strings.Contains(logs, "0x8006088a") && !strings.Contains(logs, "0x80060888") || !strings.Contains(logs, "BRIDGE_PRESENCE_CALL") {
					t.Errorf("log lines lack the code and the fix:\n%s", logs)
				}
				return
			}
			testwait.Until(t, 5*time.Second, "every agent polled", func() bool { return allHealthy(r, agents) })
			if got := r.client.CallForm(); got != tt.wantForm || (tt.discovered && form != tt.wantForm) {
				t.Errorf("form in use %s (discovered %s), want %s", got, form, tt.wantForm)
			}
			refused := r.sim.Stats().ByReason["call-form"]
			if tt.discovered && refused != 0 {
				t.Errorf("%d requests in the wrong form after discovery", refused)
			}
			if !tt.discovered && (refused == 0 || refused > 8) {
				t.Errorf("%d requests in the wrong form, want the first ones only (at most the concurrency)", refused)
			}
			if !tt.discovered && countLines(r.logs.String(), "presence call form switched", "") != 1 {
				t.Errorf("want one line about the switch:\n%s", r.logs.String())
			}
		})
	}
}

// TestDataverseErrorsClassifiedAndExplained: each common Dataverse error
// gets its class and state, and the log line of the state change carries
// the code and the fix.
func TestDataverseErrorsClassifiedAndExplained(t *testing.T) {
	// minGap is the pacing each kind gets: PermanentRetry (400ms in the
	// rig, less the alignment to the agent's slot) for unpollable agents, the whole Retry-After for 429s, at least
	// half the first backoff (50ms) for server errors.
	tests := []struct {
		name      string
		fault     simulator.AgentFault
		state     string
		kind      source.CodeKind
		code, fix string
		minGap    time.Duration
	}{
		{"act on behalf missing", simulator.AgentFault{Status: 403, Code: "0x8004a110"}, "unpollable", source.KindActOnBehalf, "0x8004a110", "not through a team", 300 * time.Millisecond},
		{"privilege missing", simulator.AgentFault{Status: 403}, "unpollable", source.KindActOnBehalf, "0x80040220", "prvActOnBehalfOfAnotherUser", 300 * time.Millisecond},
		{"not allowlisted", simulator.AgentFault{Status: 405}, "unpollable", source.KindNotAllowlisted, "0x80060888", "allowlisted", 300 * time.Millisecond},
		{"not a systemuser", simulator.AgentFault{Status: 404}, "unpollable", source.KindNotAgent, "0x80040217", "systemuserid", 300 * time.Millisecond},
		{"request count", simulator.AgentFault{Status: 429, RetryAfter: time.Second}, "rate_limited", source.KindRequestCount, "0x80072322", "6,000 requests", time.Second},
		{"execution time", simulator.AgentFault{Status: 429, RetryAfter: time.Second, Code: "0x80072321"}, "rate_limited", source.KindExecutionTime, "0x80072321", "execution time", time.Second},
		{"concurrency", simulator.AgentFault{Status: 429, RetryAfter: time.Second, Code: "0x80072326"}, "rate_limited", source.KindConcurrency, "0x80072326", "BRIDGE_MAX_CONCURRENCY", time.Second},
		{"server error", simulator.AgentFault{Status: 500}, "backing_off", source.KindOther, "0x80040216", "", 25 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, 3, nil, nil, nil)
			if err := r.sim.SetAgentFault(r.faulty, tt.fault); err != nil {
				t.Fatal(err)
			}
			r.start(t)
			var pe *source.PollError
			testwait.Until(t, 5*time.Second, "the agent in state "+tt.state+" and its failure observed", func() bool {
				for _, o := range r.rec.observations(r.faulty) {
					if p, ok := o.Err.(*source.PollError); ok {
						pe = p
					}
				}
				return r.state()[tt.state] == 1 && pe != nil
			})
			if pe == nil || pe.Kind != tt.kind || pe.Code != tt.code || pe.Message == "" && tt.code != "" {
				t.Fatalf("poll error %#v, want kind %s code %s with a message", pe, tt.kind, tt.code)
			}
			logs := r.logs.String()
			line := ""
			for _, l := range strings.Split(logs, "\n") {
				if strings.Contains(l, "agent poll failing") && strings.Contains(l, r.faulty) {
					line = l
				}
			}
			if (tt.code != "" && !strings.Contains(line, "code="+tt.code)) || !strings.Contains(line, tt.fix) {
				t.Errorf("log line %q lacks code %s or fix %q", line, tt.code, tt.fix)
			}
			if n := dvErrors(t, r, tt.kind); n < 1 {
				t.Errorf("ccaas_bridge_dataverse_errors_total{kind=%s} = %v", tt.kind, n)
			}
			testwait.Until(t, 5*time.Second, "a second request", func() bool { return len(r.rec.requestsOf(r.faulty)) >= 2 })
			reqs := r.rec.requestsOf(r.faulty)
			if gap := reqs[1].At.Sub(reqs[0].At); gap < tt.minGap {
				t.Errorf("polled again after %s, want at least %s", gap, tt.minGap)
			}
		})
	}
}

// dvErrors reads ccaas_bridge_dataverse_errors_total for one kind.
func dvErrors(t *testing.T, r *rig, kind source.CodeKind) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ccaas_bridge_dataverse_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == string(kind) {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no ccaas_bridge_dataverse_errors_total{kind=%q}", kind)
	return 0
}

func TestNullsExtraKeysAndGzipDecodeLikeANormalBody(t *testing.T) {
	r := newRig(t, 4, func(o *simulator.Options) { o.NullEmpty, o.ExtraKeys, o.Gzip, o.Inactive = true, true, true, true }, nil, nil)
	ids := r.sim.AgentIDs()
	if _, _, err := r.sim.Logout(ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.sim.SetChannels(ids[1], nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.sim.SetPresence(ids[2], simulator.PresenceInactive); err != nil {
		t.Fatal(err)
	}
	cat := source.NewCatalogue(nil)
	if err := (&source.CatalogueRefresher{Catalogue: cat, Lister: r.client}).Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		snap, err := r.client.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("agent %s: %v", id, err)
		}
		st, _ := r.sim.State(id)
		wantLogin := st.Timestamp
		if st.ActiveBrowserSessions == 0 {
			wantLogin = 0 // sent as null: not logged in
		}
		if snap.PresenceID != st.PresenceID || snap.PresenceName != st.PresenceName || snap.ActiveBrowserSessions != st.ActiveBrowserSessions ||
			snap.LoginTime != wantLogin || strings.Join(snap.AllowedChannels, ",") != strings.Join(st.AllowedChannels, ",") ||
			strings.Join(snap.DisabledChannels, ",") != strings.Join(st.DisabledChannels, ",") || snap.AllowedChannels == nil {
			t.Errorf("agent %s: snapshot %+v, state %+v", id, snap, st)
		}
		if got := cat.BaseStatus(snap.PresenceID); id == ids[2] && got != source.BaseInactive {
			t.Errorf("Inactive presence resolves to %q", got)
		}
	}
}

func TestReadinessSaysWhy(t *testing.T) {
	r := newRig(t, 4, nil, nil, func(*simulator.Simulator) source.TokenProvider { return source.StaticToken("wrong") })
	ready := source.Readiness(r.poller, r.client.TokenAccepted, 0.5)
	if ok, why := ready(); ok || !strings.Contains(why, "first poll round") {
		t.Errorf("before polling: %v %q", ok, why)
	}
	r.start(t)
	testwait.Until(t, 3*time.Second, "first round", func() bool { return r.poller.Status().FirstRoundDone })
	ok, why := ready()
	if ok || !strings.Contains(why, "unauthorized") || !strings.Contains(why, "HTTP 401") || !strings.Contains(why, "4 of 4") || !strings.Contains(why, "token") {
		t.Errorf("wrong token: %v %q", ok, why)
	}
}
