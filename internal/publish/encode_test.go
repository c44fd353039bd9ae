package publish

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/detector"
)

// testPresence and testData mirror the shape of a presence.changed payload
// so the tests and benchmarks encode real-sized events.
type testPresence struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	BaseStatus string `json:"baseStatus"`
}

type testData struct {
	AgentID                 string        `json:"agentId"`
	AgentName               string        `json:"agentName"`
	Previous                *testPresence `json:"previous"`
	Current                 testPresence  `json:"current"`
	PreviousSince           *time.Time    `json:"previousSince"`
	PreviousDurationSeconds *float64      `json:"previousDurationSeconds"`
	Unattended              bool          `json:"unattended"`
	Offline                 bool          `json:"offline"`
}

var testTypes = []string{"presence.changed", "sessions.changed", "channels.changed", "agent.offline", "presence.snapshot"}

func testAgentID(i int) string {
	return fmt.Sprintf("%08x-a4d4-ee11-904c-%012x", i, i*7919)
}

// testEvent builds a realistic event of agent i with the given sequence.
func testEvent(r *rand.Rand, i int, seq uint64) detector.Event {
	agent := testAgentID(i)
	since := time.Date(2026, 3, 1, 8, 0, 0, r.IntN(1e9), time.UTC)
	dur := r.Float64() * 3600
	ts := time.Date(2026, 3, 1, 9, r.IntN(60), r.IntN(60), 0, time.FixedZone("X", 3600))
	if r.IntN(2) == 0 {
		ts = ts.Add(time.Duration(r.IntN(1e9)))
	}
	return detector.Event{
		ID:       fmt.Sprintf("%s-%d", agent, seq),
		Type:     testTypes[r.IntN(len(testTypes))],
		AgentID:  agent,
		Sequence: seq,
		Time:     ts,
		Data: testData{
			AgentID:                 agent,
			AgentName:               fmt.Sprintf("Agent Number %d", i),
			Previous:                &testPresence{ID: "f523f628-c07a-e811-8162-000d3aa11f50", Name: "Available", BaseStatus: "Available"},
			Current:                 testPresence{ID: "efdeb843-c07a-e811-8162-000d3aa11f50", Name: "Busy", BaseStatus: "Busy"},
			PreviousSince:           &since,
			PreviousDurationSeconds: &dur,
		},
	}
}

func testEncoder(t testing.TB) *Encoder {
	t.Helper()
	enc, err := NewEncoder(EncoderOptions{Source: "https://contoso.crm.dynamics.com", BridgeVersion: "v1.2.3-test"})
	if err != nil {
		t.Fatalf("new encoder: %v", err)
	}
	return enc
}

