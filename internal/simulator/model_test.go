package simulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// build makes a simulator with a fake clock and no HTTP server.
func build(t *testing.T, mutate func(*simulator.Options)) (*simulator.Simulator, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	opts := simulator.DefaultOptions()
	opts.Now = clock.Now
	if mutate != nil {
		mutate(&opts)
	}
	sim, err := simulator.New(opts)
	if err != nil {
		t.Fatalf("new simulator: %v", err)
	}
	return sim, clock
}

// steps runs n rounds, advancing the clock by 2 s before each.
func steps(sim *simulator.Simulator, clock *fakeClock, n int) {
	for range n {
		clock.Advance(2 * time.Second)
		sim.Step()
	}
}

func TestDeterminism(t *testing.T) {
	run := func(seed uint64) ([]simulator.AgentState, []simulator.Change) {
		sim, clock := build(t, func(o *simulator.Options) { o.Agents = 30; o.Seed = seed })
		steps(sim, clock, 100)
		return sim.Agents(), sim.Changes()
	}
	a1, c1 := run(7)
	a2, c2 := run(7)
	if !reflect.DeepEqual(a1, a2) || !reflect.DeepEqual(c1, c2) {
		t.Fatal("the same seed gave different agents or changes")
	}
	if len(c1) < 30+300 {
		t.Fatalf("only %d changes in 100 rounds of 30 agents", len(c1))
	}
	a3, c3 := run(8)
	if reflect.DeepEqual(a1, a3) || reflect.DeepEqual(c1, c3) {
		t.Fatal("different seeds gave the same agents and changes")
	}
}

// TestGroundTruth replays the log and checks it is complete, consistent with
// the current state, and realistic.
func TestGroundTruth(t *testing.T) {
	sim, clock := build(t, func(o *simulator.Options) { o.Agents = 40; o.Seed = 3 })
	steps(sim, clock, 300)
	cat := map[string]simulator.Presence{}
	for _, p := range sim.Presences() {
		cat[p.ID] = p
	}
	replay := map[string]simulator.AgentState{}
	kinds := map[simulator.ChangeKind]int{}
	bases := map[int]int{}
	custom := 0
	for i, c := range sim.Changes() {
		if c.Seq != uint64(i+1) {
			t.Fatalf("change %d has Seq %d", i, c.Seq)
		}
		if c.AgentID != c.State.AgentID || c.Forced {
			t.Fatalf("change %+v: wrong agent or forced", c)
		}
		kinds[c.Kind]++
		prev, seen := replay[c.AgentID]
		if !seen != (c.Kind == simulator.KindAdded) {
			t.Fatalf("change %d: kind %s for an agent seen=%v", c.Seq, c.Kind, seen)
		}
		st := c.State
		if seen {
			if c.Fields == 0 {
				t.Fatalf("change %d changes nothing", c.Seq)
			}
			if got := c.Fields.Has(simulator.FieldPresence); got != (prev.PresenceID != st.PresenceID) {
				t.Errorf("change %d: FieldPresence %v, presence %s -> %s", c.Seq, got, prev.PresenceName, st.PresenceName)
			}
			if got := c.Fields.Has(simulator.FieldSessions); got != (prev.ActiveBrowserSessions != st.ActiveBrowserSessions || prev.Timestamp != st.Timestamp) {
				t.Errorf("change %d: FieldSessions %v", c.Seq, got)
			}
		}
		// Invariants of every state.
		p, ok := cat[st.PresenceID]
		if !ok || p.Name != st.PresenceName || p.BaseStatus != st.BaseStatus {
			t.Fatalf("change %d: presence %s %q not in the catalogue", c.Seq, st.PresenceID, st.PresenceName)
		}
		bases[p.BaseStatus]++
		if !slices.ContainsFunc(simulator.OutOfBoxPresences(), func(o simulator.Presence) bool { return o.ID == p.ID }) {
			custom++
		}
		if (st.ActiveBrowserSessions == 0) != (st.BaseStatus == simulator.BaseOffline) {
			t.Fatalf("change %d: %d sessions with presence %s", c.Seq, st.ActiveBrowserSessions, st.PresenceName)
		}
		if st.ActiveBrowserSessions > 3 || st.ActiveBrowserSessions < 0 {
			t.Fatalf("change %d: %d sessions", c.Seq, st.ActiveBrowserSessions)
		}
		if st.Timestamp <= 0 || st.Timestamp > clock.Now().Unix() {
			t.Fatalf("change %d: login time %d", c.Seq, st.Timestamp)
		}
		if st.BaseStatus == simulator.BaseAvailable && len(st.DisabledChannels) != 0 {
			t.Fatalf("change %d: Available with disabled channels %v", c.Seq, st.DisabledChannels)
		}
		if st.BaseStatus == simulator.BaseBusyDND && len(st.AllowedChannels) != 0 {
			t.Fatalf("change %d: Busy - DND with allowed channels %v", c.Seq, st.AllowedChannels)
		}
		for _, ch := range st.AllowedChannels {
			if slices.Contains(st.DisabledChannels, ch) {
				t.Fatalf("change %d: channel %s both allowed and disabled", c.Seq, ch)
			}
		}
		switch c.Kind {
		case simulator.KindLogin:
			if prev.ActiveBrowserSessions != 0 || st.ActiveBrowserSessions != 1 || st.PresenceID != simulator.PresenceAvailable || st.Timestamp != c.At.Unix() {
				t.Fatalf("login %d: %+v -> %+v", c.Seq, prev, st)
			}
		case simulator.KindLogout:
			if st.ActiveBrowserSessions != 0 || st.PresenceID != simulator.PresenceOffline || st.Timestamp != prev.Timestamp {
				t.Fatalf("logout %d: %+v -> %+v", c.Seq, prev, st)
			}
		case simulator.KindTabOpened, simulator.KindTabClosed:
			if d := st.ActiveBrowserSessions - prev.ActiveBrowserSessions; d != 1 && d != -1 || st.ActiveBrowserSessions == 0 {
				t.Fatalf("tab change %d: %d -> %d", c.Seq, prev.ActiveBrowserSessions, st.ActiveBrowserSessions)
			}
		}
		replay[c.AgentID] = st
	}
	for _, st := range sim.Agents() {
		if !reflect.DeepEqual(replay[st.AgentID], st) {
			t.Errorf("replayed %+v, current %+v", replay[st.AgentID], st)
		}
	}
	for _, k := range []simulator.ChangeKind{simulator.KindAdded, simulator.KindLogin, simulator.KindLogout, simulator.KindTabOpened, simulator.KindTabClosed, simulator.KindPresence, simulator.KindChannels} {
		if kinds[k] == 0 {
			t.Errorf("no %s change in 300 rounds: %v", k, kinds)
		}
	}
	for b := simulator.BaseAvailable; b <= simulator.BaseOffline; b++ {
		if bases[b] == 0 {
			t.Errorf("base status %s never seen", simulator.BaseStatusName(b))
		}
	}
	if custom == 0 {
		t.Error("no custom presence ever used")
	}
	if got := sim.ChangesSince(uint64(len(replay))); len(got) != len(sim.Changes())-len(replay) || got[0].Seq != uint64(len(replay)+1) {
		t.Errorf("ChangesSince(%d) returned %d changes starting at %d", len(replay), len(got), got[0].Seq)
	}
}

