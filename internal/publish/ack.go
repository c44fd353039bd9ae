// ack.go holds how the Publisher handles JetStream's answers that an event
// is stored: a plain acknowledgement completes the event and sends the
// agent's next one; an ambiguous answer (a duplicate acknowledgement, or a
// fence that failed) is decided by reading the stored message, which is
// either this very event (an earlier attempt landed: success) or proof that
// the agent's history moved on (a conflict: the agent's queue fails with
// detector.ErrConflict).

package publish

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/detector"
)

// readStored reads the stored message that decides an ambiguous answer.
type readStored func(context.Context, jetstream.Stream) (*jetstream.RawStreamMsg, error)

// onAck handles a JetStream acknowledgement (jetstream's ack goroutine). A
// duplicate acknowledgement is checked against the stored event first, off
// the ack goroutine.
func (p *Publisher) onAck(_ jetstream.JetStream, msg *nats.Msg, ack *jetstream.PubAck) {
	if ack.Duplicate {
		p.check(msg, func(ctx context.Context, st jetstream.Stream) (*jetstream.RawStreamMsg, error) {
			return st.GetMsg(ctx, ack.Sequence)
		})
		return
	}
	p.acked(msg, ack.Sequence, false)
}

// acked completes an event stored at stream sequence seq and sends the
// agent's next one; duplicate says it was found stored by an earlier attempt.
func (p *Publisher) acked(msg *nats.Msg, seq uint64, duplicate bool) {
	p.mu.Lock()
	it := p.inflight[msg]
	if it == nil {
		p.mu.Unlock()
		return
	}
	delete(p.inflight, msg)
	aq := p.agents[it.b.agent]
	complete := p.storedLocked(aq, it, seq)
	next := p.takeHeadLocked(aq)
	if len(aq.items) == 0 && !aq.busy {
		delete(p.agents, aq.id)
	}
	// Counted before the batch's done runs: whoever it wakes sees them.
	if duplicate {
		p.m.incDuplicate()
	}
	p.m.incPublished(it.typ)
	p.m.observeLatency(time.Since(it.b.enqueued).Seconds())
	if complete != nil {
		p.dispatchLocked(complete)
	}
	p.mu.Unlock()

	if next != nil {
		p.send(next)
	}
}

// check reads, off the callback goroutine, the stored message that decides
// an ambiguous answer: the message at a duplicate acknowledgement's
// sequence, or the agent's last message after the fence failed. If it is
// this very event (an earlier attempt landed, or a restarted bridge
// republished it) the publish succeeded. Otherwise the agent's history
// moved on without it: the agent's queued events fail with an error
// wrapping detector.ErrConflict, so that the caller adopts the stream's
// history. When the stored message cannot be read, the publish is retried
// (and checked again). The read takes at most Options.PublishTimeout; Close
// waits for it.
func (p *Publisher) check(msg *nats.Msg, read readStored) {
	p.mu.Lock()
	_, ok := p.inflight[msg]
	if ok {
		p.checks.Add(1)
	}
	p.mu.Unlock()
	if !ok {
		return
	}
	go func() {
		defer p.checks.Done()
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.PublishTimeout)
		defer cancel()
		st, err := p.streamHandle(ctx)
		var stored *jetstream.RawStreamMsg
		if err == nil {
			stored, err = read(ctx, st)
		}
		if err != nil {
			p.onError(p.js, msg, fmt.Errorf("read the stored event that decides the publish: %w", err))
			return
		}
		if storedIs(stored, msg) {
			p.acked(msg, stored.Sequence, true)
			return
		}
		p.conflict(msg, stored)
	}()
}

// storedIs reports whether the stored message is the event msg carries.
func storedIs(stored *jetstream.RawStreamMsg, msg *nats.Msg) bool {
	return stored.Subject == msg.Subject &&
		stored.Header.Get(jetstream.MsgIDHeader) == msg.Header.Get(jetstream.MsgIDHeader) &&
		stored.Header.Get(headerTime) == msg.Header.Get(headerTime) &&
		bytes.Equal(stored.Data, msg.Data)
}

// conflict fails the agent's queued events: its history on the stream moved
// on to the stored message, which is not the event msg carries. When the
// stored message is the very one the event follows (a stream leader that
// had not applied it yet answered the fence), the publish is retried.
func (p *Publisher) conflict(msg *nats.Msg, stored *jetstream.RawStreamMsg) {
	p.mu.Lock()
	it := p.inflight[msg]
	if it == nil {
		p.mu.Unlock()
		return
	}
	aq := p.agents[it.b.agent]
	if aq != nil && aq.last.stream == stored.Sequence {
		p.mu.Unlock()
		p.onError(p.js, msg, fmt.Errorf("the fence of event %s answered before the stream caught up with stream sequence %d", it.id, stored.Sequence))
		return
	}
	delete(p.inflight, msg)
	delete(p.known, aq.id)
	err := fmt.Errorf("publish event %s: the agent's history on the stream moved on (its last message, stream sequence %d, is %q): %w",
		it.id, stored.Sequence, stored.Header.Get(jetstream.MsgIDHeader), detector.ErrConflict)
	for _, b := range p.failAgentLocked(aq, err) {
		p.dispatchLocked(b)
	}
	p.mu.Unlock()
	p.m.incError(reasonConflict)
	p.log.Info("the agent's history on the stream moved on; its queued events are dropped and it is adopted from the stream",
		"agent", aq.id, "event", it.id, "stream_sequence", stored.Sequence)
}

// streamHandle returns the stream, looked up once.
func (p *Publisher) streamHandle(ctx context.Context) (jetstream.Stream, error) {
	p.mu.Lock()
	st := p.stream
	p.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := p.js.Stream(ctx, p.opts.Stream)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", p.opts.Stream, err)
	}
	p.mu.Lock()
	p.stream = st
	p.mu.Unlock()
	return st, nil
}