// TestEncodeMatchesSDKWriteMsg compares Encode with the SDK's WriteMsg over
// 2,000 random events. With the default organisation nothing in a header
// needs percent-encoding, so Encode must equal WriteMsg's raw output byte
// for byte; with organisations and versions that do, it must equal WriteMsg
// followed by the binding's percent-encoding (EncodeSDK), and decode to the
// SDK's event.
func TestEncodeMatchesSDKWriteMsg(t *testing.T) {
	encoders := []*Encoder{testEncoder(t)}
	for _, o := range []EncoderOptions{
		{Source: "https://contoso.example/my%20org/", BridgeVersion: `v1 "quoted"`},
		{Source: "https://ünïcode.example", BridgeVersion: "v€"},
	} {
		enc, err := NewEncoder(o)
		if err != nil {
			t.Fatal(err)
		}
		encoders = append(encoders, enc)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 2000 {
		enc := encoders[n%len(encoders)]
		ev := testEvent(r, r.IntN(10000), uint64(r.Int64N(1<<62))+uint64(n%2))
		got, err := enc.Encode(ev)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		want, err := enc.EncodeSDK(context.Background(), ev)
		if err != nil {
			t.Fatalf("encode with SDK: %v", err)
		}
		if got.Subject != want.Subject {
			t.Fatalf("subject %q, SDK path %q", got.Subject, want.Subject)
		}
		if !reflect.DeepEqual(got.Header, want.Header) {
			t.Fatalf("event %d headers differ:\nfast %v\nSDK  %v", n, got.Header, want.Header)
		}
		if enc == encoders[0] {
			raw := rawSDKHeader(t, enc, ev)
			if !reflect.DeepEqual(got.Header, raw) {
				t.Fatalf("event %d headers differ from WriteMsg's:\nfast %v\nSDK  %v", n, got.Header, raw)
			}
		}
		if string(got.Data) != string(want.Data) {
			t.Fatalf("event %d bodies differ:\nfast %s\nSDK  %s", n, got.Data, want.Data)
		}
		if _, size := enc.encode(ev, got.Data); size != headerSize(got.Header) {
			t.Fatalf("event %d: encode gives a header size of %d, its header takes %d", n, size, headerSize(got.Header))
		}

		ce, err := Decode(got)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		ref, err := enc.CloudEvent(ev)
		if err != nil {
			t.Fatalf("cloudevent: %v", err)
		}
		if !sameEvent(ce, &ref) {
			t.Fatalf("decoded event differs:\ngot  %s\nwant %s", ce, &ref)
		}
		seq, err := ParseSequence(ce)
		if err != nil || seq != ev.Sequence {
			t.Fatalf("sequence = %d, %v; want %d", seq, err, ev.Sequence)
		}
	}
}

// rawSDKHeader is WriteMsg's header of ev, untouched, with Nats-Msg-Id.
func rawSDKHeader(t *testing.T, enc *Encoder, ev detector.Event) nats.Header {
	t.Helper()
	ce, err := enc.CloudEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	h, err := cejs.WriteMsg(binding.WithForceBinary(context.Background()), binding.ToMessage(&ce), &body)
	if err != nil {
		t.Fatal(err)
	}
	h.Set(jetstream.MsgIDHeader, ev.ID)
	return h
}

// TestSourceNamesTheAgent checks that the source is the agent's Dataverse
// URI, percent-encoded on the wire, read back as it was meant by the
// spec-following Decode and differently by a decoder that skips the
// percent-decoding.
func TestSourceNamesTheAgent(t *testing.T) {
	const agent = "394382b6-a4d4-ee11-904c-00224808a166"
	tests := []struct {
		org, wantSource, wantHeader string
	}{
		{"https://contoso.crm.dynamics.com", "https://contoso.crm.dynamics.com/api/data/v9.2/systemusers(" + agent + ")", "https://contoso.crm.dynamics.com/api/data/v9.2/systemusers(" + agent + ")"},
		{"https://contoso.crm.dynamics.com/", "https://contoso.crm.dynamics.com/api/data/v9.2/systemusers(" + agent + ")", "https://contoso.crm.dynamics.com/api/data/v9.2/systemusers(" + agent + ")"},
		{"https://proxy.example/my%20org", "https://proxy.example/my%20org/api/data/v9.2/systemusers(" + agent + ")", "https://proxy.example/my%2520org/api/data/v9.2/systemusers(" + agent + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.org, func(t *testing.T) {
			enc, err := NewEncoder(EncoderOptions{Source: tt.org, BridgeVersion: "v"})
			if err != nil {
				t.Fatal(err)
			}
			if got := enc.Source(agent); got != tt.wantSource {
				t.Errorf("Source = %q, want %q", got, tt.wantSource)
			}
			msg, err := enc.Encode(detector.Event{ID: agent + "-1", Type: "agent.online", AgentID: agent, Sequence: 1, Time: time.Unix(1, 0), Data: map[string]string{}})
			if err != nil {
				t.Fatal(err)
			}
			if got := msg.Header.Get("ce-source"); got != tt.wantHeader {
				t.Errorf("ce-source header %q, want %q", got, tt.wantHeader)
			}
			ce, err := Decode(msg)
			if err != nil {
				t.Fatal(err)
			}
			if ce.Source() != tt.wantSource {
				t.Errorf("decoded source %q, want %q", ce.Source(), tt.wantSource)
			}
			naive, err := binding.ToEvent(context.Background(), cejs.NewMessage(msg))
			if err != nil {
				t.Fatal(err)
			}
			if wantSame := tt.wantHeader == tt.wantSource; (naive.Source() == tt.wantSource) != wantSame {
				t.Errorf("a decoder without percent-decoding reads %q", naive.Source())
			}
		})
	}
}

// sameEvent compares the attributes, extensions and data of two CloudEvents.
func sameEvent(a, b *event.Event) bool {
	return a.SpecVersion() == b.SpecVersion() && a.ID() == b.ID() && a.Source() == b.Source() &&
		a.Type() == b.Type() && a.Subject() == b.Subject() && a.Time().Equal(b.Time()) &&
		a.DataSchema() == b.DataSchema() && a.DataContentType() == b.DataContentType() &&
		reflect.DeepEqual(a.Extensions(), b.Extensions()) && string(a.Data()) == string(b.Data())
}

func TestEncodeAttributes(t *testing.T) {
	enc := testEncoder(t)
	ev := detector.Event{
		ID: "394382b6-a4d4-ee11-904c-00224808a166-7", Type: "presence.changed",
		AgentID: "394382b6-a4d4-ee11-904c-00224808a166", Sequence: 7,
		Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("CET", 3600)),
		Data: map[string]any{"agentId": "394382b6-a4d4-ee11-904c-00224808a166"},
	}
	msg, err := enc.Encode(ev)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	want := map[string]string{
		"ce-specversion":     "1.0",
		"ce-id":              ev.ID,
		"ce-source":          "https://contoso.crm.dynamics.com/api/data/v9.2/systemusers(394382b6-a4d4-ee11-904c-00224808a166)",
		"ce-type":            "presence.changed",
		"ce-subject":         ev.AgentID,
		"ce-time":            "2026-01-02T02:04:05.0000006Z",
		"ce-datacontenttype": "application/json",
		"ce-dataschema":      "https://raw.githubusercontent.com/ccaas/presence-bridge/main/schemas/presence.changed.schema.json",
		"ce-sequence":        "00000000000000000007",
		"ce-bridgeversion":   "v1.2.3-test",
		"Nats-Msg-Id":        ev.ID,
	}
	if len(msg.Header) != len(want) {
		t.Errorf("headers %v, want %d of them", msg.Header, len(want))
	}
	for k, v := range want {
		if got := msg.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if msg.Subject != "ccaas.agents.394382b6-a4d4-ee11-904c-00224808a166.presence.changed" {
		t.Errorf("subject %q", msg.Subject)
	}
	if string(msg.Data) != `{"agentId":"394382b6-a4d4-ee11-904c-00224808a166"}` {
		t.Errorf("data %s", msg.Data)
	}
}

func TestEncodeRejectsInvalidEvents(t *testing.T) {
	enc := testEncoder(t)
	good := detector.Event{ID: "a-1", Type: "presence.changed", AgentID: "a", Sequence: 1, Time: time.Unix(1, 0), Data: 1}
	tests := []struct {
		name   string
		mutate func(*detector.Event)
	}{
		{"no id", func(e *detector.Event) { e.ID = "" }},
		{"no agent", func(e *detector.Event) { e.AgentID = "" }},
		{"no type", func(e *detector.Event) { e.Type = "" }},
		{"no time", func(e *detector.Event) { e.Time = time.Time{} }},
		{"dot in agent", func(e *detector.Event) { e.AgentID = "a.b" }},
		{"wildcard in agent", func(e *detector.Event) { e.AgentID = "*" }},
		{"data not JSON", func(e *detector.Event) { e.Data = make(chan int) }},
	}
	if _, err := enc.Encode(good); err != nil {
		t.Fatalf("valid event rejected: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := good
			tt.mutate(&ev)
			if _, err := enc.Encode(ev); err == nil {
				t.Fatal("Encode succeeded, want error")
			}
		})
	}
}

