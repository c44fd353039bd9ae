package simulator

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// Scenario is a script of forced changes and faults that, on top of the
// random changes of Run, makes the simulated organisation show every kind
// of event the bridge publishes, and repeats every Period. Four agents take
// part, the first four of AgentIDs:
//
//   - the unattended agent logs in and, at 3 units, closes its last browser
//     tab without logging out while Available (unattended, and offline by
//     logout); at 12 units it opens a tab again (online);
//   - the leaving agent logs in, logs out at 5 units (offline) and logs in
//     again at 14 units (online);
//   - the failing agent's polls fail with 503 from 2 units for FaultFor, so
//     the bridge loses sight of it (stale) and then sees it again (resumed);
//     start the scenario once the bridge polls, so that it has seen the
//     agent before (an agent never seen cannot go stale);
//   - the channel agent has one channel disabled at 7 units and enabled
//     again at 16 units.
type Scenario struct {
	// Unit is the time step of the script; default 1 s. The demo uses its
	// poll interval.
	Unit time.Duration
	// FaultFor is how long the failing agent's polls fail; it must exceed
	// the bridge's stale period for presence.stale to appear. Default 15
	// units.
	FaultFor time.Duration
	// Period is how often the script starts again; default 30 units, and
	// never shorter than FaultFor plus 12 units, nor than 20 units.
	Period time.Duration
}

// ScenarioAgents is how many agents RunScenario needs.
const ScenarioAgents = 4

func (sc Scenario) withDefaults() Scenario {
	if sc.Unit <= 0 {
		sc.Unit = time.Second
	}
	if sc.FaultFor <= 0 {
		sc.FaultFor = 15 * sc.Unit
	}
	if sc.Period <= 0 {
		sc.Period = 30 * sc.Unit
	}
	sc.Period = max(sc.Period, sc.FaultFor+12*sc.Unit, 20*sc.Unit)
	return sc
}

// scenarioStep is one action of the script, at an offset from its start.
type scenarioStep struct {
	at time.Duration
	do func() error
}

// RunScenario plays the scenario until ctx ends, then clears the failing
// agent's fault and returns nil. It returns an error at once when the
// organisation has fewer than ScenarioAgents agents, or when a forced
// change fails (an agent removed meanwhile).
func (s *Simulator) RunScenario(ctx context.Context, sc Scenario) error {
	sc = sc.withDefaults()
	ids := s.AgentIDs()
	if len(ids) < ScenarioAgents {
		return fmt.Errorf("run scenario: needs %d agents, the organisation has %d", ScenarioAgents, len(ids))
	}
	unattended, leaving, failing, channels := ids[0], ids[1], ids[2], ids[3]
	defer s.ClearAgentFault(failing)
	u := sc.Unit
	var toggled string // the channel disabled at 7 units
	steps := []scenarioStep{
		{0, func() error { return s.loginIfOut(unattended, leaving) }},
		{2 * u, func() error { return s.SetAgentFault(failing, AgentFault{Status: http.StatusServiceUnavailable}) }},
		{3 * u, func() error {
			// Whatever random changes did meanwhile: logged in, Available,
			// then the last tab closed.
			if _, _, err := s.Login(unattended); err != nil {
				return err
			}
			_, _, err := s.SetSessions(unattended, 0)
			return err
		}},
		{5 * u, func() error { _, _, err := s.Logout(leaving); return err }},
		{7 * u, func() error {
			var err error
			toggled, err = s.toggleChannel(channels, "")
			return err
		}},
		{12 * u, func() error { _, _, err := s.SetSessions(unattended, 1); return err }},
		{14 * u, func() error { _, _, err := s.Login(leaving); return err }},
		{16 * u, func() error { _, err := s.toggleChannel(channels, toggled); return err }},
		{2*u + sc.FaultFor, func() error { s.ClearAgentFault(failing); return nil }},
	}
	slices.SortStableFunc(steps, func(a, b scenarioStep) int { return int(a.at - b.at) })

	t := time.NewTimer(0)
	defer t.Stop()
	for start := time.Now(); ; start = start.Add(sc.Period) {
		for _, st := range append(steps, scenarioStep{at: sc.Period}) {
			t.Reset(time.Until(start.Add(st.at)))
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if st.do == nil {
				break // end of the period
			}
			if err := st.do(); err != nil {
				return fmt.Errorf("run scenario: %w", err)
			}
		}
	}
}

// loginIfOut logs in each agent that has no browser session.
func (s *Simulator) loginIfOut(ids ...string) error {
	for _, id := range ids {
		st, ok := s.State(id)
		if !ok {
			return fmt.Errorf("agent %s: %w", id, ErrUnknownAgent)
		}
		if st.ActiveBrowserSessions == 0 {
			if _, _, err := s.Login(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// toggleChannel disables channel c of an agent, or its first allowed one
// when c is empty, and returns the channel; when c is disabled already it
// enables it again. An agent with no channel at all is left alone.
func (s *Simulator) toggleChannel(id, c string) (string, error) {
	st, ok := s.State(id)
	if !ok {
		return "", fmt.Errorf("agent %s: %w", id, ErrUnknownAgent)
	}
	allowed, disabled := slices.Clone(st.AllowedChannels), slices.Clone(st.DisabledChannels)
	switch {
	case c == "" && len(allowed) > 0:
		c = allowed[0]
	case c == "" && len(disabled) > 0:
		c = disabled[0]
	case c == "":
		return "", nil
	}
	if i := slices.Index(allowed, c); i >= 0 {
		allowed = slices.Delete(allowed, i, i+1)
		disabled = append(disabled, c)
	} else if i := slices.Index(disabled, c); i >= 0 {
		disabled = slices.Delete(disabled, i, i+1)
		allowed = append(allowed, c)
	} else {
		return c, nil // the channel went away meanwhile
	}
	_, _, err := s.SetChannels(id, allowed, disabled)
	return c, err
}
