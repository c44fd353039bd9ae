package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/contract"
)

// clearEnv unsets every BRIDGE_ variable for the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "BRIDGE_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func TestLoadDefaults(t *testing.T) {
	clearEnv(t)
	c, err := Load(Needs{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.PollInterval != 10*time.Second || c.SubjectPrefix != contract.SubjectPrefix || c.Stream != contract.Stream ||
		c.StateBucket != contract.StateBucket || c.DataDir != "./data" || c.EmbeddedNATSListen != "127.0.0.1:4222" ||
		c.DuplicateWindow != 2*time.Minute || c.StreamMaxAge != 168*time.Hour || !c.StreamManage || !c.Embedded() {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	if got, want := c.EffectiveStaleAfter(), 3*10*time.Second+2*time.Minute; got != want {
		t.Fatalf("EffectiveStaleAfter = %s, want %s", got, want)
	}
}

func TestLoadValid(t *testing.T) {
	clearEnv(t)
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BRIDGE_ORG_URL", "https://contoso.crm.dynamics.com/")
	t.Setenv("BRIDGE_AGENT_IDS", "394382B6-A4D4-EE11-904C-00224808A166, {CC05CF62-6242-EE11-BE6E-6045BDD7AC2C}")
	t.Setenv("BRIDGE_TOKEN_FILE", tok)
	t.Setenv("BRIDGE_NATS_URL", "nats://a:4222,nats://b:4222")
	c, err := Load(Needs{Organisation: true})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.OrgURL != "https://contoso.crm.dynamics.com" {
		t.Errorf("OrgURL = %q, want trailing slash trimmed", c.OrgURL)
	}
	want := []string{"394382b6-a4d4-ee11-904c-00224808a166", "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"}
	if strings.Join(c.AgentIDs, ",") != strings.Join(want, ",") {
		t.Errorf("AgentIDs = %v, want %v", c.AgentIDs, want)
	}
	if c.Embedded() {
		t.Error("Embedded() with a NATS URL")
	}
}

func TestLoadInvalid(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-token")
	org := map[string]string{"BRIDGE_ORG_URL": "https://contoso.crm.dynamics.com", "BRIDGE_AGENT_IDS": "394382b6-a4d4-ee11-904c-00224808a166", "BRIDGE_TOKEN": "t"}
	tests := []struct {
		name    string
		env     map[string]string
		needs   Needs
		wantVar string
		want    string // substring of the message
	}{
		{"agent id not a GUID", map[string]string{"BRIDGE_AGENT_IDS": "394382b6-a4d4-ee11-904c-00224808a166,not-a-guid"}, Needs{}, "BRIDGE_AGENT_IDS", `"not-a-guid" is not a GUID`},
		{"agent listed twice", map[string]string{"BRIDGE_AGENT_IDS": "394382b6-a4d4-ee11-904c-00224808a166,394382B6-A4D4-EE11-904C-00224808A166"}, Needs{}, "BRIDGE_AGENT_IDS", "listed twice"},
		{"zero interval", map[string]string{"BRIDGE_POLL_INTERVAL": "0s"}, Needs{}, "BRIDGE_POLL_INTERVAL", "greater than zero"},
		{"negative interval", map[string]string{"BRIDGE_POLL_INTERVAL": "-5s"}, Needs{}, "BRIDGE_POLL_INTERVAL", "greater than zero"},
		{"interval not a duration", map[string]string{"BRIDGE_POLL_INTERVAL": "ten"}, Needs{}, "BRIDGE_POLL_INTERVAL", `cannot parse "ten" as a duration`},
		{"org url without scheme", map[string]string{"BRIDGE_ORG_URL": "contoso.crm.dynamics.com"}, Needs{}, "BRIDGE_ORG_URL", "with a scheme"},
		{"org url required", map[string]string{"BRIDGE_AGENT_IDS": "394382b6-a4d4-ee11-904c-00224808a166"}, Needs{Organisation: true}, "BRIDGE_ORG_URL", "is required"},
		{"agents required", map[string]string{"BRIDGE_ORG_URL": "https://contoso.crm.dynamics.com"}, Needs{Organisation: true}, "BRIDGE_AGENT_IDS", "is required"},
		{"unreadable token file", map[string]string{"BRIDGE_TOKEN_FILE": missing}, Needs{}, "BRIDGE_TOKEN_FILE", "cannot read file"},
		{"token and token file", map[string]string{"BRIDGE_TOKEN": "t", "BRIDGE_TOKEN_FILE": missing}, Needs{}, "BRIDGE_TOKEN_FILE", "only one of"},
		{"nats url without scheme", map[string]string{"BRIDGE_NATS_URL": "localhost:4222"}, Needs{}, "BRIDGE_NATS_URL", "with a scheme"},
		{"nats url with secret", map[string]string{"BRIDGE_NATS_URL": "http://user:hunter2@host:4222"}, Needs{}, "BRIDGE_NATS_URL", "scheme must be"},
		{"bad log format", map[string]string{"BRIDGE_LOG_FORMAT": "xml"}, Needs{}, "BRIDGE_LOG_FORMAT", `"xml"`},
		{"bad storage", map[string]string{"BRIDGE_STREAM_STORAGE": "disk"}, Needs{}, "BRIDGE_STREAM_STORAGE", "file or memory"},
		{"wildcard prefix", map[string]string{"BRIDGE_SUBJECT_PREFIX": "ccaas.*"}, Needs{}, "BRIDGE_SUBJECT_PREFIX", "without wildcards"},
		{"zero concurrency", map[string]string{"BRIDGE_MAX_CONCURRENCY": "0"}, Needs{}, "BRIDGE_MAX_CONCURRENCY", "at least 1"},
		{"bool", map[string]string{"BRIDGE_STREAM_MANAGE": "maybe"}, Needs{}, "BRIDGE_STREAM_MANAGE", "boolean"},
		{"cert without key", map[string]string{"BRIDGE_NATS_CERT": missing}, Needs{}, "BRIDGE_NATS_CERT", "set together"},
		{"org overrides stay valid", org, Needs{Organisation: true}, "", ""},
		{"org url in clear text", map[string]string{"BRIDGE_ORG_URL": "http://contoso.crm.dynamics.com"}, Needs{}, "BRIDGE_ORG_URL", "scheme must be https"},
		{"org url with credentials", map[string]string{"BRIDGE_ORG_URL": "https://admin:hunter2@contoso.crm.dynamics.com"}, Needs{}, "BRIDGE_ORG_URL", "must not contain user information"},
		{"org url with a query", map[string]string{"BRIDGE_ORG_URL": "https://contoso.crm.dynamics.com/?x=1"}, Needs{}, "BRIDGE_ORG_URL", "query or fragment"},
		{"org url with a fragment", map[string]string{"BRIDGE_ORG_URL": "https://contoso.crm.dynamics.com#main"}, Needs{}, "BRIDGE_ORG_URL", "query or fragment"},
		{"org url with the API path", map[string]string{"BRIDGE_ORG_URL": "https://contoso.crm.dynamics.com/api/data/v9.2"}, Needs{}, "BRIDGE_ORG_URL", `drop "/api/data/v9.2"`},
		{"org url with another path", map[string]string{"BRIDGE_ORG_URL": "https://contoso.crm.dynamics.com/main.aspx"}, Needs{}, "BRIDGE_ORG_URL", "without a path"},
		{"http on loopback for the simulator", map[string]string{"BRIDGE_ORG_URL": "http://127.0.0.1:8081"}, Needs{}, "", ""},
		{"http on localhost for the simulator", map[string]string{"BRIDGE_ORG_URL": "http://localhost:8081/"}, Needs{}, "", ""},
		{"bad call form", map[string]string{"BRIDGE_PRESENCE_CALL": "guess"}, Needs{}, "BRIDGE_PRESENCE_CALL", "auto, bare or function"},
		{"bad quota scope", map[string]string{"BRIDGE_QUOTA_SCOPE": "tenant"}, Needs{}, "BRIDGE_QUOTA_SCOPE", "agent or caller"},
		{"ready share over 1", map[string]string{"BRIDGE_READY_MIN_SHARE": "1.5"}, Needs{}, "BRIDGE_READY_MIN_SHARE", "between 0 and 1"},
		{"token with its Bearer prefix", map[string]string{"BRIDGE_TOKEN": "Bearer hunter2"}, Needs{}, "BRIDGE_TOKEN", "remove the 'Bearer ' prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := Load(tt.needs)
			if tt.wantVar == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Load error = %v, want a *FieldError", err)
			}
			if !strings.Contains(err.Error(), tt.wantVar+": ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %q, want it to name %s and say %q", err, tt.wantVar, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error echoes a secret: %q", err)
			}
		})
	}
}

