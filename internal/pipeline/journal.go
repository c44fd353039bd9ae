package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/publish"
)

// JournalOptions configures a StreamJournal.
type JournalOptions struct {
	// JetStream reaches the stream; required.
	JetStream jetstream.JetStream
	// Stream is the stream's name; required.
	Stream string
	// SubjectPrefix is the events' subject prefix: <prefix>.<agentId>.<type>;
	// required.
	SubjectPrefix string
	// Logger receives one warning per agent with foreign messages; nil
	// discards.
	Logger *slog.Logger
	// Metrics counts foreign messages; nil counts nothing.
	Metrics *Metrics
}

// StreamJournal reads an agent's history back from the JetStream stream the
// bridge publishes to. It is the pipeline's Journal. Messages on an agent's
// subjects that are not this bridge's events for that agent (not a
// CloudEvent, another agent's ID in ce-subject, data or snapshot, an ID that
// is not <agentId>-<sequence>, a type this version does not know) are
// skipped and counted; their stream sequences still count for the fence.
type StreamJournal struct {
	opts JournalOptions
	log  *slog.Logger

	mu     sync.Mutex
	stream jetstream.Stream    // looked up once
	warned map[string]struct{} // agents with a foreign message logged
}

var _ Journal = (*StreamJournal)(nil)

// NewStreamJournal returns the journal of a stream.
func NewStreamJournal(opts JournalOptions) *StreamJournal {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &StreamJournal{opts: opts, log: log, warned: map[string]struct{}{}}
}

func (j *StreamJournal) handle(ctx context.Context) (jetstream.Stream, error) {
	j.mu.Lock()
	s := j.stream
	j.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := j.opts.JetStream.Stream(ctx, j.opts.Stream)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", j.opts.Stream, err)
	}
	j.mu.Lock()
	j.stream = s
	j.mu.Unlock()
	return s, nil
}

func (j *StreamJournal) agentSubjects(agentID string) string {
	return contract.AgentSubjects(j.opts.SubjectPrefix, agentID)
}

