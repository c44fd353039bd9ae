package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/inspect"
	"github.com/ccaas/presence-bridge/internal/logging"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/source"
)

// cmdCheck verifies, step by step, everything `bridge run` needs.
func cmdCheck(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	timeout := fs.Duration("timeout", 20*time.Second, "time allowed for each step")
	if done, code := parseFlags(fs, args); done {
		return code
	}
	// Every step's detail lines print under that step's own line.
	c := &checkRun{out: newCheckOutput(stdout), timeout: *timeout}
	defer c.close()
	if err := runChecks(ctx, c.out, c.steps()...); err != nil {
		fmt.Fprintf(stderr, "bridge check: %v\n", err)
		return exitFail
	}
	return exitOK
}

// checkRun is what the steps of `bridge check` find out, each step using
// what the steps before it found; out takes their detail lines.
type checkRun struct {
	out       io.Writer
	timeout   time.Duration
	cfg       config.Config
	plan      sourcePlan
	client    *source.Client
	nc        *nats.Conn
	js        jetstream.JetStream
	first     source.RateLimitHeaders
	firstOK   bool
	announced source.CallForm
}

// steps lists the steps of `bridge check` in order.
func (c *checkRun) steps() []checkStep {
	return []checkStep{
		{Name: "config", Critical: true, Next: "set the variables named above (bridge check -h lists them)", Run: c.config},
		{Name: "token", Critical: true, Next: "check BRIDGE_TOKEN or BRIDGE_TOKEN_FILE, or the AZURE_* variables of the app registration", Run: c.bounded(c.token)},
		{Name: "call form (customapis: " + source.CustomAPIName + ")", Run: c.bounded(c.callForm)},
		{Name: "presence (CCaaS_GetPresence for the first agent)", Next: "follow the fix line above; docs/dataverse.md lists every Dataverse error code with its fix", Run: c.bounded(c.presence)},
		{Name: "quota scope (x-ms-ratelimit headers of two agents)", Run: c.bounded(c.quotaScope)},
		{Name: "presence catalogue (msdyn_presences)", Next: "grant the application user read on msdyn_presence, or set BRIDGE_PRESENCE_MAP", Run: c.bounded(c.catalogue)},
		{Name: "change feed (msdyn_agentstatus, msdyn_agentstatushistory)", Next: "grant the application user read on msdyn_agentstatus and msdyn_agentstatushistory (organisation scope), or set BRIDGE_FEED=off", Run: c.bounded(c.feed)},
		{Name: "nats", Critical: true, Next: "start NATS, or set BRIDGE_NATS_URL (and its credentials) to a reachable server", Run: c.bounded(c.connect)},
		{Name: "stream", Next: "create the stream, or let bridge run create it (BRIDGE_STREAM_MANAGE=true)", Run: c.bounded(c.stream)},
	}
}

// close closes the NATS connection the nats step made.
func (c *checkRun) close() {
	if c.nc != nil {
		c.nc.Close()
	}
}

// bounded gives f --timeout.
func (c *checkRun) bounded(f func(ctx context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		return f(ctx)
	}
}

// config loads the configuration and checks the polling plan.
func (c *checkRun) config(context.Context) error {
	var err error
	if c.cfg, err = config.Load(config.Needs{Organisation: true}); err != nil {
		return err
	}
	c.plan, err = planSource(c.cfg)
	return err
}

// token gets a token and builds the presence client with it.
func (c *checkRun) token(ctx context.Context) error {
	log := logging.Discard()
	tokens, err := tokenProvider(c.cfg, nil, log)
	if err != nil {
		return err
	}
	if _, err := tokens.Token(ctx); err != nil {
		return fmt.Errorf("get token: %w", err)
	}
	c.client, err = source.NewClient(source.ClientOptions{OrgURL: c.cfg.OrgURL, Tokens: tokens, MaxConns: 2, Call: c.plan.call})
	return err
}

// callForm reads the custom API's definition for the call form.
func (c *checkRun) callForm(ctx context.Context) error {
	form, err := c.client.DiscoverCallForm(ctx)
	c.announced = form
	switch {
	case c.plan.call != source.CallAuto:
		fmt.Fprintf(c.out, "      %s form forced by BRIDGE_PRESENCE_CALL\n", form)
	case err != nil:
		fmt.Fprintf(c.out, "      definition not readable (%v): the first call decides, starting with the %s form\n", err, form)
	default:
		fmt.Fprintf(c.out, "      %s form, from the custom API's definition\n", form)
	}
	return nil
}

// presence calls CCaaS_GetPresence for the first agent.
func (c *checkRun) presence(ctx context.Context) error {
	snap, rl, err := c.client.Probe(ctx, c.plan.agents[0])
	if err != nil {
		return explain(fmt.Errorf("agent %s: %w", c.plan.agents[0], err))
	}
	c.first, c.firstOK = rl, true
	if form := c.client.CallForm(); form != c.announced {
		fmt.Fprintf(c.out, "      switched to the %s form: the organisation refused the %s form\n", form, c.announced)
	}
	fmt.Fprintf(c.out, "      %s form: %s (%s) is %q, %s\n", c.client.CallForm(), inspect.Printable(snap.AgentName), inspect.Printable(snap.AgentID), inspect.Printable(snap.PresenceName), plural(snap.ActiveBrowserSessions, "browser session", "browser sessions"))
	return nil
}

// quotaScope compares the rate-limit headers of two agents' calls.
func (c *checkRun) quotaScope(ctx context.Context) error {
	return checkQuotaScope(ctx, c.out, c.client, c.plan, c.first, c.firstOK)
}

