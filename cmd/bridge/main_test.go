package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// raceEnabled is set when the tests run with -race, so the binary under
// test is built with the race detector too.
var raceEnabled bool

// bridgeBin is the path of the bridge binary built once for the tests that
// run it as a separate process.
var bridgeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bridge-bin-")
	if err != nil {
		panic(err)
	}
	bridgeBin = filepath.Join(dir, "bridge")
	args := []string{"build", "-ldflags", "-X main.version=test-build", "-o", bridgeBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		panic("build bridge: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bridgeEnv is a minimal environment for the binary: no BRIDGE_ or AZURE_
// variable leaks in from the test's own environment.
func bridgeEnv(extra map[string]string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

func TestInvalidConfigurationExitsTwoNamingTheVariable(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	base := map[string]string{
		"BRIDGE_ORG_URL":   "https://contoso.crm.dynamics.com",
		"BRIDGE_AGENT_IDS": "394382b6-a4d4-ee11-904c-00224808a166",
		"BRIDGE_TOKEN":     "static-token",
		"BRIDGE_DATA_DIR":  data,
		"BRIDGE_HTTP_ADDR": "127.0.0.1:0",
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string
		want    string
	}{
		{"agent id not a GUID", map[string]string{"BRIDGE_AGENT_IDS": "agent-7"}, "BRIDGE_AGENT_IDS", "not a GUID"},
		{"zero interval", map[string]string{"BRIDGE_POLL_INTERVAL": "0s"}, "BRIDGE_POLL_INTERVAL", "greater than zero"},
		{"negative interval", map[string]string{"BRIDGE_POLL_INTERVAL": "-1s"}, "BRIDGE_POLL_INTERVAL", "greater than zero"},
		{"URL without a scheme", map[string]string{"BRIDGE_ORG_URL": "contoso.crm.dynamics.com"}, "BRIDGE_ORG_URL", "scheme"},
		{"unreadable token file", map[string]string{"BRIDGE_TOKEN": "", "BRIDGE_TOKEN_FILE": filepath.Join(dir, "missing")}, "BRIDGE_TOKEN_FILE", "cannot read file"},
		{"missing organisation", map[string]string{"BRIDGE_ORG_URL": ""}, "BRIDGE_ORG_URL", "is required"},
		{"missing agents", map[string]string{"BRIDGE_AGENT_IDS": ""}, "BRIDGE_AGENT_IDS", "is required"},
		{"organisation in clear text", map[string]string{"BRIDGE_ORG_URL": "http://contoso.crm.dynamics.com"}, "BRIDGE_ORG_URL", "scheme must be https"},
		{"credentials in the organisation URL", map[string]string{"BRIDGE_ORG_URL": "https://admin:static-token@contoso.crm.dynamics.com"}, "BRIDGE_ORG_URL", "must not contain user information"},
		{"API path in the organisation URL", map[string]string{"BRIDGE_ORG_URL": "https://contoso.crm.dynamics.com/api/data/v9.2/"}, "BRIDGE_ORG_URL", "/api/data/v9.2"},
		{"unknown call form", map[string]string{"BRIDGE_PRESENCE_CALL": "guess"}, "BRIDGE_PRESENCE_CALL", "auto, bare or function"},
		{"caller scope over the limit", map[string]string{"BRIDGE_QUOTA_SCOPE": "caller", "BRIDGE_POLL_INTERVAL": "200ms",
			"BRIDGE_AGENT_IDS": "394382b6-a4d4-ee11-904c-00224808a166,cc05cf62-6242-ee11-be6e-6045bdd7ac2c,0b6c2f8e-1111-4e5a-9b7c-0d1e2f3a4b5c,1c7d3a9f-2222-4e5a-9b7c-0d1e2f3a4b5c,2d8e4b0a-3333-4e5a-9b7c-0d1e2f3a4b5c"},
			"BRIDGE_QUOTA_SCOPE", "5 agents every 200ms make 7500 requests per 5m0s, over the 5400"},
		{"memory limit ratio over one", map[string]string{"AUTOMEMLIMIT": "1.5"}, "AUTOMEMLIMIT", "in (0, 1]"},
		{"memory limit ratio not a number", map[string]string{"AUTOMEMLIMIT": "90%"}, "AUTOMEMLIMIT", `(got "90%")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tt.env {
				env[k] = v
			}
			cmd := exec.Command(bridgeBin, "run")
			cmd.Env = bridgeEnv(env)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitConfig {
				t.Fatalf("exit = %v, want status %d; stderr:\n%s", err, exitConfig, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantVar) || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("stderr does not name %s with %q:\n%s", tt.wantVar, tt.want, stderr.String())
			}
			if strings.Contains(stderr.String(), "static-token") {
				t.Fatalf("stderr echoes the token:\n%s", stderr.String())
			}
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("data dir exists after a configuration error (something was started): %v", err)
			}
		})
	}
}

func TestHelpListsEveryFlagAndVariable(t *testing.T) {
	out, err := exec.Command(bridgeBin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("bridge --help: %v\n%s", err, out)
	}
	for _, c := range commands() {
		if !strings.Contains(string(out), c.name) {
			t.Errorf("bridge --help does not list %s", c.name)
		}
	}
	for _, v := range []string{"BRIDGE_POLL_INTERVAL", "BRIDGE_NATS_URL", "BRIDGE_LEASE_TTL", "BRIDGE_HTTP_ADDR"} {
		if !strings.Contains(string(out), v) {
			t.Errorf("bridge --help does not list %s", v)
		}
	}
	out, err = exec.Command(bridgeBin, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "bridge test-build" {
		t.Errorf("bridge version = %q, %v; want the stamped version", out, err)
	}
}

// TestHelpListsWhatEachCommandReads: each command's help lists the
// variables it reads, described as that command reads them, and no other.
func TestHelpListsWhatEachCommandReads(t *testing.T) {
	tests := []struct {
		command      string
		want, absent []string
	}{
		{"tail", []string{"BRIDGE_NATS_URL", "embedded server of a bridge or demo on this machine", "BRIDGE_STREAM", "BRIDGE_STATE_BUCKET"},
			[]string{"empty runs an embedded JetStream", "BRIDGE_POLL_INTERVAL", "BRIDGE_ORG_URL", "BRIDGE_DATA_DIR", "BRIDGE_LOG_FORMAT"}},
		{"replay", []string{"BRIDGE_NATS_URL", "-until"}, []string{"empty runs an embedded JetStream", "BRIDGE_LEASE_TTL"}},
		{"state", []string{"BRIDGE_STATE_BUCKET"}, []string{"BRIDGE_HTTP_ADDR", "BRIDGE_POLL_INTERVAL"}},
		{"demo", []string{"BRIDGE_DATA_DIR", "BRIDGE_EMBEDDED_NATS_LISTEN", "BRIDGE_HTTP_ADDR"},
			[]string{"BRIDGE_ORG_URL", "BRIDGE_NATS_URL", "BRIDGE_POLL_INTERVAL", "BRIDGE_LOG_FORMAT", "BRIDGE_LEASE_ENABLED"}},
		{"run", []string{"BRIDGE_ORG_URL", "BRIDGE_POLL_INTERVAL", "BRIDGE_NATS_URL", "BRIDGE_LEASE_TTL", "BRIDGE_LOG_FORMAT"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			out, err := exec.Command(bridgeBin, tt.command, "-h").CombinedOutput()
			if err != nil {
				t.Fatalf("bridge %s -h: %v\n%s", tt.command, err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("bridge %s -h does not say %q:\n%s", tt.command, w, out)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(string(out), a) {
					t.Errorf("bridge %s -h says %q, which it does not read:\n%s", tt.command, a, out)
				}
			}
		})
	}
}
