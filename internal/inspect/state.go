package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// State writes the current-state bucket as a table to w, one row per agent
// sorted by agent name then ID, or only the row of agent when it is not
// empty. Columns: agent name, agent ID, presence (with its base status),
// since when, browser sessions, flags (offline, unattended, stale), and the
// sequence of the agent's last event. Values are read loosely as the JSON
// of schemas/agent-state.schema.json; fields missing from a value are
// shown as "-"; strings are shown through Printable.
func State(ctx context.Context, kv jetstream.KeyValue, agent string, w io.Writer) error {
	var keys []string
	if agent != "" {
		keys = []string{strings.ToLower(agent)}
	} else {
		var err error
		keys, err = kv.Keys(ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			return fmt.Errorf("list keys of bucket %s: %w", kv.Bucket(), err)
		}
	}

	rows := make([]stateRow, 0, len(keys))
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) && agent != "" {
			return fmt.Errorf("agent %s: not in bucket %s", agent, kv.Bucket())
		}
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted between listing and reading
		}
		if err != nil {
			return fmt.Errorf("get agent %s from bucket %s: %w", k, kv.Bucket(), err)
		}
		var v map[string]any
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			return fmt.Errorf("decode state of agent %s: %w", k, err)
		}
		rows = append(rows, newStateRow(k, v))
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].name != rows[j].name {
			return rows[i].name < rows[j].name
		}
		return rows[i].id < rows[j].id
	})

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tID\tPRESENCE\tSINCE\tSESSIONS\tFLAGS\tSEQ")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", Printable(r.name), Printable(r.id), Printable(r.presence), r.since, r.sessions, r.flags, r.seq)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write state table: %w", err)
	}
	return nil
}

type stateRow struct {
	name, id, presence, since, sessions, flags, seq string
}

func newStateRow(key string, v map[string]any) stateRow {
	r := stateRow{name: dash(str(v["agentName"])), id: str(v["agentId"])}
	if r.id == "" {
		r.id = key
	}
	r.presence = "-"
	if p, ok := v["presence"]; ok {
		r.presence = presenceLabel(p)
	}
	r.since = "-"
	if t, err := time.Parse(time.RFC3339Nano, str(v["presenceSince"])); err == nil {
		r.since = t.UTC().Format(time.RFC3339)
	}
	r.sessions = "-"
	if s, ok := v["sessions"]; ok {
		r.sessions = sessionsLabel(s)
	}
	var flags []string
	for _, f := range []string{"offline", "unattended", "stale"} {
		if b, _ := v[f].(bool); b {
			flags = append(flags, f)
		}
	}
	r.flags = dash(strings.Join(flags, ","))
	r.seq = "-"
	if n, ok := v["sequence"].(float64); ok {
		r.seq = fmt.Sprint(uint64(n))
	}
	return r
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
