// Command routing-view keeps every agent's current presence in memory, the
// way a routing engine would: it loads each agent's state from the bridge's
// key-value bucket, then applies live presence.changed events from the
// stream, printing the view and every change.
//
// The recipe (see README.md): read the bucket, then follow
// <prefix>.*.presence.changed with an ordered consumer that starts with the
// last message of each subject (DeliverLastPerSubject), and apply an event
// only if its sequence extension is above the sequence the view holds for
// that agent. The bucket may lag the stream by the events in flight; the
// last-per-subject start covers them, and the sequence check drops what
// the bucket already reflects.
//
//	go run ./examples/routing-view -nats nats://127.0.0.1:4222
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// options names the stream, subjects and bucket of the bridge.
type options struct {
	Stream        string
	SubjectPrefix string
	Bucket        string
}

// presence is a presence as the bridge reports it.
type presence struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	BaseStatus string `json:"baseStatus"`
}

func (p *presence) String() string {
	switch {
	case p == nil:
		return "(none)"
	case p.BaseStatus == "" || p.BaseStatus == p.Name:
		return p.Name
	default:
		return p.Name + " (" + p.BaseStatus + ")"
	}
}

// agent is one agent in the view. It reads only the fields it needs from
// the bucket's value and from presence.changed data.
type agent struct {
	ID       string    `json:"agentId"`
	Name     string    `json:"agentName"`
	Presence *presence `json:"presence"`
	Sequence uint64    `json:"sequence"`
}

type presenceChanged struct {
	AgentName string   `json:"agentName"`
	Current   presence `json:"current"`
}

func main() {
	url := flag.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	var opts options
	flag.StringVar(&opts.Stream, "stream", "CCAAS_AGENTS", "stream of the bridge's events")
	flag.StringVar(&opts.SubjectPrefix, "prefix", "ccaas.agents", "subject prefix of the bridge's events")
	flag.StringVar(&opts.Bucket, "bucket", "ccaas_agents", "key-value bucket of the agents' current state")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := connectAndRun(ctx, *url, opts); err != nil {
		fmt.Fprintln(os.Stderr, "routing-view:", err)
		os.Exit(1)
	}
}

// connectAndRun is repeated in each example on purpose: each is a standalone program.
func connectAndRun(ctx context.Context, url string, opts options) error {
	nc, err := nats.Connect(url, nats.Name("routing-view"))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	return run(ctx, nc, opts, os.Stdout)
}

// run prints the view loaded from the bucket, then one line per applied
// presence change, until ctx is done.
func run(ctx context.Context, nc *nats.Conn, opts options, w io.Writer) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("open jetstream: %w", err)
	}
	view, err := load(ctx, js, opts.Bucket)
	if err != nil {
		return err
	}
	printView(w, view)

	cons, err := js.OrderedConsumer(ctx, opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{opts.SubjectPrefix + ".*.presence.changed"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("create ordered consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume presence changes: %w", err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read presence changes: %w", err)
		}
		if err := apply(ctx, view, msg, w); err != nil {
			return err
		}
	}
}

// load reads every agent's state from the bucket.
func load(ctx context.Context, js jetstream.JetStream, bucket string) (map[string]*agent, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, fmt.Errorf("list agents in bucket %s: %w", bucket, err)
	}
	view := make(map[string]*agent, len(keys))
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted since listing
		}
		if err != nil {
			return nil, fmt.Errorf("get agent %s: %w", k, err)
		}
		a := &agent{}
		if err := json.Unmarshal(e.Value(), a); err != nil {
			return nil, fmt.Errorf("decode state of agent %s: %w", k, err)
		}
		a.ID = k
		view[k] = a
	}
	return view, nil
}

// apply updates the view with one presence.changed event if it is newer
// than what the view holds for the agent, and prints the change.
func apply(ctx context.Context, view map[string]*agent, msg jetstream.Msg, w io.Writer) error {
	ev, err := decodeEvent(ctx, msg)
	if err != nil {
		return fmt.Errorf("decode event on %s: %w", msg.Subject(), err)
	}
	seqText, _ := ev.Extensions()["sequence"].(string)
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return fmt.Errorf("event %s: sequence extension %q: %w", ev.ID(), seqText, err)
	}
	var data presenceChanged
	if err := ev.DataAs(&data); err != nil {
		return fmt.Errorf("decode data of event %s: %w", ev.ID(), err)
	}
	a, ok := view[ev.Subject()]
	if !ok {
		a = &agent{ID: ev.Subject()}
		view[ev.Subject()] = a
	}
	if ok && seq <= a.Sequence {
		return nil // the bucket already reflects this event
	}
	prev := a.Presence
	cur := data.Current
	a.Name, a.Presence, a.Sequence = data.AgentName, &cur, seq
	if _, err := fmt.Fprintf(w, "%s  %s → %s  seq %d\n", a.Name, prev, a.Presence, seq); err != nil {
		return fmt.Errorf("write change: %w", err)
	}
	return nil
}

func printView(w io.Writer, view map[string]*agent) {
	agents := make([]*agent, 0, len(view))
	for _, a := range view {
		agents = append(agents, a)
	}
	sort.Slice(agents, func(i, j int) bool { return agents[i].Name < agents[j].Name })
	fmt.Fprintf(w, "%d agents\n", len(agents))
	for _, a := range agents {
		fmt.Fprintf(w, "%s  %s  seq %d\n", a.Name, a.Presence, a.Sequence)
	}
	fmt.Fprintln(w, "live:")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
