// write.go holds RecordAsync: the state writes of the pipeline, published
// without waiting for each answer, one write per agent in flight, a newer
// state queued behind it replacing an older one.

package statebucket

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/detector"
)

// DefaultWriteTimeout is how long a state write may take by default
// (Options.WriteTimeout).
const DefaultWriteTimeout = 10 * time.Second

// write is an agent's state write in flight and the newest state waiting
// behind it. It exists while the agent has a write in flight.
type write struct {
	key   string
	state detector.AgentState
	value []byte
	done  []func(error) // called once state is recorded, found behind or failed

	// next is the newest state recorded while state was in flight (nil:
	// none); it is written once state's write finishes, and the done
	// callbacks of every state it replaced complete with it.
	next      *detector.AgentState
	nextValue []byte
	nextDone  []func(error)
}

// asyncWriter publishes state writes without waiting for their answers.
type asyncWriter struct {
	js      jetstream.JetStream // its acknowledgement handlers are the Store's
	putPre  string              // $KV.<bucket>.
	timeout time.Duration
}

// newAsyncWriter returns the asynchronous writer of kv, or nil when its
// writes cannot be addressed directly (a mirrored bucket, or a JetStream
// client with an API prefix or domain): RecordAsync then calls Record.
func (s *Store) newAsyncWriter(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, timeout time.Duration) (*asyncWriter, error) {
	if o := js.Options(); o.Domain != "" || (o.APIPrefix != "" && strings.TrimSuffix(o.APIPrefix, ".") != strings.TrimSuffix(jetstream.DefaultAPIPrefix, ".")) {
		return nil, nil
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("read state bucket %s status: %w", kv.Bucket(), err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil || bs.StreamInfo().Config.Mirror != nil {
		return nil, nil
	}
	ajs, err := jetstream.New(js.Conn(),
		// At most one write per agent is in flight, and a write is sent
		// from the acknowledgement handler: jetstream's own limit must
		// never stall it.
		jetstream.WithPublishAsyncMaxPending(1<<30),
		jetstream.WithPublishAsyncTimeout(timeout),
		jetstream.WithPublishAsyncAckHandler(s.onAck),
		jetstream.WithPublishAsyncErrHandler(s.onError),
	)
	if err != nil {
		return nil, fmt.Errorf("state bucket %s: jetstream context: %w", kv.Bucket(), err)
	}
	return &asyncWriter{js: ajs, putPre: "$KV." + kv.Bucket() + ".", timeout: timeout}, nil
}

// RecordAsync records an agent's state as Record does (forward only, the
// key's revision as the fence) without waiting for the bucket's answer,
// and calls done once, from another goroutine, with what Record would
// return. One write per agent is in flight at a time; a state recorded
// while one is in flight waits behind it, and a later state of the agent
// recorded meanwhile replaces it: only the latest is written, and the done
// callbacks of the states it replaced complete with its outcome (a
// replaced state is not counted as a write of its own).
func (s *Store) RecordAsync(state detector.AgentState, done func(error)) {
	var value []byte
	if s.async != nil {
		var err error
		if value, err = json.Marshal(state); err != nil {
			s.metrics.write(resultError)
			done(fmt.Errorf("encode state of agent %s: %w", state.AgentID, err))
			return
		}
	}
	s.mu.Lock()
	if w := s.writes[state.AgentID]; w != nil {
		switch {
		case state.Sequence <= w.state.Sequence:
			w.done = append(w.done, done)
		case w.next != nil && state.Sequence <= w.next.Sequence:
			w.nextDone = append(w.nextDone, done)
		default:
			w.next, w.nextValue = &state, value
			w.nextDone = append(w.nextDone, done)
		}
		s.mu.Unlock()
		return
	}
	w := &write{key: state.AgentID, state: state, value: value, done: []func(error){done}}
	s.writes[w.key] = w
	msg := s.startLocked(w)
	s.mu.Unlock()
	s.send(w, msg)
}

// startLocked returns the message that writes w.state fenced on the key's
// last revision seen, or nil when the write is not sent asynchronously:
// the bucket is known to hold a later state (w is finished as behind by
// send), or no revision of the key is known (send records it as Record
// does, as it is whenever the writes cannot be sent asynchronously).
func (s *Store) startLocked(w *write) *nats.Msg {
	cur, known := s.revs[w.key]
	if s.async == nil || !known || cur.seq >= w.state.Sequence {
		return nil
	}
	msg := &nats.Msg{
		Subject: s.async.putPre + w.key,
		Header:  nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(cur.rev, 10)}},
		Data:    w.value,
	}
	s.inflight[msg] = w
	return msg
}

// send publishes msg, or, when startLocked gave none, finishes w as
// behind or records it as Record does, on another goroutine.
func (s *Store) send(w *write, msg *nats.Msg) {
	if msg != nil {
		if _, err := s.async.js.PublishMsgAsync(msg); err != nil {
			s.onError(s.async.js, msg, err)
		}
		return
	}
	go func() { s.finish(w, s.recordWithin(w.state)) }()
}

// recordWithin is Record bounded by the write timeout.
func (s *Store) recordWithin(state detector.AgentState) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.writeTimeout)
	defer cancel()
	return s.Record(ctx, state)
}

// onAck completes a write the bucket stored.
func (s *Store) onAck(_ jetstream.JetStream, msg *nats.Msg, ack *jetstream.PubAck) {
	s.mu.Lock()
	w := s.inflight[msg]
	if w == nil {
		s.mu.Unlock()
		return
	}
	delete(s.inflight, msg)
	if ack.Sequence > s.revs[w.key].rev {
		s.revs[w.key] = seen{rev: ack.Sequence, seq: w.state.Sequence}
	}
	s.mu.Unlock()
	s.metrics.write(resultOK)
	s.finish(w, nil)
}

// onError hands a write that failed (another revision of the key, a
// timeout, a lost connection) to Record, which reads the key again and
// writes on top unless the bucket is ahead, or reports the failure.
func (s *Store) onError(_ jetstream.JetStream, msg *nats.Msg, _ error) {
	s.mu.Lock()
	w := s.inflight[msg]
	delete(s.inflight, msg)
	s.mu.Unlock()
	if w != nil {
		go func() { s.finish(w, s.recordWithin(w.state)) }()
	}
}

// finish calls w's done callbacks with err and writes the state waiting
// behind it, if any.
func (s *Store) finish(w *write, err error) {
	s.mu.Lock()
	dones := w.done
	if w.next == nil {
		delete(s.writes, w.key)
		s.mu.Unlock()
		callAll(dones, err)
		return
	}
	w.state, w.value, w.done = *w.next, w.nextValue, w.nextDone
	w.next, w.nextValue, w.nextDone = nil, nil, nil
	msg := s.startLocked(w)
	s.mu.Unlock()
	callAll(dones, err)
	s.send(w, msg)
}

// callAll calls every done with err.
func callAll(dones []func(error), err error) {
	for _, done := range dones {
		done(err)
	}
}
