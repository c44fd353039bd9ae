package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
)

// Defaults of [StreamOptions].
const (
	DefaultStreamMaxAge      = 7 * 24 * time.Hour
	DefaultStreamReplicas    = 1
	DefaultDuplicateWindow   = 2 * time.Minute
	DefaultStreamStorageName = "file"
)

// StreamOptions describe the stream the bridge publishes to.
type StreamOptions struct {
	// Name is the stream name; default contract.Stream.
	Name string
	// SubjectPrefix is the subject prefix; the stream captures <prefix>.>.
	// Default contract.SubjectPrefix.
	SubjectPrefix string
	// MaxAge is how long events are kept; default DefaultStreamMaxAge.
	MaxAge time.Duration
	// Replicas is the number of copies in a cluster; default 1.
	Replicas int
	// Storage is "file" (default) or "memory".
	Storage string
	// DuplicateWindow is how long JetStream remembers message IDs to drop
	// duplicates; it bounds how long a crash between publish and state commit
	// may last without a duplicate. Default DefaultDuplicateWindow.
	DuplicateWindow time.Duration
	// Manage lets the bridge create a missing stream and update settings that
	// differ. Without it the bridge only verifies the stream (teams that
	// provision streams themselves).
	Manage bool
}

func (o *StreamOptions) applyDefaults() error {
	if o.Name == "" {
		o.Name = contract.Stream
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = contract.SubjectPrefix
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultStreamMaxAge
	}
	if o.Replicas == 0 {
		o.Replicas = DefaultStreamReplicas
	}
	if o.Storage == "" {
		o.Storage = DefaultStreamStorageName
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	switch {
	case strings.ContainsAny(o.Name, " \t\r\n.*>/\\"):
		return fmt.Errorf("stream name %q may not contain spaces, '.', '*', '>' or slashes", o.Name)
	case o.MaxAge < 0:
		return fmt.Errorf("stream max age %s is negative", o.MaxAge)
	case o.Replicas < 1 || o.Replicas > 5:
		return fmt.Errorf("stream replicas %d out of range 1..5", o.Replicas)
	case o.DuplicateWindow < 0:
		return fmt.Errorf("stream duplicate window %s is negative", o.DuplicateWindow)
	case o.DuplicateWindow > o.MaxAge:
		return fmt.Errorf("stream duplicate window %s exceeds max age %s", o.DuplicateWindow, o.MaxAge)
	}
	if _, err := parseStorage(o.Storage); err != nil {
		return err
	}
	return nil
}

func parseStorage(s string) (jetstream.StorageType, error) {
	switch strings.ToLower(s) {
	case "file":
		return jetstream.FileStorage, nil
	case "memory":
		return jetstream.MemoryStorage, nil
	}
	return 0, fmt.Errorf("stream storage %q is neither file nor memory", s)
}

// SettingDiff is one stream setting that differs from the configuration.
type SettingDiff struct {
	// Setting names it: subjects, max age, replicas, storage, duplicate window.
	Setting string
	// Have is the stream's value; Want the configured one.
	Have, Want string
	// Updatable says whether JetStream can change it in place.
	Updatable bool
}

// StreamMismatchError reports a stream whose settings differ from the
// configuration and that the bridge will not or cannot update.
type StreamMismatchError struct {
	Stream string
	Diffs  []SettingDiff
	// UpdateErr is JetStream's refusal when an update was attempted.
	UpdateErr error
}

// Error names the stream and each differing setting.
func (e *StreamMismatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stream %s differs from the configuration:", e.Stream)
	for i, d := range e.Diffs {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " %s is %s, configured %s", d.Setting, d.Have, d.Want)
		if !d.Updatable {
			b.WriteString(" (the bridge does not change it)")
		}
	}
	if e.UpdateErr != nil {
		fmt.Fprintf(&b, "; JetStream refused the update: %v", e.UpdateErr)
	}
	return b.String()
}

// Unwrap returns JetStream's refusal of the update, if any.
func (e *StreamMismatchError) Unwrap() error { return e.UpdateErr }

// ErrStreamMissing reports a stream that does not exist while managing is off.
var ErrStreamMissing = errors.New("stream does not exist")

