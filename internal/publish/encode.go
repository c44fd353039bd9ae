package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/ceheader"
	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/source"
)

// CloudEvents attribute values and extension names of the bridge's events.
const (
	// DataContentType is the datacontenttype of every event.
	DataContentType = "application/json"
	// ExtensionSequence is the CloudEvents sequence extension: the per-agent
	// sequence, decimal, zero-padded to 20 digits.
	ExtensionSequence = "sequence"
	// ExtensionBridgeVersion names the bridge version that published the event.
	ExtensionBridgeVersion = "bridgeversion"
)

// AgentSourcePath follows the organisation URL in an event's source: the
// source is the agent's Dataverse URI,
// <org>/api/data/v9.2/systemusers(<agentId>).
const AgentSourcePath = source.APIPath + "systemusers("

// Header names written on every message (binary content mode of the
// CloudEvents NATS binding, the names the SDK's WriteMsg writes).
const (
	headerSpecVersion     = "ce-specversion"
	headerID              = "ce-id"
	headerSource          = "ce-source"
	headerType            = "ce-type"
	headerDataContentType = "ce-datacontenttype"
	headerDataSchema      = "ce-dataschema"
	headerSubject         = "ce-subject"
	headerTime            = "ce-time"
	headerSequence        = "ce-" + ExtensionSequence
	headerBridgeVersion   = "ce-" + ExtensionBridgeVersion
	numHeaders            = 11 // the ten above and Nats-Msg-Id
)

// EncoderOptions configure an [Encoder].
type EncoderOptions struct {
	// Source is the organisation URL, e.g. https://contoso.crm.dynamics.com.
	// Required. Each event's CloudEvent source is the agent's Dataverse URI
	// under it: Source + AgentSourcePath + agentId + ")".
	Source string
	// SubjectPrefix is the subject prefix; default contract.SubjectPrefix.
	SubjectPrefix string
	// BridgeVersion is the value of the bridgeversion extension. Required.
	BridgeVersion string
	// MaxPayload is the connected server's max_payload (nats.Conn.MaxPayload);
	// an event whose message would exceed it has its longest strings and
	// lists cut, and "truncated": true added to its data, so it is never
	// rejected forever. 0 means no limit.
	MaxPayload int
}

// Encoder turns detector events into CloudEvents and NATS messages. It is
// safe for concurrent use.
type Encoder struct {
	prefix        string
	sourceBase    string // <org as the SDK renders it after parsing>/api/data/v9.2/systemusers(
	bridgeVersion string
	maxPayload    int

	// Percent-encoded header values (CloudEvents NATS binding) of the parts
	// that do not change from event to event.
	encSourceBase    string
	encSchemaBase    string
	encBridgeVersion string
}

// NewEncoder validates opts and returns an Encoder.
func NewEncoder(opts EncoderOptions) (*Encoder, error) {
	if opts.SubjectPrefix == "" {
		opts.SubjectPrefix = contract.SubjectPrefix
	}
	if opts.Source == "" {
		return nil, errors.New("new encoder: source is required")
	}
	if opts.BridgeVersion == "" {
		return nil, errors.New("new encoder: bridge version is required")
	}
	if strings.ContainsAny(opts.SubjectPrefix, " \t\r\n*>") || strings.HasPrefix(opts.SubjectPrefix, ".") || strings.HasSuffix(opts.SubjectPrefix, ".") {
		return nil, fmt.Errorf("new encoder: subject prefix %q is not a valid NATS subject prefix", opts.SubjectPrefix)
	}
	src, err := url.Parse(strings.TrimRight(opts.Source, "/"))
	if err != nil {
		return nil, fmt.Errorf("new encoder: parse source: %w", err)
	}
	base := src.String() + AgentSourcePath
	return &Encoder{
		prefix:           opts.SubjectPrefix,
		sourceBase:       base,
		bridgeVersion:    opts.BridgeVersion,
		encSourceBase:    ceheader.Encode(base),
		encSchemaBase:    ceheader.Encode(contract.SchemaBaseURL),
		encBridgeVersion: ceheader.Encode(opts.BridgeVersion),
		maxPayload:       opts.MaxPayload,
	}, nil
}

// Source returns the CloudEvent source of an agent's events: its Dataverse
// URI, <org>/api/data/v9.2/systemusers(<agentId>), as a decoder reads it
// (before percent-encoding).
func (e *Encoder) Source(agentID string) string {
	return e.sourceBase + agentID + ")"
}

// Subject returns the NATS subject of ev: <prefix>.<agentId>.<type>.
func (e *Encoder) Subject(ev detector.Event) string {
	return contract.Subject(e.prefix, ev.AgentID, ev.Type)
}

// FormatSequence renders a sequence as the sequence extension does: decimal,
// zero-padded to 20 digits so it orders lexicographically.
func FormatSequence(seq uint64) string {
	var b [20]byte
	return string(appendSequence(b[:0], seq))
}

