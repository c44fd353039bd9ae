package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/yaml"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/testlog"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// The least-privilege NATS examples: a nats-server configuration and values
// for the official NATS Helm chart, documented in docs/nats-permissions.md.
const (
	permissionsConf = "../../deploy/nats/permissions.conf"
	natsChartValues = "../../deploy/helm/examples/nats-chart/values.yaml"

	bridgeNATSUser   = "ccaas-bridge"
	consumerNATSUser = "ccaas-consumer"
	// The variables the examples read the passwords from.
	bridgePasswordVar   = "CCAAS_BRIDGE_NATS_PASSWORD"
	consumerPasswordVar = "CCAAS_CONSUMER_NATS_PASSWORD"
)

// leastPrivilegeUsers loads the users of deploy/nats/permissions.conf, with
// fresh passwords in the variables it reads them from, and returns them by
// name.
func leastPrivilegeUsers(t *testing.T) map[string]*server.User {
	t.Helper()
	for _, v := range []string{bridgePasswordVar, consumerPasswordVar} {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		t.Setenv(v, hex.EncodeToString(b))
	}
	opts, err := server.ProcessConfigFile(permissionsConf)
	if err != nil {
		t.Fatalf("load %s: %v", permissionsConf, err)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	if len(users) != 2 || users[bridgeNATSUser] == nil || users[consumerNATSUser] == nil {
		t.Fatalf("%s defines users %v, want exactly %s and %s", permissionsConf, keysOf(users), bridgeNATSUser, consumerNATSUser)
	}
	if users[bridgeNATSUser].Password != os.Getenv(bridgePasswordVar) || users[consumerNATSUser].Password != os.Getenv(consumerPasswordVar) {
		t.Fatalf("%s does not read the passwords from %s and %s", permissionsConf, bridgePasswordVar, consumerPasswordVar)
	}
	return users
}

func keysOf[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestNATSChartValuesMatchThePermissionsFile keeps the two examples the same
// set: every user, password variable and subject of the NATS chart's values
// is the configuration file's.
func TestNATSChartValuesMatchThePermissionsFile(t *testing.T) {
	users := leastPrivilegeUsers(t)
	b, err := os.ReadFile(natsChartValues)
	if err != nil {
		t.Fatal(err)
	}
	type subjects struct {
		Allow []string `json:"allow"`
		Deny  []string `json:"deny"`
	}
	var values struct {
		Config struct {
			Merge struct {
				Authorization struct {
					Users []struct {
						User        string `json:"user"`
						Password    string `json:"password"`
						Permissions struct {
							Publish   subjects `json:"publish"`
							Subscribe subjects `json:"subscribe"`
						} `json:"permissions"`
					} `json:"users"`
				} `json:"authorization"`
			} `json:"merge"`
		} `json:"config"`
		Container struct {
			Env map[string]struct {
				ValueFrom struct {
					SecretKeyRef struct {
						Name string `json:"name"`
						Key  string `json:"key"`
					} `json:"secretKeyRef"`
				} `json:"valueFrom"`
			} `json:"env"`
		} `json:"container"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatalf("parse %s: %v", natsChartValues, err)
	}
	got := values.Config.Merge.Authorization.Users
	if len(got) != len(users) {
		t.Fatalf("%s has %d users, %s %d", natsChartValues, len(got), permissionsConf, len(users))
	}
	unquoted := regexp.MustCompile(`^<< \$([A-Z_]+) >>$`)
	for _, g := range got {
		t.Run(g.User, func(t *testing.T) {
			want := users[g.User]
			if want == nil {
				t.Fatalf("user %s is not in %s", g.User, permissionsConf)
			}
			m := unquoted.FindStringSubmatch(g.Password)
			if m == nil || os.Getenv(m[1]) != want.Password {
				t.Errorf("password %q: want the chart's unquoted reference to the variable the configuration file reads", g.Password)
			}
			if m != nil && values.Container.Env[m[1]].ValueFrom.SecretKeyRef.Name == "" {
				t.Errorf("container.env does not set %s from a Secret", m[1])
			}
			p := want.Permissions
			for _, c := range []struct {
				what      string
				got, want []string
			}{
				{"publish allow", g.Permissions.Publish.Allow, p.Publish.Allow},
				{"publish deny", g.Permissions.Publish.Deny, p.Publish.Deny},
				{"subscribe allow", g.Permissions.Subscribe.Allow, p.Subscribe.Allow},
				{"subscribe deny", g.Permissions.Subscribe.Deny, p.Subscribe.Deny},
			} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s: the chart values have %q, the configuration file %q", c.what, c.got, c.want)
				}
			}
		})
	}
}

// permissionErrors collects the permission violations the server reports to
// a connection.
type permissionErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *permissionErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		p.mu.Lock()
		p.errs = append(p.errs, err.Error())
		p.mu.Unlock()
	}
}

func (p *permissionErrors) about(subject string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errs {
		if strings.Contains(e, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

func (p *permissionErrors) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.errs)
}

// serverLog keeps the nats-server's log, where it reports every
// permission violation of every client (the CLI's included, which log
// nothing themselves).
type serverLog struct {
	testlog.Buffer
}

// violations returns the server's log lines about permission violations.
func (l *serverLog) violations() []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, "Violation") {
			out = append(out, line)
		}
	}
	return out
}

// refusal is an attempt the permissions must refuse: a publish to subject,
// reported to the client's permission errors.
type refusal struct {
	name    string
	perms   *permissionErrors
	subject string
	attempt func() error
}

// mentions reports whether a log line names subject in quotes (escaped
// by the text handler or not).
func mentions(line, subject string) bool {
	return strings.Contains(line, `"`+subject+`"`) || strings.Contains(line, `\"`+subject+`\"`)
}

// TestBridgeAndConsumersWithLeastPrivilegeNATS runs a nats-server whose only
// users are those of deploy/nats/permissions.conf: the bridge publishes its
// events, writes every agent's state and holds its lease as ccaas-bridge,
// and `bridge check` passes; `bridge state`, `replay`, `tail` and a durable
// consumer with acknowledgements work as ccaas-consumer; the server logs no
// permission violation for any of it; and the consumer's attempts to publish
// an event or write a bucket value, and the bridge's to step outside its
// subjects, are refused.
func TestBridgeAndConsumersWithLeastPrivilegeNATS(t *testing.T) {
	users := leastPrivilegeUsers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	srvLog := &serverLog{}
	consumerPerms := &permissionErrors{}
	credentials := func(user string, perms *permissionErrors) []nats.Option {
		return []nats.Option{nats.UserInfo(user, users[user].Password), nats.ErrorHandler(perms.handler)}
	}
	// The harness reads the stream and the bucket as the consumer.
	h := newHarness(t, 4, 29,
		withNATS(natstest.WithLogger(slog.New(slog.NewTextHandler(srvLog, nil))),
			natstest.WithConfigure(func(o *server.Options) error {
				for _, name := range []string{bridgeNATSUser, consumerNATSUser} {
					o.Users = append(o.Users, users[name])
				}
				return nil
			})),
		withNATSConn(credentials(consumerNATSUser, consumerPerms)...))
	cnc, cjs := h.nc, h.js
	if _, err := nats.Connect(h.ns.ClientURL()); err == nil {
		t.Fatal("the server accepts a client without credentials: the permissions would not apply")
	}

	bridgeEnv := h.env(map[string]string{
		"BRIDGE_NATS_USER":     bridgeNATSUser,
		"BRIDGE_NATS_PASSWORD": users[bridgeNATSUser].Password,
		"BRIDGE_LEASE_TTL":     "3s",
		"BRIDGE_FEED":          "on", // its watermark bucket too
		"GORACE":               raceExitNow,
	})
	consumerEnv := h.env(map[string]string{
		"BRIDGE_NATS_USER":     consumerNATSUser,
		"BRIDGE_NATS_PASSWORD": users[consumerNATSUser].Password,
	})
	p := h.start(bridgeEnv, "run")
	c := h.collect(ctx)
	testwait.Until(t, waitScale*40*time.Second, "every agent on the stream", func() bool { return h.caughtUp(c) })
	// A second round: every agent's first change in this process reads its
	// events back from the stream before it is published.
	h.sim.Step()
	testwait.Until(t, waitScale*30*time.Second, "the second round on the stream", func() bool { return h.caughtUp(c) })
	testwait.Until(t, waitScale*30*time.Second, "the state bucket", func() bool { return h.bucketMismatch(ctx) == "" })
	addr := opsAddr(t, p)
	testwait.Until(t, waitScale*20*time.Second, "the lease held", func() bool {
		return strings.Contains(scrape(addr, "/metrics"), `ccaas_bridge_leader{shard="0"} 1`)
	})
	events, errs := c.snapshot()
	if len(errs) > 0 {
		t.Fatalf("events that do not decode: %v", errs)
	}

	t.Run("bridge check as the bridge user", func(t *testing.T) {
		out, stderr, code := runCLI(t, bridgeEnv, "check")
		if code != 0 || strings.Contains(out, "FAIL") {
			t.Fatalf("bridge check: exit %d\n%s%s", code, out, stderr)
		}
	})

	t.Run("consumer commands as the consumer user", func(t *testing.T) {
		out, stderr, code := runCLI(t, consumerEnv, "state")
		if code != 0 {
			t.Fatalf("bridge state: exit %d: %s", code, stderr)
		}
		for _, a := range h.sim.Agents() {
			if !strings.Contains(out, a.AgentID) {
				t.Errorf("bridge state does not list agent %s:\n%s", a.AgentID, out)
			}
		}
		out, stderr, code = runCLI(t, consumerEnv, "replay")
		if lines := strings.Count(out, "\n"); code != 0 || lines < len(events) {
			t.Fatalf("bridge replay: exit %d, %d events, want at least %d: %s", code, lines, len(events), stderr)
		}
		tail := h.start(consumerEnv, "tail", "--since", "1h")
		testwait.Until(t, waitScale*20*time.Second, "tail to print the stream's events", func() bool {
			return strings.Count(tail.output(), "\n") >= len(events)
		})
		if code := tail.stop(t, syscall.SIGINT, 10*time.Second); code != 0 {
			t.Fatalf("tail exit %d on Ctrl-C:\n%s", code, tail.output())
		}
		if strings.Contains(strings.ToLower(out+stderr+tail.output()), "permission") {
			t.Fatalf("a consumer command met a permission violation:\n%s%s%s", out, stderr, tail.output())
		}
	})

	t.Run("durable consumer with acknowledgements as the consumer user", func(t *testing.T) {
		// What the alerting example does: a durable consumer with explicit
		// acknowledgements, looked up again by name.
		cons, err := cjs.CreateOrUpdateConsumer(ctx, contract.Stream, jetstream.ConsumerConfig{
			Durable: "alerting", FilterSubject: contract.Filter(contract.SubjectPrefix, "", detector.TypePresenceChanged),
			AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			t.Fatalf("create the durable consumer: %v", err)
		}
		if _, err := cjs.Consumer(ctx, contract.Stream, "alerting"); err != nil {
			t.Fatalf("look the durable consumer up: %v", err)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := msg.DoubleAck(actx); err != nil {
			t.Fatalf("acknowledge (the server must confirm it): %v", err)
		}
	})

	// Everything so far needed nothing beyond the permissions.
	if v := srvLog.violations(); len(v) > 0 {
		t.Fatalf("the server refused the bridge, the harness's reading or a consumer command:\n%s", strings.Join(v, "\n"))
	}

	t.Run("refused", func(t *testing.T) {
		agent := h.sim.AgentIDs()[0]
		kv, err := cjs.KeyValue(ctx, contract.StateBucket)
		if err != nil {
			t.Fatalf("the consumer cannot open the state bucket: %v", err)
		}
		before, err := kv.Get(ctx, agent)
		if err != nil {
			t.Fatal(err)
		}
		bridgePerms := &permissionErrors{}
		bnc, _ := natstest.Connect(t, h.ns.ClientURL(), credentials(bridgeNATSUser, bridgePerms)...)
		forgedID := agent + "-99999999"
		short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }

		tests := []refusal{
			{"consumer publishes an event", consumerPerms, contract.Subject(contract.SubjectPrefix, agent, detector.TypeAgentOffline), func() error {
				c, cancel := short()
				defer cancel()
				_, err := cjs.Publish(c, contract.Subject(contract.SubjectPrefix, agent, detector.TypeAgentOffline), []byte(`{}`), jetstream.WithMsgID(forgedID))
				return err
			}},
			{"consumer writes an agent's state", consumerPerms, "$KV." + contract.StateBucket + "." + agent, func() error {
				c, cancel := short()
				defer cancel()
				_, err := kv.Put(c, agent, []byte(`{"agentId":"forged"}`))
				return err
			}},
			{"consumer takes a lease", consumerPerms, "$KV." + contract.LeaseBucket + ".shard-0", func() error {
				_, err := cnc.Request("$KV."+contract.LeaseBucket+".shard-0", []byte(`{}`), 2*time.Second)
				return err
			}},
			{"consumer deletes the stream", consumerPerms, "$JS.API.STREAM.DELETE." + contract.Stream, func() error {
				_, err := cnc.Request("$JS.API.STREAM.DELETE."+contract.Stream, nil, 2*time.Second)
				return err
			}},
			{"bridge publishes outside its prefix", bridgePerms, "ccaas.other", func() error {
				_, err := bnc.Request("ccaas.other", []byte(`{}`), 2*time.Second)
				return err
			}},
			{"bridge purges the stream", bridgePerms, "$JS.API.STREAM.PURGE." + contract.Stream, func() error {
				_, err := bnc.Request("$JS.API.STREAM.PURGE."+contract.Stream, nil, 2*time.Second)
				return err
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.attempt(); err == nil {
					t.Fatalf("publish to %s succeeded", tt.subject)
				}
				testwait.Until(t, waitScale*10*time.Second, "the client's permission violation for "+tt.subject, func() bool { return tt.perms.about(tt.subject) })
				if !slices.ContainsFunc(srvLog.violations(), func(l string) bool { return mentions(l, tt.subject) }) {
					t.Errorf("the server logged no violation for %s", tt.subject)
				}
			})
		}

		// Nothing of it reached the stream or the buckets.
		st, err := cjs.Stream(ctx, contract.Stream)
		if err != nil {
			t.Fatal(err)
		}
		// Read the whole stream as the consumer reads it.
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for seen := uint64(0); seen < info.State.LastSeq; {
			msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err != nil {
				t.Fatalf("read the stream after message %d of %d: %v", seen, info.State.LastSeq, err)
			}
			md, err := msg.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			seen = md.Sequence.Stream
			if msg.Headers().Get(jetstream.MsgIDHeader) == forgedID {
				t.Errorf("the consumer's event %s is on the stream", forgedID)
			}
		}
		after, err := kv.Get(ctx, agent)
		if err != nil {
			t.Fatal(err)
		}
		if after.Revision() < before.Revision() || strings.Contains(string(after.Value()), "forged") {
			t.Errorf("the consumer's value is in the bucket: %s", after.Value())
		}
		if info.State.Msgs < uint64(len(events)) {
			t.Errorf("the stream holds %d events, fewer than the %d read before", info.State.Msgs, len(events))
		}
		// The attempts above aside, nothing was refused.
		for _, v := range srvLog.violations() {
			if !slices.ContainsFunc(tests, func(tt refusal) bool { return mentions(v, tt.subject) }) {
				t.Errorf("unexpected violation: %s", v)
			}
		}
	})
}
