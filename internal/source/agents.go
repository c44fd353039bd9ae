package source

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
)

// AgentListProblem is one bad entry of an agent list.
type AgentListProblem struct {
	// Line is the 1-based line of a file, or the 1-based position in a
	// comma-separated list.
	Line int
	// Text is the entry as written (bounded).
	Text string
	// Duplicate is true when the entry is a valid GUID already listed
	// (FirstLine); false when it is not a GUID.
	Duplicate bool
	// FirstLine is where a duplicate was first listed.
	FirstLine int
}

// String returns the problem with its line number.
func (p AgentListProblem) String() string {
	if p.Duplicate {
		return fmt.Sprintf("%d: %s duplicates entry %d", p.Line, p.Text, p.FirstLine)
	}
	return fmt.Sprintf("%d: %q is not a GUID", p.Line, p.Text)
}

// AgentListError lists the problems of an agent list. The list's valid,
// de-duplicated IDs are returned beside it.
type AgentListError struct {
	// Source names the list (a file name or "agent IDs").
	Source   string
	Problems []AgentListProblem
}

// Error lists every problem with its line.
func (e *AgentListError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return fmt.Sprintf("%s: %s", e.Source, strings.Join(parts, "; "))
}

// Invalid reports whether some entry is not a GUID (as opposed to only
// duplicates, which are harmless once removed).
func (e *AgentListError) Invalid() bool {
	for _, p := range e.Problems {
		if !p.Duplicate {
			return true
		}
	}
	return false
}

type agentCollector struct {
	ids      []string
	seen     map[string]int
	problems []AgentListProblem
}

func (c *agentCollector) add(line int, raw string) {
	if len(raw) == 38 && raw[0] == '{' && raw[37] == '}' {
		raw = raw[1:37] // braces, as Dataverse shows GUIDs
	}
	id, ok := NormalizeGUID(raw)
	if !ok {
		c.problems = append(c.problems, AgentListProblem{Line: line, Text: truncate(raw)})
		return
	}
	if first, dup := c.seen[id]; dup {
		c.problems = append(c.problems, AgentListProblem{Line: line, Text: id, Duplicate: true, FirstLine: first})
		return
	}
	c.seen[id] = line
	c.ids = append(c.ids, id)
}

func (c *agentCollector) result(source string) ([]string, error) {
	if len(c.problems) > 0 {
		return c.ids, &AgentListError{Source: source, Problems: c.problems}
	}
	return c.ids, nil
}

// ParseAgentFile parses an agent file (BRIDGE_AGENT_IDS_FILE): one GUID a
// line; blank lines and everything after a '#' ignored. It returns the
// valid IDs, lower-case and de-duplicated in order, and an *AgentListError
// naming each invalid or duplicate line by number.
func ParseAgentFile(name string, r io.Reader) ([]string, error) {
	c := agentCollector{seen: map[string]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		if text = strings.TrimSpace(text); text != "" {
			c.add(line, text)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read agent file %s: %w", name, err)
	}
	return c.result(name)
}

// LoadAgentFile reads and parses an agent file.
func LoadAgentFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read agent file: %w", err)
	}
	return ParseAgentFile(path, bytes.NewReader(b))
}

// AgentFileWatcher re-reads an agent file when it changes and hands the new
// list to Apply (normally Poller.SetAgents). A file with lines that are not
// GUIDs is not applied (the previous list stays) and its problems are
// logged; duplicates are logged and dropped.
type AgentFileWatcher struct {
	// Path is the agent file.
	Path string
	// Every is how often the file is checked; default 5s.
	Every time.Duration
	// Apply receives each new list.
	Apply func(ids []string)
	// Current is the list in force when Run starts (the one the bridge
	// loaded from Path); may be nil. A read that parses to the list in
	// force is not applied, so its strings stay the only copy held.
	Current []string
	// Logger receives a line per change and per rejected file.
	Logger *slog.Logger
}

// Run reads the file now and then every Every until ctx is done, calling
// Apply with each valid list read that differs from the list in force
// (Current, then the last applied). Only a hash of the last content read
// is kept: a file that did not change is not parsed again.
func (w *AgentFileWatcher) Run(ctx context.Context) {
	every := w.Every
	if every <= 0 {
		every = 5 * time.Second
	}
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	current := w.Current
	seed := maphash.MakeSeed()
	var last uint64 // hash of the content last read, when read
	read := false
	t := time.NewTicker(every)
	defer t.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		b, err := os.ReadFile(w.Path)
		if err != nil {
			if read {
				log.Warn("agent file unreadable; keeping the current agents", "path", w.Path, "err", err)
				read = false
			}
			continue
		}
		sum := maphash.Bytes(seed, b)
		if read && sum == last {
			continue
		}
		last, read = sum, true
		ids, err := ParseAgentFile(w.Path, bytes.NewReader(b))
		var le *AgentListError
		switch {
		case errors.As(err, &le) && le.Invalid():
			log.Error("agent file has invalid lines; keeping the current agents", "path", w.Path, "err", err)
			continue
		case err != nil && le == nil:
			log.Error("agent file unreadable; keeping the current agents", "path", w.Path, "err", err)
			continue
		case err != nil:
			log.Warn("agent file has duplicate lines; each agent is polled once", "path", w.Path, "err", err)
		}
		if slices.Equal(ids, current) {
			continue
		}
		log.Info("agent file changed", "path", w.Path, "agents", len(ids))
		current = ids
		w.Apply(ids)
	}
}