func TestNewEncoderValidates(t *testing.T) {
	tests := []struct {
		name string
		opts EncoderOptions
	}{
		{"no source", EncoderOptions{BridgeVersion: "v"}},
		{"no version", EncoderOptions{Source: "https://x"}},
		{"wildcard prefix", EncoderOptions{Source: "https://x", BridgeVersion: "v", SubjectPrefix: "a.>"}},
		{"trailing dot", EncoderOptions{Source: "https://x", BridgeVersion: "v", SubjectPrefix: "a."}},
		{"bad source", EncoderOptions{Source: "://x", BridgeVersion: "v"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewEncoder(tt.opts); err == nil {
				t.Fatal("NewEncoder succeeded, want error")
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	enc := testEncoder(b)
	ev := testEvent(rand.New(rand.NewPCG(1, 2)), 42, 1234)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := enc.Encode(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	// As the bridge encodes: the connected server's max_payload (1 MiB by
	// default) set, so that each event's size is checked against it.
	b.Run("fast-max-payload", func(b *testing.B) {
		limited, err := NewEncoder(EncoderOptions{Source: "https://contoso.crm.dynamics.com", BridgeVersion: "v1.2.3-test", MaxPayload: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := limited.Encode(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		for b.Loop() {
			if _, err := enc.EncodeSDK(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
