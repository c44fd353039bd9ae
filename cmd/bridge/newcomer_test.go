package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// eventLineRE matches an event line of the demo and of `bridge tail`:
// time, agent, type, summary, two spaces apart.
var eventLineRE = regexp.MustCompile(`(?m)^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)  (.+?)  ([a-z]+\.[a-z]+)  (.+)$`)

// TestNewcomerPath follows the README as a newcomer would, through the
// built binary: the demo (on free ports), every ./bridge command of the
// README against it, the errors a newcomer meets on the way, a second demo
// started by mistake, then production mode against `bridge simulate`. Each
// README command it runs is ticked off, and a command the README shows but
// this test does not run fails it.
func TestNewcomerPath(t *testing.T) {
	h := &harness{t: t}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	natsAddr, httpAddr := natstest.FreeAddr(t), natstest.FreeAddr(t)
	demoEnv := map[string]string{"BRIDGE_DATA_DIR": data, "BRIDGE_EMBEDDED_NATS_LISTEN": natsAddr, "BRIDGE_HTTP_ADDR": httpAddr}
	// The consumer commands find the demo's JetStream as they would on
	// 127.0.0.1:4222.
	cliEnv := map[string]string{"BRIDGE_EMBEDDED_NATS_LISTEN": natsAddr}

	readmeCmds := readmeCommands(t)
	ran := map[string]bool{}
	// run runs one README command line with placeholders filled in.
	run := func(line string, fill map[string]string) (args []string, redirect string) {
		t.Helper()
		found := false
		for _, c := range readmeCmds {
			found = found || c == line
		}
		if !found {
			t.Fatalf("README.md no longer shows %q", line)
		}
		ran[line] = true
		for k, v := range fill {
			line = strings.ReplaceAll(line, k, v)
		}
		args, redirect = shellWords(strings.TrimPrefix(line, "./bridge "))
		return args, redirect
	}

	demo := h.start(demoEnv, "demo")
	var agents int
	testwait.Until(t, waitScale*90*time.Second, "the demo's banner", func() bool {
		m := regexp.MustCompile(`demo: (\d+) simulated agents`).FindStringSubmatch(demo.output())
		if m != nil {
			agents, _ = strconv.Atoi(m[1])
		}
		return agents > 1
	})
	testwait.Until(t, waitScale*90*time.Second, "the demo's first event lines", func() bool {
		return len(eventLineRE.FindAllString(demo.output(), -1)) >= agents
	})
	banner := demo.output()
	for _, want := range []string{"nats://" + natsAddr, "kept in " + data, "to start fresh: stop the demo, delete " + data} {
		if !strings.Contains(banner, want) {
			t.Errorf("the demo's banner does not say %q:\n%s", want, banner)
		}
	}

	// state: every agent, and one agent by ID (braces accepted, as
	// Dynamics 365 shows IDs).
	var stateOut string
	testwait.Until(t, waitScale*60*time.Second, "every agent in bridge state", func() bool {
		args, _ := run("./bridge state", nil)
		out, _, code := runCLI(t, cliEnv, args...)
		stateOut = out
		return code == 0 && strings.Count(out, "\n") == agents+1
	})
	row := strings.Fields(strings.Split(stateOut, "\n")[1])
	idRE := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	var id, name string
	for i, f := range row {
		if idRE.MatchString(f) {
			id, name = f, strings.Join(row[:i], " ")
			break
		}
	}
	if id == "" {
		t.Fatalf("no agent ID in bridge state's first row:\n%s", stateOut)
	}
	fill := map[string]string{"<agent ID>": id, "<agent name>": name}
	args, _ := run("./bridge state --agent <agent ID>", fill)
	out, stderr, code := runCLI(t, cliEnv, args...)
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, id) {
		t.Errorf("bridge %v: exit %d, want %s's row alone:\n%s%s", args, code, id, out, stderr)
	}
	out, stderr, code = runCLI(t, cliEnv, "state", "--agent", "{"+strings.ToUpper(id)+"}")
	if code != 0 || !strings.Contains(out, id) {
		t.Errorf("bridge state --agent {ID}: exit %d\n%s%s", code, out, stderr)
	}

	// nats kv get --raw ccaas_agents <agent ID>: the value under the ID
	// shown by bridge state is the agent's state as JSON.
	if !strings.Contains(readDoc(t, readmePath), "nats kv get --raw ccaas_agents <agent ID>") {
		t.Error("README.md no longer shows nats kv get --raw with an ID from bridge state")
	}
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatalf("connect to the demo's JetStream: %v", err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	kv, err := js.KeyValue(ctx, contract.StateBucket)
	if err != nil {
		t.Fatalf("state bucket: %v", err)
	}
	entry, err := kv.Get(ctx, id)
	cancel()
	if err != nil {
		t.Fatalf("kv get %s: %v", id, err)
	}
	var st struct {
		AgentID   string `json:"agentId"`
		AgentName string `json:"agentName"`
	}
	if err := json.Unmarshal(entry.Value(), &st); err != nil || st.AgentID != id || st.AgentName != name {
		t.Errorf("kv value of %s = %s (%v), want the state of %s", id, entry.Value(), err, name)
	}
	nc.Close()

	// tail: from 10 minutes ago, and one agent by name and one type; the
	// lines are the demo's own format.
	args, _ = run("./bridge tail --since 10m", nil)
	out, code = runFor(t, cliEnv, 60*time.Second, func(out string) bool { return len(eventLineRE.FindAllString(out, -1)) >= agents }, args...)
	if code != 0 || len(eventLineRE.FindAllString(out, -1)) < agents {
		t.Errorf("bridge %v: exit %d, want event lines:\n%s", args, code, out)
	}
	firstDemoLine := eventLineRE.FindString(demo.output())
	if !strings.Contains(out, firstDemoLine) {
		t.Errorf("the demo printed %q, tail does not show that line:\n%s", firstDemoLine, out)
	}
	args, _ = run(`./bridge tail --since 1h --agent "<agent name>" --type presence.changed`, fill)
	out, code = runFor(t, cliEnv, 60*time.Second, func(out string) bool { return eventLineRE.MatchString(out) }, args...)
	lines := eventLineRE.FindAllStringSubmatch(out, -1)
	if code != 0 || len(lines) == 0 {
		t.Errorf("bridge %v: exit %d, want %s's presence changes:\n%s", args, code, name, out)
	}
	for _, l := range lines {
		if l[2] != name || l[3] != "presence.changed" {
			t.Errorf("bridge %v printed another agent's or type's event: %s", args, l[0])
		}
	}

	// replay: CloudEvents JSON lines, and a summary on stderr that counts
	// them.
	args, redirect := run("./bridge replay --since 1h > events.ndjson", nil)
	if redirect != "events.ndjson" {
		t.Fatalf("replay's README line writes to %q", redirect)
	}
	out, stderr, code = runCLI(t, cliEnv, args...)
	n := strings.Count(out, "\n")
	m := regexp.MustCompile(`(?m)^replay: (\d+) events written, from \S+ to \S+ \(\S+\)$`).FindStringSubmatch(stderr)
	if code != 0 || m == nil || m[1] != strconv.Itoa(n) || n < agents {
		t.Errorf("bridge %v: exit %d, %d lines on stdout, stderr %q; want a summary counting them", args, code, n, stderr)
	}

	// What a newcomer gets wrong is answered, not waited on.
	for _, tt := range []struct {
		args     []string
		code     int
		contains []string
	}{
		{[]string{"tail", "--agent", "Zebedee Nobody"}, exitFail, []string{`no agent named "Zebedee Nobody"`}},
		{[]string{"tail", "--agent", string([]rune(name)[:len([]rune(name))-1])}, exitFail, []string{"close matches: " + name + " (" + id + ")"}},
		{[]string{"tail", "--type", "presence.change"}, exitConfig, []string{"did you mean presence.changed?"}},
		{[]string{"replay", "--since", "1h", "--until", "2h"}, exitConfig, []string{"--until", "is before --since"}},
	} {
		_, stderr, code := runCLI(t, cliEnv, tt.args...)
		for _, want := range tt.contains {
			if code != tt.code || !strings.Contains(stderr, want) {
				t.Errorf("bridge %q: exit %d, stderr %q; want exit %d saying %q", tt.args, code, stderr, tt.code, want)
			}
		}
	}

	// A second demo by mistake: refused at once, nothing printed on
	// stdout, the address, the variable, the likely cause and the data
	// directory's holder named; the first demo goes on.
	before := len(eventLineRE.FindAllString(demo.output(), -1))
	out, stderr, code = runCLI(t, demoEnv, "demo")
	if code != exitConfig || out != "" {
		t.Errorf("second demo: exit %d, stdout %q; want %d and no banner", code, out, exitConfig)
	}
	for _, want := range []string{natsAddr + " is already in use (BRIDGE_EMBEDDED_NATS_LISTEN)", "another `bridge demo` running?",
		httpAddr + " is already in use (BRIDGE_HTTP_ADDR)", "data directory " + data + " (BRIDGE_DATA_DIR) is in use by process " + strconv.Itoa(demo.cmd.Process.Pid)} {
		if !strings.Contains(stderr, want) {
			t.Errorf("second demo's message does not say %q:\n%s", want, stderr)
		}
	}
	testwait.Until(t, waitScale*60*time.Second, "the first demo's events after the collision", func() bool {
		return len(eventLineRE.FindAllString(demo.output(), -1)) > before
	})

	// Ctrl-C: a final summary and the next commands, each one the README
	// shows.
	if code := demo.stop(t, syscall.SIGINT, 60*time.Second); code != 0 {
		t.Fatalf("demo exit status %d after Ctrl-C\n%s", code, demo.output())
	}
	final := demo.output()
	if !strings.Contains(final, "demo: stopped cleanly") || !strings.Contains(final, fmt.Sprintf("\nsummary: %d agents, ", agents)) {
		t.Errorf("the demo's end lacks a final summary:\n%s", final)
	}
	next := strings.SplitAfter(final, "next: ")
	if len(next) < 2 {
		t.Fatalf("the demo's end suggests no next commands:\n%s", final)
	}
	suggested := regexp.MustCompile(`(?m)^  (\./bridge [^#\n]*?)\s*(#.*)?$`).FindAllStringSubmatch(next[1], -1)
	if len(suggested) != 3 {
		t.Errorf("the demo suggests %d commands, want 3:\n%s", len(suggested), next[1])
	}
	for _, s := range suggested {
		if !ran[s[1]] {
			t.Errorf("the demo suggests %q, which is not a README command this test ran", s[1])
		}
	}

	// The data is intact: the stream holds every event the demo printed,
	// and the next demo's events come from the same organisation.
	printed := len(eventLineRE.FindAllString(final, -1))
	checkStore(t, data, printed)

	// Production mode against the simulator, as the README shows it.
	simLine := "./bridge simulate --agents 3"
	if !strings.Contains(readDoc(t, readmePath), "$ "+simLine+"\n") {
		t.Errorf("README.md no longer shows %q", simLine)
	}
	sim, simAddr, simEnv := startSimulator(t, h, "--agents", "3")
	_, stderr, code = runCLI(t, nil, "simulate", "--agents", "3", "--addr", simAddr)
	if code != exitConfig || !strings.Contains(stderr, simAddr+" is already in use (--addr)") || !strings.Contains(stderr, "another `bridge simulate` running?") {
		t.Errorf("second simulator: exit %d, stderr %q", code, stderr)
	}
	runEnv := map[string]string{"BRIDGE_DATA_DIR": filepath.Join(dir, "data-simulator"), "BRIDGE_EMBEDDED_NATS_LISTEN": natstest.FreeAddr(t), "BRIDGE_HTTP_ADDR": natstest.FreeAddr(t)}
	for k, v := range simEnv {
		runEnv[k] = v
	}
	args, _ = run("./bridge check", nil)
	out, stderr, code = runCLI(t, runEnv, args...)
	if code != 0 || !strings.HasSuffix(out, "\nall 9 steps passed\n") {
		t.Errorf("bridge check against the simulator: exit %d\n%s%s", code, out, stderr)
	}
	args, _ = run("./bridge run", nil)
	bridge := h.start(runEnv, args...)
	tailEnv := map[string]string{"BRIDGE_EMBEDDED_NATS_LISTEN": runEnv["BRIDGE_EMBEDDED_NATS_LISTEN"]}
	var tailOut string
	testwait.Until(t, waitScale*90*time.Second, "the simulator's agents in bridge tail", func() bool {
		out, _ := runFor(t, tailEnv, 5*time.Second, func(out string) bool { return len(eventLineRE.FindAllString(out, -1)) >= 3 }, "tail", "--since", "10m")
		tailOut = out
		return len(eventLineRE.FindAllString(out, -1)) >= 3
	})
	if code := bridge.stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Errorf("bridge run exit status %d after SIGTERM\n%s", code, bridge.output())
	}
	sim.stop(t, syscall.SIGINT, 30*time.Second)
	t.Logf("bridge tail against bridge run:\n%s", tailOut)

	for _, c := range readmeCmds {
		if !ran[c] {
			t.Errorf("README.md shows %q, which this test does not run", c)
		}
	}
}

// checkStore opens the demo's data directory after the demo stopped and
// checks that its stream holds at least the events the demo printed, all
// from the demo's one organisation.
func checkStore(t *testing.T, dataDir string, printed int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := natstest.Start(t, natstest.WithDataDir(dataDir)) // the demo's store, after the demo stopped
	defer ns.Stop()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, contract.Stream)
	if err != nil {
		t.Fatalf("the demo's stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs < uint64(printed) {
		t.Errorf("the stream holds %d events, the demo printed %d", info.State.Msgs, printed)
	}
	msg, err := s.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get("ce-source"); !strings.HasPrefix(got, demoOrganisation+"/api/data/v9.2/systemusers(") {
		t.Errorf("ce-source %q, want an agent of the demo's organisation %q on every run", got, demoOrganisation)
	}
	if _, err := os.Stat(filepath.Join(dataDir, embeddednats.LockFileName)); err != nil {
		t.Errorf("lock file: %v", err)
	}
}