// catalogue reads msdyn_presences.
func (c *checkRun) catalogue(ctx context.Context) error {
	ps, err := c.client.ListPresences(ctx)
	if err != nil && c.cfg.PresenceMap != "" {
		fmt.Fprintf(c.out, "      not readable (%s); BRIDGE_PRESENCE_MAP covers custom presences\n", inspect.Printable(err.Error()))
		return nil
	}
	if err != nil {
		return explain(fmt.Errorf("%w (grant read on msdyn_presence or set BRIDGE_PRESENCE_MAP)", err))
	}
	fmt.Fprintf(c.out, "      %s\n", plural(len(ps), "presence", "presences"))
	return nil
}

// feed checks that the change feed's tables are readable.
func (c *checkRun) feed(ctx context.Context) error {
	err := c.client.CheckFeedTables(ctx)
	switch {
	case err == nil:
		fmt.Fprintf(c.out, "      both tables readable; BRIDGE_FEED=%s\n", c.cfg.Feed)
		return nil
	case c.cfg.Feed == "on":
		return explain(fmt.Errorf("%w (grant read on msdyn_agentstatus and msdyn_agentstatushistory, organisation scope)", err))
	}
	fmt.Fprintf(c.out, "      not readable (%s): with BRIDGE_FEED=%s the bridge polls alone\n", inspect.Printable(err.Error()), c.cfg.Feed)
	return nil
}

// connect connects to NATS, unless bridge run would embed it.
func (c *checkRun) connect(ctx context.Context) error {
	if c.cfg.Embedded() {
		fmt.Fprintln(c.out, "      BRIDGE_NATS_URL is empty: bridge run starts an embedded JetStream in", c.cfg.DataDir)
		return nil
	}
	var err error
	c.nc, c.js, err = connectNATS(ctx, c.cfg)
	return err
}

// stream looks the stream up and verifies its configuration.
func (c *checkRun) stream(ctx context.Context) error {
	if c.js == nil {
		return nil // embedded: created at start
	}
	cfg := c.cfg
	_, err := c.js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) && cfg.StreamManage {
		fmt.Fprintln(c.out, "      missing; bridge run creates it (BRIDGE_STREAM_MANAGE=true)")
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", cfg.Stream, err)
	}
	_, err = publish.EnsureStream(ctx, c.js, publish.StreamOptions{
		Name: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, MaxAge: cfg.StreamMaxAge, Replicas: cfg.StreamReplicas,
		Storage: cfg.StreamStorage, DuplicateWindow: cfg.DuplicateWindow, Manage: false,
	})
	return err
}

// explain appends to err the fix for the common Dataverse failures.
func explain(err error) error {
	var pe *source.PollError
	var he *source.HTTPError
	hint := ""
	switch {
	case errors.As(err, &pe):
		hint = pe.Hint()
	case errors.As(err, &he):
		hint = he.Kind.Hint()
	}
	if hint == "" {
		return err
	}
	return fmt.Errorf("%w\nfix: %s", err, hint)
}

// checkQuotaScope polls the second agent and the first again and compares
// the x-ms-ratelimit-burst-remaining-xrm-requests counters: when the second
// agent's call used up the first agent's budget too, the organisation
// charges the application user (caller scope), otherwise each agent.
func checkQuotaScope(ctx context.Context, stdout io.Writer, client *source.Client, plan sourcePlan, first source.RateLimitHeaders, firstOK bool) error {
	if !firstOK {
		return errors.New("the first agent could not be polled")
	}
	if len(plan.agents) < 2 {
		fmt.Fprintf(stdout, "      one agent configured: cannot compare; BRIDGE_QUOTA_SCOPE=%s\n", plan.scope)
		return nil
	}
	_, second, err := client.Probe(ctx, plan.agents[1])
	if err != nil {
		return explain(fmt.Errorf("agent %s: %w", plan.agents[1], err))
	}
	_, again, err := client.Probe(ctx, plan.agents[0])
	if err != nil {
		return explain(fmt.Errorf("agent %s: %w", plan.agents[0], err))
	}
	_, secondAgain, err := client.Probe(ctx, plan.agents[1])
	if err != nil {
		return explain(fmt.Errorf("agent %s: %w", plan.agents[1], err))
	}
	if first.BurstRemaining < 0 || second.BurstRemaining < 0 || again.BurstRemaining < 0 || secondAgain.BurstRemaining < 0 {
		fmt.Fprintf(stdout, "      the organisation sends no x-ms-ratelimit headers: cannot tell; BRIDGE_QUOTA_SCOPE=%s\n", plan.scope)
		return nil
	}
	// One counter for every agent (caller scope) drops at each of the four
	// calls in turn, whatever else is charged to it meanwhile (a running
	// bridge); two counters (agent scope) do not, since each agent's is
	// only charged by calls for that agent.
	seen := source.ScopeAgent
	if first.BurstRemaining > second.BurstRemaining && second.BurstRemaining > again.BurstRemaining && again.BurstRemaining > secondAgain.BurstRemaining {
		seen = source.ScopeCaller
	}
	fmt.Fprintf(stdout, "      remaining requests after calls for agents A, B, A, B: %d, %d, %d, %d: the organisation charges %s\n",
		first.BurstRemaining, second.BurstRemaining, again.BurstRemaining, secondAgain.BurstRemaining, map[source.QuotaScope]string{
			source.ScopeAgent: "each impersonated agent (agent scope)", source.ScopeCaller: "the application user for every agent (caller scope)"}[seen])
	if seen != plan.scope {
		return fmt.Errorf("BRIDGE_QUOTA_SCOPE=%s but the organisation applies %s scope\nfix: set BRIDGE_QUOTA_SCOPE=%s so the start-up limits check and the pacing match how calls are charged", plan.scope, seen, seen)
	}
	return nil
}
