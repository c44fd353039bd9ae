package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/ceheader"
	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
	"github.com/ccaas/presence-bridge/schemas"
)

// harness holds the real parts an end-to-end test runs the bridge binary
// against: an embedded JetStream, the simulated organisation over HTTP, and
// a consumer of the stream.
type harness struct {
	t      *testing.T
	ns     *natstest.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	sim    *simulator.Simulator
	simURL string
	val    *schemas.Validator
}

// harnessConfig is what newHarness's options change.
type harnessConfig struct {
	sim      func(*simulator.Options)
	wrap     func(http.Handler) http.Handler
	nats     []natstest.Option
	natsConn []nats.Option
}

// harnessOption changes what newHarness builds.
type harnessOption func(*harnessConfig)

// withSim adjusts the simulator's options before it is built.
func withSim(configure func(*simulator.Options)) harnessOption {
	return func(c *harnessConfig) { c.sim = configure }
}

// withHandler wraps the simulator's HTTP handler.
func withHandler(wrap func(http.Handler) http.Handler) harnessOption {
	return func(c *harnessConfig) { c.wrap = wrap }
}

// withNATS starts the NATS server with opts (limits, users, its log).
func withNATS(opts ...natstest.Option) harnessOption {
	return func(c *harnessConfig) { c.nats = append(c.nats, opts...) }
}

// withNATSConn connects the harness's consumer with opts as well
// (credentials, an error handler).
func withNATSConn(opts ...nats.Option) harnessOption {
	return func(c *harnessConfig) { c.natsConn = append(c.natsConn, opts...) }
}

// withNATSUser makes the server require user and password, and the
// harness's consumer give them.
func withNATSUser(user, password string) harnessOption {
	return func(c *harnessConfig) {
		c.nats = append(c.nats, natstest.WithUser(user, password))
		c.natsConn = append(c.natsConn, nats.UserInfo(user, password))
	}
}

