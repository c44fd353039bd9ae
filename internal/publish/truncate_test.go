package publish

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/schemas"
)

// bigChannelsEvent is a first-sight channels.changed whose lists, taken
// twice (current and added), are far over maxPayload.
func bigChannelsEvent(entries, nameLen int) detector.Event {
	var allowed []string
	for i := range entries {
		allowed = append(allowed, fmt.Sprintf("channel-%05d-%s", i, strings.Repeat("é", 40)))
	}
	ch := detector.Channels{Allowed: allowed, Disabled: []string{}}
	return detector.Event{
		ID: "394382b6-a4d4-ee11-904c-00224808a166-3", Type: detector.TypeChannelsChanged, AgentID: "394382b6-a4d4-ee11-904c-00224808a166",
		AgentName: strings.Repeat("A", nameLen), Sequence: 3, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Data: detector.ChannelsChangedData{
			AgentID: "394382b6-a4d4-ee11-904c-00224808a166", AgentName: strings.Repeat("A", nameLen),
			Current: ch, Added: ch, Removed: detector.Channels{Allowed: []string{}, Disabled: []string{}},
		},
	}
}

func TestEncodeTruncatesToMaxPayload(t *testing.T) {
	val, err := schemas.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for _, maxPayload := range []int{1 << 20, 64 << 10, 8 << 10} {
		t.Run(fmt.Sprint(maxPayload), func(t *testing.T) {
			enc, err := NewEncoder(EncoderOptions{Source: "https://contoso.crm.dynamics.com", BridgeVersion: "v1", MaxPayload: maxPayload})
			if err != nil {
				t.Fatal(err)
			}
			ev := bigChannelsEvent(8_000, 20_000)
			msg, err := enc.Encode(ev)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if size := headerSize(msg.Header) + len(msg.Data); size > maxPayload {
				t.Fatalf("message of %d bytes, max_payload %d", size, maxPayload)
			}
			var d detector.ChannelsChangedData
			if err := json.Unmarshal(msg.Data, &d); err != nil {
				t.Fatal(err)
			}
			if !d.Truncated || len(d.Current.Allowed) == 0 || len(d.Current.Allowed) >= 8_000 || d.AgentID != ev.AgentID {
				t.Errorf("truncated %v with %d channels, agent %q", d.Truncated, len(d.Current.Allowed), d.AgentID)
			}
			if err := val.Validate(detector.TypeChannelsChanged, msg.Data); err != nil {
				t.Errorf("truncated data does not match the schema: %v", err)
			}
			again, _ := enc.Encode(ev)
			if string(again.Data) != string(msg.Data) {
				t.Error("truncation is not deterministic")
			}
		})
	}
	// A small event is untouched and carries no flag.
	enc, _ := NewEncoder(EncoderOptions{Source: "https://contoso.crm.dynamics.com", BridgeVersion: "v1", MaxPayload: 8 << 10})
	msg, err := enc.Encode(bigChannelsEvent(3, 12))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(msg.Data), "truncated") {
		t.Errorf("small event flagged: %s", msg.Data)
	}
}

// headerSize is the size of h on the wire: "NATS/1.0\r\n", a "key: value\r\n"
// line per value and the closing "\r\n".
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n") + 2
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}