// Last returns the stream sequence of the agent's last message on the
// stream (this bridge's event or not), 0 when the stream holds none.
func (j *StreamJournal) Last(ctx context.Context, agentID string) (uint64, error) {
	s, err := j.handle(ctx)
	if err != nil {
		return 0, err
	}
	last, err := s.GetLastMsgForSubject(ctx, j.agentSubjects(agentID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last message of agent %s: %w", agentID, err)
	}
	return last.Sequence, nil
}

// Follow returns the agent's state as the stream holds it, with
// StreamSequence the stream sequence of the agent's last message; nil when
// the stream holds no message of the agent. base is the last state this
// process knows to be on the stream (nil: none). When the stream went on
// from base, its events are folded over base; when base is unknown, or the
// events after it do not follow on from it, the state is rebuilt from the
// last event of each type.
func (j *StreamJournal) Follow(ctx context.Context, agentID string, base *detector.AgentState) (*detector.AgentState, error) {
	s, err := j.handle(ctx)
	if err != nil {
		return nil, err
	}
	last, err := s.GetLastMsgForSubject(ctx, j.agentSubjects(agentID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		if base == nil {
			return nil, nil
		}
		// Nothing on the stream (its retention removed it): the history
		// continues from what the bucket recorded.
		b := base.Clone()
		b.StreamSequence = 0
		return &b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last message of agent %s: %w", agentID, err)
	}
	switch {
	case base == nil:
	case base.StreamSequence == last.Sequence:
		b := base.Clone()
		return &b, nil
	case base.StreamSequence == 0:
		// A value without its stream position: it is the stream's head if
		// the last event is the one it records.
		if ev, ok := j.event(agentID, last.Subject, last.Header, last.Data); ok && ev.Sequence == base.Sequence {
			b := base.Clone()
			b.StreamSequence = last.Sequence
			return &b, nil
		}
	case base.StreamSequence < last.Sequence:
		st, ok, err := j.fold(ctx, agentID, *base, last.Sequence)
		if err != nil {
			return nil, err
		}
		if ok {
			return &st, nil
		}
	}
	st, err := j.rebuild(ctx, s, agentID, last.Sequence)
	if err != nil {
		return nil, err
	}
	st.StreamSequence = last.Sequence
	return &st, nil
}

// fold folds the agent's events after base, up to stream sequence upTo,
// over base; ok is false when they do not follow on from it.
func (j *StreamJournal) fold(ctx context.Context, agentID string, base detector.AgentState, upTo uint64) (detector.AgentState, bool, error) {
	cur := base
	ok := true
	err := j.read(ctx, agentID, base.StreamSequence+1, upTo, func(ev detector.Event) bool {
		if ev.Sequence <= cur.Sequence {
			return true
		}
		next, err := detector.Apply(&cur, ev)
		if err != nil {
			ok = false
			return false
		}
		cur = next
		return true
	})
	if err != nil || !ok {
		return base, false, err
	}
	cur.StreamSequence = upTo
	return cur, true, nil
}

// rebuild returns the agent's state as of stream sequence upTo (the
// agent's last message when Follow looked) from the last event of each
// type: one direct lookup each, or, when a lookup finds a foreign message or
// a message stored after upTo (another writer went on meanwhile, so that
// type's event at upTo is no longer the last), one read of the agent's
// messages from the start up to upTo. The state never mixes events from
// after upTo with a position at upTo.
func (j *StreamJournal) rebuild(ctx context.Context, s jetstream.Stream, agentID string, upTo uint64) (detector.AgentState, error) {
	var last []detector.Event
	found := true
	for _, typ := range detector.Types() {
		raw, err := s.GetLastMsgForSubject(ctx, contract.Subject(j.opts.SubjectPrefix, agentID, typ))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return detector.AgentState{}, fmt.Errorf("last %s of agent %s: %w", typ, agentID, err)
		}
		if raw.Sequence > upTo {
			found = false
			break
		}
		ev, ok := j.event(agentID, raw.Subject, raw.Header, raw.Data)
		if !ok {
			found = false
			break
		}
		last = append(last, ev)
	}
	if !found {
		byType := map[string]detector.Event{}
		if err := j.read(ctx, agentID, 0, upTo, func(ev detector.Event) bool {
			byType[ev.Type] = ev
			return true
		}); err != nil {
			return detector.AgentState{}, err
		}
		last = last[:0]
		for _, ev := range byType {
			last = append(last, ev)
		}
	}
	st, complete, err := detector.Rebuild(agentID, last)
	if err != nil {
		return detector.AgentState{}, err
	}
	if !complete {
		j.log.Warn("the stream no longer holds every part of the agent's state; the parts it lacks start afresh", "agent", agentID, "sequence", st.Sequence)
	}
	j.log.Info("agent's state rebuilt from its events on the stream", "agent", agentID, "sequence", st.Sequence)
	return st, nil
}

// read hands the agent's events from stream sequence from (0: the start)
// up to upTo (0: the end) to f, in stream order, until f returns false.
func (j *StreamJournal) read(ctx context.Context, agentID string, from, upTo uint64, f func(detector.Event) bool) error {
	subject := j.agentSubjects(agentID)
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := j.opts.JetStream.OrderedConsumer(ctx, j.opts.Stream, cfg)
	if err != nil {
		return fmt.Errorf("read %s: %w", subject, err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: %w", subject, err)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
			if upTo == 0 {
				return nil // the end
			}
			return fmt.Errorf("read %s: stream sequence %d not reached", subject, upTo)
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", subject, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", subject, err)
		}
		if ev, ok := j.event(agentID, msg.Subject(), msg.Headers(), msg.Data()); ok && !f(ev) {
			return nil
		}
		if upTo > 0 && meta.Sequence.Stream >= upTo {
			return nil
		}
		if upTo == 0 && meta.NumPending == 0 {
			return nil
		}
	}
}