func appendSequence(dst []byte, seq uint64) []byte {
	var digits [20]byte
	for i := len(digits) - 1; i >= 0; i-- {
		digits[i] = byte('0' + seq%10)
		seq /= 10
	}
	return append(dst, digits[:]...)
}

func validate(ev detector.Event) error {
	switch {
	case ev.ID == "":
		return errors.New("event has no ID")
	case ev.AgentID == "":
		return fmt.Errorf("event %s has no agent ID", ev.ID)
	case ev.Type == "":
		return fmt.Errorf("event %s has no type", ev.ID)
	case ev.Time.IsZero():
		return fmt.Errorf("event %s has no time", ev.ID)
	case strings.ContainsAny(ev.AgentID, ". \t\r\n*>"):
		return fmt.Errorf("event %s: agent ID %q is not a subject token", ev.ID, ev.AgentID)
	}
	return nil
}

// CloudEvent builds the SDK event of ev (the reference representation).
func (e *Encoder) CloudEvent(ev detector.Event) (event.Event, error) {
	if err := validate(ev); err != nil {
		return event.Event{}, fmt.Errorf("build cloudevent: %w", err)
	}
	data, err := json.Marshal(ev.Data)
	if err != nil {
		return event.Event{}, fmt.Errorf("build cloudevent %s: encode data: %w", ev.ID, err)
	}
	ce := event.New(event.CloudEventsVersionV1)
	ce.SetID(ev.ID)
	ce.SetSource(e.Source(ev.AgentID))
	ce.SetType(ev.Type)
	ce.SetSubject(ev.AgentID)
	ce.SetTime(ev.Time.UTC())
	ce.SetDataSchema(contract.DataSchema(ev.Type))
	ce.SetExtension(ExtensionSequence, FormatSequence(ev.Sequence))
	ce.SetExtension(ExtensionBridgeVersion, e.bridgeVersion)
	if err := ce.SetData(DataContentType, data); err != nil {
		return event.Event{}, fmt.Errorf("build cloudevent %s: set data: %w", ev.ID, err)
	}
	if err := ce.Validate(); err != nil {
		return event.Event{}, fmt.Errorf("build cloudevent %s: %w", ev.ID, err)
	}
	return ce, nil
}

// Encode encodes ev as a NATS message in CloudEvents binary content mode: the
// same headers and body as the SDK's WriteMsg of [Encoder.CloudEvent] with
// every ce- value percent-encoded per the NATS binding, plus Nats-Msg-Id =
// ev.ID. Data is encoded with encoding/json.
func (e *Encoder) Encode(ev detector.Event) (*nats.Msg, error) {
	if err := validate(ev); err != nil {
		return nil, fmt.Errorf("encode cloudevent: %w", err)
	}
	data, err := json.Marshal(ev.Data)
	if err != nil {
		return nil, fmt.Errorf("encode cloudevent %s: encode data: %w", ev.ID, err)
	}
	msg, hdr := e.encode(ev, data)
	if e.maxPayload > 0 && hdr+len(data) > e.maxPayload {
		if msg.Data, err = truncateData(data, e.maxPayload-hdr); err != nil {
			return nil, fmt.Errorf("encode cloudevent %s: %w", ev.ID, err)
		}
	}
	return msg, nil
}

// headerFrame is what a message's headers take on the wire beside their
// values: "NATS/1.0\r\n", the closing "\r\n", and per header of an encoded
// event its name, ": " and "\r\n".
var headerFrame = func() int {
	n := len("NATS/1.0\r\n") + 2
	for _, k := range []string{headerSpecVersion, headerID, headerSource, headerType, headerDataContentType,
		headerDataSchema, headerSubject, headerTime, headerSequence, headerBridgeVersion, jetstream.MsgIDHeader} {
		n += len(k) + 4
	}
	return n
}()

// TruncatedField is the data field set to true in an event whose strings
// or lists were cut to fit the server's max_payload.
const TruncatedField = "truncated"

// truncateData cuts the JSON object data until it fits in budget bytes:
// strings longer than a limit are cut (at a rune boundary, never below 64
// bytes, so IDs and times stay whole) and lists longer than a limit keep
// their first entries, the limits halving until the object fits. The
// result carries "truncated": true. The same input always gives the same
// output, so an event republished under its ID is byte-identical.
func truncateData(data []byte, budget int) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("truncate data: %w", err)
	}
	for strMax, listMax := 4096, 1024; ; strMax, listMax = max(64, strMax/2), listMax/2 {
		cut := cutValue(v, strMax, listMax).(map[string]any)
		cut[TruncatedField] = true
		out, err := json.Marshal(cut)
		if err != nil {
			return nil, fmt.Errorf("truncate data: %w", err)
		}
		if len(out) <= budget {
			return out, nil
		}
		if listMax == 0 && strMax == 64 {
			return nil, fmt.Errorf("data of %d bytes cannot be cut to the %d bytes max_payload leaves", len(data), budget)
		}
	}
}

