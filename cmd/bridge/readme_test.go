package main

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/examples/eventstest"
	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

var updateSamples = flag.Bool("update-samples", false, "rewrite testdata/samples/ and the README's sample blocks from the real binary")

// docsFiles are the documents whose variable rows, command mentions and
// samples are checked.
const (
	readmePath = "../../README.md"
	configDoc  = "../../docs/configuration.md"
)

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDocsListEveryVariableAndCommand keeps the variable reference and the
// README's command list in step with the code.
func TestDocsListEveryVariableAndCommand(t *testing.T) {
	ref := readDoc(t, configDoc)
	for _, v := range config.Vars() {
		row := "| `" + v.Name + "` |"
		if !strings.Contains(ref, row) {
			t.Errorf("docs/configuration.md has no row for %s", v.Name)
		}
		if v.Default != "" && !strings.Contains(ref, row+" `"+v.Default+"` |") {
			t.Errorf("docs/configuration.md does not give %s's default %q", v.Name, v.Default)
		}
	}
	readme := readDoc(t, readmePath)
	for _, c := range commands() {
		if !strings.Contains(readme, "bridge "+c.name) {
			t.Errorf("README.md does not mention bridge %s", c.name)
		}
	}
	if n := strings.Count(readme, "\n"); n > 200 {
		t.Errorf("README.md has %d lines; keep it a path under 200 and move reference to docs/", n)
	}
	for _, link := range regexp.MustCompile(`\]\(((?:docs|examples|schemas)/[^)#]*)`).FindAllStringSubmatch(readme, -1) {
		if _, err := os.Stat(filepath.Join("../..", link[1])); err != nil {
			t.Errorf("README.md links to %s: %v", link[1], err)
		}
	}
}

// sample is one sample block of the README: the command shown after "$ "
// and the output the real binary gives.
type sample struct {
	name    string
	command string
	output  string
}

// simulatorEnv reads the export lines `bridge simulate` prints.
func simulatorEnv(t *testing.T, out string) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); ok && strings.HasPrefix(line, "export BRIDGE_") {
			env[k] = v
		}
	}
	for _, k := range []string{"BRIDGE_ORG_URL", "BRIDGE_TOKEN", "BRIDGE_AGENT_IDS"} {
		if env[k] == "" {
			t.Fatalf("bridge simulate printed no export line for %s:\n%s", k, out)
		}
	}
	return env
}

// startSimulator runs `bridge simulate` on a free address with args and
// waits for its export lines.
func startSimulator(t *testing.T, h *harness, args ...string) (*proc, string, map[string]string) {
	t.Helper()
	addr := natstest.FreeAddr(t)
	p := h.start(nil, append([]string{"simulate", "--addr", addr}, args...)...)
	testwait.Until(t, waitScale*60*time.Second, "the simulator's export lines", func() bool {
		return strings.Contains(p.output(), "export BRIDGE_AGENT_IDS=")
	})
	return p, addr, simulatorEnv(t, p.output())
}

