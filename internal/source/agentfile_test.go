package source_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

func TestParseAgentFile(t *testing.T) {
	in := "# agents of the Lisbon site\n" +
		agentA + "\n" +
		"\n" +
		"{" + strings.ToUpper(agentB) + "}   # Bob, braces as Dataverse shows IDs\n" +
		"not-a-guid\n" +
		agentA + "\n"
	ids, err := source.ParseAgentFile("agents.txt", strings.NewReader(in))
	if !reflect.DeepEqual(ids, []string{agentA, agentB}) {
		t.Errorf("ids = %v", ids)
	}
	var le *source.AgentListError
	if !errors.As(err, &le) || !le.Invalid() {
		t.Fatalf("err = %v", err)
	}
	want := `agents.txt: 5: "not-a-guid" is not a GUID; 6: ` + agentA + ` duplicates entry 2`
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
}

// watchedFile is an agent file and a watcher of it running until the test
// ends, recording every list it applies.
type watchedFile struct {
	t       *testing.T
	path    string
	mu      sync.Mutex
	applied [][]string
}

// watchFile writes content to a new agent file and starts a watcher of it
// with current as the list in force.
func watchFile(t *testing.T, content string, current []string) *watchedFile {
	f := &watchedFile{t: t, path: filepath.Join(t.TempDir(), "agents")}
	f.write(content)
	w := &source.AgentFileWatcher{Path: f.path, Every: 10 * time.Millisecond, Current: current, Apply: func(ids []string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.applied = append(f.applied, ids)
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// write replaces the file's content at once (a rename).
func (f *watchedFile) write(s string) {
	f.t.Helper()
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		f.t.Fatal(err)
	}
}

// lists returns the lists applied so far.
func (f *watchedFile) lists() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applied)
}

// last returns the list applied last (nil: none yet).
func (f *watchedFile) last() []string {
	l := f.lists()
	if len(l) == 0 {
		return nil
	}
	return l[len(l)-1]
}

func TestAgentFileWatcherAppliesChanges(t *testing.T) {
	f := watchFile(t, agentA+"\n", nil)
	testwait.Until(t, 2*time.Second, "initial list applied", func() bool { return len(f.last()) == 1 })
	f.write(agentA + "\n" + agentB + "\n")
	testwait.Until(t, 2*time.Second, "added agent applied", func() bool { return len(f.last()) == 2 })
	f.write(agentB + "\nbroken\n")
	f.write(agentB + "\n")
	testwait.Until(t, 2*time.Second, "removed agent applied", func() bool { return reflect.DeepEqual(f.last(), []string{agentB}) })
	// The file with an invalid line was never applied.
	if want := [][]string{{agentA}, {agentA, agentB}, {agentB}}; !reflect.DeepEqual(f.lists(), want) {
		t.Errorf("applied %v, want %v", f.lists(), want)
	}
}

// A watcher given the list in force applies only a file whose list
// differs from it: neither the first read of the same list nor a rewrite
// that changes only comments is applied.
func TestAgentFileWatcherSkipsTheListInForce(t *testing.T) {
	f := watchFile(t, agentA+"\n", []string{agentA})
	f.write("# the Lisbon site\n" + agentA + "\n")
	f.write(agentA + "\n" + agentB + "\n")
	testwait.Until(t, 2*time.Second, "added agent applied", func() bool { return len(f.last()) == 2 })
	if want := [][]string{{agentA, agentB}}; !reflect.DeepEqual(f.lists(), want) {
		t.Errorf("applied %v, want %v", f.lists(), want)
	}
}
