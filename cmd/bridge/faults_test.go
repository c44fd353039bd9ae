package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// This file holds the test support of the fault scenarios (NATS outages,
// partitions, lease moves, foreign content, SIGTERM with answers in flight)
// (its unit tests are in faults_support_test.go).

// tcpProxy forwards TCP connections to a target address until it is cut:
// then it drops every open connection and closes each new one at once, so
// the client behind it sees its server vanish, until it is restored.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newTCPProxy listens on a free local port and forwards to target; it is
// closed when the test ends.
func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// addr is the proxy's listening address.
func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			down.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			down.Close()
			up.Close()
			continue
		}
		p.conns[down], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(down, up)
		go p.pipe(up, down)
	}
}

// pipe copies from src to dst and closes both when either side ends.
func (p *tcpProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
	dst.Close()
	src.Close()
}

// setCut cuts the proxy (true) or restores it (false).
func (p *tcpProxy) setCut(cut bool) {
	p.mu.Lock()
	p.cut = cut
	var open []net.Conn
	if cut {
		for c := range p.conns {
			open = append(open, c)
		}
	}
	p.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}

// openConns is the number of forwarded connections (two sockets each).
func (p *tcpProxy) openConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

func (p *tcpProxy) close() {
	p.ln.Close()
	p.setCut(true)
	p.wg.Wait()
}

// exited reports whether the bridge process has ended, and how, without
// waiting.
func exited(p *proc) (error, bool) {
	select {
	case err := <-p.done:
		p.done <- err // for stop and the cleanup
		return err, true
	default:
		return nil, false
	}
}

// failIfExited fails the test at once when the bridge ended while it should
// be running.
func failIfExited(t *testing.T, p *proc, what string) {
	t.Helper()
	if err, ok := exited(p); ok {
		t.Fatalf("the bridge exited (%v) while %s:\n%s", err, what, tail(p.output(), 40))
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// writtenEvent is an event of the stream with the version of the bridge
// that published it (the ce-bridgeversion attribute).
type writtenEvent struct {
	event
	writer string
}

// bridgeEvents reads the whole stream and decodes every message except the
// stream sequences in planted (messages a test put there itself); every
// other message must be a valid bridge event. It returns the events in
// stream order.
func (h *harness) bridgeEvents(ctx context.Context, planted map[uint64]bool) []writtenEvent {
	h.t.Helper()
	st, err := h.js.Stream(ctx, contract.Stream)
	if err != nil {
		h.t.Fatalf("look up stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		h.t.Fatalf("stream info: %v", err)
	}
	var out []writtenEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		if planted[seq] {
			continue
		}
		raw, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			h.t.Fatalf("get stream message %d: %v", seq, err)
		}
		ev, err := h.decode(&nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data})
		if err != nil {
			h.t.Errorf("stream message %d: %v", seq, err)
			continue
		}
		out = append(out, writtenEvent{event: ev, writer: raw.Header.Get("ce-bridgeversion")})
	}
	return out
}

// plainEvents strips the writers.
func plainEvents(w []writtenEvent) []event {
	out := make([]event, len(w))
	for i, e := range w {
		out[i] = e.event
	}
	return out
}

// checkWholeStream asserts the properties every scenario must keep on the
// whole stream: one version of every ID and per-agent sequences 1..n
// without gaps, every change following on from the one before, the bucket
// recording each agent's last sequence, and both the bucket and the
// stream's last presences equal to the organisation's state.
func (h *harness) checkWholeStream(ctx context.Context, events []event) map[string][]event {
	h.t.Helper()
	t := h.t
	by := checkSequences(t, events)
	checkChained(t, by)
	h.checkBucket(ctx, by)
	latest := latestPresence(events)
	for _, st := range h.sim.Agents() {
		if latest[st.AgentID] != st.PresenceID {
			t.Errorf("agent %s: last presence on the stream %s, simulator %s", st.AgentID, latest[st.AgentID], st.PresenceID)
		}
	}
	return by
}

// missingTransitions lists the ground-truth presences that lasted at least
// minSpan (the current one counts until now) and that the stream never
// showed while they were in force (with lateness allowed for publishing),
// plus any agent whose stream presences are not in the ground truth's
// order. It returns the descriptions and how many spans were required.
func missingTransitions(spans map[string][]presenceSpan, by map[string][]event, minSpan, lateness time.Duration, now time.Time) ([]string, int) {
	var missing []string
	required := 0
	for agent, agentSpans := range spans {
		got := presenceEvents(by[agent])
		if !isSubsequence(got, agentSpans) {
			missing = append(missing, fmt.Sprintf("agent %s: stream presences are not in the ground truth's order: %s", agent, divergence(got, agentSpans)))
			continue
		}
		for _, s := range agentSpans {
			end := s.end
			if end.IsZero() {
				end = now
			}
			if end.Sub(s.start) < minSpan {
				continue
			}
			required++
			if !shownDuring(got, s.presence, s.start, end.Add(lateness)) {
				missing = append(missing, fmt.Sprintf("agent %s: presence %s from %s to %s (%s) is missing from the stream",
					agent, s.presence, s.start.Format("15:04:05.000"), end.Format("15:04:05.000"), end.Sub(s.start).Round(time.Millisecond)))
			}
		}
	}
	return missing, required
}

