package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/publish"
)

// DefaultLookback is how far before an agent's last event StreamJournal
// starts looking for the events above a sequence; those are the events of
// a bridge killed between publishing and committing, published moments
// before it died.
const DefaultLookback = 10 * time.Minute

// StreamJournal reads agents' events back from the JetStream stream the
// bridge publishes to, decoded as consumers decode them. It is the
// pipeline's Journal:
//
//	journal := pipeline.NewStreamJournal(js, cfg.Stream, cfg.SubjectPrefix)
//	p, err := pipeline.New(pipeline.Options{..., Journal: journal})
type StreamJournal struct {
	js       jetstream.JetStream
	name     string
	prefix   string
	lookback time.Duration

	mu     sync.Mutex
	stream jetstream.Stream // looked up once
}

var _ Journal = (*StreamJournal)(nil)

// NewStreamJournal returns a journal of the stream named stream, whose
// subjects are <subjectPrefix>.<agentId>.<type>.
func NewStreamJournal(js jetstream.JetStream, stream, subjectPrefix string) *StreamJournal {
	return &StreamJournal{js: js, name: stream, prefix: subjectPrefix, lookback: DefaultLookback}
}

func (j *StreamJournal) handle(ctx context.Context) (jetstream.Stream, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stream != nil {
		return j.stream, nil
	}
	s, err := j.js.Stream(ctx, j.name)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", j.name, err)
	}
	j.stream = s
	return s, nil
}

// AgentEvents returns the agent's events on the stream with sequences above
// after, in sequence order. One direct get answers the usual case (nothing
// beyond after); otherwise an ordered consumer on the agent's subjects reads
// them from shortly before the last one.
func (j *StreamJournal) AgentEvents(ctx context.Context, agentID string, after uint64) ([]detector.Event, error) {
	s, err := j.handle(ctx)
	if err != nil {
		return nil, err
	}
	subject := j.prefix + "." + agentID + ".>"
	raw, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last event of agent %s: %w", agentID, err)
	}
	last, err := decodeEvent(&nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data})
	if err != nil {
		return nil, err
	}
	switch {
	case last.Sequence <= after:
		return nil, nil
	case last.Sequence == after+1:
		return []detector.Event{last}, nil
	}
	start := raw.Time.Add(-j.lookback)
	events, err := j.read(ctx, subject, &start, after, last.Sequence)
	if err == nil && (len(events) == 0 || events[0].Sequence != after+1) {
		events, err = j.read(ctx, subject, nil, after, last.Sequence) // older than the lookback: from the start
	}
	if err != nil {
		return nil, err
	}
	for i, e := range events {
		if e.Sequence != after+1+uint64(i) {
			return nil, fmt.Errorf("events of agent %s on the stream: sequence %d where %d was due", agentID, e.Sequence, after+1+uint64(i))
		}
	}
	return events, nil
}

// read reads the events on subject from start (nil: the beginning) up to
// the one with sequence upTo, keeping those above after.
func (j *StreamJournal) read(ctx context.Context, subject string, start *time.Time, after, upTo uint64) ([]detector.Event, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if start != nil {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, start
	}
	cons, err := j.js.OrderedConsumer(ctx, j.name, cfg)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", subject, err)
	}
	var out []detector.Event
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", subject, err)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
			return out, nil // nothing more: the caller checks what it got
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", subject, err)
		}
		e, err := decodeEvent(&nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
		if err != nil {
			return nil, err
		}
		if e.Sequence > after {
			out = append(out, e)
		}
		if e.Sequence >= upTo {
			return out, nil
		}
	}
}

// decodeEvent decodes a stream message into the event the bridge published,
// its data of the type's Go type (as detector.Apply wants it).
func decodeEvent(msg *nats.Msg) (detector.Event, error) {
	ce, err := publish.Decode(msg)
	if err != nil {
		return detector.Event{}, err
	}
	seq, err := publish.ParseSequence(ce)
	if err != nil {
		return detector.Event{}, err
	}
	data, err := decodeData(ce.Type(), ce.Data())
	if err != nil {
		return detector.Event{}, fmt.Errorf("event %s: %w", ce.ID(), err)
	}
	var named struct {
		AgentName string `json:"agentName"`
	}
	if err := json.Unmarshal(ce.Data(), &named); err != nil {
		return detector.Event{}, fmt.Errorf("event %s: decode agent name: %w", ce.ID(), err)
	}
	return detector.Event{
		ID: ce.ID(), Type: ce.Type(), AgentID: ce.Subject(), AgentName: named.AgentName,
		Sequence: seq, Time: ce.Time(), Data: data,
	}, nil
}

// decodeData decodes an event's data into the Go type of its type.
func decodeData(typ string, raw []byte) (any, error) {
	switch typ {
	case detector.TypePresenceChanged:
		return decodeAs[detector.PresenceChangedData](raw)
	case detector.TypeSessionsChanged:
		return decodeAs[detector.SessionsChangedData](raw)
	case detector.TypeChannelsChanged:
		return decodeAs[detector.ChannelsChangedData](raw)
	case detector.TypeAgentOffline:
		return decodeAs[detector.AgentOfflineData](raw)
	case detector.TypeAgentOnline:
		return decodeAs[detector.AgentOnlineData](raw)
	case detector.TypeAgentUnattended:
		return decodeAs[detector.AgentUnattendedData](raw)
	case detector.TypePresenceStale:
		return decodeAs[detector.PresenceStaleData](raw)
	case detector.TypePresenceResumed:
		return decodeAs[detector.PresenceResumedData](raw)
	case detector.TypePresenceSnapshot:
		return decodeAs[detector.PresenceSnapshotData](raw)
	}
	return nil, fmt.Errorf("unknown event type %q", typ)
}

func decodeAs[T any](raw []byte) (any, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("decode %T: %w", v, err)
	}
	return v, nil
}
