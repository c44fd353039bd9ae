package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"unicode"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/schemas"
)

// NormalizeAgentID returns an agent ID in the contract's form, accepting
// braces ({GUID}); false when s is not a GUID. See config.NormalizeAgentID.
func NormalizeAgentID(s string) (string, bool) { return config.NormalizeAgentID(s) }

// EventTypes returns the contract's event types, sorted: every type with a
// data schema in schemas/.
func EventTypes() []string {
	names, _ := fs.Glob(schemas.FS(), "*.schema.json") // the pattern is valid
	out := make([]string, 0, len(names))
	for _, n := range names {
		if t := strings.TrimSuffix(n, ".schema.json"); t != schemas.AgentState {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// CheckType accepts an empty type (all types) or one of EventTypes; for
// anything else the error lists the types and suggests the closest.
func CheckType(t string) error {
	if t == "" {
		return nil
	}
	types := EventTypes()
	for _, k := range types {
		if k == t {
			return nil
		}
	}
	if best, d := closest(strings.ToLower(t), types); d <= len(best)/3 {
		return fmt.Errorf("unknown event type %q: did you mean %s? (types: %s)", t, best, strings.Join(types, ", "))
	}
	return fmt.Errorf("unknown event type %q (types: %s)", t, strings.Join(types, ", "))
}

// AgentNotFoundError says that --agent matched no agent, or several.
type AgentNotFoundError struct {
	// Query is what was asked for.
	Query string
	// Matches are close candidates, "Name (id)", best first.
	Matches []string
	// Ambiguous is set when Matches all fit the query equally.
	Ambiguous bool
	// Bucket is the state bucket searched.
	Bucket string
}

// Error lists the candidates.
func (e *AgentNotFoundError) Error() string {
	switch {
	case e.Ambiguous:
		return fmt.Sprintf("agent %q matches %d agents: %s; give the agent's ID or full name", e.Query, len(e.Matches), strings.Join(e.Matches, ", "))
	case len(e.Matches) > 0:
		return fmt.Sprintf("no agent named %q in bucket %s; close matches: %s", e.Query, e.Bucket, strings.Join(e.Matches, ", "))
	default:
		return fmt.Sprintf("no agent named %q in bucket %s (bridge state lists every agent)", e.Query, e.Bucket)
	}
}

// ResolveAgent turns an --agent value into an agent ID. A GUID (braces
// accepted) is returned lower-case without a lookup; anything else is a
// name looked up among the agents of the state bucket: a full name, or a
// single word of a name ("Olga"), case and accents ignored. No match, or
// more than one, gives an *AgentNotFoundError listing close matches.
func ResolveAgent(ctx context.Context, kv jetstream.KeyValue, query string) (string, error) {
	if id, ok := NormalizeAgentID(query); ok {
		return id, nil
	}
	if strings.TrimSpace(query) == "" {
		return "", errors.New("agent: empty name")
	}
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return "", fmt.Errorf("list agents in bucket %s: %w", kv.Bucket(), err)
	}
	type agent struct{ id, name string }
	var agents []agent
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("get agent %s from bucket %s: %w", k, kv.Bucket(), err)
		}
		var v struct {
			AgentName string `json:"agentName"`
		}
		if json.Unmarshal(e.Value(), &v) != nil || v.AgentName == "" {
			continue // foreign or nameless values cannot match a name
		}
		agents = append(agents, agent{k, v.AgentName})
	}
	sort.Slice(agents, func(i, j int) bool { return agents[i].name < agents[j].name })
	q := fold(query)
	label := func(a agent) string { return a.name + " (" + a.id + ")" }
	var full, word []agent
	for _, a := range agents {
		n := fold(a.name)
		if n == q {
			full = append(full, a)
		} else if containsWord(n, q) {
			word = append(word, a)
		}
	}
	for _, m := range [][]agent{full, word} {
		switch {
		case len(m) == 1:
			return m[0].id, nil
		case len(m) > 1:
			e := &AgentNotFoundError{Query: query, Ambiguous: true, Bucket: kv.Bucket()}
			for _, a := range m {
				e.Matches = append(e.Matches, label(a))
			}
			return "", e
		}
	}
	// No match: offer names that contain the query, or are a few edits away
	// from the name or one of its words.
	type scored struct {
		a agent
		d int
	}
	var near []scored
	for _, a := range agents {
		n := fold(a.name)
		d := levenshtein(q, n)
		for _, w := range strings.Fields(n) {
			d = min(d, levenshtein(q, w))
		}
		if strings.Contains(n, q) {
			d = 0
		}
		if d <= max(1, len(q)/3) {
			near = append(near, scored{a, d})
		}
	}
	sort.SliceStable(near, func(i, j int) bool { return near[i].d < near[j].d })
	e := &AgentNotFoundError{Query: query, Bucket: kv.Bucket()}
	for i, s := range near {
		if i == 5 {
			break
		}
		e.Matches = append(e.Matches, label(s.a))
	}
	return "", e
}

// fold lower-cases s, drops accents and collapses white space, so "  garcía"
// and "Garcia" compare equal.
func fold(s string) string {
	t := transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)
	out, _, err := transform.String(t, s)
	if err != nil {
		out = s
	}
	return strings.Join(strings.Fields(strings.ToLower(out)), " ")
}

func containsWord(name, q string) bool {
	for _, w := range strings.Fields(name) {
		if w == q {
			return true
		}
	}
	return false
}

// closest returns the candidate nearest to s by edit distance.
func closest(s string, candidates []string) (string, int) {
	best, bd := "", -1
	for _, c := range candidates {
		if d := levenshtein(s, c); bd < 0 || d < bd {
			best, bd = c, d
		}
	}
	return best, bd
}

// levenshtein is the edit distance between a and b, in runes.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
