package main

import (
	"context"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// stateWriteUser is the one NATS user of TestRefusedStateWritesLandOnceAllowed:
// the bridge's and the harness's.
const stateWriteUser, stateWritePassword = "bridge", "state-write-test"

// TestRefusedStateWritesLandOnceAllowed tries README's promise that a
// failed state write is retried until it lands, through the binary in its
// default configuration (leases on): for a while the JetStream server
// refuses the bridge's writes to the state bucket (its user may not
// publish to the bucket's subjects, as a wrong permission change would
// do), while the stream still takes the events. Every agent changes once
// in that time, so every agent's bucket value falls behind its last event.
// Then the permission returns and the organisation rests: without any
// further change, every agent's bucket value must reach its last event,
// ccaas_bridge_state_behind_agents must fall back to 0, the lease must
// never have moved, and the stream must hold each event once, in order.
func TestRefusedStateWritesLandOnceAllowed(t *testing.T) {
	const agents = 6
	var started *server.Options // the options the server runs with
	h := newHarness(t, agents, 47,
		withNATS(natstest.WithConfigure(func(so *server.Options) error {
			so.Users = []*server.User{{Username: stateWriteUser, Password: stateWritePassword}}
			started = so
			return nil
		})),
		withNATSConn(nats.UserInfo(stateWriteUser, stateWritePassword)))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// allowStateWrites reloads the server's authorization: the user may
	// publish everywhere, or everywhere but the state bucket's subjects.
	allowStateWrites := func(allow bool) {
		t.Helper()
		o := started.Clone()
		_, port, err := net.SplitHostPort(h.ns.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if o.Port, err = strconv.Atoi(port); err != nil {
			t.Fatal(err)
		}
		u := &server.User{Username: stateWriteUser, Password: stateWritePassword}
		if !allow {
			u.Permissions = &server.Permissions{Publish: &server.SubjectPermission{
				Allow: []string{">"},
				Deny:  []string{"$KV." + contract.StateBucket + ".>"},
			}}
		}
		o.Users = []*server.User{u}
		if err := h.ns.NATS().ReloadOptions(o); err != nil {
			t.Fatalf("reload the server's permissions: %v", err)
		}
	}

	env := h.env(map[string]string{"GORACE": raceExitNow, "BRIDGE_NATS_USER": stateWriteUser, "BRIDGE_NATS_PASSWORD": stateWritePassword})
	p := h.start(env, "run")
	ops := opsAddr(t, p)
	testwait.Until(t, waitScale*60*time.Second, "the bridge to lead and record every agent", func() bool {
		failIfExited(t, p, "starting")
		return leaderMetric(ops, 0) == "1" && h.bucketMismatch(ctx) == ""
	})
	lease := h.leaseHolder(ctx, 0)

	allowStateWrites(false)
	h.changeEveryPresence(t)
	behind := func() float64 { return metricSum(scrape(ops, "/metrics"), "ccaas_bridge_state_behind_agents") }
	testwait.UntilStated(t, waitScale*60*time.Second, "every agent's state write to fail and wait for a retry", func() (bool, string) {
		failIfExited(t, p, "state writes refused")
		n := behind()
		return n == agents, "ccaas_bridge_state_behind_agents " + strconv.FormatFloat(n, 'f', -1, 64)
	})
	if h.bucketMismatch(ctx) == "" {
		t.Fatal("the bucket equals the organisation while its writes are refused: the test would prove nothing")
	}
	latest := latestPresence(h.streamEvents(ctx))
	for _, a := range h.sim.Agents() {
		if latest[a.AgentID] != a.PresenceID {
			t.Errorf("agent %s: last presence on the stream %s while state writes are refused, organisation %s", a.AgentID, latest[a.AgentID], a.PresenceID)
		}
	}

	allowStateWrites(true)
	// Nothing changes any more: only the retries can bring the bucket up.
	h.caughtUpBucket(ctx, t, waitScale*90*time.Second, "the bucket to reach every agent's last event once writes are allowed", p)
	testwait.Until(t, waitScale*30*time.Second, "ccaas_bridge_state_behind_agents to fall to 0", func() bool { return behind() == 0 })
	if got := h.leaseHolder(ctx, 0); got != lease {
		t.Errorf("shard 0's lease moved from %q to %q while state writes were refused", lease, got)
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
	h.checkWholeStream(ctx, h.streamEvents(ctx))
}
