package simulator_test

import (
	"flag"
	"go/parser"
	"go/token"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
)

func TestRegisterFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(o simulator.Options) bool
		wantErr bool
	}{
		{name: "defaults", args: nil, check: func(o simulator.Options) bool {
			return o.Agents == 25 && o.Seed == 1 && slices.Equal(o.StaticTokens, []string{simulator.DefaultToken}) &&
				o.Quota.Requests == 6000 && o.Quota.Window == 5*time.Minute && o.Quota.Concurrent == 52
		}},
		{name: "demo knobs", args: []string{"--agents", "100", "--seed", "9", "--change-interval", "500ms", "--change-probability", "0.5"},
			check: func(o simulator.Options) bool {
				return o.Agents == 100 && o.Seed == 9 && o.ChangeInterval == 500*time.Millisecond && o.ChangeProbability == 0.5
			}},
		{name: "tokens replace the default", args: []string{"--token", "a", "--token", "b", "--token-ttl", "1h"},
			check: func(o simulator.Options) bool {
				return slices.Equal(o.StaticTokens, []string{"a", "b"}) && o.TokenTTL == time.Hour
			}},
		{name: "faults", args: []string{"--rate-429", "0.01", "--retry-after", "3s", "--retry-after-date", "--burst-429-every", "1m", "--burst-429-length", "5s",
			"--rate-5xx", "0.02", "--latency", "20ms", "--latency-jitter", "30ms", "--rate-malformed", "0.03", "--presences-status", "403"},
			check: func(o simulator.Options) bool {
				f := o.Faults
				return f.Rate429 == 0.01 && f.RetryAfter == 3*time.Second && f.RetryAfterDate && f.Burst429Every == time.Minute &&
					f.Burst429Length == 5*time.Second && f.Rate5xx == 0.02 && f.Latency == 20*time.Millisecond &&
					f.LatencyJitter == 30*time.Millisecond && f.RateMalformed == 0.03 && f.PresencesStatus == 403
			}},
		{name: "quota", args: []string{"--quota-requests", "10", "--quota-window", "10s", "--quota-concurrent", "3", "--request-log", "100",
			"--quota-scope", "caller", "--quota-execution", "1m"},
			check: func(o simulator.Options) bool {
				return o.Quota == simulator.Quota{Requests: 10, Window: 10 * time.Second, Concurrent: 3, ExecutionTime: time.Minute,
					PenaltyExtension: simulator.DefaultPenaltyExtension, Scope: simulator.QuotaScopeCaller} && o.RequestLogSize == 100
			}},
		{name: "payloads and call form", args: []string{"--call-form", "function", "--customapis-status", "403", "--nulls", "--extra-keys", "--gzip", "--inactive"},
			check: func(o simulator.Options) bool {
				return o.CallForm == simulator.CallFormFunction && o.CustomAPIsStatus == 403 && o.NullEmpty && o.ExtraKeys && o.Gzip && o.Inactive
			}},
		{name: "no quota", args: []string{"--no-quota"}, check: func(o simulator.Options) bool { return o.Quota.Disabled }},
		{name: "empty token", args: []string{"--token", ""}, wantErr: true},
		{name: "bad duration", args: []string{"--latency", "soon"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := simulator.DefaultOptions()
			fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			opts.RegisterFlags(fs)
			err := fs.Parse(tt.args)
			if tt.wantErr {
				if err == nil {
					t.Fatal("parse accepted invalid flags")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(opts) {
				t.Fatalf("options %+v", opts)
			}
			if _, err := simulator.New(opts); err != nil {
				t.Fatalf("New refused the flags' options: %v", err)
			}
		})
	}
}

// TestImportsNothingOfOurs keeps the simulator independent of the client it
// must catch out.
func TestImportsNothingOfOurs(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, "github.com/ccaas/presence-bridge") {
				t.Errorf("%s imports %s", f, p)
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no source file checked")
	}
}