// divergence describes the first presence on the stream that does not
// follow in the ground truth, with the ground truth around it.
func divergence(got []streamPresence, spans []presenceSpan) string {
	short := func(id string) string { // custom presences share a prefix, out-of-box ones a suffix
		if len(id) < 12 {
			return id
		}
		return id[:8] + "…" + id[len(id)-4:]
	}
	clock := func(t time.Time) string { return t.Format("15:04:05.000") }
	i, j := 0, 0
	for ; i < len(got); i++ {
		for j < len(spans) && spans[j].presence != got[i].presence {
			j++
		}
		if j == len(spans) {
			break
		}
		j++
	}
	if i == len(got) {
		return "none"
	}
	from, to := got[max(0, i-6)].at.Add(-2*time.Second), got[i].at.Add(2*time.Second)
	var truth []string
	for _, s := range spans {
		if s.start.After(to) || (!s.end.IsZero() && s.end.Before(from)) {
			continue
		}
		truth = append(truth, short(s.presence)+"@"+clock(s.start))
	}
	prev := "none"
	if i > 0 {
		prev = fmt.Sprintf("%s observed %s", short(got[i-1].presence), clock(got[i-1].at))
	}
	var stream []string
	for _, g := range got[max(0, i-6) : i+1] {
		stream = append(stream, short(g.presence)+"@"+clock(g.at))
	}
	return fmt.Sprintf("presence.changed #%d to %s observed %s after %s; the organisation around then: %s; the stream up to it: %s",
		i+1, short(got[i].presence), clock(got[i].at), prev, strings.Join(truth, " "), strings.Join(stream, " "))
}

// presenceOrderErrors lists the agents whose presences on the stream are
// not in the ground truth's order: a presence published after a later one,
// an agent sent back to where it no longer is.
func presenceOrderErrors(spans map[string][]presenceSpan, by map[string][]event) []string {
	const never = time.Duration(1<<63 - 1) // no span is long enough to be required
	out, _ := missingTransitions(spans, by, never, 0, time.Time{})
	return out
}

// answer is one CCaaS_GetPresence answer the organisation sent.
type answer struct {
	agent, presence string
	at              time.Time // when the body was written
}

// answerLog wraps the simulator's handler: every CCaaS_GetPresence request
// waits delay() before the organisation reads the agent's state and
// answers (a client that gives up gets no answer), and every 200 answer is
// recorded with the presence it carried and when it was sent.
type answerLog struct {
	delay func() time.Duration

	mu        sync.Mutex
	answers   []answer
	inFlight  int
	abandoned []time.Time // arrival times of requests the client gave up on
}

func (l *answerLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "()"), simulator.EndpointPresence) {
			next.ServeHTTP(w, r)
			return
		}
		arrived := time.Now()
		l.mu.Lock()
		l.inFlight++
		l.mu.Unlock()
		defer func() {
			l.mu.Lock()
			l.inFlight--
			l.mu.Unlock()
		}()
		timer := time.NewTimer(l.delay())
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			l.mu.Lock()
			l.abandoned = append(l.abandoned, arrived)
			l.mu.Unlock()
			return // the client gave up: nothing is sent
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		var body struct {
			AgentID    string `json:"AgentId"`
			PresenceID string `json:"PresenceId"`
		}
		ok := rec.Code == http.StatusOK && json.Unmarshal(rec.Body.Bytes(), &body) == nil && body.AgentID != ""
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		if ok {
			l.mu.Lock()
			l.answers = append(l.answers, answer{agent: strings.ToLower(body.AgentID), presence: body.PresenceID, at: time.Now()})
			l.mu.Unlock()
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// snapshot returns the answers sent so far and the requests in flight.
func (l *answerLog) snapshot() ([]answer, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]answer(nil), l.answers...), l.inFlight
}

// abandonedBefore counts the requests that arrived before t and that the
// client gave up on before they were answered.
func (l *answerLog) abandonedBefore(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.abandoned {
		if at.Before(t) {
			n++
		}
	}
	return n
}

// lastAnswers returns each agent's last answer sent before cutoff (all of
// them when cutoff is zero).
func lastAnswers(answers []answer, cutoff time.Time) map[string]answer {
	out := map[string]answer{}
	for _, a := range answers {
		if !cutoff.IsZero() && !a.at.Before(cutoff) {
			continue
		}
		if prev, ok := out[a.agent]; !ok || !a.at.Before(prev.at) {
			out[a.agent] = a
		}
	}
	return out
}

