// queue.go holds the per-agent queues and positions of the Publisher: what
// an agent's next event must follow on the stream, how the head of a queue
// is fenced and sent (one event in flight per agent), how a failed agent's
// queue is emptied, and how agents are parked while NATS is down and resumed
// when it returns.

package publish

import (
	"context"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
)

// position is where an agent's history ends: the stream sequence and the
// agent's event sequence of its last event.
type position struct {
	stream, seq uint64
}

// batch is the events of one Enqueue call; its done runs once, when the
// last of them is stored or the first fails.
type batch struct {
	done     func(uint64, error)
	agent    string
	size     int
	left     int // events not yet acknowledged
	enqueued time.Time
	finished bool   // done dispatched
	last     uint64 // stream sequence of the last event acknowledged
	err      error
}

// item is one event of a batch, encoded.
type item struct {
	msg      *nats.Msg
	id       string // the event ID (Nats-Msg-Id), read without touching msg
	typ      string
	seq      uint64 // the event's sequence
	b        *batch
	attempts int
}

// agentQueue is one agent's events held by the publisher, in sequence
// order. It exists while the agent has events held.
type agentQueue struct {
	id       string
	subjects string   // <prefix>.<agentId>.>: the fence's subject filter
	last     position // what items[0] must follow on the stream
	next     uint64   // the sequence the next enqueued event must have
	items    []*item  // FIFO; items[0] is in flight, retrying or parked when busy
	busy     bool     // items[0] is being handled (in flight, timer or parked)
	retry    *time.Timer
	failures int                         // consecutive failed attempts of items[0]
	backoff  *backoff.ExponentialBackOff // the wait before the next retry; made at the first failure
}

// newQueueLocked returns a queue for an agent that has none, starting from
// the newer of the position this process saw stored and the caller's
// afterStream (then firstSeq is the sequence of the event that follows it).
func (p *Publisher) newQueueLocked(agent string, afterStream, firstSeq uint64) *agentQueue {
	last, ok := p.known[agent]
	if !ok || last.stream < afterStream {
		// The caller read a newer position from the stream.
		last = position{stream: afterStream, seq: firstSeq - 1}
	}
	return &agentQueue{id: agent, subjects: p.agentSubjects(agent), last: last, next: last.seq + 1}
}

// agentSubjects is the fence's subject filter of an agent:
// <prefix>.<agentId>.>, from the encoder's prefix.
func (p *Publisher) agentSubjects(agent string) string {
	return contract.AgentSubjects(p.enc.prefix, agent)
}

// takeHeadLocked marks the agent's first event as being handled and returns
// it for sending, fenced on the agent's last position, or nil when the agent
// is already busy or has nothing (or the connection is down: the agent is
// parked until it returns).
func (p *Publisher) takeHeadLocked(aq *agentQueue) *item {
	if aq.busy || len(aq.items) == 0 || p.state == stateClosed {
		return nil
	}
	aq.busy = true
	if !p.nc.IsConnected() {
		p.parked = append(p.parked, aq)
		return nil
	}
	it := aq.items[0]
	it.msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(aq.last.stream, 10))
	it.msg.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, aq.subjects)
	p.inflight[it.msg] = it
	return it
}

// send publishes an item registered in p.inflight; it must be called without
// p.mu held (jetstream calls onError under its own lock).
func (p *Publisher) send(it *item) {
	it.attempts++
	if it.attempts > 1 {
		p.m.incRetry()
	}
	if _, err := p.js.PublishMsgAsync(it.msg); err != nil {
		p.onError(p.js, it.msg, err)
	}
}

// storedLocked moves the agent past its first event, stored at stream
// sequence streamSeq, and returns the batch that completed with it, if any.
func (p *Publisher) storedLocked(aq *agentQueue, it *item, streamSeq uint64) *batch {
	aq.items[0] = nil
	aq.items = aq.items[1:]
	aq.busy = false
	aq.failures = 0
	if aq.backoff != nil {
		aq.backoff.Reset()
	}
	aq.last = position{stream: streamSeq, seq: it.seq}
	p.known[aq.id] = aq.last
	b := it.b
	b.left--
	b.last = streamSeq
	if b.left == 0 && !b.finished {
		b.finished = true
		return b
	}
	return nil
}

// failAgentLocked fails every batch with events queued for the agent and
// empties its queue; it returns the batches whose done must be dispatched.
func (p *Publisher) failAgentLocked(aq *agentQueue, err error) []*batch {
	var failed []*batch
	for _, it := range aq.items {
		if !it.b.finished {
			it.b.finished = true
			it.b.err = err
			failed = append(failed, it.b)
		}
	}
	aq.items = nil
	aq.busy = false
	delete(p.agents, aq.id)
	return failed
}

// resumeParked sends the first event of every agent parked while the
// connection was down.
func (p *Publisher) resumeParked() {
	p.mu.Lock()
	if !p.nc.IsConnected() || len(p.parked) == 0 {
		p.mu.Unlock()
		return
	}
	parked := p.parked
	p.parked = nil
	var send []*item
	for _, aq := range parked {
		aq.busy = false
		if it := p.takeHeadLocked(aq); it != nil {
			send = append(send, it)
		}
	}
	p.mu.Unlock()
	if len(send) > 0 {
		p.log.Info("NATS is back, resuming publishing", "agents", len(send))
	}
	for _, it := range send {
		p.send(it)
	}
}

// watch resumes parked agents when the connection returns and refreshes the
// oldest-unpublished gauge every second, until ctx ends.
func (p *Publisher) watch(ctx context.Context, status chan nats.Status) {
	defer p.wg.Done()
	defer p.nc.RemoveStatusListener(status)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-status:
			p.resumeParked()
		case <-tick.C:
			// A missed status event (its buffer is small) is caught here.
			p.resumeParked()
			p.mu.Lock()
			oldest := p.oldestUnpublishedLocked(time.Now())
			p.mu.Unlock()
			p.m.setOldestAge(oldest.Seconds())
		}
	}
}