func TestForcedChanges(t *testing.T) {
	e := newEnv(t, nil)
	id := e.sim.AgentIDs()[2]
	meeting := simulator.DefaultCustomPresences()[0]
	tests := []struct {
		name  string
		do    func() (simulator.Change, bool, error)
		kind  simulator.ChangeKind
		check func(st simulator.AgentState) bool
	}{
		{"login", func() (simulator.Change, bool, error) { return e.sim.Login(id) }, simulator.KindLogin,
			func(st simulator.AgentState) bool {
				return st.ActiveBrowserSessions == 1 && st.PresenceID == simulator.PresenceAvailable && st.Timestamp == e.clock.Now().Unix()
			}},
		{"custom presence", func() (simulator.Change, bool, error) { return e.sim.SetPresence(id, meeting.ID) }, simulator.KindPresence,
			func(st simulator.AgentState) bool {
				return st.PresenceName == "In a meeting" && st.BaseStatus == simulator.BaseAway
			}},
		{"busy - dnd disables every channel", func() (simulator.Change, bool, error) { return e.sim.SetPresence(id, simulator.PresenceBusyDND) }, simulator.KindPresence,
			func(st simulator.AgentState) bool {
				return len(st.AllowedChannels) == 0 && len(st.DisabledChannels) > 0
			}},
		{"second tab", func() (simulator.Change, bool, error) { return e.sim.SetSessions(id, 2) }, simulator.KindSessions,
			func(st simulator.AgentState) bool { return st.ActiveBrowserSessions == 2 }},
		{"channels", func() (simulator.Change, bool, error) {
			return e.sim.SetChannels(id, []string{"voice"}, []string{"chat"})
		}, simulator.KindChannels,
			func(st simulator.AgentState) bool {
				return slices.Equal(st.AllowedChannels, []string{"voice"}) && slices.Equal(st.DisabledChannels, []string{"chat"})
			}},
		{"logout", func() (simulator.Change, bool, error) { return e.sim.Logout(id) }, simulator.KindLogout,
			func(st simulator.AgentState) bool {
				return st.ActiveBrowserSessions == 0 && st.PresenceID == simulator.PresenceOffline
			}},
		{"presence outside the catalogue", func() (simulator.Change, bool, error) {
			st, _ := e.sim.State(id)
			st.PresenceID, st.PresenceName = "11111111-2222-3333-4444-555555555555", "Mystery"
			return e.sim.SetState(id, st)
		}, simulator.KindSetByTest,
			func(st simulator.AgentState) bool { return st.PresenceName == "Mystery" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.clock.Advance(time.Minute)
			c, changed, err := tt.do()
			if err != nil || !changed {
				t.Fatalf("changed %v, err %v", changed, err)
			}
			if c.Kind != tt.kind || !c.Forced || c.AgentID != id || !tt.check(c.State) {
				t.Fatalf("change %+v", c)
			}
			if last := e.sim.Changes()[len(e.sim.Changes())-1]; !reflect.DeepEqual(last, c) {
				t.Fatalf("last logged change %+v, returned %+v", last, c)
			}
			// The API answers the new state.
			resp, body := e.get(t, id, simulator.DefaultToken)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			var b struct {
				PresenceId            string
				ActiveBrowserSessions int
			}
			if err := json.Unmarshal(body, &b); err != nil || b.PresenceId != c.State.PresenceID || b.ActiveBrowserSessions != c.State.ActiveBrowserSessions {
				t.Fatalf("API answered %s for state %+v", body, c.State)
			}
		})
	}
	t.Run("same state again records nothing", func(t *testing.T) {
		if _, _, err := e.sim.Logout(id); err != nil {
			t.Fatal(err)
		}
		n := len(e.sim.Changes())
		if _, changed, err := e.sim.Logout(id); err != nil || changed {
			t.Fatalf("changed %v, err %v", changed, err)
		}
		if len(e.sim.Changes()) != n {
			t.Fatal("a no-op was logged")
		}
	})
	t.Run("errors", func(t *testing.T) {
		if _, _, err := e.sim.Logout("394382b6-a4d4-ee11-904c-00224808a166"); !errors.Is(err, simulator.ErrUnknownAgent) {
			t.Errorf("logout of an unknown agent: %v", err)
		}
		if _, _, err := e.sim.SetPresence(id, "394382b6-a4d4-ee11-904c-00224808a166"); err == nil {
			t.Error("a presence outside the catalogue was accepted")
		}
		if _, _, err := e.sim.SetSessions(id, -1); err == nil {
			t.Error("negative sessions accepted")
		}
	})
}