// pollersLog records which process (by its bearer token) asked about which
// agent, and when; install wrap around the simulator's handler.
type pollersLog struct {
	mu    sync.Mutex
	polls map[string]map[string][]time.Time // token -> agent -> times
}

func newPollersLog() *pollersLog { return &pollersLog{polls: map[string]map[string][]time.Time{}} }

func (l *pollersLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agent := strings.ToLower(r.Header.Get("MSCRMCallerID"))
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if agent != "" {
			l.mu.Lock()
			if l.polls[tok] == nil {
				l.polls[tok] = map[string][]time.Time{}
			}
			l.polls[tok][agent] = append(l.polls[tok][agent], time.Now())
			l.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

// polledSince returns the agents the process with token asked about after t.
func (l *pollersLog) polledSince(token string, t time.Time) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{}
	for agent, times := range l.polls[token] {
		if len(times) > 0 && times[len(times)-1].After(t) {
			out[agent] = true
		}
	}
	return out
}

// versionedBinaries are bridge binaries built with another version string,
// so that the ce-bridgeversion of each event says which process wrote it.
var versionedBinaries struct {
	mu   sync.Mutex
	bins map[string]string
}

// bridgeBinaryVersion returns the path of the bridge binary stamped with
// version, building it (with the race detector when the tests use it) on
// first use.
func bridgeBinaryVersion(t *testing.T, version string) string {
	t.Helper()
	versionedBinaries.mu.Lock()
	defer versionedBinaries.mu.Unlock()
	if bin, ok := versionedBinaries.bins[version]; ok {
		return bin
	}
	bin := filepath.Join(filepath.Dir(bridgeBin), "bridge-"+version)
	args := []string{"build", "-ldflags", "-X main.version=" + version, "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("build bridge %s: %v\n%s", version, err, out.String())
	}
	if versionedBinaries.bins == nil {
		versionedBinaries.bins = map[string]string{}
	}
	versionedBinaries.bins[version] = bin
	return bin
}

// changeEvery applies a round of the organisation's random changes every
// period until the returned stop function is called (which waits for the
// round in progress).
func (h *harness) changeEvery(period time.Duration) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C: // the pace of the organisation's changes, not a synchronisation
				h.sim.Step()
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(quit); <-done }) }
	h.t.Cleanup(stop)
	return stop
}

// workPresences are the presences forced changes cycle through (Offline is
// left out so that a forced change is only a presence change).
var workPresences = []string{simulator.PresenceAvailable, simulator.PresenceBusy, simulator.PresenceAway, simulator.PresenceBusyDND}

// changeEveryPresence moves every agent to the next of workPresences after
// its current one and returns when it did.
func (h *harness) changeEveryPresence(t *testing.T) time.Time {
	t.Helper()
	for _, st := range h.sim.Agents() {
		next := workPresences[0]
		for i, p := range workPresences {
			if p == st.PresenceID {
				next = workPresences[(i+1)%len(workPresences)]
			}
		}
		mustSim(t)(h.sim.SetPresence(st.AgentID, next))
	}
	return time.Now()
}

// leaseRevision is the revision of shard k's lease key, 0 when absent.
func (h *harness) leaseRevision(ctx context.Context, k int) uint64 {
	kv, err := h.js.KeyValue(ctx, contract.LeaseBucket)
	if err != nil {
		return 0
	}
	e, err := kv.Get(ctx, fmt.Sprintf("shard.%d", k))
	if err != nil {
		return 0
	}
	return e.Revision()
}

// leaderMetric is the process's ccaas_bridge_leader sample for shard k as
// its /metrics shows it: "1", "0", or "" when absent or unreachable.
func leaderMetric(ops string, k int) string {
	prefix := fmt.Sprintf(`ccaas_bridge_leader{shard="%d"} `, k)
	for _, line := range strings.Split(scrape(ops, "/metrics"), "\n") {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(line, prefix))
		}
	}
	return ""
}

// caughtUpBucket waits until the bucket equals the simulator's state and
// reports the last difference when it does not within the deadline; it
// stops the test at once when one of the running bridges exits.
func (h *harness) caughtUpBucket(ctx context.Context, t *testing.T, within time.Duration, what string, running ...*proc) bool {
	t.Helper()
	var last string
	ok := testwait.Eventually(t, within, what, func() bool {
		for _, p := range running {
			failIfExited(t, p, what)
		}
		last = h.bucketMismatch(ctx)
		return last == ""
	})
	if !ok {
		t.Errorf("the bucket still differs from the simulator: %s", last)
	}
	return ok
}

// describe lists up to n events, one a line, for failure messages.
func describe(events []event, n int) string {
	var lines []string
	for i, ev := range events {
		if i == n {
			lines = append(lines, fmt.Sprintf("and %d more", len(events)-n))
			break
		}
		lines = append(lines, fmt.Sprintf("%s %s observed %s", ev.ID, ev.Type, ev.Time.Format("15:04:05.000")))
	}
	return strings.Join(lines, "\n")
}