func TestVarsAreAllPrefixed(t *testing.T) {
	vars := Vars()
	if len(vars) < 40 {
		t.Fatalf("Vars() = %d variables, want every field", len(vars))
	}
	for _, v := range vars {
		if !strings.HasPrefix(v.Name, "BRIDGE_") || v.Group == "" || v.Description == "" {
			t.Errorf("variable %+v lacks the BRIDGE_ prefix, a group or a description", v)
		}
	}
}

// TestInvalidAgentIDIsNotAlsoMissing: a set but invalid BRIDGE_AGENT_IDS is
// reported once, as invalid, not a second time as required.
func TestInvalidAgentIDIsNotAlsoMissing(t *testing.T) {
	clearEnv(t)
	t.Setenv("BRIDGE_ORG_URL", "https://contoso.crm.dynamics.com")
	t.Setenv("BRIDGE_TOKEN", "t")
	t.Setenv("BRIDGE_AGENT_IDS", "agent-7")
	_, err := Load(Needs{Organisation: true})
	if err == nil || !strings.Contains(err.Error(), `"agent-7" is not a GUID`) {
		t.Fatalf("Load = %v, want agent-7 named as not a GUID", err)
	}
	if strings.Contains(err.Error(), "is required") || strings.Count(err.Error(), "BRIDGE_AGENT_IDS") != 1 {
		t.Fatalf("Load = %q, want one line for BRIDGE_AGENT_IDS", err)
	}
}