// EnsureStream makes sure the stream exists with the configured settings:
// it creates a missing stream when opts.Manage is set; it never changes the
// subjects of an existing stream (its subjects must capture <prefix>.>); other
// settings that differ are an error naming each, unless opts.Manage is set and
// JetStream accepts the update.
func EnsureStream(ctx context.Context, js jetstream.JetStream, opts StreamOptions) (*jetstream.StreamInfo, error) {
	if err := opts.applyDefaults(); err != nil {
		return nil, fmt.Errorf("ensure stream: %w", err)
	}
	storage, _ := parseStorage(opts.Storage)
	subject := contract.StreamSubjects(opts.SubjectPrefix)
	want := jetstream.StreamConfig{
		Name:        opts.Name,
		Description: "CCaaS agent presence events (CloudEvents) published by the presence bridge",
		Subjects:    []string{subject},
		MaxAge:      opts.MaxAge,
		Replicas:    opts.Replicas,
		Storage:     storage,
		Duplicates:  opts.DuplicateWindow,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
	}

	st, err := js.Stream(ctx, opts.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if !opts.Manage {
			return nil, fmt.Errorf("ensure stream %s: %w and stream management is off", opts.Name, ErrStreamMissing)
		}
		st, err = js.CreateStream(ctx, want)
		if err != nil {
			return nil, fmt.Errorf("create stream %s: %w", opts.Name, err)
		}
		return st.CachedInfo(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", opts.Name, err)
	}
	info := st.CachedInfo()
	have := info.Config
	var diffs []SettingDiff
	if !capturesSubject(have.Subjects, subject) {
		diffs = append(diffs, SettingDiff{Setting: "subjects", Have: fmt.Sprint(have.Subjects), Want: "[" + subject + "]"})
	}
	if have.MaxAge != want.MaxAge {
		diffs = append(diffs, SettingDiff{Setting: "max age", Have: fmtAge(have.MaxAge), Want: fmtAge(want.MaxAge), Updatable: true})
	}
	if have.Replicas != want.Replicas {
		diffs = append(diffs, SettingDiff{Setting: "replicas", Have: fmt.Sprint(have.Replicas), Want: fmt.Sprint(want.Replicas), Updatable: true})
	}
	if have.Storage != want.Storage {
		diffs = append(diffs, SettingDiff{Setting: "storage", Have: have.Storage.String(), Want: want.Storage.String()})
	}
	if have.Duplicates != want.Duplicates {
		diffs = append(diffs, SettingDiff{Setting: "duplicate window", Have: have.Duplicates.String(), Want: want.Duplicates.String(), Updatable: true})
	}
	if len(diffs) == 0 {
		return info, nil
	}
	mismatch := &StreamMismatchError{Stream: opts.Name, Diffs: diffs}
	if !opts.Manage {
		return nil, mismatch
	}
	for _, d := range diffs {
		if !d.Updatable {
			return nil, mismatch
		}
	}
	update := have // keep subjects and everything the bridge does not own
	update.MaxAge = want.MaxAge
	update.Replicas = want.Replicas
	update.Duplicates = want.Duplicates
	st, err = js.UpdateStream(ctx, update)
	if err != nil {
		mismatch.UpdateErr = err
		return nil, mismatch
	}
	return st.CachedInfo(), nil
}

func fmtAge(d time.Duration) string {
	if d == 0 {
		return "unlimited"
	}
	return d.String()
}

// capturesSubject reports whether one of the stream subjects matches every
// subject under want (a filter ending in ">").
func capturesSubject(streamSubjects []string, want string) bool {
	w := strings.Split(want, ".")
	for _, s := range streamSubjects {
		if subjectCovers(strings.Split(s, "."), w) {
			return true
		}
	}
	return false
}

// subjectCovers reports whether filter f matches every subject matched by g.
func subjectCovers(f, g []string) bool {
	for i, tok := range f {
		if tok == ">" {
			return i < len(g)
		}
		if i >= len(g) {
			return false
		}
		switch {
		case g[i] == ">":
			return false
		case tok == "*", tok == g[i]:
		default:
			return false
		}
	}
	return len(f) == len(g)
}