func TestAddRemove(t *testing.T) {
	e := newEnv(t, nil)
	const id = "394382B6-A4D4-EE11-904C-00224808A166"
	if resp, _ := e.get(t, id, simulator.DefaultToken); resp.StatusCode != 404 {
		t.Fatalf("before add: status %d", resp.StatusCode)
	}
	st, err := e.sim.AddAgent(id, "Ada Lovelace")
	if err != nil || st.AgentID != "394382b6-a4d4-ee11-904c-00224808a166" || st.AgentName != "Ada Lovelace" {
		t.Fatalf("add: %+v, %v", st, err)
	}
	if _, err := e.sim.AddAgent(id, ""); err == nil {
		t.Error("a duplicate agent was added")
	}
	if _, err := e.sim.AddAgent("nope", ""); err == nil {
		t.Error("an agent with a non-GUID ID was added")
	}
	drawn, err := e.sim.AddAgent("", "")
	if err != nil || !guidRE.MatchString(drawn.AgentID) || drawn.AgentName == "" {
		t.Fatalf("add drawn: %+v, %v", drawn, err)
	}
	if resp, _ := e.get(t, id, simulator.DefaultToken); resp.StatusCode != 200 {
		t.Fatalf("after add: status %d", resp.StatusCode)
	}
	if err := e.sim.RemoveAgent(id); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.get(t, id, simulator.DefaultToken); resp.StatusCode != 404 {
		t.Fatalf("after remove: status %d", resp.StatusCode)
	}
	if err := e.sim.RemoveAgent(id); !errors.Is(err, simulator.ErrUnknownAgent) {
		t.Errorf("second remove: %v", err)
	}
	log := e.sim.Changes()
	var kinds []simulator.ChangeKind
	for _, c := range log[len(log)-3:] {
		kinds = append(kinds, c.Kind)
	}
	if !slices.Equal(kinds, []simulator.ChangeKind{simulator.KindAdded, simulator.KindAdded, simulator.KindRemoved}) {
		t.Errorf("last kinds %v", kinds)
	}
	if len(e.sim.AgentIDs()) != 6 {
		t.Errorf("%d agents, want 6", len(e.sim.AgentIDs()))
	}
}