// newHarness starts a JetStream server (h.ns, which a test may stop and
// restart on the same address and store) and a simulated organisation of
// agents seeded with seed, and connects the harness's consumer; opts adjust
// either.
func newHarness(t *testing.T, agents int, seed uint64, opts ...harnessOption) *harness {
	t.Helper()
	var c harnessConfig
	for _, opt := range opts {
		opt(&c)
	}
	ns := natstest.Start(t, c.nats...)
	nc, js := natstest.Connect(t, ns.ClientURL(),
		append(c.natsConn, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))...)
	sopts := simulator.DefaultOptions()
	sopts.Agents, sopts.Seed = agents, seed
	if c.sim != nil {
		c.sim(&sopts)
	}
	sim, err := simulator.New(sopts)
	if err != nil {
		t.Fatalf("new simulator: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := sim.Handler()
	if c.wrap != nil {
		handler = c.wrap(handler)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	val, err := schemas.NewValidator()
	if err != nil {
		t.Fatalf("compile schemas: %v", err)
	}
	return &harness{t: t, ns: ns, nc: nc, js: js, sim: sim, simURL: "http://" + ln.Addr().String(), val: val}
}

// env is the bridge's environment against the harness.
func (h *harness) env(extra map[string]string) map[string]string {
	env := map[string]string{
		"BRIDGE_ORG_URL":          h.simURL,
		"BRIDGE_AGENT_IDS":        strings.Join(h.sim.AgentIDs(), ","),
		"BRIDGE_TOKEN":            simulator.DefaultToken,
		"BRIDGE_NATS_URL":         h.ns.ClientURL(),
		"BRIDGE_POLL_INTERVAL":    "200ms", // the shortest the service-protection check accepts
		"BRIDGE_BACKOFF_MAX":      "1s",
		"BRIDGE_HTTP_ADDR":        "127.0.0.1:0",
		"BRIDGE_LOG_FORMAT":       "json",
		"BRIDGE_LOG_LEVEL":        "debug",
		"BRIDGE_SHUTDOWN_TIMEOUT": "20s",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// proc is a bridge process under test.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan error
}

// start runs the bridge binary with args and env; its stdout and stderr are
// collected.
func (h *harness) start(env map[string]string, args ...string) *proc {
	h.t.Helper()
	return h.startBinary(bridgeBin, env, args...)
}

// startBinary is start with another build of the bridge binary.
func (h *harness) startBinary(bin string, env map[string]string, args ...string) *proc {
	h.t.Helper()
	p := &proc{done: make(chan error, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = bridgeEnv(env)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		h.t.Fatalf("start bridge: %v", err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.Write(sc.Bytes())
			p.logs.WriteByte('\n')
			p.mu.Unlock()
		}
	}()
	go func() {
		<-copied
		p.done <- p.cmd.Wait()
	}()
	h.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if h.t.Failed() {
			h.t.Logf("bridge output:\n%s", p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// signal sends sig and waits for the exit, returning the exit status.
func (p *proc) stop(t *testing.T, sig syscall.Signal, within time.Duration) int {
	t.Helper()
	// The bridge installs its signal handler before it writes anything: a
	// signal sent earlier would kill it with the signal's default action.
	testwait.Until(t, waitScale*30*time.Second, "the bridge's first output line", func() bool {
		_, gone := exited(p)
		return gone || p.output() != ""
	})
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal bridge: %v", err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return -int(ws.Signal())
			}
			return ee.ExitCode()
		}
		t.Fatalf("wait bridge: %v", err)
	case <-time.After(within):
		t.Fatalf("bridge did not exit within %s after %s\n%s", within, sig, p.output())
	}
	return -1
}

// event is one event read from the stream, decoded by the CloudEvents SDK
// after the NATS binding's percent-decoding of the header values.
type event struct {
	Subject  string
	ID       string
	Source   string
	Type     string
	Agent    string
	Sequence uint64
	Time     time.Time
	Data     map[string]any
	raw      []byte
}

// decode decodes a stream message with the CloudEvents NATS binding (header
// values percent-decoded as it specifies) and validates its data against
// the type's schema.
func (h *harness) decode(msg *nats.Msg) (event, error) {
	for k, vs := range msg.Header {
		for _, v := range vs {
			if i := strings.IndexFunc(v, func(r rune) bool { return r < 0x21 || r > 0x7E || r == '"' }); strings.HasPrefix(k, "ce-") && i >= 0 {
				return event{}, fmt.Errorf("header %s on %s: %q holds %q, which the NATS binding percent-encodes", k, msg.Subject, v, v[i])
			}
		}
	}
	hdr, err := ceheader.DecodeHeader(msg.Header)
	if err != nil {
		return event{}, fmt.Errorf("decode %s: %w", msg.Subject, err)
	}
	ce, err := binding.ToEvent(context.Background(), cejs.NewMessage(&nats.Msg{Subject: msg.Subject, Header: hdr, Data: msg.Data}))
	if err != nil {
		return event{}, fmt.Errorf("decode %s: %w", msg.Subject, err)
	}
	if err := ce.Validate(); err != nil {
		return event{}, fmt.Errorf("invalid cloudevent %s: %w", msg.Subject, err)
	}
	ev := event{Subject: msg.Subject, ID: ce.ID(), Source: ce.Source(), Type: ce.Type(), Agent: ce.Subject(), Time: ce.Time(), raw: ce.Data()}
	seq, ok := ce.Extensions()["sequence"]
	if !ok {
		return ev, fmt.Errorf("event %s has no sequence extension", ev.ID)
	}
	if _, err := fmt.Sscanf(fmt.Sprint(seq), "%d", &ev.Sequence); err != nil {
		return ev, fmt.Errorf("event %s sequence %v: %w", ev.ID, seq, err)
	}
	if want := contract.Subject(contract.SubjectPrefix, ev.Agent, ev.Type); msg.Subject != want {
		return ev, fmt.Errorf("event %s on subject %s, want %s", ev.ID, msg.Subject, want)
	}
	if want := fmt.Sprintf("%s-%d", ev.Agent, ev.Sequence); ev.ID != want || msg.Header.Get(jetstream.MsgIDHeader) != want {
		return ev, fmt.Errorf("event id %s (Nats-Msg-Id %s), want %s", ev.ID, msg.Header.Get(jetstream.MsgIDHeader), want)
	}
	if want := contract.DataSchema(ev.Type); ce.DataSchema() != want {
		return ev, fmt.Errorf("event %s dataschema %s, want %s", ev.ID, ce.DataSchema(), want)
	}
	if err := h.val.Validate(ev.Type, ev.raw); err != nil {
		return ev, fmt.Errorf("event %s (%s) against its schema: %w", ev.ID, ev.Type, err)
	}
	if err := json.Unmarshal(ev.raw, &ev.Data); err != nil {
		return ev, err
	}
	return ev, nil
}

// collector reads the whole stream from the start with an ordered consumer
// and keeps every event, decoded and validated.
type collector struct {
	mu     sync.Mutex
	events []event
	errs   []error
	cc     jetstream.ConsumeContext
}

func (h *harness) collect(ctx context.Context) *collector {
	h.t.Helper()
	var cons jetstream.Consumer
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		cons, err = h.js.OrderedConsumer(ctx, contract.Stream, jetstream.OrderedConsumerConfig{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("ordered consumer on %s: %v", contract.Stream, err)
		}
		select {
		case <-ctx.Done():
			h.t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond): // the bridge creates the stream; poll for it
		}
	}
	c := &collector{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		nm := &nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
		ev, err := h.decode(nm)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.errs = append(c.errs, err)
			return
		}
		c.events = append(c.events, ev)
	})
	if err != nil {
		h.t.Fatalf("consume: %v", err)
	}
	c.cc = cc
	h.t.Cleanup(cc.Stop)
	return c
}

func (c *collector) snapshot() ([]event, []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event(nil), c.events...), append([]error(nil), c.errs...)
}

// waitScale stretches every deadline these tests wait with testwait.Until. A deadline only detects a
// hang; it is not a performance assertion, and a loaded 2-core runner with
// the race detector can be several times slower than an idle one. A test
// that passes waits no longer for it.
const waitScale = 3

// latestPresence returns, per agent, the presence ID of its last
// presence.changed event.
func latestPresence(events []event) map[string]string {
	out := map[string]string{}
	for _, ev := range events {
		if ev.Type != "presence.changed" {
			continue
		}
		if cur, ok := ev.Data["current"].(map[string]any); ok {
			out[ev.Agent], _ = cur["id"].(string)
		}
	}
	return out
}

// caughtUp reports whether the stream's last presence of every agent equals
// the simulator's.
func (h *harness) caughtUp(c *collector) bool {
	events, _ := c.snapshot()
	latest := latestPresence(events)
	for _, st := range h.sim.Agents() {
		if latest[st.AgentID] != st.PresenceID {
			return false
		}
	}
	return true
}

var _ = io.Discard
var _ = os.Getpid
