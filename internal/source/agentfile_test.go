package source_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
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

func TestAgentFileWatcherAppliesChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agents")
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(agentA + "\n")
	var mu sync.Mutex
	var applied [][]string
	w := &source.AgentFileWatcher{Path: path, Every: 10 * time.Millisecond, Apply: func(ids []string) {
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, ids)
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	last := func() []string {
		mu.Lock()
		defer mu.Unlock()
		if len(applied) == 0 {
			return nil
		}
		return applied[len(applied)-1]
	}
	testwait.Until(t, 2*time.Second, "initial list applied", func() bool { return len(last()) == 1 })
	write(agentA + "\n" + agentB + "\n")
	testwait.Until(t, 2*time.Second, "added agent applied", func() bool { return len(last()) == 2 })
	write(agentB + "\nbroken\n")
	write(agentB + "\n")
	testwait.Until(t, 2*time.Second, "removed agent applied", func() bool { return reflect.DeepEqual(last(), []string{agentB}) })
	mu.Lock()
	defer mu.Unlock()
	// The file with an invalid line was never applied.
	if want := [][]string{{agentA}, {agentA, agentB}, {agentB}}; !reflect.DeepEqual(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
}

// A watcher given the list in force applies only a file whose list
// differs from it: neither the first read of the same list nor a rewrite
// that changes only comments is applied.
func TestAgentFileWatcherSkipsTheListInForce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agents")
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(agentA + "\n")
	var mu sync.Mutex
	var applied [][]string
	w := &source.AgentFileWatcher{Path: path, Every: 10 * time.Millisecond, Current: []string{agentA}, Apply: func(ids []string) {
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, ids)
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	write("# the Lisbon site\n" + agentA + "\n")
	write(agentA + "\n" + agentB + "\n")
	testwait.Until(t, 2*time.Second, "added agent applied", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(applied) > 0 && len(applied[len(applied)-1]) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if want := [][]string{{agentA, agentB}}; !reflect.DeepEqual(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
}