func TestPresenceCatalogueChanges(t *testing.T) {
	sim, _ := build(t, func(o *simulator.Options) { o.CustomPresences = []simulator.Presence{} })
	if n := len(sim.Presences()); n != 5 {
		t.Fatalf("%d presences without custom ones", n)
	}
	p := simulator.Presence{ID: "AAAAAAAA-7F3D-EF11-8409-6045BD0A1B09", Name: "Outbound campaign", BaseStatus: simulator.BaseBusy}
	if err := sim.AddPresence(p); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []simulator.Presence{
		p,
		{ID: "x", Name: "X", BaseStatus: simulator.BaseBusy},
		{ID: "bbbbbbbb-7f3d-ef11-8409-6045bd0a1b09", Name: "X", BaseStatus: 7},
		{ID: "bbbbbbbb-7f3d-ef11-8409-6045bd0a1b09", BaseStatus: simulator.BaseBusy},
	} {
		if err := sim.AddPresence(bad); err == nil {
			t.Errorf("presence %+v accepted", bad)
		}
	}
	if err := sim.RemovePresence(simulator.PresenceAway); err == nil {
		t.Error("an out-of-box presence was removed")
	}
	if err := sim.RemovePresence(p.ID); err != nil || len(sim.Presences()) != 5 {
		t.Errorf("remove custom presence: %v", err)
	}
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*simulator.Options)
	}{
		{"negative agents", func(o *simulator.Options) { o.Agents = -1 }},
		{"probability above one", func(o *simulator.Options) { o.ChangeProbability = 1.5 }},
		{"negative interval", func(o *simulator.Options) { o.ChangeInterval = -time.Second }},
		{"negative rate", func(o *simulator.Options) { o.Faults.Rate5xx = -0.1 }},
		{"rates above one", func(o *simulator.Options) { o.Faults.Rate429, o.Faults.Rate5xx = 0.6, 0.6 }},
		{"burst without period", func(o *simulator.Options) { o.Faults.Burst429Length = time.Second }},
		{"burst longer than period", func(o *simulator.Options) {
			o.Faults.Burst429Every, o.Faults.Burst429Length = time.Second, 2*time.Second
		}},
		{"4xx as 5xx", func(o *simulator.Options) { o.Faults.Statuses5xx = []int{404} }},
		{"unknown malformed kind", func(o *simulator.Options) { o.Faults.MalformedKinds = []simulator.MalformedKind{"weird"} }},
		{"negative quota", func(o *simulator.Options) { o.Quota.Requests = -1 }},
		{"empty static token", func(o *simulator.Options) { o.StaticTokens = []string{""} }},
		{"bad custom presence", func(o *simulator.Options) {
			o.CustomPresences = []simulator.Presence{{ID: simulator.PresenceAway, Name: "Away again", BaseStatus: simulator.BaseAway}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := simulator.DefaultOptions()
			tt.mutate(&opts)
			if _, err := simulator.New(opts); err == nil {
				t.Fatal("New accepted invalid options")
			}
		})
	}
}

func TestRunAndServe(t *testing.T) {
	opts := simulator.DefaultOptions()
	opts.Agents = 10
	opts.ChangeInterval = 5 * time.Millisecond
	opts.ChangeProbability = 1
	sim, err := simulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- sim.Serve(ctx, ln) }()
	initial := len(sim.Changes())
	testwait.Until(t, 5*time.Second, "changes from Run", func() bool { return len(sim.Changes()) > initial+20 })
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ln.Addr().String()+"/api/data/v9.2/CCaaS_GetPresence", nil)
	req.Header.Set("MSCRMCallerID", sim.AgentIDs()[0])
	req.Header.Set("Authorization", "Bearer "+simulator.DefaultToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still open after Serve returned")
	}
	if err := sim.Run(t.Context(), 0); err == nil {
		t.Error("Run accepted a zero interval")
	}
}

func TestFieldsString(t *testing.T) {
	tests := []struct {
		f    simulator.Fields
		want string
	}{
		{0, ""},
		{simulator.FieldPresence, "presence"},
		{simulator.FieldPresence | simulator.FieldChannels, "presence|channels"},
		{simulator.FieldPresence | simulator.FieldSessions | simulator.FieldChannels, "presence|sessions|channels"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("%d.String() = %q, want %q", tt.f, got, tt.want)
		}
	}
}

func TestListenAndServeBadAddress(t *testing.T) {
	sim, _ := build(t, nil)
	if err := sim.ListenAndServe(t.Context(), "127.0.0.1:not-a-port"); err == nil {
		t.Fatal("ListenAndServe accepted a bad address")
	}
}
