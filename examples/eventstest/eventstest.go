// Package eventstest supports the tests of the examples: an in-process
// JetStream server holding the bridge's stream, and a publisher of known
// CloudEvents encoded exactly as the bridge encodes them (binary content
// mode of the CloudEvents NATS binding with every ce- header value
// percent-encoded, ID as Nats-Msg-Id). It uses only public libraries, like
// the examples themselves.
package eventstest

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The contract's defaults, spelled here on purpose (public libraries only);
// TestExamplesUseTheContractsNames (cmd/bridge) keeps them those of the bridge.
const (
	Stream        = "CCAAS_AGENTS"
	SubjectPrefix = "ccaas.agents"
	StateBucket   = "ccaas_agents"
	// Org is the organisation; an event's source is its agent's Dataverse
	// URI under it (AgentSource).
	Org = "https://contoso.crm.dynamics.com"
	// BridgeVersion is the bridgeversion of the test events; its space
	// travels percent-encoded, so a consumer that does not percent-decode
	// shows it wrongly.
	BridgeVersion = "v0.0.0 (test)"
)

// AgentSource returns the CloudEvent source of an agent's events:
// <org>/api/data/v9.2/systemusers(<agentId>).
func AgentSource(agent string) string {
	return Org + "/api/data/v9.2/systemusers(" + agent + ")"
}

// StartJetStream runs an in-process JetStream server for one test, creates
// the stream capturing SubjectPrefix.> and returns a connection to it.
// It does not use internal/natstest on purpose: public libraries only.
func StartJetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatalf("new nats server: %v", err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: Stream, Subjects: []string{SubjectPrefix + ".>"},
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return nc, js
}

// Event is a known event to publish.
type Event struct {
	Agent string    // agent ID, lower-case GUID
	Type  string    // CloudEvent type, e.g. "presence.changed"
	Seq   uint64    // the agent's event sequence
	Time  time.Time // observation time
	Data  string    // JSON data
}

// CloudEvent returns e as the bridge would build it.
func (e Event) CloudEvent(t *testing.T) event.Event {
	t.Helper()
	ce := event.New()
	ce.SetID(fmt.Sprintf("%s-%d", e.Agent, e.Seq))
	ce.SetSource(AgentSource(e.Agent))
	ce.SetType(e.Type)
	ce.SetSubject(e.Agent)
	ce.SetTime(e.Time)
	ce.SetDataSchema("https://raw.githubusercontent.com/ccaas/presence-bridge/main/schemas/" + e.Type + ".schema.json")
	ce.SetExtension("sequence", fmt.Sprintf("%020d", e.Seq))
	ce.SetExtension("bridgeversion", BridgeVersion)
	if err := ce.SetData(event.ApplicationJSON, []byte(e.Data)); err != nil {
		t.Fatal(err)
	}
	return ce
}

// Publish publishes events in order to SubjectPrefix.<agent>.<type>, in
// binary content mode (header values percent-encoded) with the event ID as
// Nats-Msg-Id, waiting for each ack.
func Publish(t *testing.T, js jetstream.JetStream, events ...Event) {
	t.Helper()
	for _, e := range events {
		ce := e.CloudEvent(t)
		var body bytes.Buffer
		hdr, err := cejs.WriteMsg(t.Context(), binding.ToMessage(&ce), &body)
		if err != nil {
			t.Fatalf("encode event: %v", err)
		}
		for k, vs := range hdr {
			if strings.HasPrefix(k, "ce-") {
				for i, v := range vs {
					vs[i] = PercentEncode(v)
				}
			}
		}
		msg := &nats.Msg{Subject: SubjectPrefix + "." + e.Agent + "." + e.Type, Header: hdr, Data: body.Bytes()}
		if _, err := js.PublishMsg(t.Context(), msg, jetstream.WithMsgID(ce.ID())); err != nil {
			t.Fatalf("publish event: %v", err)
		}
	}
}

// WaitConsumers waits until the stream has at least n consumers.
func WaitConsumers(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := js.Stream(t.Context(), Stream)
		if err != nil {
			t.Fatal(err)
		}
		if s.CachedInfo().State.Consumers >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d consumers", n)
		}
		<-tick.C
	}
}

// LineBuffer is an io.Writer safe for concurrent use whose content a test
// can wait on.
type LineBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
}

// NewLineBuffer returns an empty LineBuffer.
func NewLineBuffer() *LineBuffer { return &LineBuffer{wrote: make(chan struct{}, 1)} }

// Write appends p.
func (b *LineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	select {
	case b.wrote <- struct{}{}:
	default:
	}
	return n, err
}

// String returns everything written so far.
func (b *LineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitLines waits until the buffer holds at least n lines.
func (b *LineBuffer) WaitLines(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(time.Minute)
	for strings.Count(b.String(), "\n") < n {
		select {
		case <-b.wrote:
		case <-deadline:
			t.Fatalf("timed out waiting for %d lines; have:\n%s", n, b.String())
		}
	}
}

// PercentEncode encodes a header value as the CloudEvents NATS binding
// requires: space, double quote, percent and every byte outside printable
// US-ASCII become %XY (upper-case hex of each UTF-8 byte).
func PercentEncode(v string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7F || c == '"' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0x0F])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
