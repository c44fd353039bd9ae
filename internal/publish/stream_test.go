package publish

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connectJS connects a plain client to srvURL for the test.
func connectJS(t *testing.T, srvURL string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(srvURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

func TestEnsureStream(t *testing.T) {
	existing := func(mut func(*jetstream.StreamConfig)) *jetstream.StreamConfig {
		cfg := &jetstream.StreamConfig{
			Name: "CCAAS_AGENTS", Subjects: []string{"ccaas.agents.>"}, MaxAge: DefaultStreamMaxAge,
			Replicas: 1, Storage: jetstream.FileStorage, Duplicates: DefaultDuplicateWindow,
		}
		if mut != nil {
			mut(cfg)
		}
		return cfg
	}
	tests := []struct {
		name     string
		existing *jetstream.StreamConfig
		opts     StreamOptions
		wantErr  []string // substrings of the error; none means success
		wantIs   error
		want     func(*jetstream.StreamConfig) bool
	}{
		{
			name: "creates a missing stream", opts: StreamOptions{Manage: true, MaxAge: time.Hour, DuplicateWindow: time.Minute},
			want: func(c *jetstream.StreamConfig) bool {
				return reflect.DeepEqual(c.Subjects, []string{"ccaas.agents.>"}) && c.MaxAge == time.Hour && c.Duplicates == time.Minute && c.Storage == jetstream.FileStorage
			},
		},
		{
			name: "creates in memory with a custom prefix", opts: StreamOptions{Manage: true, Name: "S", SubjectPrefix: "x.y", Storage: "memory"},
			want: func(c *jetstream.StreamConfig) bool {
				return c.Name == "S" && reflect.DeepEqual(c.Subjects, []string{"x.y.>"}) && c.Storage == jetstream.MemoryStorage && c.MaxAge == DefaultStreamMaxAge
			},
		},
		{name: "missing without managing", opts: StreamOptions{}, wantIs: ErrStreamMissing, wantErr: []string{"CCAAS_AGENTS", "management is off"}},
		{name: "matching stream verified", existing: existing(nil), opts: StreamOptions{}},
		{name: "wider subjects accepted", existing: existing(func(c *jetstream.StreamConfig) { c.Subjects = []string{"other", "ccaas.>"} }), opts: StreamOptions{}},
		{
			name: "differences named without managing", existing: existing(func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour; c.Duplicates = time.Minute }),
			opts: StreamOptions{}, wantErr: []string{"max age is 1h0m0s, configured 168h0m0s", "duplicate window is 1m0s, configured 2m0s"},
		},
		{
			name: "differences updated when managing", existing: existing(func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour; c.Duplicates = time.Minute }),
			opts: StreamOptions{Manage: true},
			want: func(c *jetstream.StreamConfig) bool {
				return c.MaxAge == DefaultStreamMaxAge && c.Duplicates == DefaultDuplicateWindow
			},
		},
		{
			name: "subjects never rewritten", existing: existing(func(c *jetstream.StreamConfig) { c.Subjects = []string{"ccaas.other.>"}; c.MaxAge = time.Hour }),
			opts: StreamOptions{Manage: true}, wantErr: []string{"subjects is [ccaas.other.>], configured [ccaas.agents.>]", "max age", "does not change it"},
		},
		{
			name: "storage cannot change", existing: existing(func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }),
			opts: StreamOptions{Manage: true}, wantErr: []string{"storage is Memory, configured File"},
		},
		{
			name: "replicas beyond the single server refused", existing: existing(nil),
			opts: StreamOptions{Manage: true, Replicas: 3}, wantErr: []string{"replicas is 1, configured 3", "JetStream refused the update"},
		},
		{name: "invalid storage", opts: StreamOptions{Storage: "disk"}, wantErr: []string{`"disk"`}},
		{name: "window beyond max age", opts: StreamOptions{MaxAge: time.Minute, DuplicateWindow: time.Hour}, wantErr: []string{"exceeds max age"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv := startServer(t, nil)
			_, js := connectJS(t, srv.ClientURL())
			if tt.existing != nil {
				if _, err := js.CreateStream(ctx, *tt.existing); err != nil {
					t.Fatalf("create existing stream: %v", err)
				}
			}
			info, err := EnsureStream(ctx, js, tt.opts)
			if len(tt.wantErr) == 0 && tt.wantIs == nil {
				if err != nil {
					t.Fatalf("EnsureStream: %v", err)
				}
				st, err := js.Stream(ctx, info.Config.Name)
				if err != nil {
					t.Fatalf("stream after EnsureStream: %v", err)
				}
				got := st.CachedInfo().Config
				if tt.want != nil && !tt.want(&got) {
					t.Fatalf("stream config %+v not as configured", got)
				}
				if tt.existing != nil && !reflect.DeepEqual(got.Subjects, tt.existing.Subjects) {
					t.Fatalf("subjects changed to %v", got.Subjects)
				}
				return
			}
			if err == nil {
				t.Fatal("EnsureStream succeeded, want error")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q is not %v", err, tt.wantIs)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if tt.existing != nil {
				st, err := js.Stream(ctx, tt.existing.Name)
				if err != nil {
					t.Fatalf("stream after failure: %v", err)
				}
				if got := st.CachedInfo().Config; !reflect.DeepEqual(got.Subjects, tt.existing.Subjects) || got.MaxAge != tt.existing.MaxAge {
					t.Errorf("stream changed despite the error: %+v", got)
				}
			}
		})
	}
}

func TestSubjectCovers(t *testing.T) {
	tests := []struct {
		stream []string
		want   bool
	}{
		{[]string{"ccaas.agents.>"}, true},
		{[]string{"ccaas.>"}, true},
		{[]string{">"}, true},
		{[]string{"ccaas.*.>"}, true},
		{[]string{"ccaas.agents.*"}, false},
		{[]string{"ccaas.agents"}, false},
		{[]string{"ccaas.agents.x.>"}, false},
		{[]string{"other.>", "ccaas.agents.>"}, true},
	}
	for _, tt := range tests {
		if got := capturesSubject(tt.stream, "ccaas.agents.>"); got != tt.want {
			t.Errorf("capturesSubject(%v) = %v, want %v", tt.stream, got, tt.want)
		}
	}
}