func TestNormalizeAgentID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"394382b6-a4d4-ee11-904c-00224808a166", "394382b6-a4d4-ee11-904c-00224808a166", true},
		{"394382B6-A4D4-EE11-904C-00224808A166", "394382b6-a4d4-ee11-904c-00224808a166", true},
		{"{394382B6-A4D4-EE11-904C-00224808A166}", "394382b6-a4d4-ee11-904c-00224808a166", true},
		{" {394382b6-a4d4-ee11-904c-00224808a166} ", "394382b6-a4d4-ee11-904c-00224808a166", true},
		{"{394382b6-a4d4-ee11-904c-00224808a166", "", false},
		{"394382b6a4d4ee11904c00224808a166", "", false},
		{"394382b6-a4d4-ee11-904c-00224808a16g", "", false},
		{"Olga", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := NormalizeAgentID(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("NormalizeAgentID(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestContractNamesAreTheDefaults keeps the variables naming the stream, the
// subject prefix and the buckets defaulting to the contract's names.
func TestContractNamesAreTheDefaults(t *testing.T) {
	defaults := map[string]string{}
	for _, v := range Vars() {
		defaults[v.Name] = v.Default
	}
	for name, want := range map[string]string{
		"BRIDGE_STREAM":         contract.Stream,
		"BRIDGE_SUBJECT_PREFIX": contract.SubjectPrefix,
		"BRIDGE_STATE_BUCKET":   contract.StateBucket,
		"BRIDGE_LEASE_BUCKET":   contract.LeaseBucket,
		"BRIDGE_FEED_BUCKET":    contract.FeedBucket,
	} {
		if got, ok := defaults[name]; !ok || got != want {
			t.Errorf("%s defaults to %q, want %q (internal/contract)", name, got, want)
		}
	}
}
