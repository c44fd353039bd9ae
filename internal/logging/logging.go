// Package logging builds the bridge's *slog.Logger from its configured format
// and level, and provides a redaction safety net: a slog.Handler wrapper that
// replaces every registered secret (bearer token, client secret, NATS
// password) with "[REDACTED]" wherever it appears in a record.
//
// The safety net does not license logging secrets: code must never log them.
// It exists so that a mistake (an error string that embeds a header, a
// config struct logged whole) does not leak.
//
// Typical wiring in cmd/bridge:
//
//	secrets := logging.NewSecrets(cfg.ClientSecret, cfg.NATSPassword)
//	logger, err := logging.New(os.Stderr, cfg.LogFormat, cfg.LogLevel)
//	if err != nil { ... exit 2 ... }
//	logger = logging.WithRedaction(logger, secrets)
//	// later, when a token is obtained:
//	secrets.Add(token)
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Formats accepted by New.
const (
	FormatJSON = "json"
	FormatText = "text"
)

// Redacted replaces a secret in log output.
const Redacted = "[REDACTED]"

// minSubstringLen is the shortest secret that is also redacted where it
// appears inside a longer string; shorter secrets are redacted only when a
// whole value equals them, so that a two-letter password does not shred
// every log line.
const minSubstringLen = 4

// New returns a logger writing to w in the given format ("json" or "text",
// case-insensitive; "" means "json"; durations as Go duration strings in
// both) at the given level ("debug", "info",
// "warn" or "error", case-insensitive; "" means "info"). An unknown format
// or level gives an error naming the bad value.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: durationsAsText}
	switch strings.ToLower(strings.TrimSpace(format)) {
	case FormatJSON, "":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case FormatText:
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q is not one of json, text", format)
	}
}

// durationsAsText writes every time.Duration as Go's duration string
// ("1.5s", "2m0s") in both formats: the JSON handler would otherwise write
// nanoseconds, the text handler already writes the string.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// ParseLevel parses "debug", "info", "warn" (or "warning") and "error",
// case-insensitive; "" means info.
func ParseLevel(level string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("log level %q is not one of debug, info, warn, error", level)
	}
}

// Discard returns a logger that writes nothing, for tests.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Secrets is a concurrency-safe set of secret strings to redact. The zero
// value is empty and ready to use. Secrets can be added at any time (a
// token obtained after start); handlers built on the set see additions.
type Secrets struct {
	mu   sync.RWMutex
	vals []string
}

// NewSecrets returns a set holding the non-empty values given.
func NewSecrets(values ...string) *Secrets {
	s := &Secrets{}
	s.Add(values...)
	return s
}

// Add registers secrets; empty strings and values already present are
// ignored.
func (s *Secrets) Add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
outer:
	for _, v := range values {
		if v == "" {
			continue
		}
		for _, have := range s.vals {
			if have == v {
				continue outer
			}
		}
		s.vals = append(s.vals, v)
	}
}

// Redact returns str with every registered secret replaced by Redacted:
// a value equal to a secret, or, for secrets of at least four characters,
// every occurrence inside str.
func (s *Secrets) Redact(str string) string {
	if s == nil || str == "" {
		return str
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, v := range s.vals {
		if str == v {
			return Redacted
		}
		if len(v) >= minSubstringLen && strings.Contains(str, v) {
			str = strings.ReplaceAll(str, v, Redacted)
		}
	}
	return str
}

// WithRedaction returns a logger whose records pass through a
// RedactingHandler over l's handler.
func WithRedaction(l *slog.Logger, s *Secrets) *slog.Logger {
	return slog.New(NewRedactingHandler(l.Handler(), s))
}

// RedactingHandler is a slog.Handler that redacts secrets from the message
// and from every attribute value (strings, errors, fmt.Stringers, and
// anything else rendered through fmt), including attributes added with
// WithAttrs and inside groups, before passing the record on.
type RedactingHandler struct {
	next    slog.Handler
	secrets *Secrets
}

var _ slog.Handler = (*RedactingHandler)(nil)

// NewRedactingHandler wraps next so that secrets in s never reach it.
func NewRedactingHandler(next slog.Handler, s *Secrets) *RedactingHandler {
	return &RedactingHandler{next: next, secrets: s}
}

// Enabled reports whether the wrapped handler handles level.
func (h *RedactingHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle redacts the record and passes it on.
func (h *RedactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.secrets.Redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs redacts attrs and returns a handler carrying them.
func (h *RedactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.redactAttr(a)
	}
	return &RedactingHandler{next: h.next.WithAttrs(red), secrets: h.secrets}
}

// WithGroup returns a handler that opens group name.
func (h *RedactingHandler) WithGroup(name string) slog.Handler {
	return &RedactingHandler{next: h.next.WithGroup(name), secrets: h.secrets}
}

func (h *RedactingHandler) redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.secrets.Redact(v.String()))
	case slog.KindGroup:
		group := v.Group()
		red := make([]any, len(group))
		for i, g := range group {
			red[i] = h.redactAttr(g)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.secrets.Redact(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, h.secrets.Redact(x.String()))
		case nil:
			return slog.Attr{Key: a.Key, Value: v}
		default:
			s := fmt.Sprintf("%+v", x)
			if red := h.secrets.Redact(s); red != s {
				return slog.String(a.Key, red)
			}
			return slog.Attr{Key: a.Key, Value: v}
		}
	default:
		// Numbers, bools, times and durations: compare their text form.
		s := v.String()
		if red := h.secrets.Redact(s); red != s {
			return slog.String(a.Key, red)
		}
		return slog.Attr{Key: a.Key, Value: v}
	}
}