// event decodes a message on the agent's subjects as one of the bridge's
// events for that agent; ok is false (and the message counted and, once
// per agent, logged) when it is not one.
func (j *StreamJournal) event(agentID, subject string, hdr nats.Header, data []byte) (detector.Event, bool) {
	ev, reason, err := decodeEvent(j.opts.SubjectPrefix, agentID, &nats.Msg{Subject: subject, Header: hdr, Data: data})
	if err == nil {
		return ev, true
	}
	if m := j.opts.Metrics; m != nil {
		m.Foreign.WithLabelValues(reason).Inc()
	}
	j.mu.Lock()
	_, warned := j.warned[agentID]
	j.warned[agentID] = struct{}{}
	j.mu.Unlock()
	if !warned {
		j.log.Warn("a message on the agent's subjects is not one of this bridge's events for the agent; skipped",
			"agent", agentID, "subject", subject, "reason", reason, "err", err)
	}
	return detector.Event{}, false
}

// Reasons a message on an agent's subjects is foreign: the values of the
// reason label of ccaas_bridge_foreign_messages_total.
const (
	foreignUndecodable  = "undecodable"
	foreignOtherAgent   = "other_agent"
	foreignUnknownType  = "unknown_type"
	foreignMalformedID  = "malformed_id"
	foreignMalformedDat = "malformed_data"
)

var foreignReasons = []string{foreignUndecodable, foreignOtherAgent, foreignUnknownType, foreignMalformedID, foreignMalformedDat}

// decodeEvent decodes a stream message into the event the bridge published
// for agentID, its data of the type's Go type (as detector.Apply wants it);
// on failure it says why, as a metric label.
func decodeEvent(prefix, agentID string, msg *nats.Msg) (detector.Event, string, error) {
	ce, err := publish.Decode(msg)
	if err != nil {
		return detector.Event{}, foreignUndecodable, err
	}
	if ce.Subject() != agentID {
		return detector.Event{}, foreignOtherAgent, fmt.Errorf("event %s names agent %q", ce.ID(), ce.Subject())
	}
	if msg.Subject != contract.Subject(prefix, agentID, ce.Type()) {
		return detector.Event{}, foreignUnknownType, fmt.Errorf("event %s of type %q on subject %s", ce.ID(), ce.Type(), msg.Subject)
	}
	seq, err := publish.ParseSequence(ce)
	if err != nil {
		return detector.Event{}, foreignMalformedID, err
	}
	if ce.ID() != detector.EventID(agentID, seq) {
		return detector.Event{}, foreignMalformedID, fmt.Errorf("event %s with sequence %d", ce.ID(), seq)
	}
	data, err := decodeData(ce.Type(), ce.Data())
	if err != nil {
		reason := foreignMalformedDat
		if errors.Is(err, errUnknownType) {
			reason = foreignUnknownType
		}
		return detector.Event{}, reason, fmt.Errorf("event %s: %w", ce.ID(), err)
	}
	var named struct {
		AgentID   string `json:"agentId"`
		AgentName string `json:"agentName"`
		State     *struct {
			AgentID string `json:"agentId"`
		} `json:"state"`
	}
	if err := json.Unmarshal(ce.Data(), &named); err != nil {
		return detector.Event{}, foreignMalformedDat, fmt.Errorf("event %s: decode agent: %w", ce.ID(), err)
	}
	if named.AgentID != agentID || (named.State != nil && named.State.AgentID != agentID) {
		return detector.Event{}, foreignOtherAgent, fmt.Errorf("event %s: data of another agent", ce.ID())
	}
	return detector.Event{
		ID: ce.ID(), Type: ce.Type(), AgentID: agentID, AgentName: named.AgentName,
		Sequence: seq, Time: ce.Time(), Data: data,
	}, "", nil
}

var errUnknownType = errors.New("unknown event type")

// decodeData decodes an event's data into the Go type of its type.
func decodeData(typ string, raw []byte) (any, error) {
	// One case per event type: each type's data is a struct of its own.
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
	return nil, fmt.Errorf("%w %q", errUnknownType, typ)
}

func decodeAs[T any](raw []byte) (any, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("decode %T: %w", v, err)
	}
	return v, nil
}