// cutValue returns a copy of v with strings and lists bounded.
func cutValue(v any, strMax, listMax int) any {
	switch x := v.(type) {
	case string:
		if len(x) <= strMax {
			return x
		}
		cut := strMax
		for cut > 0 && x[cut]&0xC0 == 0x80 {
			cut--
		}
		return x[:cut]
	case []any:
		n := min(len(x), listMax)
		out := make([]any, n)
		for i := range n {
			out[i] = cutValue(x[i], strMax, listMax)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = cutValue(e, strMax, listMax)
		}
		return out
	}
	return v
}

// encode builds the message with few allocations: one string holding the
// subject and every per-event header value (percent-encoded where the NATS
// binding requires it), one backing array for the header values. The subject
// and dataschema are contract.Subject's and contract.DataSchema's, written in
// place; a test compares every header and the subject with the SDK's
// generic path (EncodeSDK, in the tests). It also returns the headers'
// size on the wire, from the values' lengths.
func (e *Encoder) encode(ev detector.Event, data []byte) (*nats.Msg, int) {
	var buf [512]byte
	b := buf[:0]
	b = append(b, e.prefix...)
	b = append(b, '.')
	b = append(b, ev.AgentID...)
	b = append(b, '.')
	b = append(b, ev.Type...)
	subjEnd := len(b)
	b = ev.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	timeEnd := len(b)
	b = appendSequence(b, ev.Sequence)
	seqEnd := len(b)
	b = ceheader.Append(b, ev.ID)
	idEnd := len(b)
	b = append(b, e.encSourceBase...)
	b = ceheader.Append(b, ev.AgentID)
	b = append(b, ')')
	srcEnd := len(b)
	b = ceheader.Append(b, ev.Type)
	typeEnd := len(b)
	b = append(b, e.encSchemaBase...)
	b = ceheader.Append(b, ev.Type)
	b = append(b, ".schema.json"...)
	schemaEnd := len(b)
	b = ceheader.Append(b, ev.AgentID)
	all := string(b)

	vals := make([]string, numHeaders)
	vals[0] = "1.0"
	vals[1] = all[seqEnd:idEnd]
	vals[2] = all[idEnd:srcEnd]
	vals[3] = all[srcEnd:typeEnd]
	vals[4] = DataContentType
	vals[5] = all[typeEnd:schemaEnd]
	vals[6] = all[schemaEnd:]
	vals[7] = all[subjEnd:timeEnd]
	vals[8] = all[timeEnd:seqEnd]
	vals[9] = e.encBridgeVersion
	vals[10] = ev.ID
	size := headerFrame
	for _, v := range vals {
		size += len(v)
	}
	h := make(nats.Header, numHeaders)
	h[headerSpecVersion] = vals[0:1:1]
	h[headerID] = vals[1:2:2]
	h[headerSource] = vals[2:3:3]
	h[headerType] = vals[3:4:4]
	h[headerDataContentType] = vals[4:5:5]
	h[headerDataSchema] = vals[5:6:6]
	h[headerSubject] = vals[6:7:7]
	h[headerTime] = vals[7:8:8]
	h[headerSequence] = vals[8:9:9]
	h[headerBridgeVersion] = vals[9:10:10]
	h[jetstream.MsgIDHeader] = vals[10:11:11]
	return &nats.Msg{Subject: all[:subjEnd], Header: h, Data: data}, size
}

// Decode decodes a message published by the bridge as a spec-following
// consumer does: ce- header values percent-decoded per the NATS binding,
// then the SDK's nats_jetstream binding.
func Decode(msg *nats.Msg) (*event.Event, error) {
	h, err := ceheader.DecodeHeader(msg.Header)
	if err != nil {
		return nil, fmt.Errorf("decode cloudevent on %s: %w", msg.Subject, err)
	}
	ce, err := binding.ToEvent(context.Background(), cejs.NewMessage(&nats.Msg{Subject: msg.Subject, Header: h, Data: msg.Data}))
	if err != nil {
		return nil, fmt.Errorf("decode cloudevent on %s: %w", msg.Subject, err)
	}
	return ce, nil
}

// ParseSequence parses the sequence extension of a decoded event.
func ParseSequence(ce *event.Event) (uint64, error) {
	v, ok := ce.Extensions()[ExtensionSequence]
	if !ok {
		return 0, fmt.Errorf("event %s has no %s extension", ce.ID(), ExtensionSequence)
	}
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("event %s: %s extension is %T, want string", ce.ID(), ExtensionSequence, v)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("event %s: parse %s: %w", ce.ID(), ExtensionSequence, err)
	}
	return n, nil
}