// TestREADMESamples runs the commands of the README's sample blocks with
// the real binary and compares the README with their output (through the
// golden files in testdata/samples/), so the samples cannot drift.
// go test ./cmd/bridge -run TestREADMESamples -update-samples rewrites both.
func TestREADMESamples(t *testing.T) {
	h := &harness{t: t}
	var samples []sample

	// A configuration error: the variables named, exit status 2.
	out, stderr, code := runCLI(t, map[string]string{"BRIDGE_POLL_INTERVAL": "0s", "BRIDGE_AGENT_IDS": "agent-7"}, "run")
	if code != exitConfig || out != "" {
		t.Fatalf("configuration error: exit %d, stdout %q, want %d and nothing", code, out, exitConfig)
	}
	samples = append(samples, sample{"config-error", "BRIDGE_POLL_INTERVAL=0s BRIDGE_AGENT_IDS=agent-7 ./bridge run", stderr})

	// The simulator's banner and `bridge check` against it. The simulator
	// listens on a free port, shown as the default 127.0.0.1:8081; its
	// agents do not change for an hour, so the presence check reads the
	// seed's first state.
	sim, addr, env := startSimulator(t, h, "--agents", "3", "--change-interval", "1h")
	banner := strings.SplitAfterN(sim.output(), "\n", 5)
	samples = append(samples, sample{"simulate", "./bridge simulate --agents 3", strings.ReplaceAll(strings.Join(banner[:4], ""), addr, "127.0.0.1:8081")})
	env["BRIDGE_DATA_DIR"] = "./data-simulator"
	out, stderr, code = runCLI(t, env, "check")
	if code != exitOK {
		t.Fatalf("bridge check against the simulator: exit %d\n%s%s", code, out, stderr)
	}
	samples = append(samples, sample{"check", "./bridge check", strings.ReplaceAll(out, addr, "127.0.0.1:8081")})

	readme := readDoc(t, readmePath)
	for _, s := range samples {
		block := "$ " + s.command + "\n" + s.output
		golden := filepath.Join("testdata", "samples", s.name+".txt")
		if *updateSamples {
			if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, []byte(block), 0o644); err != nil {
				t.Fatal(err)
			}
			readme = replaceSample(t, readme, s.name, block)
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("read golden file (create it with -update-samples): %v", err)
		}
		if string(want) != block {
			t.Errorf("%s: the binary's output differs from %s:\n%s\nwant:\n%s", s.name, golden, block, want)
		}
		if !strings.Contains(readme, "<!-- sample: "+s.name+" -->\n```\n"+string(want)+"```\n") {
			t.Errorf("README.md's sample %q is not %s (rewrite with -update-samples)", s.name, golden)
		}
	}
	if *updateSamples {
		if err := os.WriteFile(readmePath, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// replaceSample replaces the code block after the README's marker of name.
func replaceSample(t *testing.T, readme, name, block string) string {
	t.Helper()
	marker := "<!-- sample: " + name + " -->\n```\n"
	i := strings.Index(readme, marker)
	if i < 0 {
		t.Fatalf("README.md has no marker %q", marker)
	}
	start := i + len(marker)
	end := strings.Index(readme[start:], "```\n")
	if end < 0 {
		t.Fatalf("README.md's sample %q is not closed", name)
	}
	return readme[:start] + block + readme[start+end:]
}

// readmeCommands returns every `./bridge` command line of the README's sh
// blocks, without its comment.
func readmeCommands(t *testing.T) []string {
	t.Helper()
	var cmds []string
	in := false
	for _, line := range strings.Split(readDoc(t, readmePath), "\n") {
		switch {
		case strings.HasPrefix(line, "```sh"):
			in = true
		case strings.HasPrefix(line, "```"):
			in = false
		case in && strings.HasPrefix(line, "./bridge "):
			if i := strings.Index(line, " #"); i >= 0 {
				line = line[:i]
			}
			cmds = append(cmds, strings.TrimSpace(line))
		}
	}
	if len(cmds) < 5 {
		t.Fatalf("found only %d ./bridge commands in README.md: %q", len(cmds), cmds)
	}
	return cmds
}

// shellWords splits a README command line as sh would for the simple forms
// it uses: words, "double-quoted words", and "> file".
func shellWords(line string) (args []string, redirect string) {
	var cur strings.Builder
	quoted, inWord := false, false
	flush := func() {
		if inWord {
			args = append(args, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	for _, r := range line {
		switch {
		case r == '"':
			quoted = !quoted
			inWord = true
		case r == ' ' && !quoted:
			flush()
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	flush()
	for i, a := range args {
		if a == ">" && i+1 < len(args) {
			return args[:i], args[i+1]
		}
	}
	return args, ""
}

// runFor runs the binary with args for at most d, then interrupts it as
// Ctrl-C would, returning its output and exit status.
func runFor(t *testing.T, env map[string]string, d time.Duration, until func(out string) bool, args ...string) (string, int) {
	t.Helper()
	h := &harness{t: t}
	p := h.start(env, args...)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && !until(p.output()) {
		select {
		case err := <-p.done:
			p.done <- err
			return p.output(), exitCodeOf(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return p.output(), p.stop(t, syscall.SIGINT, 30*time.Second)
}

func exitCodeOf(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestExamplesShareOneDecoder: each example is a standalone program that
// copies decodeEvent (cloudevent.go) on purpose, using public libraries
// only; the copies must stay the same.
func TestExamplesShareOneDecoder(t *testing.T) {
	var first []byte
	for _, ex := range []string{"alerting", "pipeline-export", "routing-view"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", ex, "cloudevent.go"))
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = b
			continue
		}
		if !bytes.Equal(b, first) {
			t.Errorf("examples/%s/cloudevent.go differs from examples/alerting/cloudevent.go", ex)
		}
	}
}

// TestExamplesUseTheContractsNames: the examples and their test support
// spell the contract's names themselves, on purpose (public libraries
// only); their defaults must stay those of internal/contract.
func TestExamplesUseTheContractsNames(t *testing.T) {
	for _, tt := range []struct{ what, got, want string }{
		{"eventstest.Stream", eventstest.Stream, contract.Stream},
		{"eventstest.SubjectPrefix", eventstest.SubjectPrefix, contract.SubjectPrefix},
		{"eventstest.StateBucket", eventstest.StateBucket, contract.StateBucket},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.what, tt.got, tt.want)
		}
	}
	want := map[string]string{"stream": contract.Stream, "prefix": contract.SubjectPrefix, "bucket": contract.StateBucket}
	flagDefault := regexp.MustCompile(`flag\.StringVar\(&opts\.\w+, "(stream|prefix|bucket)", "([^"]*)"`)
	for _, ex := range []string{"alerting", "pipeline-export", "routing-view"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", ex, "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		found := flagDefault.FindAllStringSubmatch(string(b), -1)
		if len(found) < 2 {
			t.Errorf("examples/%s/main.go: %d of the contract's flags found, want the stream and the prefix at least", ex, len(found))
		}
		for _, m := range found {
			if m[2] != want[m[1]] {
				t.Errorf("examples/%s/main.go: -%s defaults to %q, want %q", ex, m[1], m[2], want[m[1]])
			}
		}
	}
}

// TestGuaranteesNameTheirTests keeps README's Guarantees command honest:
// every name in its -run pattern selects at least one process test of
// this package, so a renamed test cannot silently drop out of it.
func TestGuaranteesNameTheirTests(t *testing.T) {
	m := regexp.MustCompile(`go test -race -run '([^']+)' \./cmd/bridge`).FindStringSubmatch(readDoc(t, readmePath))
	if m == nil {
		t.Fatal("README's Guarantees give no `go test -race -run '…' ./cmd/bridge` command")
	}
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	var tests []string
	testFunc := regexp.MustCompile(`(?m)^func (Test\w+)\(t \*testing\.T\)`)
	for _, f := range files {
		for _, fm := range testFunc.FindAllStringSubmatch(readDoc(t, f), -1) {
			tests = append(tests, fm[1])
		}
	}
	for _, name := range strings.Split(m[1], "|") {
		re, err := regexp.Compile(name)
		if err != nil {
			t.Fatalf("README's pattern %q: %v", name, err)
		}
		n := 0
		for _, tn := range tests {
			if re.MatchString(tn) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("README's Guarantees command runs %q, which selects no test of ./cmd/bridge", name)
		}
	}
}
