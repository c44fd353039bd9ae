package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	tests := []struct {
		name, format, level string
		wantErr             string
		logAt               slog.Level
		wantOut             bool
		wantJSON            bool
	}{
		{name: "json info", format: "json", level: "info", logAt: slog.LevelInfo, wantOut: true, wantJSON: true},
		{name: "defaults", format: "", level: "", logAt: slog.LevelInfo, wantOut: true, wantJSON: true},
		{name: "text debug", format: "TEXT", level: "Debug", logAt: slog.LevelDebug, wantOut: true},
		{name: "warn drops info", format: "json", level: "warn", logAt: slog.LevelInfo, wantOut: false},
		{name: "error keeps error", format: "text", level: "error", logAt: slog.LevelError, wantOut: true},
		{name: "bad format", format: "yaml", level: "info", wantErr: `log format "yaml" is not one of json, text`},
		{name: "bad level", format: "json", level: "loud", wantErr: `log level "loud" is not one of debug, info, warn, error`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(&buf, tt.format, tt.level)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("New error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			l.Log(t.Context(), tt.logAt, "hello", "k", "v")
			if got := buf.Len() > 0; got != tt.wantOut {
				t.Fatalf("output written = %v, want %v (%q)", got, tt.wantOut, buf.String())
			}
			if !tt.wantOut {
				return
			}
			var m map[string]any
			isJSON := json.Unmarshal(buf.Bytes(), &m) == nil
			if isJSON != tt.wantJSON {
				t.Fatalf("JSON output = %v, want %v: %q", isJSON, tt.wantJSON, buf.String())
			}
			if !strings.Contains(buf.String(), "hello") {
				t.Fatalf("message missing: %q", buf.String())
			}
		})
	}
}

type config struct {
	URL      string
	Password string
}

type stringer string

func (s stringer) String() string { return "stringer:" + string(s) }

func TestRedaction(t *testing.T) {
	const (
		token    = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-token"
		secret   = "client~secret~value"
		password = "n4ts-pa55"
	)
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		want string // a fragment that must remain
	}{
		{name: "string attr equal", log: func(l *slog.Logger) { l.Info("x", "token", token) }, want: `token=[REDACTED]`},
		{name: "string attr containing", log: func(l *slog.Logger) { l.Info("x", "header", "Bearer "+token) }, want: `header="Bearer [REDACTED]"`},
		{name: "message", log: func(l *slog.Logger) { l.Info("secret is " + secret) }, want: `msg="secret is [REDACTED]"`},
		{name: "error attr", log: func(l *slog.Logger) {
			l.Error("x", "err", fmt.Errorf("connect: %w", errors.New("auth "+password+" refused")))
		}, want: `err="connect: auth [REDACTED] refused"`},
		{name: "struct attr", log: func(l *slog.Logger) {
			l.Info("x", "cfg", config{URL: "nats://h", Password: password})
		}, want: `Password:[REDACTED]`},
		{name: "stringer attr", log: func(l *slog.Logger) { l.Info("x", "s", stringer(secret)) }, want: `s=stringer:[REDACTED]`},
		{name: "group attr", log: func(l *slog.Logger) {
			l.Info("x", slog.Group("nats", "password", password, "url", "nats://h"))
		}, want: `nats.password=[REDACTED] nats.url=nats://h`},
		{name: "with attrs", log: func(l *slog.Logger) { l.With("token", token).Info("x") }, want: `token=[REDACTED]`},
		{name: "with group", log: func(l *slog.Logger) { l.WithGroup("g").Info("x", "secret", secret) }, want: `g.secret=[REDACTED]`},
		{name: "added later", log: func(l *slog.Logger) { l.Info("x", "late", "late-token-1234") }, want: `late=[REDACTED]`},
		{name: "short secret only whole", log: func(l *slog.Logger) { l.Info("x", "a", "pw", "b", "pwned") }, want: `a=[REDACTED] b=pwned`},
		{name: "non-secret untouched", log: func(l *slog.Logger) { l.Info("x", "n", 42, "agent", "abc") }, want: `n=42 agent=abc`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			base, err := New(&buf, "text", "debug")
			if err != nil {
				t.Fatal(err)
			}
			secrets := NewSecrets(token, secret, password, "", "pw")
			l := WithRedaction(base, secrets)
			secrets.Add("late-token-1234")
			tt.log(l)
			out := buf.String()
			for _, s := range []string{token, secret, password, "late-token-1234"} {
				if strings.Contains(out, s) {
					t.Errorf("secret %q leaked: %s", s, out)
				}
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output %q does not contain %q", out, tt.want)
			}
		})
	}
}

// TestDurationsAsText: both formats write durations as Go duration strings,
// also inside groups and through the redaction wrapper.
func TestDurationsAsText(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(&buf, format, "info")
			if err != nil {
				t.Fatal(err)
			}
			l = WithRedaction(l, NewSecrets("s3cr3t-value"))
			l.Info("polled", "interval", 1500*time.Millisecond, slog.Group("backoff", "next", 2*time.Minute))
			out := buf.String()
			for _, want := range []string{"1.5s", "2m0s"} {
				if !strings.Contains(out, want) {
					t.Errorf("%s log %q lacks the duration %s", format, out, want)
				}
			}
			if strings.Contains(out, "1500000000") || strings.Contains(out, "120000000000") {
				t.Errorf("%s log %q writes nanoseconds", format, out)
			}
		})
	}
}
